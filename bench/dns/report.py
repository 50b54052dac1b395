#!/usr/bin/env python3
"""Result handling for bench/dns/run.sh (python3 standard library only).

  report.py run OUT.txt RAW.txt JSON [key=value ...]
      Split one dnsperf stdout (OUT.txt, possibly with -v per-query lines) into
      its statistics block (RAW.txt) and a summary (JSON) with QPS, latency
      percentiles computed from the per-query lines and lost queries, plus the
      given numbers (cpu= server CPU s, dnsperf_cpu=, machine_busy=,
      machine_total= CPU s over the run). OUT.txt is deleted afterwards.

  report.py table RESULTS_DIR
      Print the markdown tables for a results directory (meta.env, runs/*.json,
      mem-*.txt, check-*.txt).
"""

import json
import os
import re
import statistics
import sys


def pct(sorted_vals, p):
    if not sorted_vals:
        return None
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def cmd_run(out, raw, js, *extra):
    stats_lines, lats = [], []
    rcodes_v = {}
    with open(out, errors="replace") as f:
        for line in f:
            if line.startswith("> "):
                parts = line.split()
                # "> NOERROR name TYPE 0.000123" ; timeouts are reported as "> T name TYPE"?
                try:
                    lats.append(float(parts[-1]))
                except ValueError:
                    pass
                rcodes_v[parts[1]] = rcodes_v.get(parts[1], 0) + 1
            else:
                stats_lines.append(line)
    with open(raw, "w") as f:
        f.writelines(stats_lines)
    text = "".join(stats_lines)

    def num(pattern, cast=float):
        m = re.search(pattern, text)
        return cast(m.group(1)) if m else None

    r = {
        "sent": num(r"Queries sent:\s+(\d+)", int),
        "completed": num(r"Queries completed:\s+(\d+)", int),
        "lost": num(r"Queries lost:\s+(\d+)", int),
        "qps": num(r"Queries per second:\s+([\d.]+)"),
        "run_time": num(r"Run time \(s\):\s+([\d.]+)"),
        "avg_lat": num(r"Average Latency \(s\):\s+([\d.]+)"),
        "min_lat": num(r"Average Latency \(s\):\s+[\d.]+ \(min ([\d.]+)"),
        "max_lat": num(r"Average Latency \(s\):.*max ([\d.]+)\)"),
        "stddev_lat": num(r"Latency StdDev \(s\):\s+([\d.]+)"),
        "resp_size": num(r"Average packet size:.*response (\d+)", int),
        "rcodes": (re.search(r"Response codes:\s+(.*)", text) or [None, ""])[1].strip(),
    }
    m = re.search(r"SERVFAIL (\d+)", r["rcodes"] or "")
    r["servfail"] = int(m.group(1)) if m else 0
    for kv in extra:
        k, v = kv.split("=", 1)
        r[k] = float(v) if v else None
    if r.get("machine_busy") is not None and r.get("cpu") is not None and r.get("dnsperf_cpu") is not None:
        # CPU used by everything else on the machine during the run (other
        # users' builds, this harness's own idle servers, the kernel's
        # softirq time not charged to either side)
        r["other_cpu"] = max(0.0, r["machine_busy"] - r["cpu"] - r["dnsperf_cpu"])
    if lats:
        lats.sort()
        r.update({"n_lat": len(lats), "p50": pct(lats, 50), "p99": pct(lats, 99), "p999": pct(lats, 99.9)})
    with open(js, "w") as f:
        json.dump(r, f, indent=1)
    os.remove(out)
    lat = " p50 %.3f ms p99 %.3f ms" % (r["p50"] * 1e3, r["p99"] * 1e3) if lats else ""
    print("    %s qps, avg %s ms%s, lost %s, server cpu %s s, dnsperf cpu %s s, other cpu %s s, %s"
          % ("%.0f" % r["qps"] if r["qps"] is not None else "?",
             "%.3f" % (r["avg_lat"] * 1e3) if r["avg_lat"] is not None else "?",
             lat, r["lost"], r.get("cpu"), r.get("dnsperf_cpu"),
             "%.2f" % r["other_cpu"] if r.get("other_cpu") is not None else "?", r["rcodes"]))


def read_meta(d):
    meta = {}
    with open(os.path.join(d, "meta.env")) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    return meta


