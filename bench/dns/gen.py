#!/usr/bin/env python3
"""Helpers for bench/dns/run.sh (python3 standard library only).

Subcommands:
  zone      write the static zone file for the reference servers
  queries   write the dnsperf query file
  register  register N services x M instances with roster over HTTP
  churn     register and deregister extra instances at a fixed rate, for a
            fixed time, and report the rate achieved and the failures
  ports     print K free loopback ports (free for both UDP and TCP)
  check     send a few DNS queries to a server and verify the answers
  ready     wait until a DNS server answers SOA for the apex
  http-ready  wait until something answers HTTP on host:port
  metric    print one sample of a server's /metrics (0 when it has none)
  machine   print machine-wide busy and total CPU seconds (/proc/stat)
  quiet     wait (bounded) until the machine's CPU is mostly idle
  timed     run a command with a time limit and record its CPU seconds
  stop      stop processes this harness started, with their descendants
  cpu       print the CPU seconds (utime+stime) used by a process tree
  mem       print VmRSS and Pss (KiB) summed over a process tree
  tree      print the PIDs of a process and all its descendants

The record set is the same everywhere: service i (1-based) is "svc-%05d" % i,
its instance j (1-based) is "<service>-<j>", with address addr(k) where k is
the 0-based global instance number (i-1)*M + (j-1), and port 8080.
"""

import argparse
import http.client
import json
import os
import random
import socket
import struct
import sys
import threading
import time

DOMAIN = "service.local."
PORT = 8080
TTL = 30


def service_name(i):
    return "svc-%05d" % i


def instance_id(i, j):
    return "%s-%d" % (service_name(i), j)


