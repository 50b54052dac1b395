#!/usr/bin/env bash
# Blocking-query benchmark: many Consul-style watchers on roster while
# registrations change random services, all on 127.0.0.1.
#
#   bench/blocking/run.sh [options]      (every option also has an env variable)
#
#   -n, --services N    services, one instance each              SERVICES (1000)
#   -w, --watchers W    watchers (watcher i on service i mod N)   WATCHERS (10000)
#   -r, --rate R        registrations+deregistrations per second  RATE (1000)
#   -d, --duration S    measured seconds                          DURATION (20)
#       --wait D        each blocking query's wait                WAIT (10s)
#       --no-build      don't run cargo build --release           SKIP_BUILD (0)
#   -o, --results DIR   (default /tmp/roster-bench-blocking-DATE) RESULTS_DIR
#
# Other env: ROSTER_BIN (default target/release/roster): run it once per
# roster build to compare them in one sitting.
#
# What it measures: with W watchers spread over N services and R changes a
# second to random services, how many answers roster sends a second, how
# many per change (ideally W/N: only the watchers of the changed service),
# and roster's CPU for all of it. The watchers are
# `roster-store-loadgen watch` (GET /v1/health/service/<svc>?index=&wait=,
# asking again with each answer's X-Consul-Index, as Consul clients do; it
# also counts any index that goes backwards); the changes are
# `roster-store-loadgen churn` (bench/store/loadgen, built here). roster
# keeps nothing on disk here (`--data-dir ""`): the bench is about the
# wake-ups, not the commits. Every process it starts is stopped by PID.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
GEN="$REPO/bench/dns/gen.py"
ORIG_ARGS=("$@")

SERVICES="${SERVICES:-1000}"
WATCHERS="${WATCHERS:-10000}"
RATE="${RATE:-1000}"
DURATION="${DURATION:-20}"
WAIT="${WAIT:-10s}"
SKIP_BUILD="${SKIP_BUILD:-0}"
ROSTER_BIN="${ROSTER_BIN:-$REPO/target/release/roster}"

usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--services) SERVICES="$2"; shift 2 ;;
    -w|--watchers) WATCHERS="$2"; shift 2 ;;
    -r|--rate) RATE="$2"; shift 2 ;;
    -d|--duration) DURATION="$2"; shift 2 ;;
    --wait) WAIT="$2"; shift 2 ;;
    --no-build) SKIP_BUILD=1; shift ;;
    -o|--results) RESULTS_DIR="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 >&2 ;;
  esac
done
for v in SERVICES WATCHERS RATE DURATION; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer, got '${!v}'" >&2; exit 2; }
done

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

