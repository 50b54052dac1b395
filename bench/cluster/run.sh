#!/usr/bin/env bash
# Cluster-mode benchmark: roster nodes on etcd, all on 127.0.0.1.
#
#   bench/cluster/run.sh [options]        (every option also has an env variable)
#
#   -p, --phases LIST      any of "writes converge dns move"       PHASES (all four)
#       --etcd-members N   etcd members, 1 or 3 (on loopback ports) ETCD_MEMBERS (1)
#   -c, --connections L    writes: loadgen connections per node, one run each
#                                                                  CONNECTIONS ("1 64")
#   -d, --duration S       writes: measured seconds per run        DURATION (10)
#   -w, --warmup S         writes: unmeasured seconds first        WARMUP (2)
#   -n, --samples N        converge: writes timed (node A -> node B DNS)  SAMPLES (300)
#       --dns-duration S   dns: seconds per dnsperf run            DNS_DURATION (10)
#   -r, --rounds R         dns: rounds (embedded, cluster each)    ROUNDS (3)
#       --checks N         move: checks per node (3 nodes, so 3N in all)  CHECKS (300)
#       --moves R          move: how many times a node is killed   MOVES (3)
#       --quiet-wait S     before each measured run, wait up to S s for the
#                          machine's CPU to be <= 25% busy         QUIET_WAIT (0)
#       --no-build         don't run cargo build --release         SKIP_BUILD (0)
#       --keep             keep the etcd and roster data dirs      KEEP_WORK (0)
#   -o, --results DIR      results (default /tmp/roster-bench-cluster-DATE)  RESULTS_DIR
#
# Other env: ROSTER_BIN (default target/release/roster), ETCD_BIN (etcd),
# ETCDCTL_BIN (etcdctl).
#
# Starts etcd (data under /var/tmp, a real disk) and three roster release
# builds in cluster mode (`roster serve --etcd ... --node nI --data-dir ""`),
# plus an embedded roster (data dir under /var/tmp) for comparison, and prints
# one markdown table per phase (also in RESULTS_DIR/table.md):
#   writes    acknowledged durable registrations/s and latency through one
#             node and through all three at once (bench/store/loadgen with
#             --id-prefix: disjoint IDs per copy, one per node),
#             and through the embedded store
#   converge  write through node A, poll node B's DNS (UDP SRV) until it shows
#   dns       dnsperf UDP QPS and CPU per query, embedded vs a cluster node,
#             1,000 services x 5 instances, alternating per round
#   move      3 nodes with CHECKS TCP checks each (on a loopback listener):
#             kill -9 one node, time until the survivors hold all the checks
# Every phase starts from an empty registry (the roster keys are deleted from
# etcd while the nodes are down). Every process it starts is stopped by PID.
# See bench/README.md, section Cluster.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
GEN="$REPO/bench/dns/gen.py"
REPORT="$REPO/bench/dns/report.py"
PROBE="$HERE/probe.py"
ORIG_ARGS=("$@")

PHASES="${PHASES:-writes converge dns move}"
ETCD_MEMBERS="${ETCD_MEMBERS:-1}"
CONNECTIONS="${CONNECTIONS:-1 64}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
SAMPLES="${SAMPLES:-300}"
DNS_DURATION="${DNS_DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
CHECKS="${CHECKS:-300}"
MOVES="${MOVES:-3}"
QUIET_WAIT="${QUIET_WAIT:-0}"
SKIP_BUILD="${SKIP_BUILD:-0}"
KEEP_WORK="${KEEP_WORK:-0}"
RESULTS_DIR="${RESULTS_DIR:-}"
ROSTER_BIN="${ROSTER_BIN:-$REPO/target/release/roster}"
ETCD_BIN="${ETCD_BIN:-etcd}"
ETCDCTL_BIN="${ETCDCTL_BIN:-etcdctl}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -p|--phases) PHASES="$2"; shift 2 ;;
    --etcd-members) ETCD_MEMBERS="$2"; shift 2 ;;
    -c|--connections) CONNECTIONS="$2"; shift 2 ;;
    -d|--duration) DURATION="$2"; shift 2 ;;
    -w|--warmup) WARMUP="$2"; shift 2 ;;
    -n|--samples) SAMPLES="$2"; shift 2 ;;
    --dns-duration) DNS_DURATION="$2"; shift 2 ;;
    -r|--rounds) ROUNDS="$2"; shift 2 ;;
    --checks) CHECKS="$2"; shift 2 ;;
    --moves) MOVES="$2"; shift 2 ;;
    --quiet-wait) QUIET_WAIT="$2"; shift 2 ;;
    --no-build) SKIP_BUILD=1; shift ;;
    --keep) KEEP_WORK=1; shift ;;
    -o|--results) RESULTS_DIR="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 >&2 ;;
  esac
