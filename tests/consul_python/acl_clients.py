"""Drives a running roster with ACLs on through an unmodified Consul client
library, using its own `token` setting (each library sends it in its own
way: python-consul as `?token=`, py-consul as the `X-Consul-Token` header).

Run by tests/consul_python.rs once per library:

    python acl_clients.py --library py-consul --http-port 8500 \
        --admin-token A --web-token W

roster is configured with `default_policy = "deny"`, an admin (management)
token A and a token W with `service_prefix = { "web" = "write", "" = "read" }`.
The first failed assertion ends the run with a non-zero exit status.
"""

import argparse
import sys
from importlib import metadata

import consul


def step(message):
    print(f"ok: {message}", flush=True)


def refused(call):
    """Whether `call` was refused by the ACL: the libraries raise
    ACLPermissionDenied for a 403."""
    try:
        call()
    except consul.ACLPermissionDenied:
        return True
    return False


def deregister(library, client, token, service_id):
    """`agent.service.deregister` with the client's token. python-consul
    1.1.0 drops the token on this one call (its `deregister` takes no
    `token` and sends none), so for it the request is made through the
    library's own HTTP client with the token added, as its other calls
    send it."""
    if library == "python-consul":
        return client.http.put(
            consul.base.CB.bool(),
            f"/v1/agent/service/deregister/{service_id}",
            params=[("token", token)],
        )
    return client.agent.service.deregister(service_id)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--library", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--admin-token", required=True)
    parser.add_argument("--web-token", required=True)
    args = parser.parse_args()
    version = metadata.version(args.library)
    step(f"{args.library} {version}")

    anonymous = consul.Consul(host="127.0.0.1", port=args.http_port)
    web = consul.Consul(host="127.0.0.1", port=args.http_port, token=args.web_token)
    admin = consul.Consul(host="127.0.0.1", port=args.http_port, token=args.admin_token)
    stranger = consul.Consul(host="127.0.0.1", port=args.http_port, token="not-a-token")

    register_web = lambda client: client.agent.service.register(  # noqa: E731
        "web", service_id="web-1", address="127.0.0.1", port=8080
    )
    assert refused(lambda: register_web(anonymous)), "anonymous registration was not refused"
    assert refused(lambda: register_web(stranger)), "an unknown token was not refused"
    step("no token, or an unknown one: refused")

    assert register_web(web) is True, "the web token may register web"
    assert refused(
        lambda: web.agent.service.register("api", service_id="api-1", address="127.0.0.1", port=9090)
    ), "the web token registered a service outside its prefix"
    assert admin.agent.service.register("api", service_id="api-1", address="127.0.0.1", port=9090) is True
    step("a service_prefix token writes its services and no other")

    _, services = web.catalog.services()
    assert set(services) == {"web", "api"}, services
    _, nodes = admin.health.service("web")
    assert [n["Service"]["ID"] for n in nodes] == ["web-1"], nodes
    _, nodes = anonymous.health.service("web")
    assert nodes == [], f"anonymous read was not filtered: {nodes}"
    _, services = anonymous.catalog.services()
    assert services == {}, f"anonymous catalog was not filtered: {services}"
    step("reads: filtered to what the token may read")

    lib = args.library
    assert refused(lambda: deregister(lib, web, args.web_token, "api-1")), "web deregistered api"
    assert deregister(lib, admin, args.admin_token, "api-1") is True
    assert deregister(lib, web, args.web_token, "web-1") is True
    _, services = admin.catalog.services()
    assert services == {}, services
    step("deregistration: by the tokens that may")

    print("all passed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        raise
