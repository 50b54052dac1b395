#!/usr/bin/env python3
"""Helpers for bench/cluster/run.sh (python3 standard library only; the DNS
wire code is bench/dns/gen.py's).

Subcommands:
  converge   write through one node, poll another node's DNS until the new
             value shows; print latency percentiles (JSON to --out)
  listen     a TCP listener on 127.0.0.1 that accepts and closes: the target
             of the check-move benchmark's TCP checks
  register-checks  register N instances, each with a TCP check on a target
  members    print the summed "checks" and the names in /v1/cluster/members
  move       after a node was killed: poll a survivor's /v1/cluster/members
             until the dead node is gone and the survivors' checks sum to
             the total; print the two times (JSON to --out)
  qps-table  the markdown table of the DNS runs (runs/*.json from report.py)
  etcd-stats print etcd's applied raft proposals and current revision (the
             difference between two readings: transactions, and those that
             wrote something; a transaction whose compare failed writes
             nothing and moves no revision)
"""

import argparse
import glob
import http.client
import json
import os
import socket
import statistics
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dns"))
import gen  # noqa: E402  (build_query, parse_response)


def http_req(host, port, method, path, body=None, timeout=10):
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def split(addr):
    h, p = addr.rsplit(":", 1)
    return h, int(p)


def pct(vals, p):
    if not vals:
        return None
    s = sorted(vals)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


# ---------------------------------------------------------------- convergence

