#!/usr/bin/env python3
"""What churn costs the machine, without DNS load: roster's CPU and context
switches per operation under `roster-store-loadgen churn`, writes against
reads, in alternating windows.

    bench/dns/churn_cost.py [--rate 1000] [--windows 4] [--seconds 10]
                            [--services 1000] [--instances 5]

`bench/dns/run.sh --churn` answers "how much DNS does churn cost", but on
this 2-core machine its ratio swings by 0.05-0.09 a round. This answers the
narrower question behind it with less noise: with DNS and dnsperf using the
whole machine, every CPU second the writes take is one DNS does not get, so
the writes' machine cost bounds the ratio. It starts roster (ROSTER_BIN,
default target/release/roster) on free loopback ports with a data dir of its
own, registers SERVICES x INSTANCES instances (gen.py register), then runs
WINDOWS pairs of windows of SECONDS each: RATE writes/s (PUT and DELETE of
extra instances, as run.sh --churn), then RATE GETs/s (--reads). For each
window it prints roster's CPU (utime+stime of all its threads) and context
switches (voluntary + involuntary, summed over its threads), each per
operation, the churn client's own CPU. Context switches are a count, so they do not move with the
machine's speed the way CPU time does.

The churn client is bench/store/loadgen (built here with cargo, in its own
target dir). Everything runs on 127.0.0.1; roster is stopped by its PID at
the end, also on error. Linux only (/proc).
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
LOADGEN_DIR = os.path.join(REPO, "bench", "store", "loadgen")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_cpu(path):
    """The name and utime + stime in seconds of a /proc/.../stat file (a
    process's, all threads included, or one thread's)."""
    with open(path) as f:
        head, rest = f.read().rsplit(")", 1)
    fields = rest.split()
    return head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / CLK_TCK


def process_cpu(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    return stat_cpu(f"/proc/{pid}/stat")[1]


def thread_switches(pid):
    """Each live thread's voluntary + involuntary context switches, by TID."""
    counts = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                counts[tid] = sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except FileNotFoundError:
            pass  # a thread that exited meanwhile
    return counts


def thread_cpu(pid):
    """Each live thread's utime + stime in seconds, by TID, with its name."""
    cpu = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            cpu[tid] = stat_cpu(f"/proc/{pid}/task/{tid}/stat")
        except FileNotFoundError:
            pass  # a thread that exited meanwhile
    return cpu


def cpu_by_name(before, after):
    """CPU seconds from `before` to `after`, summed by thread name."""
    totals = {}
    for tid, (name, seconds) in after.items():
        totals[name] = totals.get(name, 0.0) + seconds - before.get(tid, (name, 0.0))[1]
    return totals


def switches_between(before, after):
    """Context switches from `before` to `after`: of the threads alive at the
    end (a blocking-pool thread idle for 10 s exits, and its count with it;
    a thread born meanwhile counts from zero)."""
    return sum(count - before.get(tid, 0) for tid, count in after.items())


