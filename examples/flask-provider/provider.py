"""A Flask service that registers itself with roster through the Consul API.

It registers with python-consul, exactly as it would with Consul, with an
HTTP health check of its own /health on loopback: roster probes it, and DNS
serves the instance once the first probe passes. On exit (Ctrl-C or
SIGTERM) it deregisters, so DNS stops serving it at once instead of after
its check fails.

    python provider.py --port 5000 --roster 127.0.0.1:8500
"""

import argparse
import atexit
import signal
import sys

import consul
from flask import Flask, jsonify


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roster", default="127.0.0.1:8500",
                        help="roster's HTTP address (host:port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on and register (loopback: roster probes it)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on")
    parser.add_argument("--service", default="hello", help="service name to register")
    parser.add_argument("--id", default=None, help="instance ID (default: SERVICE-PORT)")
    return parser.parse_args()


def main():
    args = parse_args()
    instance_id = args.id or f"{args.service}-{args.port}"
    roster_host, roster_port = args.roster.rsplit(":", 1)
    client = consul.Consul(host=roster_host, port=int(roster_port))

    app = Flask(__name__)

    @app.get("/")
    def hello():
        return jsonify(message=f"hello from {instance_id}")

    @app.get("/health")
    def health():
        return "ok"

    client.agent.service.register(
        args.service,
        service_id=instance_id,
        address=args.host,
        port=args.port,
        tags=["http"],
        check=consul.Check.http(f"http://{args.host}:{args.port}/health", interval="1s"),
    )
    print(f"registered {instance_id} at {args.host}:{args.port}", flush=True)

    def deregister():
        client.agent.service.deregister(instance_id)
        print(f"deregistered {instance_id}", flush=True)

    atexit.register(deregister)
    # SIGTERM (what a supervisor or `kill` sends) ends the process like
    # Ctrl-C, through the atexit handler, instead of killing it outright.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        app.run(host=args.host, port=args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