def cmd_converge(a):
    """Each sample: PUT instance conv-1 of service "conv" through node A with
    a new port, note when A acknowledged it, then ask node B (UDP SRV
    conv.service.local.) in a tight loop until the SRV port is the new one.
    Reports B's lag after A's acknowledgement and the time from sending the
    PUT. A sample that does not converge within --timeout s counts as a
    timeout (and its lag is not in the percentiles)."""
    wh, wp = split(a.write)
    dh, dp = split(a.dns)
    conn = http.client.HTTPConnection(wh, wp, timeout=10)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.2)
    name = "conv.service.local."
    after_ack, from_send, polls, timeouts, errors = [], [], [], 0, []

    def put(port):
        body = json.dumps({"address": "127.0.0.1", "port": port})
        conn.request("PUT", "/v1/services/conv/instances/conv-1", body=body,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError("PUT -> HTTP %d: %s" % (r.status, data[:200]))

    def srv_port(qid):
        sock.sendto(gen.build_query(name, "SRV", qid), (dh, dp))
        while True:
            try:
                msg, _ = sock.recvfrom(65535)
            except socket.timeout:
                return None
            if len(msg) >= 12 and struct.unpack(">H", msg[:2])[0] == qid:
                _, flags, (ans, _, _) = gen.parse_response(msg)
                ports = [v[2] for (n, t, v) in ans if t == 33]
                return ports[0] if ports else -1

    put(10000)  # the service exists before the first sample
    deadline = time.monotonic() + 10
    while srv_port(1) != 10000:
        if time.monotonic() > deadline:
            sys.exit("node B never showed the first registration")
    qid = 2
    started = time.monotonic()
    for i in range(a.samples):
        port = 10001 + i
        t0 = time.monotonic()
        try:
            put(port)
        except (OSError, RuntimeError, http.client.HTTPException) as e:
            errors.append(str(e))
            conn.close()
            conn = http.client.HTTPConnection(wh, wp, timeout=10)
            continue
        t1 = time.monotonic()
        n = 0
        while True:
            qid = (qid + 1) & 0xFFFF
            n += 1
            got = srv_port(qid)
            t2 = time.monotonic()
            if got == port:
                after_ack.append((t2 - t1) * 1e3)
                from_send.append((t2 - t0) * 1e3)
                polls.append(n)
                break
            if t2 - t1 > a.timeout:
                timeouts += 1
                break
        if a.pause:
            time.sleep(a.pause)
    r = {"samples": a.samples, "converged": len(after_ack), "timeouts": timeouts,
         "errors": len(errors), "first_error": errors[0] if errors else None,
         "polls_median": statistics.median(polls) if polls else None,
         "elapsed_s": time.monotonic() - started}
    for key, vals in (("ack", after_ack), ("send", from_send)):
        r[key + "_p50_ms"] = pct(vals, 50)
        r[key + "_p99_ms"] = pct(vals, 99)
        r[key + "_max_ms"] = max(vals) if vals else None
    if a.out:
        with open(a.out, "w") as f:
            json.dump(r, f)
    print(json.dumps(r))


# ---------------------------------------------------------------- checks

def cmd_listen(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", a.port))
    s.listen(1024)
    while True:
        c, _ = s.accept()
        c.close()


def cmd_register_checks(a):
    h, p = split(a.http)
    lock = threading.Lock()
    state = {"next": 0, "failed": None}

    def worker():
        conn = http.client.HTTPConnection(h, p, timeout=30)
        while True:
            with lock:
                i = state["next"]
                if i >= a.count or state["failed"]:
                    return
                state["next"] += 1
            body = json.dumps({"address": "127.0.0.1", "port": 9000,
                               "check": {"tcp": a.target, "interval": a.interval}})
            conn.request("PUT", "/v1/services/chk%d/instances/chk-%d" % (i % 30, i), body=body,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                with lock:
                    state["failed"] = "HTTP %d: %s" % (r.status, data[:200])
                return

    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if state["failed"]:
        sys.exit("register-checks: " + state["failed"])


def members(addr):
    h, p = split(addr)
    st, data = http_req(h, p, "GET", "/v1/cluster/members", timeout=2)
    if st != 200:
        raise OSError("HTTP %d" % st)
    return json.loads(data)


def cmd_members(a):
    m = members(a.http)
    print("%d %s" % (sum(x["checks"] for x in m), ",".join(sorted(x["name"] for x in m))))


def cmd_wait_members(a):
    """Wait until the members list has --nodes names and checks sum to --total."""
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            m = members(a.http)
            if len(m) == a.nodes and sum(x["checks"] for x in m) == a.total:
                print(" ".join("%s=%d" % (x["name"], x["checks"]) for x in m))
                return
        except (OSError, ValueError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    sys.exit("members not settled within %.0f s" % a.timeout)


def cmd_move(a):
    """Time 0 is --since (time.time() when the node was killed)."""
    gone = moved = None
    deadline = a.since + a.timeout
    while time.time() < deadline:
        try:
            m = members(a.http)
        except (OSError, ValueError, http.client.HTTPException):
            time.sleep(0.05)
            continue
        now = time.time()
        names = {x["name"] for x in m}
        if gone is None and a.dead not in names:
            gone = now - a.since
        if a.dead not in names and sum(x["checks"] for x in m) == a.total:
            moved = now - a.since
            break
        time.sleep(0.05)
    r = {"gone_s": gone, "moved_s": moved}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(r, f)
    print(json.dumps(r))


# ---------------------------------------------------------------- etcd

def cmd_etcd_stats(a):
    h, p = split(a.url.replace("http://", "").split(",")[0])
    st, data = http_req(h, p, "GET", "/metrics")
    applied = 0
    for line in data.decode().splitlines():
        if line.startswith("etcd_server_proposals_applied_total "):
            applied = int(float(line.split()[1]))
    st, data = http_req(h, p, "POST", "/v3/kv/range", body=json.dumps({"key": "AA==", "limit": 1}))
    rev = int(json.loads(data)["header"]["revision"])
    print("%d %d" % (applied, rev))


# ---------------------------------------------------------------- DNS table

def cmd_qps_table(a):
    runs = {}
    for path in sorted(glob.glob(os.path.join(a.dir, "r*-*.json"))):
        name = os.path.basename(path)[:-5].split("-", 1)[1]
        with open(path) as f:
            runs.setdefault(name, []).append(json.load(f))

    def us(r):
        return 1e6 * r["cpu"] / r["completed"] if r.get("completed") else float("nan")

    med = {}
    print("| server | QPS (median) | QPS per round | p50 ms | p99 ms | lost | CPU µs/query (median) | other CPU s per round |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for name in ("embedded", "cluster"):
        rs = runs.get(name, [])
        if not rs:
            continue
        q = statistics.median(r["qps"] for r in rs)
        c = statistics.median(us(r) for r in rs)
        med[name] = (q, c)
        print("| %s | %.0f | %s | %.3f | %.3f | %d | %.2f | %s |" % (
            name, q, " / ".join("%.0f" % r["qps"] for r in rs),
            statistics.median((r.get("p50") or 0) * 1e3 for r in rs),
            statistics.median((r.get("p99") or 0) * 1e3 for r in rs),
            sum(r.get("lost") or 0 for r in rs), c,
            " / ".join("%.1f" % (r.get("other_cpu") or 0) for r in rs)))
    if "embedded" in med and "cluster" in med:
        print()
        print("cluster / embedded: QPS **%.3f**, CPU per query %.3f (target: QPS within 5%%, i.e. >= 0.95)" % (
            med["cluster"][0] / med["embedded"][0], med["cluster"][1] / med["embedded"][1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("converge"); p.add_argument("--write", required=True); p.add_argument("--dns", required=True)
    p.add_argument("--samples", type=int, default=300); p.add_argument("--timeout", type=float, default=5)
    p.add_argument("--pause", type=float, default=0.01); p.add_argument("--out", default="")
    p.set_defaults(fn=cmd_converge)
    p = sub.add_parser("listen"); p.add_argument("--port", type=int, required=True); p.set_defaults(fn=cmd_listen)
    p = sub.add_parser("register-checks"); p.add_argument("--http", required=True)
    p.add_argument("--count", type=int, required=True); p.add_argument("--target", required=True)
    p.add_argument("--interval", default="5s"); p.set_defaults(fn=cmd_register_checks)
    p = sub.add_parser("members"); p.add_argument("--http", required=True); p.set_defaults(fn=cmd_members)
    p = sub.add_parser("wait-members"); p.add_argument("--http", required=True)
    p.add_argument("--nodes", type=int, required=True); p.add_argument("--total", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60); p.set_defaults(fn=cmd_wait_members)
    p = sub.add_parser("move"); p.add_argument("--http", required=True); p.add_argument("--dead", required=True)
    p.add_argument("--total", type=int, required=True); p.add_argument("--since", type=float, required=True)
    p.add_argument("--timeout", type=float, default=60); p.add_argument("--out", default="")
    p.set_defaults(fn=cmd_move)
    p = sub.add_parser("etcd-stats"); p.add_argument("url"); p.set_defaults(fn=cmd_etcd_stats)
    p = sub.add_parser("qps-table"); p.add_argument("dir"); p.set_defaults(fn=cmd_qps_table)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