def serving_http_port(roster, log_path, deadline_s=60):
    """The HTTP port roster logs once it serves ("roster is serving dns=...
    http=127.0.0.1:PORT"). roster picks its own free ports (port 0), so no
    other process can take one between a check and roster's bind."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if roster.poll() is not None:
            with open(log_path, errors="replace") as log:
                tail = "".join(log.readlines()[-5:])
            sys.exit(f"roster exited ({roster.returncode}):\n{tail}")
        with open(log_path, errors="replace") as log:
            for line in log:
                match = re.search(r"roster is serving .*http=127\.0\.0\.1:(\d+)", line)
                if match:
                    return int(match.group(1))
        time.sleep(0.2)
    sys.exit(f"roster did not serve within {deadline_s} s")


def build_loadgen():
    subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--manifest-path", os.path.join(LOADGEN_DIR, "Cargo.toml")],
        env=dict(os.environ, CARGO_TARGET_DIR=os.path.join(LOADGEN_DIR, "target")),
        check=True,
        timeout=1800,
    )
    return os.path.join(LOADGEN_DIR, "target", "release", "roster-store-loadgen")


def window(args, loadgen, roster_pid, http_port, reads, work):
    out = os.path.join(work, "churn.json")
    cpu0, sw0, th0 = process_cpu(roster_pid), thread_switches(roster_pid), thread_cpu(roster_pid)
    command = [loadgen, "churn", "--http", f"127.0.0.1:{http_port}", "--services", str(args.services),
               "--rate", str(args.rate), "--duration", str(args.seconds), "--out", out]
    if reads:
        command.append("--reads")
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=args.seconds + 120)
    cpu1, sw1, th1 = process_cpu(roster_pid), thread_switches(roster_pid), thread_cpu(roster_pid)
    with open(out) as f:
        client = json.load(f)
    ops = client["churn_put"] + client["churn_delete"]
    if ops == 0 or client["churn_failed"]:
        sys.exit(f"the churn client failed: {client}")
    return {
        "kind": "reads" if reads else "writes",
        "ops": ops,
        "roster_cpu_us_per_op": (cpu1 - cpu0) / ops * 1e6,
        "roster_switches_per_op": switches_between(sw0, sw1) / ops,
        "client_cpu_us_per_op": client["churn_cpu"] / ops * 1e6,
        "threads": {name: seconds / ops * 1e6 for name, seconds in cpu_by_name(th0, th1).items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument("--by-thread", action="store_true",
                        help="also print roster's CPU µs per operation by thread name")
    args = parser.parse_args()
    if not (1 <= args.windows <= 50 and 1 <= args.seconds <= 120 and 1 <= args.rate <= 100_000):
        sys.exit("--windows 1-50, --seconds 1-120, --rate 1-100000")

    roster_bin = os.environ.get("ROSTER_BIN", os.path.join(REPO, "target", "release", "roster"))
    if not os.access(roster_bin, os.X_OK):
        sys.exit(f"no roster binary at {roster_bin} (cargo build --release, or set ROSTER_BIN)")
    loadgen = build_loadgen()
    work = tempfile.mkdtemp(prefix="roster-churn-cost-")
    os.makedirs(os.path.join(work, "zones"))
    log_path = os.path.join(work, "roster.log")
    with open(log_path, "w") as log:
        roster = subprocess.Popen(
            [roster_bin, "serve", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0",
             "--zones", os.path.join(work, "zones"), "--data-dir", os.path.join(work, "data")],
            # In its work directory: a config.toml where this is run from
            # (the repository's) is not read.
            cwd=work, stdout=log, stderr=subprocess.STDOUT)
    try:
        http_port = serving_http_port(roster, log_path)
        subprocess.run([sys.executable, os.path.join(HERE, "gen.py"), "register", "--services", str(args.services),
                        "--instances", str(args.instances), "--http", f"127.0.0.1:{http_port}",
                        "--parallel", "8", "--timeout", "600"], check=True, stdout=subprocess.DEVNULL)
        print(f"# roster {roster_bin}, {args.services} x {args.instances} instances, {args.rate} ops/s, "
              f"{args.windows} x 2 windows of {args.seconds} s, nproc {os.cpu_count()}, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        print("| window | kind | ops | roster CPU µs/op | roster switches/op | client CPU µs/op |")
        print("| ---: | --- | ---: | ---: | ---: | ---: |")
        results = []
        for n in range(args.windows):
            for reads in (False, True):
                time.sleep(2)  # let the previous window's stragglers finish
                r = window(args, loadgen, roster.pid, http_port, reads, work)
                results.append(r)
                print(f"| {n + 1} | {r['kind']} | {r['ops']} | {r['roster_cpu_us_per_op']:.0f} | "
                      f"{r['roster_switches_per_op']:.2f} | {r['client_cpu_us_per_op']:.0f} |", flush=True)
                if args.by_thread:
                    print("|  | " + ", ".join(f"{name} {us:.0f}" for name, us in sorted(r["threads"].items())
                                           if us >= 0.5) + " |  |  |  |", flush=True)
        print()
        print("Medians over windows:")
        for kind in ("writes", "reads"):
            rs = [r for r in results if r["kind"] == kind]
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k.endswith("_per_op")}
            print(f"- {kind}: roster {med['roster_cpu_us_per_op']:.0f} µs and "
                  f"{med['roster_switches_per_op']:.2f} context switches an operation; client "
                  f"{med['client_cpu_us_per_op']:.0f} µs")
    finally:
        roster.send_signal(signal.SIGTERM)
        try:
            roster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            roster.kill()
            roster.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
