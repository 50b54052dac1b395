#!/usr/bin/env python3
"""Start-up time of roster with a large store (called by startup.sh).

Fills a fresh data directory with N instances (one PUT /v1/import of a
generated export), stops roster, then starts it R times on that directory
and measures, from the moment the process is spawned:

  * serving: until roster logs "roster is serving";
  * first answer: until a DNS query for a registered service is answered
    with records (so the store is loaded and the record table published);

and the resident memory (VmRSS, and the peak VmHWM) at the first answer.
Prints a markdown table with every run and the median. Python stdlib only.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class Roster:
    """A roster child process whose stderr lines are timestamped."""

    def __init__(self, binary, workdir, data_dir):
        zones = os.path.join(workdir, "zones")
        os.makedirs(zones, exist_ok=True)
        env = dict(os.environ, NO_COLOR="1",
                   RUST_LOG="info,hickory_server=warn,hickory_net=warn")
        self.lines = []  # (monotonic time, line)
        self.serving = threading.Event()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [binary, "serve", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0",
             "--data-dir", data_dir, "--zones", zones],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.dns = self.http = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            line = ANSI.sub("", line.rstrip("\n"))
            self.lines.append((time.monotonic(), line))
            if "roster is serving" in line and not self.serving.is_set():
                self.dns = parse_addr(line, "dns=")
                self.http = parse_addr(line, "http=")
                self.serving_at = time.monotonic()
                self.serving.set()

    def wait_serving(self, limit):
        if not self.serving.wait(limit):
            self.proc.kill()
            raise SystemExit("roster did not serve within %ss:\n%s" % (
                limit, "\n".join(l for _, l in self.lines)))
        return self.serving_at - self.started

    def log_value(self, marker, key):
        for _, line in self.lines:
            if marker in line:
                match = re.search(key + r"=(\S+)", line)
                if match:
                    return match.group(1)
        return None

    def status(self, field):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])  # kB
        return 0

    def stop(self, limit=30):
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(limit)
        if code != 0:
            raise SystemExit("roster exited with %d" % code)
        return time.monotonic() - started


def parse_addr(line, key):
    match = re.search(key + r"([0-9.]+):(\d+)", line)
    return (match.group(1), int(match.group(2)))


def dns_query(server, name, qtype=1, timeout=0.05):
    """One UDP query; returns (rcode, answer count) or None on timeout."""
    qid = random.randrange(65536)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    packet = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0) + question + b"\0" + \
        struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, server)
        try:
            while True:
                data = sock.recv(65535)
                rid, flags, _, ancount = struct.unpack(">HHHH", data[:8])
                if rid == qid:
                    return flags & 0xF, ancount
        except socket.timeout:
            return None


def http(method, url, body=None, timeout=600):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"content-type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def generate(count, services, ttl_fraction, ttl_checks):
    """An export of `count` instances over `services` services."""
    rng = random.Random(42)
    instances = []
    for n in range(count):
        service = "svc-%d" % (n % services)
        instances.append({
            "service": service,
            "id": "%s-%d" % (service, n // services),
            "address": "10.%d.%d.%d" % ((n >> 16) & 255, (n >> 8) & 255, n & 255 or 1),
            "port": 1024 + n % 60000,
            "tags": ["v%d" % (n % 3), "bench"],
            "meta": {"version": "1.%d" % (n % 10), "zone": "z%d" % (n % 4)},
            "weight": 1 + n % 10,
            "priority": 0,
            "checks": ttl_checks if rng.random() < ttl_fraction else [],
            "maintenance": None,
            "create_index": 0,
        })
    return {"version": 1, "index": 0, "instances": instances}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--services", type=int, default=1_000)
    parser.add_argument("--ttl-fraction", type=float, default=0.1,
                        help="share of instances with a TTL check")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit", type=float, default=300,
                        help="seconds a start-up may take before giving up")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="roster-store-startup.", dir="/var/tmp")
    data_dir = os.path.join(work, "data")
    try:
        # Fill: one import into a fresh store. The TTL check is taken from
        # what roster itself exports, so the file matches its format.
        roster = Roster(args.binary, work, data_dir)
        roster.wait_serving(60)
        base = "http://%s:%d" % roster.http
        http("PUT", base + "/v1/services/template/instances/t-1",
             {"address": "10.0.0.1", "port": 1, "check": {"ttl": "60s"}})
        ttl_checks = [i for i in http("GET", base + "/v1/export")["instances"]
                      if i["id"] == "t-1"][0]["checks"]
        http("DELETE", base + "/v1/services/template/instances/t-1")
        export = json.dumps(generate(args.instances, args.services,
                                     args.ttl_fraction, ttl_checks)).encode()
        started = time.monotonic()
        result = http("PUT", base + "/v1/import", export)
        import_seconds = time.monotonic() - started
        assert result["imported"] == args.instances, result
        rss_after_import = roster.status("VmRSS")
        roster.stop()
        store_mb = os.path.getsize(os.path.join(data_dir, "roster.redb")) / 2**20
        print("# %d instances over %d services (%d%% with a TTL check); export %.1f MB; "
              "import took %.2f s (one commit); store file %.1f MB; "
              "VmRSS after the import %.0f MB" % (
                  args.instances, args.services, args.ttl_fraction * 100,
                  len(export) / 2**20, import_seconds, store_mb, rss_after_import / 1024))
        print()
        print("| run | serving s | first DNS answer s | VmRSS MB | VmHWM MB | instances loaded | SIGTERM to exit s |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        rows = []
        for run in range(1, args.runs + 1):
            roster = Roster(args.binary, work, data_dir)
            serving = roster.wait_serving(args.limit)
            deadline = time.monotonic() + 30
            while True:
                answer = dns_query(roster.dns, "svc-0.service.local")
                if answer and answer[0] == 0 and answer[1] > 0:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("no DNS answer for svc-0.service.local: %r" % (answer,))
            first_answer = time.monotonic() - roster.started
            rss, hwm = roster.status("VmRSS"), roster.status("VmHWM")
            loaded = roster.log_value("registry loaded", "instances")
            stop = roster.stop()
            rows.append((serving, first_answer, rss / 1024, hwm / 1024))
            print("| %d | %.3f | %.3f | %.0f | %.0f | %s | %.2f |" % (
                run, serving, first_answer, rss / 1024, hwm / 1024, loaded, stop))
        median = [statistics.median(column) for column in zip(*rows)]
        print("| **median** | **%.3f** | **%.3f** | **%.0f** | **%.0f** | | |" % tuple(median))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
