#!/usr/bin/env bash
# Health-check scale benchmark (issue 3): N instances, each with an HTTP
# check every INTERVAL against a local nginx, and how well roster keeps up.
#
#   bench/health/run.sh                 # 10,000 instances, 1s checks, 20 s measured
#   INSTANCES=2000 MEASURE=10 bench/health/run.sh
#   ROSTER_BIN=/tmp/other-roster bench/health/run.sh   # another build, not built here
#
# Prints: checks scheduled, probes per second achieved vs scheduled, probe
# start lag behind schedule (p50/p99/max, from roster's /v1/metrics
# histogram), and CPU used by roster and by nginx during the window.
set -euo pipefail
cd "$(dirname "$0")/../.."

INSTANCES=${INSTANCES:-10000}
INTERVAL=${INTERVAL:-1s}
WARMUP=${WARMUP:-10}
MEASURE=${MEASURE:-20}
NGINX_PORT=${NGINX_PORT:-28080}
HTTP_PORT=${HTTP_PORT:-28500}
DNS_PORT=${DNS_PORT:-28600}

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
# ROSTER_BIN: another build to measure (as the other bench scripts take);
# by default this checkout's, built here.
if [ -z "${ROSTER_BIN:-}" ]; then
    cargo build --release --quiet
    ROSTER_BIN=target/release/roster
fi
[ -x "$ROSTER_BIN" ] || { echo "no roster binary at $ROSTER_BIN" >&2; exit 1; }
ROSTER_BIN=$(realpath "$ROSTER_BIN")

work=$(mktemp -d /tmp/roster-health-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# nginx: a 200 for every path, keep-alive, one worker per core.
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / { return 200 "ok\n"; }
    }
}
CONF
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)
nginx_pid=$!

mkdir -p "$work/zones"
# roster runs in its work directory, so a config.toml where this is run
# from (the repository's) is not read.
(cd "$work" && exec "$ROSTER_BIN" serve --dns 127.0.0.1:$DNS_PORT --http 127.0.0.1:$HTTP_PORT \
    --data-dir "$work/data" --zones "$work/zones") 2>"$work/roster.log" &
pids+=($!)
roster_pid=$!

for _ in $(seq 1 100); do
    curl -sf "127.0.0.1:$HTTP_PORT/v1/services" >/dev/null && break
    sleep 0.1
done

# Register every instance in one import (one durable commit).
python3 - "$INSTANCES" "$INTERVAL" "$NGINX_PORT" >"$work/import.json" <<'PY'
import json, sys
n, interval, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
instances = []
for i in range(n):
    svc = f"svc-{i // 5:05d}"
    instances.append({
        "service": svc, "id": f"{svc}-{i % 5}",
        "address": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", "port": 8080,
        "weight": 1, "priority": 0, "tags": [], "meta": {},
        "checks": [{
            "id": "http", "name": "http", "notes": "",
            "kind": {"http": {"url": f"http://127.0.0.1:{port}/health/{i}", "method": "GET",
                               "headers": [], "interval": interval, "timeout": "500ms"}},
            "success_before_passing": 1, "failures_before_critical": 1,
            "deregister_critical_after": None, "initial_status": "critical"}],
    })
print(json.dumps({"version": 1, "index": 0, "instances": instances}))
PY
curl -sf -X PUT --data-binary @"$work/import.json" "127.0.0.1:$HTTP_PORT/v1/import" >/dev/null

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
nginx_ticks() { # master and workers
    local total=0
    for p in $nginx_pid $(pgrep -P "$nginx_pid"); do total=$((total + $(cpu_ticks "$p"))); done
    echo $total
}
metric() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

sleep "$WARMUP"
m0=$(curl -sf "127.0.0.1:$HTTP_PORT/v1/metrics")
r0=$(cpu_ticks $roster_pid); n0=$(nginx_ticks); t0=$(date +%s.%N)
sleep "$MEASURE"
m1=$(curl -sf "127.0.0.1:$HTTP_PORT/v1/metrics")
r1=$(cpu_ticks $roster_pid); n1=$(nginx_ticks); t1=$(date +%s.%N)
in_dns=$(curl -sf "127.0.0.1:$HTTP_PORT/v1/services" | python3 -c "import json,sys; print(sum(s['in_dns'] for s in json.load(sys.stdin)))")

python3 - "$m0" "$m1" "$r0" "$r1" "$n0" "$n1" "$t0" "$t1" "$INTERVAL" "$in_dns" "$INSTANCES" <<'PY'
import json, os, sys
m0, m1 = json.loads(sys.argv[1]), json.loads(sys.argv[2])
r0, r1, n0, n1 = map(int, sys.argv[3:7])
t0, t1 = float(sys.argv[7]), float(sys.argv[8])
interval = sys.argv[9]
secs = {"ms": 0.001, "s": 1.0, "m": 60.0}
unit = "ms" if interval.endswith("ms") else interval[-1]
interval_s = float(interval[: -len(unit)]) * secs[unit]
elapsed = t1 - t0
hz = os.sysconf("SC_CLK_TCK")
def window_quantile(q):
    # Diff the two histograms: the lag distribution of the measured window
    # alone, without the burst of first probes at registration.
    counts = [b - a for a, b in zip(m0["probe_lag_counts"], m1["probe_lag_counts"])]
    total = sum(counts)
    wanted, seen = max(1, int(q * total + 0.999999)), 0
    for i, c in enumerate(counts):
        seen += c
        if seen >= wanted:
            return 2 ** ((i + 1) / 4) / 1000.0
    return float("nan")
scheduled = m1["checks_scheduled"] / interval_s
achieved = (m1["probes_completed"] - m0["probes_completed"]) / elapsed
print(f"| instances | checks scheduled/s | probes/s achieved | achieved/scheduled | lag p50 | lag p99 | skipped | roster CPU | nginx CPU | in DNS |")
print(f"|---|---|---|---|---|---|---|---|---|---|")
print(f"| {sys.argv[11]} | {scheduled:.0f} | {achieved:.0f} | {achieved/scheduled:.3f} | "
      f"≤{window_quantile(0.50):.2f} ms | ≤{window_quantile(0.99):.2f} ms | "
      f"{m1['probes_skipped'] - m0['probes_skipped']} | {(r1 - r0) / hz / elapsed * 100:.0f}% | "
      f"{(n1 - n0) / hz / elapsed * 100:.0f}% | {sys.argv[10]} |")
print()
print("(CPU: % of one core over the measured window; lag: how late probes started behind")
print(" their schedule during the measured window, as histogram bucket upper bounds)")
PY
