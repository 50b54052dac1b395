"""Drives a running roster with an unmodified Consul client library.

Run by tests/consul_python.rs once per library, each in its own venv (both
libraries install the same module, `consul`):

    python compat_suite.py --library python-consul --http-port 8500 --dns-port 8600

It runs the origin example of the Consul-compatibility issue, then registers
services with HTTP, TCP and TTL checks and watches their statuses move in
the agent, health and catalog endpoints and in roster's DNS answers (via
dnspython). Every wait polls with a deadline; nothing sleeps for a fixed
long time. The first failed assertion ends the run with a non-zero exit
status and the traceback; progress lines on stdout show how far it got.
"""

import argparse
import contextlib
import http.server
import io
import socket
import sys
import threading
import time
from importlib import metadata

import consul
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

# The origin example from the issue, verbatim but for its keyword: the
# libraries call it `service_id=`, not `id=`. It is run with `port=8500`
# pointed at the roster under test (the only other substitution).
ORIGIN_EXAMPLE = """\
import consul
client = consul.Consul(host='localhost', port=8500)
service_id = client.agent.service.register(service_id='hello-service', name='Hello Service', address='localhost', port=8080, tags=['http'])
services = client.catalog.services('http')
print(services)
client.agent.service.deregister(service_id)
"""

DOMAIN = "service.local"
# Every wait for a state change: generous, the machine may be busy.
LIMIT = 20.0
POLL = 0.05
# Check timing used throughout: fast, well above roster's 100ms floor.
INTERVAL = "1s"


def step(message):
    print(f"ok: {message}", flush=True)


def eventually(what, probe, limit=LIMIT):
    """Polls `probe` until it returns `(True, seen)`; fails with the last
    `seen` otherwise, so the message says what the state was instead."""
    deadline = time.monotonic() + limit
    while True:
        done, seen = probe()
        if done:
            return seen
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {limit}s; last seen: {seen!r}")
        time.sleep(POLL)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


class Dns:
    """roster's DNS server, asked with dnspython."""

    def __init__(self, port):
        self.port = port

    def query(self, name, rdtype):
        request = dns.message.make_query(name, rdtype)
        return dns.query.udp(request, "127.0.0.1", port=self.port, timeout=2)

    def srv(self, label):
        """{(target, port)} of the SRV answers for <label>.service.local."""
        reply = self.query(f"{label}.{DOMAIN}", dns.rdatatype.SRV)
        check(
            reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN),
            f"SRV {label}: rcode {dns.rcode.to_text(reply.rcode())}",
        )
        return {
            (str(rr.target).lower(), rr.port)
            for rrset in reply.answer
            if rrset.rdtype == dns.rdatatype.SRV
            for rr in rrset
        }

    def a(self, label):
        reply = self.query(f"{label}.{DOMAIN}", dns.rdatatype.A)
        return {rr.address for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A for rr in rrset}

    def targets(self, label):
        """The instance labels DNS hands out for a service."""
        return {target.split(".")[0] for target, _ in self.srv(label)}

    def wait_for(self, label, expected):
        """Waits until DNS hands out exactly the instance labels `expected`."""
        expected = set(expected)

        def probe():
            got = self.targets(label)
            return got == expected, sorted(got)

        eventually(f"DNS {label}.{DOMAIN} SRV to serve {sorted(expected)}", probe)