def ms(x):
    return "–" if x is None else ("%.3f" % (x * 1e3))


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def cmd_table(d):
    meta = read_meta(d)
    servers = meta["SERVERS"].split()
    runs = {s: [] for s in servers}
    rundir = os.path.join(d, "runs")
    for name in sorted(os.listdir(rundir)) if os.path.isdir(rundir) else []:
        m = re.match(r"r(\d+)-(\w+)\.json$", name)
        if m and m.group(2) in runs:
            with open(os.path.join(rundir, name)) as f:
                runs[m.group(2)].append(json.load(f))
    mem = {}
    for s in servers:
        p = os.path.join(d, "mem-%s.txt" % s)
        if os.path.exists(p):
            with open(p) as f:
                mem[s] = dict(line.split("=", 1) for line in f.read().split())
    checks = {}
    for s in servers:
        p = os.path.join(d, "check-%s.txt" % s)
        if os.path.exists(p):
            with open(p) as f:
                checks[s] = "ok" if f.read().startswith("ok") else "FAILED"

    n_inst = int(meta["SERVICES"]) * int(meta["INSTANCES"])
    out = []
    out.append("### DNS, %s × %s instances, %s, %s s × %s rounds, %s clients"
               % (meta["SERVICES"], meta["INSTANCES"], meta["MODE"].upper(), meta["DURATION"],
                  meta["ROUNDS"], meta["CLIENTS"]))
    out.append("")
    out.append("- command: `%s`" % meta["COMMAND"])
    out.append("- date: %s; `nproc`: %s; CPU: %s; load average before/after: %s / %s; CPU busy in the 2 s before the start: %s%%"
               % (meta["DATE"], meta["NPROC"], meta["CPU_MODEL"], meta["LOAD_BEFORE"], meta.get("LOAD_AFTER", "?"),
                  meta.get("BUSY_BEFORE", "?")))
    out.append("- versions: %s" % meta["VERSIONS"])
    out.append("- dnsperf: `%s`; query file: %s queries (A/SRV per service, %s%% NXDOMAIN), server workers: %s"
               % (meta["DNSPERF_ARGS"], meta["NQUERIES"], meta["NX_PERCENT"], meta["WORKERS"]))
    reg = os.path.join(d, "register.txt")
    if os.path.exists(reg):
        with open(reg) as f:
            out.append("- roster registration over HTTP: " + "; ".join(l.strip() for l in f if l.strip()))
    out.append("")
    out.append("| server | QPS (median) | QPS min–max | avg latency ms | p50 ms | p99 ms | max ms | lost / sent | avg response bytes | server CPU s per run | CPU µs / query | answers check | roster QPS ÷ this |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    qmed = {s: med([r["qps"] for r in runs[s]]) for s in servers}
    for s in servers:
        rs = runs[s]
        if not rs:
            out.append("| %s | no runs | | | | | | | | | | %s | |" % (s, checks.get(s, "–")))
            continue
        qs = [r["qps"] for r in rs if r["qps"] is not None]
        lost = sum(r["lost"] or 0 for r in rs)
        sent = sum(r["sent"] or 0 for r in rs)
        cpu = med([r["cpu"] for r in rs])
        per_q = med([r["cpu"] / r["completed"] * 1e6 for r in rs if r["cpu"] is not None and r["completed"]])
        ratio = "–"
        if "roster" in qmed and qmed["roster"] and s != "roster" and qmed[s]:
            ratio = "%.2f" % (qmed["roster"] / qmed[s])
        out.append("| %s | %s | %s–%s | %s | %s | %s | %s | %d / %d | %s | %s | %s | %s | %s |" % (
            s, "{:,.0f}".format(qmed[s]) if qmed[s] else "–",
            "{:,.0f}".format(min(qs)) if qs else "–", "{:,.0f}".format(max(qs)) if qs else "–",
            ms(med([r["avg_lat"] for r in rs])), ms(med([r.get("p50") for r in rs])),
            ms(med([r.get("p99") for r in rs])), ms(max((r["max_lat"] or 0) for r in rs)),
            lost, sent, "%.0f" % med([r["resp_size"] for r in rs]) if med([r["resp_size"] for r in rs]) else "–", "%.2f" % cpu if cpu is not None else "–",
            "%.1f" % per_q if per_q is not None else "–", checks.get(s, "–"), ratio))
    out.append("")
    out.append("Response codes (last round): " + "; ".join(
        "%s %s" % (s, runs[s][-1]["rcodes"]) for s in servers if runs[s]))
    out.append("")
    nr = max(len(rs) for rs in runs.values()) if runs else 0
    out.append("Per round: QPS (server CPU s / dnsperf CPU s / other CPU s on the machine during the run)")
    out.append("")
    out.append("| server | " + " | ".join("round %d" % (i + 1) for i in range(nr)) + " |")
    out.append("| --- |" + " ---: |" * nr)
    for s in servers:
        cells = []
        for r in runs[s]:
            f = lambda x: "%.1f" % x if x is not None else "?"
            cells.append("{:,.0f} ({} / {} / {})".format(r["qps"] or 0, f(r.get("cpu")), f(r.get("dnsperf_cpu")),
                                                        f(r.get("other_cpu"))))
        out.append("| %s | %s |" % (s, " | ".join(cells)))
    out.append("")
    churned = [(i, r) for i, r in enumerate(runs.get("roster_churn", [])) if r.get("churn_rate") is not None]
    if churned:
        idle = runs.get("roster", [])
        if meta.get("CHURN_READS") == "1":
            load = ("Churn (reads): roster under %s GET /v1/services/<service>/s (no writes: the churn client's "
                    "--reads, same schedule; the PUT ok column counts the GETs)")
        elif meta.get("CHURN_REWRITES") == "1":
            load = ("Churn (rewrites): roster under %s PUT/s that re-register an instance as it was (the churn "
                    "client's --rewrites: through the writer, no change, no commit)")
        else:
            load = ("Churn: roster under %s registrations+deregistrations/s (together; half PUT, half DELETE in "
                    "steady state, on extra instances of the queried services)")
        out.append((load + " during its dnsperf run, right after an idle run (%s keep-alive HTTP connections, "
                    "Rust client). SERVFAIL and lost are dnsperf's counts.")
                   % (meta.get("CHURN", "?"), meta.get("CHURN_THREADS", "?")))
        out.append("")
        out.append("| round | roster idle QPS | roster churn QPS | churn ÷ idle | churn ops/s achieved | PUT ok | DELETE ok | failed | HTTP p50 / p99 / max ms | commits (writes per commit) | churn client CPU s | SERVFAIL (idle / churn) | lost (idle / churn) |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        ratios = []
        for i, r in churned:
            base = idle[i] if i < len(idle) else None
            ratio = (r["qps"] / base["qps"]) if base and base.get("qps") and r.get("qps") else None
            if ratio is not None:
                ratios.append(ratio)
            commits = r.get("churn_commits")
            writes = r["churn_put"] + r["churn_delete"]
            out.append("| %d | %s | %s | %s | %.0f | %d | %d | %d | %.1f / %.1f / %.1f | %s | %.2f | %s / %d | %s / %d |" % (
                i + 1, "{:,.0f}".format(base["qps"]) if base and base.get("qps") else "–",
                "{:,.0f}".format(r["qps"]) if r.get("qps") else "–",
                "%.3f" % ratio if ratio is not None else "–",
                r["churn_rate"], r["churn_put"], r["churn_delete"], r["churn_failed"],
                r["churn_p50_ms"], r["churn_p99_ms"], r["churn_max_ms"],
                "%d (%.1f)" % (commits, writes / commits) if commits else "–",
                r["churn_cpu"],
                base.get("servfail", "–") if base else "–", r.get("servfail", 0),
                base.get("lost", "–") if base else "–", r.get("lost") or 0))
        out.append("")
        if ratios:
            out.append("Churn QPS ÷ idle QPS, median over rounds: %.3f (min %.3f, max %.3f)."
                       % (med(ratios), min(ratios), max(ratios)))
            out.append("")
    out.append("| server | RSS after loading MiB | PSS MiB | RSS empty MiB | bytes per instance |")
    out.append("| --- | ---: | ---: | ---: | ---: |")
    for s in servers:
        m = mem.get(s)
        if not m:
            continue
        rss, pss = int(m["rss_kib"]), int(m["pss_kib"])
        empty = m.get("rss_empty_kib")
        bpi = "–"
        if empty is not None:
            bpi = "%.0f (growth) / %.0f (total)" % ((rss - int(empty)) * 1024.0 / n_inst, rss * 1024.0 / n_inst)
        out.append("| %s | %.1f | %.1f | %s | %s |" % (s, rss / 1024.0, pss / 1024.0,
                                                     "%.1f" % (int(empty) / 1024.0) if empty else "–", bpi))
    out.append("")
    out.append("QPS: median over rounds (min–max). Latencies: median over rounds of each run's average / p50 / p99 "
               "(p50/p99 computed from dnsperf -v per-query lines%s); max is the worst single query. "
               "CPU: utime+stime of the server's whole process tree during the run. "
               "RSS/PSS: summed over the process tree after loading (PSS splits pages shared between NSD's forked processes)."
               % ("" if meta.get("LATENCY") == "1" else "; disabled in this run"))
    print("\n".join(out))


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "run":
        cmd_run(*sys.argv[2:])
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        cmd_table(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