STAMP="$(date -u +%Y%m%d-%H%M%S)"
RESULTS_DIR="${RESULTS_DIR:-/tmp/roster-bench-blocking-$STAMP}"
case "$RESULTS_DIR" in "$REPO"|"$REPO"/*) die "results dir must be outside the repo" ;; esac
mkdir -p "$RESULTS_DIR"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/roster-blocking.XXXXXX")"
exec > >(tee -a "$RESULTS_DIR/run.log") 2>&1

STARTED=()
cleanup() {
  local pid
  for pid in "${STARTED[@]+"${STARTED[@]}"}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]+"${STARTED[@]}"}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Each watcher holds a connection, in the watch client and in roster (two
# processes, each under this limit).
NEED=$((WATCHERS + 4096))
HARD="$(ulimit -Hn)"
if [ "$HARD" != unlimited ] && [ "$HARD" -lt "$NEED" ]; then
  die "the descriptor limit's hard cap is $HARD; $WATCHERS watchers need $NEED (fewer --watchers, or raise it as root)"
fi
ulimit -n "$NEED" || die "cannot raise the descriptor limit to $NEED"

if [ "$SKIP_BUILD" != 1 ] && [ "$ROSTER_BIN" = "$REPO/target/release/roster" ]; then
  log "building roster (cargo build --release)"
  (cd "$REPO" && cargo build --release --quiet) || die "cargo build failed"
fi
[ -x "$ROSTER_BIN" ] || die "no roster binary at $ROSTER_BIN"
LOADGEN_DIR="$REPO/bench/store/loadgen"
log "building the load generator: $LOADGEN_DIR"
CARGO_TARGET_DIR="$LOADGEN_DIR/target" cargo build --release --quiet \
  --manifest-path "$LOADGEN_DIR/Cargo.toml" || die "building bench/store/loadgen failed"
LOADGEN="$LOADGEN_DIR/target/release/roster-store-loadgen"

read -r P_DNS P_HTTP <<<"$(python3 "$GEN" ports 2)"
cat >"$WORK/config.toml" <<CONF
data_dir = ""
[dns]
listen = "127.0.0.1:$P_DNS"
[http]
listen = "127.0.0.1:$P_HTTP"
max_connections = $((WATCHERS + 256))
CONF
log "starting $ROSTER_BIN serve --config $WORK/config.toml"
(cd "$WORK" && exec "$ROSTER_BIN" serve --config "$WORK/config.toml") >"$RESULTS_DIR/roster.log" 2>&1 &
ROSTER_PID=$!; STARTED+=("$ROSTER_PID")
python3 "$GEN" http-ready --http "127.0.0.1:$P_HTTP" --timeout 60 || die "roster did not start (see $RESULTS_DIR/roster.log)"
python3 "$GEN" register --services "$SERVICES" --instances 1 --http "127.0.0.1:$P_HTTP" --timeout 600 \
  >"$RESULTS_DIR/register.txt" || die "registration failed"

# The watchers first; the changes once every watcher is waiting.
SETTLE=5
log "starting $WATCHERS watchers over $SERVICES services (wait $WAIT)"
"$LOADGEN" watch --http "127.0.0.1:$P_HTTP" --services "$SERVICES" --watchers "$WATCHERS" \
  --duration $((DURATION + SETTLE)) --wait "$WAIT" >"$RESULTS_DIR/watch.txt" 2>&1 &
WATCH_PID=$!; STARTED+=("$WATCH_PID")
sleep "$SETTLE"
cpu0="$(python3 "$GEN" cpu "$ROSTER_PID")"
log "changing random services at $RATE/s for $DURATION s"
"$LOADGEN" churn --http "127.0.0.1:$P_HTTP" --services "$SERVICES" --rate "$RATE" \
  --duration "$DURATION" --out "$RESULTS_DIR/churn.json" >"$RESULTS_DIR/churn.txt" 2>&1 \
  || die "the churn client failed: $(cat "$RESULTS_DIR/churn.txt")"
cpu1="$(python3 "$GEN" cpu "$ROSTER_PID")"
wait "$WATCH_PID" || die "the watch client failed: $(cat "$RESULTS_DIR/watch.txt")"

python3 - "$RESULTS_DIR" "$cpu0" "$cpu1" "$DURATION" "$WATCHERS" "$SERVICES" "$RATE" \
  "$(cd "$REPO" && git rev-parse --short HEAD)" "$(nproc)" "$ROSTER_BIN" "${ORIG_ARGS[*]}" <<'PY' | tee "$RESULTS_DIR/table.md"
import json, re, sys, datetime
d, cpu0, cpu1, duration, watchers, services, rate, commit, nproc, binary, args = sys.argv[1:]
watch = dict(kv.split("=", 1) for kv in open(d + "/watch.txt").read().split() if "=" in kv)
churn = json.load(open(d + "/churn.json"))
changes = int(churn["churn_ok"])
answers = int(watch["answers"])
cpu = float(cpu1) - float(cpu0)
print("- command: `bench/blocking/run.sh %s`; binary: %s" % (args, binary))
print("- date: %s; commit: %s; `nproc`: %s" % (datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), commit, nproc))
print()
print("| watchers / services | changes/s | answers/s | answers per change | watchers per service | roster CPU s (during changes) | CPU µs per answer | index went backwards | watch errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
per_change = answers / changes if changes else float("nan")
print("| %s / %s | %.0f | %.0f | %.1f | %.0f | %.2f | %s | %s | %s |" % (
    watchers, services, changes / float(duration), answers / float(watch["duration"].rstrip("s")),
    per_change, int(watchers) / int(services), cpu,
    "%.1f" % (cpu / answers * 1e6) if answers else "–", watch["backwards"], watch["errors"]))
PY
log "results in $RESULTS_DIR"