class HttpTarget:
    """A tiny HTTP server for HTTP checks: answers every GET with `code`."""

    def __init__(self):
        self.code = 200
        self.headers_seen = []
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                target.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
                self.send_response(target.code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/health"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class TcpTarget:
    """A TCP port for TCP checks that can be opened and closed."""

    def __init__(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.listener = None
        self.open()

    def open(self):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener

        def accept_all():
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                connection.close()

        threading.Thread(target=accept_all, daemon=True).start()

    def close(self):
        self.listener.close()
        self.listener = None


class Suite:
    def __init__(self, library, http_port, dns_port):
        self.library = library
        self.port = http_port
        self.dns = Dns(dns_port)
        self.client = consul.Consul(host="127.0.0.1", port=http_port)
        self.py_consul = library == "py-consul"

    # -- reading roster through the library --

    def checks(self):
        return self.client.agent.checks()

    def status(self, check_id):
        return self.checks().get(check_id, {}).get("Status")

    def wait_status(self, check_id, status):
        def probe():
            seen = self.checks().get(check_id)
            return (seen or {}).get("Status") == status, seen

        eventually(f"check {check_id} to be {status}", probe)

    def health_ids(self, name, **kwargs):
        index, nodes = self.client.health.service(name, **kwargs)
        check(int(index) > 0, f"health index {index!r}")
        return sorted(node["Service"]["ID"] for node in nodes)

    def catalog_ids(self, name, **kwargs):
        index, nodes = self.client.catalog.service(name, **kwargs)
        check(int(index) > 0, f"catalog index {index!r}")
        return sorted(node["ServiceID"] for node in nodes)

    def register(self, **kwargs):
        registered = self.client.agent.service.register(**kwargs)
        check(registered is True, f"register {kwargs.get('service_id')}: {registered!r}")

    # -- the scenarios --

    def origin_example(self):
        program = ORIGIN_EXAMPLE.replace("port=8500", f"port={self.port}")
        namespace = {}
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(program, "<origin example>", "exec"), namespace)
        print(f"origin example printed: {printed.getvalue().strip()}")
        check(namespace["service_id"] is True, f"register returned {namespace['service_id']!r}")
        index, services = namespace["services"]
        check(int(index) > 0, f"index {index!r}")
        check(services == {"Hello Service": ["http"]}, f"services {services!r}")
        check(printed.getvalue() == f"{namespace['services']}\n", "printed the tuple")
        # `deregister(service_id)` sent `.../deregister/True`: 404, so False,
        # and the service stays registered.
        client = namespace["client"]
        check(client.agent.service.deregister(namespace["service_id"]) is False, "deregister(True) is False")
        check("hello-service" in client.agent.services(), "the service stays registered")
        check(self.dns.a("hello-service") == {"127.0.0.1"}, "Hello Service in DNS at localhost's address")
        self.dns.wait_for("hello-service", {"hello-service"})
        step("origin example: prints (index, {'Hello Service': ['http']}), deregister(True) is False")
        check(client.agent.service.deregister("hello-service") is True, "real deregister")
        check("hello-service" not in client.agent.services(), "deregistered")

    def leader(self):
        check(self.client.status.leader() == "127.0.0.1:8300", "status.leader()")
        step("status.leader()")

    def http_check(self, http_target):
        self.register(
            name="web",
            service_id="web-1",
            address="127.0.0.1",
            port=http_target.port,
            tags=["v1", "http"],
            check=consul.Check.http(http_target.url, interval=INTERVAL, timeout="1s", header={"X-Roster-Test": ["yes"]}),
        )
        check(self.status("service:web-1") in ("critical", "passing"), "a new check exists")
        self.wait_status("service:web-1", "passing")
        check(
            any(h.get("x-roster-test") == "yes" for h in http_target.headers_seen),
            "the check sends its header",
        )
        self.dns.wait_for("web", {"web-1"})
        check(self.health_ids("web", passing=True) == ["web-1"], "passing web-1")
        step("HTTP check passing, in DNS")

        http_target.code = 429
        self.wait_status("service:web-1", "warning")
        check(self.health_ids("web", passing=True) == [], "warning is not passing")
        check(self.health_ids("web") == ["web-1"], "still listed without ?passing")
        self.dns.wait_for("web", set())
        step("HTTP 429: warning, out of ?passing and DNS")

        http_target.code = 500
        self.wait_status("service:web-1", "critical")
        output = self.checks()["service:web-1"]["Output"]
        check("500" in output, f"output names the status: {output!r}")
        self.dns.wait_for("web", set())
        step("HTTP 500: critical")

        http_target.code = 200
        self.wait_status("service:web-1", "passing")
        self.dns.wait_for("web", {"web-1"})
        step("HTTP 200 again: passing, back in DNS")

    def tcp_check(self, http_target, tcp_target):
        # A second instance of the same service.
        self.register(
            name="web",
            service_id="web-2",
            address="127.0.0.1",
            port=tcp_target.port,
            tags=["v2", "http"],
            check=consul.Check.tcp("127.0.0.1", tcp_target.port, INTERVAL, timeout="1s"),
        )
        self.wait_status("service:web-2", "passing")
        self.dns.wait_for("web", {"web-1", "web-2"})
        ports = {port for _, port in self.dns.srv("web")}
        check(ports == {http_target.port, tcp_target.port}, f"SRV ports {ports}")
        check(self.health_ids("web", passing=True) == ["web-1", "web-2"], "both passing")
        step("two instances of one service, TCP check passing, both in DNS")

        tcp_target.close()
        self.wait_status("service:web-2", "critical")
        self.dns.wait_for("web", {"web-1"})
        check(self.health_ids("web", passing=True) == ["web-1"], "web-2 filtered")
        step("TCP port closed: critical, out of DNS")

        tcp_target.open()
        self.wait_status("service:web-2", "passing")
        self.dns.wait_for("web", {"web-1", "web-2"})
        step("TCP port open again: passing, back in DNS")

    def tags(self):
        check(self.catalog_ids("web", tag="v1") == ["web-1"], "catalog tag v1")
        check(self.catalog_ids("web", tag="http") == ["web-1", "web-2"], "catalog tag http")
        check(self.health_ids("web", tag="v2") == ["web-2"], "health tag v2")
        check(self.health_ids("web", tag="v2", passing=True) == ["web-2"], "health tag v2 passing")
        check(self.health_ids("web", tag="none") == [], "health unknown tag")
        if self.py_consul:
            # py-consul repeats `tag` for a list: every tag must match.
            check(self.health_ids("web", tag=["http", "v1"]) == ["web-1"], "health tags http+v1")
        index, services = self.client.catalog.services()
        check(sorted(services["web"]) == ["http", "v1", "v2"], f"catalog.services {services}")
        check(sorted(self.dns.targets("_web._v2")) == ["web-2"], "DNS tag query")
        step("tag filters in catalog, health and DNS")

    def ttl_checks(self):
        self.register(name="worker", service_id="worker-1", address="127.0.0.1", port=7001, check=consul.Check.ttl("30s"))
        check(self.status("service:worker-1") == "critical", "a new TTL check is critical")
        self.dns.wait_for("worker", set())
        check(self.health_ids("worker", passing=True) == [], "critical is not passing")

        check(self.client.agent.check.ttl_pass("service:worker-1", "all good") is True, "ttl_pass")
        checks = self.checks()
        check(checks["service:worker-1"]["Status"] == "passing", "passing after ttl_pass")
        check(checks["service:worker-1"]["Output"] == "all good", f"note: {checks['service:worker-1']}")
        self.dns.wait_for("worker", {"worker-1"})
        step("TTL pass with a note: passing, in DNS")

        check(self.client.agent.check.ttl_warn("service:worker-1", "slow") is True, "ttl_warn")
        checks = self.checks()
        check(checks["service:worker-1"]["Status"] == "warning", "warning")
        check(checks["service:worker-1"]["Output"] == "slow", "warn note")
        check(self.health_ids("worker", passing=True) == [], "warning filtered by ?passing")
        self.dns.wait_for("worker", set())
        step("TTL warn: warning, out of ?passing and DNS")

        check(self.client.agent.check.ttl_fail("service:worker-1", "broken") is True, "ttl_fail")
        checks = self.checks()
        check(checks["service:worker-1"]["Status"] == "critical", "critical")
        check(checks["service:worker-1"]["Output"] == "broken", "fail note")
        step("TTL fail: critical")

        check(self.client.agent.check.ttl_pass("service:worker-1") is True, "ttl_pass without a note")
        self.dns.wait_for("worker", {"worker-1"})

        # A TTL that runs out turns critical on its own.
        self.register(name="ephemeral", service_id="ephemeral-1", port=7002, check=consul.Check.ttl("1s"))
        check(self.client.agent.check.ttl_pass("service:ephemeral-1") is True, "ttl_pass")
        self.dns.wait_for("ephemeral", {"ephemeral-1"})
        self.wait_status("service:ephemeral-1", "critical")
        output = self.checks()["service:ephemeral-1"]["Output"]
        check("TTL" in output, f"output says the TTL expired: {output!r}")
        self.dns.wait_for("ephemeral", set())
        check(self.client.agent.service.deregister("ephemeral-1") is True, "deregister ephemeral")
        step("TTL expiry: critical, out of DNS")

        # A TTL check on an HTTP check's ID is Consul's 500.
        try:
            self.client.agent.check.ttl_pass("service:web-1")
        except consul.ConsulException as error:
            check("does not have associated TTL" in str(error), str(error))
        else:
            raise AssertionError("ttl_pass on an HTTP check did not raise")
        check(self.client.agent.check.ttl_pass("no-such-check") is False, "unknown check: False")
        step("TTL report on a non-TTL check raises; unknown check is False")

    def check_endpoints(self):
        registered = self.client.agent.check.register(
            "worker-disk", consul.Check.ttl("30s"), notes="disk space", service_id="worker-1"
        )
        check(registered is True, "check.register")
        checks = self.checks()
        check(checks["worker-disk"]["Status"] == "critical", "new check critical")
        check(checks["worker-disk"]["ServiceID"] == "worker-1", "attached to worker-1")
        check(self.status("service:worker-1") == "passing", "the other check kept its status")
        self.dns.wait_for("worker", set())
        check(self.client.agent.check.ttl_pass("worker-disk") is True, "pass worker-disk")
        self.dns.wait_for("worker", {"worker-1"})
        check(self.client.agent.check.deregister("worker-disk") is True, "check.deregister")
        check("worker-disk" not in self.checks(), "check gone")
        check(self.client.agent.check.deregister("worker-disk") is False, "second deregister is False")
        step("check.register / ttl_pass / check.deregister on a service")

        if self.py_consul:
            # py-consul sends `checks`: the check plus extra_checks.
            self.register(
                name="batch",
                service_id="batch-1",
                port=7003,
                check=consul.Check.ttl("30s"),
                extra_checks=[consul.Check.ttl("30s")],
            )
            ids = sorted(k for k in self.checks() if k.startswith("service:batch-1"))
            check(ids == ["service:batch-1:1", "service:batch-1:2"], f"check IDs {ids}")
            self.dns.wait_for("batch", set())
            step("py-consul extra_checks: IDs service:<id>:1 and :2, critical, not in DNS")
            # replace_existing_checks drops the checks the new definition lacks.
            self.register(
                name="batch",
                service_id="batch-1",
                port=7003,
                check=consul.Check.ttl("30s"),
                replace_existing_checks=True,
            )
            ids = sorted(k for k in self.checks() if k.startswith("service:batch-1"))
            check(ids == ["service:batch-1"], f"check IDs after replacing: {ids}")
            check(self.client.agent.check.ttl_pass("service:batch-1") is True, "pass batch-1")
            self.dns.wait_for("batch", {"batch-1"})
            check(self.client.agent.service.deregister("batch-1") is True, "deregister batch-1")
            self.dns.wait_for("batch", set())
            step("py-consul replace_existing_checks")

    def reregistration(self, http_target):
        # Re-registering the same ID replaces it, without a duplicate, and
        # its check keeps its status (no flap out of DNS).
        before = self.status("service:web-1")
        self.register(
            name="web",
            service_id="web-1",
            address="127.0.0.1",
            port=http_target.port,
            tags=["v1", "http"],
            check=consul.Check.http(http_target.url, interval=INTERVAL, timeout="1s", header={"X-Roster-Test": ["yes"]}),
        )
        check(before == "passing" and self.status("service:web-1") == "passing", "status kept")
        services = self.client.agent.services()
        check(sorted(k for k in services if k.startswith("web-")) == ["web-1", "web-2"], f"no duplicate: {services}")
        check(self.dns.targets("web") == {"web-1", "web-2"}, "still in DNS")
        step("re-registration replaces and keeps check status")

    def maintenance(self):
        check(self.client.agent.service.maintenance("web-1", True, reason="deploy") is True, "maintenance on")
        checks = self.checks()
        maintenance = checks.get("_service_maintenance:web-1")
        check(maintenance is not None, f"maintenance check: {sorted(checks)}")
        check(maintenance["Status"] == "critical", "maintenance check critical")
        check(maintenance["Notes"] == "deploy", f"reason as notes: {maintenance}")
        self.dns.wait_for("web", {"web-2"})
        check(self.health_ids("web", passing=True) == ["web-2"], "drained from ?passing")
        check(self.health_ids("web") == ["web-1", "web-2"], "still listed")
        step("maintenance on: _service_maintenance check, out of DNS")

        check(self.client.agent.service.maintenance("web-1", "false") is True, "maintenance off")
        check("_service_maintenance:web-1" not in self.checks(), "maintenance check gone")
        self.dns.wait_for("web", {"web-1", "web-2"})
        check(self.health_ids("web", passing=True) == ["web-1", "web-2"], "back in ?passing")
        check(self.client.agent.service.maintenance("nope", True) is False, "unknown ID: False")
        step("maintenance off: check gone, back in DNS")

    def blocking(self):
        # Quiet the registry: a fresh heartbeat keeps worker's 30s TTL far off.
        self.client.agent.check.ttl_pass("service:worker-1")
        index, _ = self.client.health.service("worker")
        results = {}

        def blocked():
            started = time.monotonic()
            results["answer"] = self.client.health.service("worker", index=index, wait="30s")
            results["took"] = time.monotonic() - started

        thread = threading.Thread(target=blocked, daemon=True)
        thread.start()
        # Give the query a moment to reach roster and park (returning early
        # would also be correct; this only makes the wake-up the likely path).
        time.sleep(0.2)
        check(thread.is_alive(), "the blocking query returned before any change")
        check(self.client.agent.check.ttl_warn("service:worker-1", "busy") is True, "the change")
        thread.join(LIMIT)
        check(not thread.is_alive(), "the blocked query did not wake on the change")
        new_index, nodes = results["answer"]
        check(int(new_index) > int(index), f"index moved: {index} -> {new_index}")
        statuses = [c["Status"] for c in nodes[0]["Checks"] if c["CheckID"] == "service:worker-1"]
        check(statuses == ["warning"], f"the answer shows the change: {statuses}")
        check(results["took"] < 25, f"woke after {results['took']:.1f}s")
        step(f"blocking health.service woke on a change after {results['took']:.2f}s")

        check(self.client.agent.check.ttl_pass("service:worker-1") is True, "back to passing")
        index, _ = self.client.health.service("worker")
        started = time.monotonic()
        same_index, _ = self.client.health.service("worker", index=index, wait="1s")
        took = time.monotonic() - started
        check(same_index == index, f"no change, same index: {index} -> {same_index}")
        check(took >= 0.9, f"waited the full second: {took:.2f}s")
        index, _ = self.client.catalog.services()
        same_index, _ = self.client.catalog.services(index=index, wait="1s")
        check(same_index == index, "catalog.services timed out with the same index")
        step(f"blocking query timed out after {took:.2f}s with the same index")

    def deregistration(self):
        for service_id in ("web-1", "web-2", "worker-1"):
            check(self.client.agent.service.deregister(service_id) is True, f"deregister {service_id}")
        services = self.client.agent.services()
        check(services == {}, f"nothing left: {services}")
        index, nodes = self.client.catalog.service("web")
        check(nodes == [], f"catalog empty: {nodes}")
        check(self.checks() == {}, "checks went with their services")
        reply = self.dns.query(f"web.{DOMAIN}", dns.rdatatype.SRV)
        check(reply.rcode() == dns.rcode.NXDOMAIN, f"web is gone from DNS: {dns.rcode.to_text(reply.rcode())}")
        check(self.client.agent.service.deregister("web-1") is False, "second deregister is False")
        step("deregistration: gone from agent, catalog and DNS")

    def run(self):
        self.origin_example()
        self.leader()
        http_target = HttpTarget()
        tcp_target = TcpTarget()
        try:
            self.http_check(http_target)
            self.tcp_check(http_target, tcp_target)
            self.tags()
            self.ttl_checks()
            self.check_endpoints()
            self.reregistration(http_target)
            self.maintenance()
            self.blocking()
            self.deregistration()
        finally:
            http_target.close()
            tcp_target.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--library", required=True, choices=["python-consul", "py-consul"])
    parser.add_argument("--http-port", required=True, type=int)
    parser.add_argument("--dns-port", required=True, type=int)
    args = parser.parse_args()
    version = metadata.version(args.library)
    print(f"{args.library} {version} from {consul.__file__}", flush=True)
    Suite(args.library, args.http_port, args.dns_port).run()
    print(f"all passed with {args.library} {version}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