def addr(k):
    # 10.a.b.c with c in 1..250, so no .0 / .255 addresses; 16M instances max.
    return "10.%d.%d.%d" % (k // 62500, (k // 250) % 250, k % 250 + 1)


def instances(n, m):
    k = 0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            yield i, j, k
            k += 1


# ---------------------------------------------------------------- zone file

def cmd_zone(a):
    with open(a.out, "w") as f:
        f.write("$ORIGIN %s\n$TTL %d\n" % (DOMAIN, TTL))
        f.write("@ IN SOA ns.%s hostmaster.%s 1 3600 600 86400 %d\n" % (DOMAIN, DOMAIN, TTL))
        f.write("@ IN NS ns.%s\n" % DOMAIN)
        f.write("ns IN A 127.0.0.1\n")
        for i in range(1, a.services + 1):
            s = service_name(i)
            lines = []
            for j in range(1, a.instances + 1):
                k = (i - 1) * a.instances + (j - 1)
                lines.append("%s IN A %s\n" % (s, addr(k)))
            for j in range(1, a.instances + 1):
                lines.append("%s IN SRV 0 1 %d %s.%s.%s\n" % (s, PORT, instance_id(i, j), s, DOMAIN))
            for j in range(1, a.instances + 1):
                k = (i - 1) * a.instances + (j - 1)
                lines.append("%s.%s IN A %s\n" % (instance_id(i, j), s, addr(k)))
            f.write("".join(lines))


# ---------------------------------------------------------------- query file

def cmd_queries(a):
    rnd = random.Random(a.seed)
    q = []
    # small service counts: repeat the A/SRV pairs so the file has at least
    # ~2,000 lines and the NXDOMAIN share stays close to --nx-percent
    reps = max(1, -(-2000 // (2 * a.services)))
    for _ in range(reps):
        for i in range(1, a.services + 1):
            s = service_name(i) + "." + DOMAIN.rstrip(".")
            q.append("%s A" % s)
            q.append("%s SRV" % s)
    n_nx = max(1, round(len(q) * a.nx_percent / (100.0 - a.nx_percent)))
    for _ in range(n_nx):
        q.append("nx-%08x.%s A" % (rnd.getrandbits(32), DOMAIN.rstrip(".")))
    rnd.shuffle(q)
    with open(a.out, "w") as f:
        f.write("\n".join(q) + "\n")
    print("%d queries (%d A, %d SRV, %d nonexistent)" % (len(q), a.services * reps, a.services * reps, n_nx))


# ---------------------------------------------------------------- registration

def cmd_register(a):
    host, port = a.http.rsplit(":", 1)
    port = int(port)
    work = list(instances(a.services, a.instances))
    total = len(work)
    lock = threading.Lock()
    state = {"next": 0, "done": 0, "errors": 0, "first_error": None}
    deadline = time.monotonic() + a.timeout

    def worker():
        conn = None
        while True:
            with lock:
                if state["next"] >= total or state["errors"] > 0:
                    return
                lo = state["next"]
                state["next"] = min(total, lo + 64)
                hi = state["next"]
            for idx in range(lo, hi):
                if time.monotonic() > deadline:
                    with lock:
                        state["errors"] += 1
                        state["first_error"] = state["first_error"] or "timed out after %ds" % a.timeout
                    return
                i, j, k = work[idx]
                path = "/v1/services/%s/instances/%s" % (service_name(i), instance_id(i, j))
                body = json.dumps({"address": addr(k), "port": PORT})
                err = None
                for attempt in range(2):  # one reconnect if the server closed keep-alive
                    try:
                        if conn is None:
                            conn = http.client.HTTPConnection(host, port, timeout=30)
                        conn.request("PUT", path, body=body,
                                     headers={"Content-Type": "application/json"})
                        r = conn.getresponse()
                        data = r.read()
                        if r.status != 200:
                            err = "PUT %s -> HTTP %d: %s" % (path, r.status, data[:300].decode("utf-8", "replace"))
                        else:
                            err = None
                        if r.getheader("connection", "").lower() == "close":
                            conn.close()
                            conn = None
                        break
                    except (OSError, http.client.HTTPException) as e:
                        err = "PUT %s -> %s: %s" % (path, type(e).__name__, e)
                        if conn is not None:
                            conn.close()
                        conn = None
                with lock:
                    if err:
                        state["errors"] += 1
                        state["first_error"] = state["first_error"] or err
                        return
                    state["done"] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.timeout + 60)
    dt = time.monotonic() - t0
    if state["errors"]:
        print("registration FAILED after %d of %d instances: %s" % (state["done"], total, state["first_error"]))
        sys.exit(1)
    print("registered %d instances (%d services x %d) in %.1f s (%.0f/s)"
          % (total, a.services, a.instances, dt, total / dt if dt else 0))


# ---------------------------------------------------------------- DNS check

TYPES = {"A": 1, "NS": 2, "SOA": 6, "SRV": 33}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def cmd_churn(a):
    """RATE operations per second (PUTs and DELETEs together, half each in
    steady state) on extra instances "<service>-churn-<t>-<n>" of the existing
    services, so every queried name keeps answering. Each of T threads owns
    its own instances on one keep-alive connection, paced to RATE/T ops/s on
    a fixed schedule (a late operation is sent at once, never skipped), and
    keeps at most DEPTH of them registered: it registers until it has DEPTH,
    then alternates deregistering its oldest and registering a new one. Ends
    after DURATION s; leftovers are then deregistered (not counted in the
    rate, but failures there are).

    bench/dns/run.sh runs the Rust port of this instead, `roster-store-loadgen
    churn` (bench/store/loadgen/src/churn.rs): same arguments, semantics and
    output, at about a third of the CPU. Keep the two in step."""
    host, port = a.http.rsplit(":", 1)
    port = int(port)
    lock = threading.Lock()
    st = {"put_ok": 0, "delete_ok": 0, "failed": 0, "first_error": None,
          "lats": [], "late_max": 0.0, "cleanup_failed": 0}
    t0 = time.monotonic() + 0.2  # all threads start on the same schedule
    end = t0 + a.duration
    per_thread = a.rate / float(a.threads)

    def one(conn, method, path, body):
        """One request on a raw keep-alive socket (far cheaper than
        http.client, so the client takes less of the machine it measures).
        Returns (conn, error or None)."""
        data = body.encode() if body is not None else b""
        req = ("%s %s HTTP/1.1\r\nHost: roster\r\nContent-Type: application/json\r\n"
               "Content-Length: %d\r\n\r\n" % (method, path, len(data))).encode() + data
        err = None
        for attempt in range(2):  # one reconnect if keep-alive was closed
            try:
                if conn is None:
                    conn = socket.create_connection((host, port), timeout=30)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.sendall(req)
                buf = b""
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise ConnectionError("connection closed")
                    buf += chunk
                head, rest = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                status = int(lines[0].split()[1])
                length, close = 0, False
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                while len(rest) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise ConnectionError("connection closed mid-body")
                    rest += chunk
                ok = status == 200 if method == "PUT" else status in (200, 204)
                err = None if ok else "%s %s -> HTTP %d: %s" % (
                    method, path, status, rest[:200].decode("utf-8", "replace"))
                if close:
                    conn.close()
                    conn = None
                return conn, err
            except (OSError, ValueError, IndexError) as e:
                err = "%s %s -> %s: %s" % (method, path, type(e).__name__, e)
                if conn is not None:
                    conn.close()
                conn = None
        return conn, err

    def worker(t):
        conn, fifo, n, op = None, [], 0, 0
        lats = []
        while True:
            due = t0 + op / per_thread
            now = time.monotonic()
            if due >= end:
                break
            if due > now:
                time.sleep(due - now)
            else:
                with lock:
                    st["late_max"] = max(st["late_max"], now - due)
            if len(fifo) < a.depth:  # fill up to DEPTH, then alternate
                i = (n * a.threads + t) % a.services + 1
                iid = "%s-churn-%d-%d" % (service_name(i), t, n)
                k = n * a.threads + t
                body = json.dumps({"address": "10.254.%d.%d" % ((k // 250) % 250, k % 250 + 1), "port": PORT})
                method, path = "PUT", "/v1/services/%s/instances/%s" % (service_name(i), iid)
                n += 1
            else:
                svc, iid = fifo.pop(0)
                method, path, body = "DELETE", "/v1/services/%s/instances/%s" % (svc, iid), None
            s0 = time.monotonic()
            conn, err = one(conn, method, path, body)
            lats.append(time.monotonic() - s0)
            with lock:
                if err:
                    st["failed"] += 1
                    st["first_error"] = st["first_error"] or err
                elif method == "PUT":
                    st["put_ok"] += 1
                else:
                    st["delete_ok"] += 1
            if method == "PUT" and not err:
                fifo.append((path.split("/")[3], path.split("/")[5]))
            op += 1
        with lock:
            st["lats"].extend(lats)
            st["window"] = max(st.get("window", 0.0), time.monotonic() - t0)
        for svc, iid in fifo:  # leave the table as it was
            conn, err = one(conn, "DELETE", "/v1/services/%s/instances/%s" % (svc, iid), None)
            if err:
                with lock:
                    st["cleanup_failed"] += 1
                    st["first_error"] = st["first_error"] or err
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(a.threads)]
    c0 = os.times()
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.duration + 120)
    c1 = os.times()
    lats = sorted(st["lats"])
    ok = st["put_ok"] + st["delete_ok"]
    window = st.get("window") or a.duration
    pick = lambda p: lats[min(len(lats) - 1, int(p / 100.0 * len(lats)))] * 1e3 if lats else 0.0
    r = {"churn_target": a.rate, "churn_rate": ok / window, "churn_ok": ok, "churn_put": st["put_ok"],
         "churn_delete": st["delete_ok"], "churn_failed": st["failed"] + st["cleanup_failed"],
         "churn_p50_ms": pick(50), "churn_p99_ms": pick(99), "churn_max_ms": lats[-1] * 1e3 if lats else 0.0,
         "churn_late_max_s": st["late_max"],
         "churn_cpu": (c1.user - c0.user) + (c1.system - c0.system)}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(r, f)
    print("churn: %.0f ops/s achieved of %d/s target (%d PUT + %d DELETE ok in %.1f s), %d failed, "
          "HTTP p50 %.1f ms p99 %.1f ms max %.1f ms, most late %.2f s, churn client CPU %.2f s"
          % (r["churn_rate"], a.rate, st["put_ok"], st["delete_ok"], window, r["churn_failed"],
             r["churn_p50_ms"], r["churn_p99_ms"], r["churn_max_ms"], st["late_max"], r["churn_cpu"]))
    if st["first_error"]:
        print("churn: first error: %s" % st["first_error"], file=sys.stderr)
    return 1 if any(t.is_alive() for t in threads) else 0


def build_query(name, qtype, qid):
    q = struct.pack(">HHHHHH", qid, 0x0000, 1, 0, 0, 0)  # RD=0: authoritative
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", TYPES[qtype], 1)


def read_name(msg, off):
    labels, jumped, end = [], False, off
    for _ in range(128):
        n = msg[off]
        if n == 0:
            off += 1
            break
        if n & 0xC0 == 0xC0:
            ptr = ((n & 0x3F) << 8) | msg[off + 1]
            if not jumped:
                end = off + 2
            jumped = True
            off = ptr
            continue
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    if not jumped:
        end = off
    return ".".join(labels).lower() + ".", end


def parse_response(msg):
    qid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", msg[:12])
    off = 12
    for _ in range(qd):
        _, off = read_name(msg, off)
        off += 4
    sections = []
    for count in (an, ns, ar):
        rrs = []
        for _ in range(count):
            name, off = read_name(msg, off)
            rtype, rclass, ttl, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
            off += 10
            rdata = msg[off:off + rdlen]
            if rtype == 1:
                val = socket.inet_ntoa(rdata)
            elif rtype == 33:
                pr, w, p = struct.unpack(">HHH", rdata[:6])
                t, _ = read_name(msg, off + 6)
                val = (pr, w, p, t)
            else:
                val = rdata
            rrs.append((name, rtype, val))
            off += rdlen
        sections.append(rrs)
    return qid, flags, sections


def ask(server, port, name, qtype, timeout=2.0):
    qid = random.randrange(65536)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(build_query(name, qtype, qid), (server, port))
        for _ in range(5):
            msg, _ = s.recvfrom(65535)
            if len(msg) >= 12 and struct.unpack(">H", msg[:2])[0] == qid:
                return parse_response(msg)
    finally:
        s.close()
    raise OSError("no matching response")


def cmd_check(a):
    """Verify A / SRV / NXDOMAIN answers for a few services. Prints what it saw."""
    problems = []
    picks = sorted({1, a.services, (a.services + 1) // 2})
    for i in picks:
        s = service_name(i)
        fq = "%s.%s" % (s, DOMAIN)
        want_addrs = sorted(addr((i - 1) * a.instances + (j - 1)) for j in range(1, a.instances + 1))
        want_targets = sorted("%s.%s.%s" % (instance_id(i, j), s, DOMAIN) for j in range(1, a.instances + 1))
        try:
            _, flags, (ans, auth, add) = ask(a.server, a.port, fq, "A")
            rc = RCODES.get(flags & 0xF, str(flags & 0xF))
            got = sorted(v for (n, t, v) in ans if t == 1 and n == fq)
            if rc != "NOERROR" or got != want_addrs:
                problems.append("%s A: rcode %s, answer %s, want %s" % (fq, rc, got, want_addrs))
            _, flags, (ans, auth, add) = ask(a.server, a.port, fq, "SRV")
            rc = RCODES.get(flags & 0xF, str(flags & 0xF))
            srv = sorted(v for (n, t, v) in ans if t == 33 and n == fq)
            targets = sorted(v[3] for v in srv)
            ports = {v[2] for v in srv}
            glue = sorted((n, v) for (n, t, v) in add if t == 1)
            want_glue = sorted(zip(want_targets, [addr((i - 1) * a.instances + int(t.split(".")[0].rsplit("-", 1)[1]) - 1)
                                                  for t in want_targets]))
            if rc != "NOERROR" or targets != want_targets or ports != {PORT}:
                problems.append("%s SRV: rcode %s, targets %s, ports %s, want %s port %d"
                                % (fq, rc, targets, sorted(ports), want_targets, PORT))
            if not set(want_glue) <= set(glue):
                problems.append("%s SRV: additional A %s, want at least %s" % (fq, glue, want_glue))
        except OSError as e:
            problems.append("%s: %s" % (fq, e))
    nx = "nx-check-%d.%s" % (random.randrange(10**6), DOMAIN)
    try:
        _, flags, _ = ask(a.server, a.port, nx, "A")
        rc = RCODES.get(flags & 0xF, str(flags & 0xF))
        if rc != "NXDOMAIN":
            problems.append("%s A: rcode %s, want NXDOMAIN" % (nx, rc))
    except OSError as e:
        problems.append("%s: %s" % (nx, e))
    if problems:
        for p in problems:
            print("CHECK FAILED: " + p)
        sys.exit(1)
    print("ok: A, SRV (+additional A) and NXDOMAIN answers as expected for services %s" % picks)


def cmd_ready(a):
    """Exit 0 as soon as the server answers an SOA query for the apex."""
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            ask(a.server, a.port, DOMAIN, "SOA", timeout=0.5)
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(1)


# ---------------------------------------------------------------- processes

def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    kids = children_map()
    out, todo = [], [pid]
    while todo and len(out) < 10000:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cmd_tree(a):
    print(" ".join(str(p) for p in tree(a.pid)))


def cmd_cpu(a):
    hz = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree(a.pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    print("%.2f" % (total / hz))


def cmd_mem(a):
    rss = pss = 0
    for p in tree(a.pid):
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            with open("/proc/%d/smaps_rollup" % p) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    print("%d %d" % (rss, pss))


def start_time(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        return st[st.rindex(")") + 2:].split()[19]  # field 22: starttime
    except (OSError, IndexError):
        return None


def cmd_stop(a):
    """Stop the given PIDs (processes this harness started) and their descendants.

    The whole tree is recorded first, with each process's start time; TERM goes
    to the roots, then after a bounded wait KILL goes to every recorded process
    that still exists with the same start time (so a reused PID is never hit).
    """
    recorded = {}
    for root in a.pids:
        for p in tree(root):
            t = start_time(p)
            if t is not None:
                recorded[p] = t

    def alive():
        out = []
        for p, t in recorded.items():
            if start_time(p) != t:
                continue
            try:
                with open("/proc/%d/stat" % p) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                out.append(p)
        return out

    for p in a.pids:
        if p in recorded:
            try:
                os.kill(p, 15)
            except OSError:
                pass
    deadline = time.monotonic() + a.timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in alive():
        print("stop: pid %d did not exit after SIGTERM, sending SIGKILL" % p)
        try:
            os.kill(p, 9)
        except OSError:
            pass


def cmd_http_ready(a):
    """Exit 0 as soon as anything answers HTTP on host:port (any status)."""
    host, port = a.http.rsplit(":", 1)
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=2)
            c.request("GET", "/")
            c.getresponse().read()
            c.close()
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
    sys.exit(1)


def cmd_metric(a):
    """Print the value of the sample named a.name in host:port's /metrics
    (Prometheus text), or 0 when there is none."""
    host, port = a.http.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.request("GET", "/metrics")
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    if r.status != 200:
        sys.exit(f"GET /metrics on {a.http}: HTTP {r.status}")
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == a.name:
            print(fields[1])
            return
    print(0)


def cmd_machine(a):
    """Print machine-wide busy and total CPU seconds since boot (from /proc/stat)."""
    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    total = sum(v[:8])  # guest time is already counted in user
    print("%.2f %.2f" % ((total - idle) / hz, total / hz))


def busy_fraction(interval):
    def sample():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v[:8]) - v[3] - v[4], sum(v[:8])
    b0, t0 = sample()
    time.sleep(interval)
    b1, t1 = sample()
    return (b1 - b0) / float(t1 - t0) if t1 > t0 else 0.0


def cmd_quiet(a):
    """Wait (at most --max-wait s) until the machine's CPU is below --pct % busy for 1 s."""
    deadline = time.monotonic() + a.max_wait
    waited = False
    while True:
        b = busy_fraction(1.0) * 100
        if b <= a.pct:
            if waited:
                print("machine quiet again (%.0f%% busy)" % b)
            return
        if time.monotonic() >= deadline:
            if a.max_wait > 0:
                print("WARNING: machine still %.0f%% busy after waiting %.0f s; measuring anyway" % (b, a.max_wait))
            return
        if not waited:
            print("machine %.0f%% busy; waiting up to %.0f s for it to calm down" % (b, a.max_wait))
        waited = True


def cmd_timed(a):
    """Run a command with a time limit; write its CPU seconds (user+sys) to --cpu-out."""
    import subprocess
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    import signal
    p = subprocess.Popen(cmd)

    def forward(signum, frame):
        p.send_signal(signum)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    deadline = time.monotonic() + a.timeout
    status = None
    while status is None:
        pid, st, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            status = os.waitstatus_to_exitcode(st)
            break
        if time.monotonic() > deadline:
            p.kill()
            pid, st, ru = os.wait4(p.pid, 0)
            status = 124
            break
        time.sleep(0.05)
    with open(a.cpu_out, "w") as f:
        f.write("%.2f\n" % (ru.ru_utime + ru.ru_stime))
    sys.exit(status if status >= 0 else 128 - status)


def cmd_ports(a):
    socks, ports = [], []
    for _ in range(a.count * 20):
        if len(ports) == a.count:
            break
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        p = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", p))
        except OSError:
            t.close()
            u.close()
            continue
        socks += [t, u]
        ports.append(p)
    for s in socks:
        s.close()
    if len(ports) != a.count:
        sys.exit("could not find %d free ports" % a.count)
    print(" ".join(map(str, ports)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("zone"); p.add_argument("--services", type=int, required=True)
    p.add_argument("--instances", type=int, required=True); p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_zone)
    p = sub.add_parser("queries"); p.add_argument("--services", type=int, required=True)
    p.add_argument("--nx-percent", type=float, default=3.0); p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True); p.set_defaults(fn=cmd_queries)
    p = sub.add_parser("churn"); p.add_argument("--services", type=int, required=True)
    p.add_argument("--http", required=True); p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, required=True); p.add_argument("--threads", type=int, default=8)
    p.add_argument("--depth", type=int, default=8); p.add_argument("--out", default="")
    p.set_defaults(fn=cmd_churn)
    p = sub.add_parser("register"); p.add_argument("--services", type=int, required=True)
    p.add_argument("--instances", type=int, required=True); p.add_argument("--http", required=True)
    p.add_argument("--parallel", type=int, default=8); p.add_argument("--timeout", type=int, default=900)
    p.set_defaults(fn=cmd_register)
    for name, fn in (("check", cmd_check), ("ready", cmd_ready)):
        p = sub.add_parser(name); p.add_argument("--server", default="127.0.0.1")
        p.add_argument("--port", type=int, required=True); p.add_argument("--services", type=int, default=1)
        p.add_argument("--instances", type=int, default=1); p.add_argument("--timeout", type=float, default=60)
        p.set_defaults(fn=fn)
    for name, fn in (("cpu", cmd_cpu), ("mem", cmd_mem), ("tree", cmd_tree)):
        p = sub.add_parser(name); p.add_argument("pid", type=int); p.set_defaults(fn=fn)
    p = sub.add_parser("stop"); p.add_argument("pids", type=int, nargs="+")
    p.add_argument("--timeout", type=float, default=10); p.set_defaults(fn=cmd_stop)
    p = sub.add_parser("http-ready"); p.add_argument("--http", required=True)
    p.add_argument("--timeout", type=float, default=60); p.set_defaults(fn=cmd_http_ready)
    p = sub.add_parser("metric"); p.add_argument("--http", required=True); p.add_argument("name")
    p.set_defaults(fn=cmd_metric)
    p = sub.add_parser("machine"); p.set_defaults(fn=cmd_machine)
    p = sub.add_parser("quiet"); p.add_argument("--max-wait", type=float, default=0)
    p.add_argument("--pct", type=float, default=25); p.set_defaults(fn=cmd_quiet)
    p = sub.add_parser("timed"); p.add_argument("--timeout", type=float, required=True)
    p.add_argument("--cpu-out", required=True); p.add_argument("cmd", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_timed)
    p = sub.add_parser("ports"); p.add_argument("count", type=int); p.set_defaults(fn=cmd_ports)
    a = ap.parse_args()
    rc = a.fn(a)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
