#!/usr/bin/env bash
# roster's CPU per answered query, split into user and system time, for one
# table size: a quicker, narrower probe than run.sh, for "what did this change
# cost per query" (user time is roster's own code; system time is the kernel's
# UDP path, the same for every table size).
#
#   bench/dns/cpu_per_query.sh BINARY SERVICES [SECONDS] [perf]
#
# Starts BINARY on loopback with an empty data directory, imports SERVICES x 5
# instances through PUT /v1/import (named as gen.py names them), runs dnsperf
# (-c 10 -T 2 -q 100) over gen.py's query file for SECONDS (default 5), and
# prints QPS, lost queries and roster's user and system microseconds per
# answered query (from /proc/PID/stat). With "perf", also records a profile of
# roster for 3 s of the run into /tmp/roster-cpq-SERVICES.perf.data. Needs
# dnsperf and curl; stops everything it started.
set -euo pipefail
BIN=$(realpath "$1"); N=$2; SECS=${3:-5}; PERF=${4:-}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d); mkdir "$W/z"
PID=""; PP=""
cleanup() { [ -n "$PP" ] && kill "$PP" 2>/dev/null; [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
read -r DP HP <<<"$(python3 "$HERE/gen.py" ports 2)"
# roster runs in its work directory, so a config.toml where this is run
# from (the repository's) is not read.
(cd "$W" && exec "$BIN" serve --dns 127.0.0.1:"$DP" --http 127.0.0.1:"$HP" --data-dir "$W/data" --zones "$W/z") 2>"$W/log" &
PID=$!
for _ in $(seq 100); do curl -sf 127.0.0.1:"$HP"/v1/services >/dev/null && break; sleep 0.1; done
python3 - "$N" "$HERE" >"$W/import.json" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[2])
import gen
n = int(sys.argv[1])
inst = [{"service": gen.service_name(i), "id": gen.instance_id(i, j), "address": gen.addr(k),
         "port": gen.PORT, "weight": 1, "priority": 0} for i, j, k in gen.instances(n, 5)]
print(json.dumps({"version": 1, "index": 0, "instances": inst}))
PY
curl -sf -X PUT --data-binary @"$W/import.json" 127.0.0.1:"$HP"/v1/import >/dev/null
python3 "$HERE/gen.py" queries --services "$N" --out "$W/queries.txt" >/dev/null
read -r u0 s0 < <(awk '{print $14, $15}' /proc/$PID/stat)
if [ -n "$PERF" ]; then
  (sleep 1; perf record -q -g -o "/tmp/roster-cpq-$N.perf.data" -p "$PID" -- sleep 3 >/dev/null 2>&1) &
  PP=$!
fi
dnsperf -s 127.0.0.1 -p "$DP" -d "$W/queries.txt" -l "$SECS" -c 10 -T 2 -q 100 >"$W/dnsperf.txt" 2>&1
read -r u1 s1 < <(awk '{print $14, $15}' /proc/$PID/stat)
if [ -n "$PP" ]; then wait "$PP" || true; PP=""; fi
python3 - "$W/dnsperf.txt" "$N" "$u0" "$s0" "$u1" "$s1" "$(getconf CLK_TCK)" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
n, u0, s0, u1, s1, hz = sys.argv[2], *map(int, sys.argv[3:])
done = int(re.search(r"Queries completed:\s+(\d+)", text).group(1))
lost = int(re.search(r"Queries lost:\s+(\d+)", text).group(1))
qps = float(re.search(r"Queries per second:\s+([\d.]+)", text).group(1))
us = lambda ticks: ticks * 1e6 / hz / max(done, 1)
print("services=%s qps=%.0f lost=%d user_us_per_query=%.2f sys_us_per_query=%.2f"
      % (n, qps, lost, us(u1 - u0), us(s1 - s0)))
PY