done
PHASES="$(echo "$PHASES" | tr ',' ' ' | xargs)"
for p in $PHASES; do
  case "$p" in writes|converge|dns|move) ;; *) echo "unknown phase '$p' (writes converge dns move)" >&2; exit 2 ;; esac
done
case "$ETCD_MEMBERS" in 1|3) ;; *) echo "--etcd-members must be 1 or 3" >&2; exit 2 ;; esac
for v in DURATION WARMUP SAMPLES DNS_DURATION ROUNDS CHECKS MOVES QUIET_WAIT; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "$v must be a whole number, got '${!v}'" >&2; exit 2; }
done
for c in $CONNECTIONS; do
  [[ "$c" =~ ^[1-9][0-9]*$ ]] || { echo "connections must be positive integers, got '$c'" >&2; exit 2; }
done
has() { [[ " $PHASES " == *" $1 "* ]]; }

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

for cmd in python3 "$ETCD_BIN" "$ETCDCTL_BIN"; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (Debian: apt-get install etcd-server etcd-client)"
done
if has dns && ! command -v dnsperf >/dev/null 2>&1; then
  log "installing dnsperf from Debian packages"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y dnsperf
  command -v dnsperf >/dev/null 2>&1 || die "dnsperf still missing after install"
fi

# ------------------------------------------------------------ dirs, logging
STAMP="$(date -u +%Y%m%d-%H%M%S)"
RESULTS_DIR="${RESULTS_DIR:-/tmp/roster-bench-cluster-$STAMP}"
case "$RESULTS_DIR" in "$REPO"|"$REPO"/*) die "results dir must be outside the repo" ;; esac
mkdir -p "$RESULTS_DIR/logs" "$RESULTS_DIR/runs"
WORK="$(mktemp -d /var/tmp/roster-bench-cluster.XXXXXX)"   # a real disk: fsync costs what it costs
exec > >(tee -a "$RESULTS_DIR/run.log") 2>&1

# ------------------------------------------------------------ process bookkeeping
STARTED=()            # every long-running process started here (PIDs)
declare -A NODE_PID   # n1 n2 n3 -> PID of the running node
EMB_PID=""
ETCD_PIDS=()
stop_pids() { # PID... : TERM, bounded wait, KILL (gen.py stop), then reap
  [ $# -gt 0 ] || return 0
  python3 "$GEN" stop "$@" --timeout 15 || true
  local p; for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "${#STARTED[@]}" -gt 0 ]; then
    local alive=() p
    for p in "${STARTED[@]}"; do kill -0 "$p" 2>/dev/null && alive+=("$p"); done
    if [ "${#alive[@]}" -gt 0 ]; then log "stopping pids ${alive[*]}"; stop_pids "${alive[@]}"; fi
  fi
  if [ "$KEEP_WORK" != 1 ]; then rm -rf "$WORK"; else log "kept $WORK"; fi
  log "results in $RESULTS_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------ meta
ROSTER_REV="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)"
if [ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then ROSTER_REV="$ROSTER_REV+dirty"; fi
ETCD_VERSION="$("$ETCD_BIN" --version 2>/dev/null | sed -n 's/^etcd Version: //p' | head -1)"
DNSPERF_VERSION=""
if command -v dnsperf >/dev/null; then DNSPERF_VERSION="$(dnsperf -h 2>&1 | sed -n 's/^Version //p' | head -1)"; fi
CMDLINE="bench/cluster/run.sh"
for a in "${ORIG_ARGS[@]+"${ORIG_ARGS[@]}"}"; do
  if [[ "$a" =~ ^[A-Za-z0-9_,./:=+-]+$ ]]; then CMDLINE+=" $a"; else CMDLINE+=" $(printf '%q' "$a")"; fi
done
log "roster cluster benchmark: phases [$PHASES], etcd members $ETCD_MEMBERS, nproc $(nproc), load $(cut -d' ' -f1-3 /proc/loadavg)"
log "results in $RESULTS_DIR, data in $WORK"

# ------------------------------------------------------------ build
if [ "$SKIP_BUILD" != 1 ]; then
  command -v cargo >/dev/null 2>&1 || die "cargo not found (or pass --no-build with ROSTER_BIN)"
  log "building roster: cargo build --release"
  (cd "$REPO" && timeout 3600 cargo build --release) || die "cargo build --release failed"
fi
case "$ROSTER_BIN" in /*) ;; *) ROSTER_BIN="$PWD/$ROSTER_BIN" ;; esac
[ -x "$ROSTER_BIN" ] || die "roster binary not found at $ROSTER_BIN"
# a private copy, so a concurrent `cargo build` can't swap the binary mid-run
cp "$ROSTER_BIN" "$WORK/roster-bin"
ROSTER_SHA="$(sha256sum "$WORK/roster-bin" | cut -c1-12)"
ROSTER_BIN="$WORK/roster-bin"
if has writes || has converge; then
  command -v cargo >/dev/null 2>&1 || die "cargo not found (needed for bench/store/loadgen)"
  LOADGEN_DIR="$HERE/../store/loadgen"
  log "building the load generator: $LOADGEN_DIR"
  CARGO_TARGET_DIR="$LOADGEN_DIR/target" timeout 1800 cargo build --release --quiet \
    --manifest-path "$LOADGEN_DIR/Cargo.toml" || die "building bench/store/loadgen failed"
  LOADGEN_BIN="$LOADGEN_DIR/target/release/roster-store-loadgen"
fi

# ------------------------------------------------------------ ports
# etcd: client + peer per member; nodes: dns + http each; embedded: dns + http
read -r -a PORTS <<<"$(python3 "$GEN" ports $((2 * ETCD_MEMBERS + 8 + 1)))"
ETCD_URLS=""; ETCD_CLUSTER=""
for ((i = 0; i < ETCD_MEMBERS; i++)); do
  ETCD_URLS+="${ETCD_URLS:+,}http://127.0.0.1:${PORTS[2*i]}"
  ETCD_CLUSTER+="${ETCD_CLUSTER:+,}e$((i + 1))=http://127.0.0.1:${PORTS[2*i+1]}"
done
o=$((2 * ETCD_MEMBERS))
declare -A DNS HTTP
for n in 1 2 3; do
  DNS[n$n]="${PORTS[o]}"; HTTP[n$n]="${PORTS[o + 1]}"; o=$((o + 2))
done
EMB_DNS="${PORTS[o]}"; EMB_HTTP="${PORTS[o + 1]}"; LISTEN_PORT="${PORTS[o + 2]}"

# ------------------------------------------------------------ etcd
start_etcd() {
  local i
  for ((i = 0; i < ETCD_MEMBERS; i++)); do
    local name="e$((i + 1))" cport="${PORTS[2*i]}" pport="${PORTS[2*i+1]}"
    mkdir -p "$WORK/etcd"
    "$ETCD_BIN" --name "$name" --data-dir "$WORK/etcd/$name" \
      --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
      --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
      --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new \
      --initial-cluster-token "roster-bench-$STAMP" \
      --auto-compaction-mode revision --auto-compaction-retention 100000 \
      >"$RESULTS_DIR/logs/etcd-$name.log" 2>&1 &
    ETCD_PIDS+=("$!"); STARTED+=("$!")
  done
  local _t
  for _t in $(seq 300); do
    if ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints "$ETCD_URLS" --command-timeout 1s endpoint health >/dev/null 2>&1; then
      log "etcd up: $ETCD_MEMBERS member(s) at $ETCD_URLS (pids ${ETCD_PIDS[*]})"
      return
    fi
    sleep 0.2
  done
  tail -20 "$RESULTS_DIR/logs/etcd-e1.log" || true
  die "etcd did not become healthy within 60 s"
}

etcd_wipe() { # deletes every roster key (with the nodes down)
  ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints "$ETCD_URLS" --command-timeout 60s del --prefix /roster/ >/dev/null
}

# ------------------------------------------------------------ roster
LOGN=0
start_node() { # n1|n2|n3
  local n="$1" d="$WORK/$1"
  mkdir -p "$d/zones"
  LOGN=$((LOGN + 1))
  local log_file="$RESULTS_DIR/logs/roster-$n-$LOGN.log"
  # from its own dir, so no config.toml is picked up
  (cd "$d" && NO_COLOR=1 exec "$ROSTER_BIN" serve --etcd "$ETCD_URLS" --node "$n" \
    --dns "127.0.0.1:${DNS[$n]}" --http "127.0.0.1:${HTTP[$n]}" --data-dir "" --zones "$d/zones") \
    >"$log_file" 2>&1 &
  NODE_PID[$n]=$!; STARTED+=("$!")
  python3 "$GEN" http-ready --http "127.0.0.1:${HTTP[$n]}" --timeout 60 \
    || { tail -20 "$log_file"; die "roster $n did not answer HTTP within 60 s"; }
}

start_cluster() { # fresh: wipe the keys, start n1..n3, wait for 3 members
  etcd_wipe
  local n; for n in n1 n2 n3; do start_node "$n"; done
  python3 "$PROBE" wait-members --http "127.0.0.1:${HTTP[n1]}" --nodes 3 --total 0 --timeout 30 >/dev/null \
    || die "the three nodes did not all show in /v1/cluster/members within 30 s"
  log "cluster up: n1 ${NODE_PID[n1]}, n2 ${NODE_PID[n2]}, n3 ${NODE_PID[n3]}"
}

stop_cluster() {
  stop_pids "${NODE_PID[n1]}" "${NODE_PID[n2]}" "${NODE_PID[n3]}"
}

start_embedded() { # fresh data dir under /var/tmp
  local d="$WORK/embedded"
  rm -rf "$d"; mkdir -p "$d/zones" "$d/data"
  LOGN=$((LOGN + 1))
  (cd "$d" && NO_COLOR=1 exec "$ROSTER_BIN" serve --dns "127.0.0.1:$EMB_DNS" --http "127.0.0.1:$EMB_HTTP" \
    --data-dir "$d/data" --zones "$d/zones") >"$RESULTS_DIR/logs/roster-embedded-$LOGN.log" 2>&1 &
  EMB_PID=$!; STARTED+=("$!")
  python3 "$GEN" http-ready --http "127.0.0.1:$EMB_HTTP" --timeout 60 || die "embedded roster did not answer HTTP"
}

stop_embedded() { stop_pids "$EMB_PID"; EMB_PID=""; }

quiet() { [ "$QUIET_WAIT" = 0 ] || python3 "$GEN" quiet --max-wait "$QUIET_WAIT"; }
cpu_of() { # summed CPU seconds of the given PIDs (process trees)
  local p s=0
  for p in "$@"; do s="$(awk -v a="$s" -v b="$(python3 "$GEN" cpu "$p")" 'BEGIN{print a+b}')"; done
  echo "$s"
}
busy() { python3 "$GEN" machine | cut -d' ' -f1; }
sub() { awk -v a="$1" -v b="$2" -v e="${3:-1}" 'BEGIN{printf "%.2f", (b-a)/e}'; }

TABLE="$RESULTS_DIR/table.md"
{
  echo "Command: \`$CMDLINE\`"
  echo
  echo "Date $(date -u '+%Y-%m-%d %H:%M UTC'), nproc $(nproc), roster $ROSTER_REV (binary sha256 $ROSTER_SHA), etcd $ETCD_VERSION ($ETCD_MEMBERS member(s), data on /var/tmp)${DNSPERF_VERSION:+, dnsperf $DNSPERF_VERSION}, load average before $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} >"$TABLE"

start_etcd

# ------------------------------------------------------------ writes
run_loadgens() { # label nodes(1|3) connections targets...
  local label="$1" nodes="$2" c="$3"; shift 3
  local targets=("$@") k pids=()
  local out="$RESULTS_DIR/runs/writes-$label-c$c"
  quiet
  local watched=("${ETCD_PIDS[@]}") rpids=()
  if [ "$label" = embedded ]; then rpids=("$EMB_PID"); else rpids=("${NODE_PID[n1]}" "${NODE_PID[n2]}" "${NODE_PID[n3]}"); fi
  local r0 e0 m0 r1 e1 m1 x0="0 0" x1="0 0"
  [ "$label" = embedded ] || x0="$(python3 "$PROBE" etcd-stats "$ETCD_URLS")"
  r0="$(cpu_of "${rpids[@]}")"; e0="$(cpu_of "${watched[@]}")"; m0="$(busy)"
  # one loadgen per node, each with its own instance IDs (g0-i0, g1-i0, ...;
  # the services s0..s999 are shared): the same IDs would collide
  for ((k = 0; k < ${#targets[@]}; k++)); do
    timeout $((DURATION + WARMUP + 60)) "$LOADGEN_BIN" --addr "${targets[k]}" --connections "$c" \
      --duration "$DURATION" --warmup "$WARMUP" --services 1000 --instances 100000 --id-prefix "g$k-" \
      >"$out-$k.out" 2>"$out-$k.err" &
    pids+=("$!"); STARTED+=("$!")
  done
  local rc=0 p; for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  r1="$(cpu_of "${rpids[@]}")"; e1="$(cpu_of "${watched[@]}")"; m1="$(busy)"
  [ "$label" = embedded ] || x1="$(python3 "$PROBE" etcd-stats "$ETCD_URLS")"
  [ "$rc" = 0 ] || { cat "$out"-*.err; die "loadgen failed ($rc)"; }
  local el=$((DURATION + WARMUP))
  python3 - "$label" "$nodes" "$c" "$(sub "$r0" "$r1" "$el")" "$(sub "$e0" "$e1" "$el")" "$(sub "$m0" "$m1" "$el")" "$el" "$x0" "$x1" "$out"-*.out <<'EOF' | tee -a "$RESULTS_DIR/writes.rows"
import re, sys
label, nodes, c, roster, etcd, machine, el, x0, x1 = sys.argv[1:10]
(a0, v0), (a1, v1) = map(int, x0.split()), map(int, x1.split())
txns, lost = a1 - a0, (a1 - a0) - (v1 - v0)
rows = []
for path in sys.argv[10:]:
    line = open(path).read()
    rows.append({k: v for k, v in re.findall(r"(\w+)=([^ \n]+)", line)})
num = lambda r, k: float(r[k].rstrip("/sm"))
rate = sum(num(r, "rate") for r in rows)
lg = sum(num(r, "cpu") for r in rows) / float(el)
other = max(0.0, float(machine) - float(roster) - float(etcd) - lg)
fails = sum(int(r["refused"]) + int(r["connection_errors"]) for r in rows)
j = lambda k: " / ".join("%.2f" % num(r, k) for r in rows)
store = "embedded (redb)" if label == "embedded" else "cluster"
acked = sum(int(r["acknowledged"]) for r in rows)
# etcd counts cover the warm-up too: per second of the whole run
etxn = "-" if label == "embedded" else "%.0f (%.0f%% lost a compare)" % (txns / float(el), 100.0 * lost / txns if txns else 0)
print("| %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %.2f | %.2f | %s | %d |" % (
    store, nodes, c, rate, j("p50"), j("p99"), j("max"), roster, etcd if label != "embedded" else "-", lg, other, etxn, fails))
EOF
}

# What etcd itself takes on the same members, in the same run, with no
# roster running: the reference of issue #16's "writes through roster at
# >= 0.8x what etcd takes" (etcdctl's large workload: 60 s of puts from
# many clients; its FAIL only means etcdctl's own expectation was not met).
etcd_check_perf() {
  local out="$RESULTS_DIR/runs/etcd-check-perf.out" el e0 e1 m0 m1 t0 t1 rate
  quiet
  e0="$(cpu_of "${ETCD_PIDS[@]}")"; m0="$(busy)"; t0="$(date +%s)"
  ETCDCTL_API=3 timeout 300 "$ETCDCTL_BIN" --endpoints "$ETCD_URLS" check perf --load=l \
    --prefix /roster-bench-check-perf/ --auto-compact --auto-defrag >"$out" 2>&1 \
    || log "etcdctl check perf did not PASS (see $out); its throughput is recorded all the same"
  e1="$(cpu_of "${ETCD_PIDS[@]}")"; m1="$(busy)"; t1="$(date +%s)"
  el=$((t1 - t0)); [ "$el" -gt 0 ] || el=1
  rate="$(grep -o '[0-9]* writes/s' "$out" | head -1 | cut -d' ' -f1)"
  local etcd machine other
  etcd="$(sub "$e0" "$e1" "$el")"; machine="$(sub "$m0" "$m1" "$el")"
  other="$(awk -v m="$machine" -v e="$etcd" 'BEGIN{o=m-e; if (o<0) o=0; printf "%.2f", o}')"
  echo "| etcd itself (\`etcdctl check perf --load=l\`, no roster) | - | - | ${rate:-?} | - | - | - | - | $etcd | - | $other | - | - |" \
    | tee -a "$RESULTS_DIR/writes.rows"
}

if has writes; then
  log "phase writes: connections [$CONNECTIONS], ${DURATION}s (+${WARMUP}s warm-up) per run"
  : >"$RESULTS_DIR/writes.rows"
  for c in $CONNECTIONS; do
    start_embedded
    run_loadgens embedded 1 "$c" "127.0.0.1:$EMB_HTTP"
    stop_embedded
    start_cluster
    run_loadgens cluster1 1 "$c" "127.0.0.1:${HTTP[n1]}"
    stop_cluster
    start_cluster
    run_loadgens cluster3 3 "$c" "127.0.0.1:${HTTP[n1]}" "127.0.0.1:${HTTP[n2]}" "127.0.0.1:${HTTP[n3]}"
    stop_cluster
  done
  etcd_check_perf
  {
    echo "### Writes (acknowledged durable registrations)"
    echo
    echo "| store | nodes written through | connections per node | acknowledged writes/s (sum) | p50 ms (per node) | p99 ms (per node) | max ms (per node) | roster CPU (cores, all nodes) | etcd CPU (cores) | loadgen CPU (cores) | other CPU (cores) | etcd transactions/s | failures |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    cat "$RESULTS_DIR/writes.rows"
    echo
  } >>"$TABLE"
fi

# ------------------------------------------------------------ convergence
if has converge; then
  log "phase converge: $SAMPLES samples"
  start_cluster
  : >"$RESULTS_DIR/converge.rows"
  # "load": meanwhile a loadgen writes through n3 with 64 connections (the
  # busiest case of the writes phase through one node), for at most 60 s
  for pair in "n1 n2 -" "n1 n3 -" "n1 n1 -" "n1 n2 load"; do
    read -r a b load <<<"$pair"
    samples="$SAMPLES"; [ "$a" = "$b" ] && samples=$(( SAMPLES < 50 ? SAMPLES : 50 ))
    quiet
    lg=""
    if [ "$load" = load ]; then
      timeout 120 "$LOADGEN_BIN" --addr "127.0.0.1:${HTTP[n3]}" --connections 64 --duration 60 --warmup 0 \
        --services 1000 --instances 100000 --id-prefix load- >"$RESULTS_DIR/runs/converge-load.out" 2>&1 &
      lg=$!; STARTED+=("$lg")
      sleep 2
    fi
    python3 "$PROBE" converge --write "127.0.0.1:${HTTP[$a]}" --dns "127.0.0.1:${DNS[$b]}" \
      --samples "$samples" --timeout 5 --out "$RESULTS_DIR/runs/converge-$a-$b-$load.json" >/dev/null \
      || die "converge $a -> $b failed"
    if [ -n "$lg" ]; then wait "$lg" || true; fi
    python3 - "$a" "$b" "$load" "$RESULTS_DIR/runs/converge-$a-$b-$load.json" <<'EOF' | tee -a "$RESULTS_DIR/converge.rows"
import json, sys
a, b, load, path = sys.argv[1:5]
r = json.load(open(path))
f = lambda v: "-" if v is None else "%.2f" % v
note = " (control: the writing node itself)" if a == b else ""
if load == "load":
    import os, re
    lg = open(os.path.join(os.path.dirname(path), "converge-load.out")).read()
    m = re.search(r"rate=(\S+)", lg)
    note = " while a loadgen writes through n3 (64 connections, %s over 60 s)%s" % (
        m.group(1) if m else "?", "" if r["elapsed_s"] < 58 else ", **outlasted the load: %.0f s**" % r["elapsed_s"])
print("| %s → %s%s | %d | %d | %d | %s | %s | %s | %s | %s | %s |" % (
    a, b, note, r["samples"], r["timeouts"], r["errors"],
    f(r["ack_p50_ms"]), f(r["ack_p99_ms"]), f(r["ack_max_ms"]),
    f(r["send_p50_ms"]), f(r["send_p99_ms"]), f(r["send_max_ms"])))
EOF
  done
  stop_cluster
  {
    echo "### Convergence (write through A, UDP SRV poll of B's DNS until it shows)"
    echo
    echo "| A → B | samples | timeouts (5 s) | write errors | after A's ack p50 ms | p99 ms | max ms | from sending the PUT p50 ms | p99 ms | max ms |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    cat "$RESULTS_DIR/converge.rows"
    echo
  } >>"$TABLE"
fi

# ------------------------------------------------------------ DNS QPS
if has dns; then
  log "phase dns: embedded vs cluster node n2, 1000 x 5, ${DNS_DURATION}s x $ROUNDS rounds"
  start_embedded
  start_cluster
  python3 "$GEN" register --services 1000 --instances 5 --http "127.0.0.1:$EMB_HTTP" --parallel 8 --timeout 900 \
    || die "registration into the embedded roster failed"
  python3 "$GEN" register --services 1000 --instances 5 --http "127.0.0.1:${HTTP[n1]}" --parallel 8 --timeout 900 \
    || die "registration into the cluster (through n1) failed"
  sleep 1
  for pair in "embedded $EMB_DNS" "cluster ${DNS[n2]}"; do
    read -r name port <<<"$pair"
    python3 "$GEN" check --port "$port" --services 1000 --instances 5 || die "$name's answers are wrong"
  done
  QUERIES="$RESULTS_DIR/queries.txt"
  python3 "$GEN" queries --services 1000 --nx-percent 3 --out "$QUERIES"
  mkdir -p "$RESULTS_DIR/runs/dns"
  for ((r = 1; r <= ROUNDS; r++)); do
    for pair in "embedded $EMB_DNS $EMB_PID" "cluster ${DNS[n2]} ${NODE_PID[n2]}"; do
      read -r name port pid <<<"$pair"
      log "round $r/$ROUNDS: $name (port $port)"
      quiet
      c0="$(python3 "$GEN" cpu "$pid")"; read -r b0 _ <<<"$(python3 "$GEN" machine)"
      python3 "$GEN" timed --timeout $((DNS_DURATION + 60)) --cpu-out "$WORK/dnsperf.cpu" -- \
        dnsperf -s 127.0.0.1 -p "$port" -d "$QUERIES" -m udp -l "$DNS_DURATION" -c 10 -T 2 -q 100 -v \
        >"$WORK/dnsperf.out" 2>&1 || { grep -v '^> ' "$WORK/dnsperf.out" | tail; die "dnsperf failed"; }
      c1="$(python3 "$GEN" cpu "$pid")"; read -r b1 _ <<<"$(python3 "$GEN" machine)"
      python3 "$REPORT" run "$WORK/dnsperf.out" "$RESULTS_DIR/runs/dns/r$r-$name.txt" "$RESULTS_DIR/runs/dns/r$r-$name.json" \
        "cpu=$(sub "$c0" "$c1")" "dnsperf_cpu=$(cat "$WORK/dnsperf.cpu")" "machine_busy=$(sub "$b0" "$b1")"
      sleep 1
    done
  done
  stop_embedded
  stop_cluster
  {
    echo "### DNS: a cluster node vs embedded roster (1,000 services × 5, dnsperf UDP -c 10 -T 2 -q 100, ${DNS_DURATION} s × $ROUNDS rounds, alternating)"
    echo
    python3 "$PROBE" qps-table "$RESULTS_DIR/runs/dns"
    echo
  } >>"$TABLE"
fi

# ------------------------------------------------------------ check move
if has move; then
  total=$((3 * CHECKS))
  log "phase move: $total TCP checks on 127.0.0.1:$LISTEN_PORT, kill -9 a node $MOVES time(s)"
  python3 "$PROBE" listen --port "$LISTEN_PORT" >"$RESULTS_DIR/logs/listener.log" 2>&1 &
  LISTENER=$!; STARTED+=("$LISTENER")
  start_cluster
  python3 "$PROBE" register-checks --http "127.0.0.1:${HTTP[n1]}" --count "$total" \
    --target "127.0.0.1:$LISTEN_PORT" --interval 5s || die "registering the checks failed"
  python3 "$PROBE" wait-members --http "127.0.0.1:${HTTP[n1]}" --nodes 3 --total "$total" --timeout 60 \
    || die "the members' checks never summed to $total"
  : >"$RESULTS_DIR/move.rows"
  victims=(n3 n2 n1)
  for ((m = 0; m < MOVES; m++)); do
    v="${victims[m % 3]}"; s=n1; [ "$v" = n1 ] && s=n2
    before="$(python3 "$PROBE" members --http "127.0.0.1:${HTTP[$s]}")"
    quiet
    since="$(python3 -c 'import time; print("%.6f" % time.time())')"
    kill -9 "${NODE_PID[$v]}"
    wait "${NODE_PID[$v]}" 2>/dev/null || true
    python3 "$PROBE" move --http "127.0.0.1:${HTTP[$s]}" --dead "$v" --total "$total" --since "$since" \
      --timeout 60 --out "$RESULTS_DIR/runs/move-$m.json" >/dev/null
    after="$(python3 "$PROBE" members --http "127.0.0.1:${HTTP[$s]}")"
    python3 - "$v" "$s" "$RESULTS_DIR/runs/move-$m.json" "$before" "$after" <<'EOF' | tee -a "$RESULTS_DIR/move.rows"
import json, sys
v, s, path, before, after = sys.argv[1:6]
r = json.load(open(path))
f = lambda x: "**not within 60 s**" if x is None else "%.2f" % x
print("| %s | %s | %s | %s | %s | %s |" % (v, s, f(r["gone_s"]), f(r["moved_s"]), before.split()[0], after.split()[0]))
EOF
    start_node "$v"
    python3 "$PROBE" wait-members --http "127.0.0.1:${HTTP[$s]}" --nodes 3 --total "$total" --timeout 60 >/dev/null \
      || die "after restarting $v the members did not settle"
  done
  stop_cluster
  stop_pids "$LISTENER"
  {
    echo "### Check move ($total TCP checks, interval 5 s, on 3 nodes; member lease TTL 5 s; kill -9 one node)"
    echo
    echo "| killed | polled | dead node gone from members (s) | survivors' checks sum to the total (s) | checks before | checks after |"
    echo "| --- | --- | ---: | ---: | ---: | ---: |"
    cat "$RESULTS_DIR/move.rows"
    echo
  } >>"$TABLE"
fi

echo "load average after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$TABLE"
echo
cat "$TABLE"
