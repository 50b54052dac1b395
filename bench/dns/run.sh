#!/usr/bin/env bash
# DNS benchmark: roster vs Knot DNS vs NSD, driven by dnsperf, all on 127.0.0.1.
#
#   bench/dns/run.sh [options]        (every option also has an env variable)
#
#   -n, --services N     services                          SERVICES  (1000)
#   -m, --instances M    instances per service             INSTANCES (5)
#   -d, --duration S     seconds per dnsperf run           DURATION  (10)
#   -r, --rounds R       rounds (roster, knot, nsd each)   ROUNDS    (3)
#   -c, --clients C      dnsperf clients (-c)              CLIENTS   (10)
#   -T, --threads T      dnsperf threads (-T)              THREADS   (2)
#   -q, --outstanding Q  dnsperf max outstanding (-q)      OUTSTANDING (100)
#   -Q, --max-qps Q      dnsperf rate limit (-Q), "" = unlimited   MAX_QPS ("")
#       --mode udp|tcp   transport                         MODE      (udp)
#       --churn RATE     also run roster under churn: each round adds a run
#                        "roster_churn" right after roster's idle run, during
#                        which RATE registrations+deregistrations per second
#                        (together) hit roster's HTTP API; the client is
#                        `roster-store-loadgen churn` (bench/store/loadgen,
#                        built by this script with cargo)   CHURN ("")
#       --churn-reads    with --churn: the client sends GET /v1/services/<s>
#                        instead of writes, on the same schedule and
#                        connections, to tell what churn costs DNS in HTTP
#                        from what the writes cost   CHURN_READS (0)
#       --churn-rewrites with --churn: every write re-registers one of the
#                        client's first instances as it was, so it goes
#                        through HTTP and the registry's writer but changes
#                        nothing (no commit, no new table for DNS)
#                                                          CHURN_REWRITES (0)
#       --churn-cpu N    with --churn: run the churn client on CPU N only
#                        (taskset). Where it runs moves the ratio: on the
#                        2-vCPU machine of bench/RESULTS.md the disk's
#                        interrupts all land on CPU 1, and the client there
#                        cost DNS ~0.03 more than on CPU 0   CHURN_CPU ("")
#       --pin-clients    pin dnsperf's threads: the receiving and the sending
#                        thread of its i-th worker (-T) to CPU i mod nproc. A
#                        client fleet on other machines is not moved around by
#                        the server's scheduling; dnsperf on the server's CPUs
#                        is, unless pinned (bench/README.md, churn)
#                                                          PIN_CLIENTS (0)
#       --edns-option CODE:HEX  every query carries this EDNS option (dnsperf -E),
#                        e.g. 10:0102030405060708 for a DNS cookie (RFC 7873)
#                                                          EDNS_OPTION ("")
#   -s, --servers LIST   e.g. "roster,knot,nsd" or "knot nsd"      SERVERS (echo roster knot nsd;
#                        no echo over TCP). "echo" is the ceiling row: bench/echo,
#                        which sends each query back with QR set and does no DNS
#                        work, so its QPS is what loopback and dnsperf allow here
#   -w, --workers W      knot udp/tcp-workers, nsd server-count    WORKERS (nproc)
#       --no-latency     don't record per-query latencies (no p50/p99)   LATENCY (1)
#       --no-build       don't run cargo build --release   SKIP_BUILD (0)
#       --keep           keep zone files and server data   KEEP_WORK (0)
#       --quiet-wait S   before each run, wait up to S s for the machine's CPU
#                        to be <= 25% busy (others' builds)  QUIET_WAIT (0)
#   -o, --results DIR    results directory (default /tmp/roster-bench-dns-DATE)  RESULTS_DIR
#
# Other env: ROSTER_BIN (default target/release/roster), ROSTER_ARGS (extra
# args for `roster serve`), ROSTER_DATA_DIR_FLAG (auto|yes|no: pass
# --data-dir; auto = only if `roster serve --help` mentions it),
# REGISTER_PARALLEL (8), CHECK_STRICT (0: a failed answer check is reported in
# the table; 1: abort).
#
# Prints a markdown table (also in RESULTS_DIR/table.md); raw dnsperf output,
# server logs and configs are in RESULTS_DIR. See bench/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
GEN="$HERE/gen.py"
REPORT="$HERE/report.py"
ORIG_ARGS=("$@")

SERVICES="${SERVICES:-1000}"
INSTANCES="${INSTANCES:-5}"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
CLIENTS="${CLIENTS:-10}"
THREADS="${THREADS:-2}"
OUTSTANDING="${OUTSTANDING:-100}"
MAX_QPS="${MAX_QPS:-}"
MODE="${MODE:-udp}"
CHURN="${CHURN:-}"
CHURN_THREADS="${CHURN_THREADS:-8}"
CHURN_READS="${CHURN_READS:-0}"
CHURN_REWRITES="${CHURN_REWRITES:-0}"
CHURN_CPU="${CHURN_CPU:-}"
EDNS_OPTION="${EDNS_OPTION:-}"
PIN_CLIENTS="${PIN_CLIENTS:-0}"
SERVERS="${SERVERS:-}"
WORKERS="${WORKERS:-$(nproc)}"
LATENCY="${LATENCY:-1}"
SKIP_BUILD="${SKIP_BUILD:-0}"
KEEP_WORK="${KEEP_WORK:-0}"
QUIET_WAIT="${QUIET_WAIT:-0}"
NX_PERCENT="${NX_PERCENT:-3}"
RESULTS_DIR="${RESULTS_DIR:-}"
ROSTER_BIN="${ROSTER_BIN:-$REPO/target/release/roster}"
ROSTER_ARGS="${ROSTER_ARGS:-}"
ROSTER_DATA_DIR_FLAG="${ROSTER_DATA_DIR_FLAG:-auto}"
REGISTER_PARALLEL="${REGISTER_PARALLEL:-8}"
CHECK_STRICT="${CHECK_STRICT:-0}"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    -n|--services) SERVICES="$2"; shift 2 ;;
    -m|--instances) INSTANCES="$2"; shift 2 ;;
    -d|--duration) DURATION="$2"; shift 2 ;;
    -r|--rounds) ROUNDS="$2"; shift 2 ;;
    -c|--clients) CLIENTS="$2"; shift 2 ;;
    -T|--threads) THREADS="$2"; shift 2 ;;
    -q|--outstanding) OUTSTANDING="$2"; shift 2 ;;
    -Q|--max-qps) MAX_QPS="$2"; shift 2 ;;
    --mode) MODE="$2"; shift 2 ;;
    --churn) CHURN="$2"; shift 2 ;;
    --churn-reads) CHURN_READS=1; shift ;;
    --churn-rewrites) CHURN_REWRITES=1; shift ;;
    --churn-cpu) CHURN_CPU="$2"; shift 2 ;;
    --edns-option) EDNS_OPTION="$2"; shift 2 ;;
    --pin-clients) PIN_CLIENTS=1; shift ;;
    -s|--servers) SERVERS="$2"; shift 2 ;;
    -w|--workers) WORKERS="$2"; shift 2 ;;
    --no-latency) LATENCY=0; shift ;;
    --no-build) SKIP_BUILD=1; shift ;;
    --keep) KEEP_WORK=1; shift ;;
    --quiet-wait) QUIET_WAIT="$2"; shift 2 ;;
    -o|--results) RESULTS_DIR="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown option: $1" >&2; usage 2 >&2 ;;
  esac
done
case "$MODE" in udp|tcp) ;; *) echo "--mode must be udp or tcp" >&2; exit 2 ;; esac
if [ -z "$SERVERS" ]; then
  if [ "$MODE" = udp ]; then SERVERS="echo roster knot nsd"; else SERVERS="roster knot nsd"; fi
fi
SERVERS="$(echo "$SERVERS" | tr ',' ' ' | xargs)"
for s in $SERVERS; do
  case "$s" in echo|roster|knot|nsd) ;; *) echo "unknown server '$s' (echo, roster, knot, nsd)" >&2; exit 2 ;; esac
  [ "$s" = echo ] && [ "$MODE" = tcp ] && { echo "the echo ceiling is UDP only" >&2; exit 2; }
done
if [ -n "$CHURN" ]; then
  [[ "$CHURN" =~ ^[1-9][0-9]*$ ]] || { echo "--churn must be a positive integer (operations/s)" >&2; exit 2; }
  [[ " $(echo "$SERVERS" | tr ',' ' ') " == *" roster "* ]] || { echo "--churn needs roster among the servers" >&2; exit 2; }
fi
[ -z "$CHURN_CPU" ] || [[ "$CHURN_CPU" =~ ^[0-9]+$ && "$CHURN_CPU" -lt "$(nproc)" ]] || { echo "--churn-cpu must be a CPU number below $(nproc)" >&2; exit 2; }
[ "$CHURN_READS" = 1 ] && [ "$CHURN_REWRITES" = 1 ] && { echo "--churn-reads and --churn-rewrites exclude each other" >&2; exit 2; }
[[ "$QUIET_WAIT" =~ ^[0-9]+$ ]] || { echo "QUIET_WAIT must be a number of seconds" >&2; exit 2; }
for v in SERVICES INSTANCES DURATION ROUNDS CLIENTS THREADS OUTSTANDING WORKERS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer, got '${!v}'" >&2; exit 2; }
done
has() { [[ " $SERVERS " == *" $1 "* ]]; }

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

# ------------------------------------------------------------ dependencies
need_install=0
for cmd in dnsperf knotd nsd dig python3; do
  command -v "$cmd" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" = 1 ]; then
  log "installing dnsperf knot nsd bind9-dnsutils from Debian packages"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y dnsperf knot nsd bind9-dnsutils python3
fi
for cmd in dnsperf knotd nsd dig python3; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing after install"
done

# ------------------------------------------------------------ results dir, logging
STAMP="$(date -u +%Y%m%d-%H%M%S)"
RESULTS_DIR="${RESULTS_DIR:-/tmp/roster-bench-dns-$STAMP}"
case "$RESULTS_DIR" in "$REPO"|"$REPO"/*) die "results dir must be outside the repo" ;; esac
mkdir -p "$RESULTS_DIR/runs" "$RESULTS_DIR/logs"
WORK="$RESULTS_DIR/work"
mkdir -p "$WORK"
exec > >(tee -a "$RESULTS_DIR/run.log") 2>&1

# ------------------------------------------------------------ process bookkeeping
STARTED=()          # PIDs of servers we started (stopped with their process trees)
DNSPERF_PID=""
CHURN_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$CHURN_PID" ] && kill -0 "$CHURN_PID" 2>/dev/null; then
    python3 "$GEN" stop "$CHURN_PID" --timeout 5 || true
  fi
  if [ -n "$DNSPERF_PID" ] && kill -0 "$DNSPERF_PID" 2>/dev/null; then
    python3 "$GEN" stop "$DNSPERF_PID" --timeout 5 || true
  fi
  if [ "${#STARTED[@]}" -gt 0 ]; then
    log "stopping servers (pids ${STARTED[*]})"
    python3 "$GEN" stop "${STARTED[@]}" --timeout 15 || true
    for p in "${STARTED[@]}"; do wait "$p" 2>/dev/null || true; done
  fi
  if [ "$KEEP_WORK" != 1 ]; then rm -rf "$WORK"; fi
  log "results in $RESULTS_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------ meta
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
CPU_MODEL="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs || echo unknown)"
DNSPERF_VERSION="$(dnsperf -h 2>&1 | sed -n 's/^Version //p' | head -1)"
KNOT_VERSION="$(knotd --version 2>&1 | grep -o 'version [0-9.]*' | head -1 | cut -d' ' -f2)"
NSD_VERSION="$(nsd -v 2>&1 | sed -n 's/^NSD version //p' | head -1)"
ROSTER_REV="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)"
if [ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then ROSTER_REV="$ROSTER_REV+dirty"; fi
CMDLINE="bench/dns/run.sh"
for a in "${ORIG_ARGS[@]+"${ORIG_ARGS[@]}"}"; do
  if [[ "$a" =~ ^[A-Za-z0-9_,./:=+-]+$ ]]; then CMDLINE+=" $a"; else CMDLINE+=" $(printf '%q' "$a")"; fi
done

DNSPERF_ARGS=(-s 127.0.0.1 -m "$MODE" -l "$DURATION" -c "$CLIENTS" -T "$THREADS" -q "$OUTSTANDING")
[ -n "$MAX_QPS" ] && DNSPERF_ARGS+=(-Q "$MAX_QPS")
if [ -n "$EDNS_OPTION" ]; then
  [[ "$EDNS_OPTION" =~ ^[0-9]+:([0-9a-fA-F]{2})*$ ]] || { echo "--edns-option must be CODE:HEX, e.g. 10:0102030405060708" >&2; exit 2; }
  DNSPERF_ARGS+=(-E "$EDNS_OPTION")
fi
[ "$LATENCY" = 1 ] && DNSPERF_ARGS+=(-v)

log "roster DNS benchmark: servers [$SERVERS], $SERVICES services x $INSTANCES instances, $MODE, ${DURATION}s x $ROUNDS rounds, $CLIENTS clients, $THREADS dnsperf threads, workers $WORKERS"
log "nproc $(nproc), load average $LOAD_BEFORE; results in $RESULTS_DIR"
# how busy is the machine right now (other users' builds skew every number)
read -r b0 t0 <<<"$(python3 "$GEN" machine)"; sleep 2; read -r b1 t1 <<<"$(python3 "$GEN" machine)"
BUSY_BEFORE="$(awk -v a="$b0" -v b="$b1" -v c="$t0" -v d="$t1" 'BEGIN{printf "%.0f", (d>c) ? 100*(b-a)/(d-c) : 0}')"
log "CPU busy in the last 2 s: $BUSY_BEFORE% of $(nproc) cores"
[ "$BUSY_BEFORE" -gt 25 ] && log "WARNING: the machine is busy ($BUSY_BEFORE% CPU before the start); numbers will be noisy"

# ------------------------------------------------------------ build roster
if has roster; then
  if [ "$SKIP_BUILD" != 1 ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found (needed to build roster; or pass --no-build with ROSTER_BIN)"
    log "building roster: cargo build --release"
    (cd "$REPO" && timeout 3600 cargo build --release) || die "cargo build --release failed"
  fi
  case "$ROSTER_BIN" in /*) ;; *) ROSTER_BIN="$PWD/$ROSTER_BIN" ;; esac
  [ -x "$ROSTER_BIN" ] || die "roster binary not found at $ROSTER_BIN"
  ROSTER_BIN_TIME="$(date -u -r "$ROSTER_BIN" '+%Y-%m-%d %H:%M UTC')"
  # run a private copy, so a concurrent `cargo build` can't swap the binary
  # between runs; its checksum goes into the results
  cp "$ROSTER_BIN" "$WORK/roster-bin"
  ROSTER_BIN_TIME="$ROSTER_BIN_TIME, sha256 $(sha256sum "$WORK/roster-bin" | cut -c1-12)"
  ROSTER_BIN="$WORK/roster-bin"
  ROSTER_HELP="$("$ROSTER_BIN" serve --help 2>&1)" || die "'$ROSTER_BIN serve --help' failed: $ROSTER_HELP"
  case "$ROSTER_DATA_DIR_FLAG" in
    yes) USE_DATA_DIR=1 ;;
    no) USE_DATA_DIR=0 ;;
    *) if grep -q -- '--data-dir' <<<"$ROSTER_HELP"; then USE_DATA_DIR=1; else USE_DATA_DIR=0; fi ;;
  esac
fi

# ------------------------------------------------------------ build the churn client
# `roster-store-loadgen churn` (bench/store/loadgen: its own cargo project and
# target dir, so this never touches roster's build), the same client as
# `gen.py churn` at a fraction of the CPU. Built even with --no-build, as
# bench/store/write_throughput.sh does (a no-op when it is up to date).
if [ -n "$CHURN" ]; then
  command -v cargo >/dev/null 2>&1 || die "cargo not found (needed to build the churn client bench/store/loadgen)"
  LOADGEN_DIR="$REPO/bench/store/loadgen"
  log "building the churn client: $LOADGEN_DIR"
  CARGO_TARGET_DIR="$LOADGEN_DIR/target" timeout 1800 cargo build --release --quiet \
    --manifest-path "$LOADGEN_DIR/Cargo.toml" || die "building bench/store/loadgen failed"
  CHURN_BIN="$LOADGEN_DIR/target/release/roster-store-loadgen"
  [ -x "$CHURN_BIN" ] || die "churn client not found at $CHURN_BIN"
fi

# ------------------------------------------------------------ data
log "generating zone file and query file"
python3 "$GEN" zone --services "$SERVICES" --instances "$INSTANCES" --out "$WORK/service.local.zone"
QUERIES="$RESULTS_DIR/queries.txt"
python3 "$GEN" queries --services "$SERVICES" --nx-percent "$NX_PERCENT" --out "$QUERIES" | tee "$RESULTS_DIR/queries.info"
NQUERIES="$(wc -l <"$QUERIES")"

read -r P_ROSTER_DNS P_ROSTER_HTTP P_KNOT P_NSD P_ECHO <<<"$(python3 "$GEN" ports 5)"
declare -A PORT PID
PORT[roster]="$P_ROSTER_DNS"; PORT[knot]="$P_KNOT"; PORT[nsd]="$P_NSD"; PORT[echo]="$P_ECHO"

mem_snapshot() { # server file-key
  local rss pss
  read -r rss pss <<<"$(python3 "$GEN" mem "${PID[$1]}")"
  echo "rss_kib=$rss pss_kib=$pss"
}

check_answers() { # server
  local s="$1" out="$RESULTS_DIR/check-$1.txt"
  if [ "$s" = echo ]; then
    log "echo answers are not checked: it sends each query back and does no DNS work"
    return 0
  fi
  if python3 "$GEN" check --port "${PORT[$s]}" --services "$SERVICES" --instances "$INSTANCES" >"$out" 2>&1; then
    log "$s answers: $(cat "$out")"
  else
    log "$s answers are NOT as expected:"; sed 's/^/    /' "$out"
    [ "$CHECK_STRICT" = 1 ] && die "answer check failed for $s"
  fi
  return 0
}

# ------------------------------------------------------------ roster
start_roster() {
  local d="$WORK/roster"
  mkdir -p "$d/zones" "$d/data"
  local args=(serve --dns "127.0.0.1:${PORT[roster]}" --http "127.0.0.1:$P_ROSTER_HTTP" --zones "$d/zones")
  [ "$USE_DATA_DIR" = 1 ] && args+=(--data-dir "$d/data")
  # shellcheck disable=SC2206
  args+=($ROSTER_ARGS)
  log "starting roster: $ROSTER_BIN ${args[*]}"
  echo "$ROSTER_BIN ${args[*]}" >"$RESULTS_DIR/roster.cmd"
  # run from the work dir, so a config.toml or relative data path in the
  # caller's directory (e.g. the repo root) is neither read nor written
  (cd "$d" && exec "$ROSTER_BIN" "${args[@]}") >"$RESULTS_DIR/logs/roster.log" 2>&1 &
  PID[roster]=$!; STARTED+=("${PID[roster]}")
  if ! python3 "$GEN" http-ready --http "127.0.0.1:$P_ROSTER_HTTP" --timeout 60; then
    tail -20 "$RESULTS_DIR/logs/roster.log" || true
    die "roster's HTTP port 127.0.0.1:$P_ROSTER_HTTP did not answer within 60 s"
  fi
  local empty; empty="$(mem_snapshot roster)"
  log "roster up (pid ${PID[roster]}), empty: $empty; registering $SERVICES x $INSTANCES instances"
  local c0; c0="$(python3 "$GEN" cpu "${PID[roster]}")"
  python3 "$GEN" register --services "$SERVICES" --instances "$INSTANCES" \
    --http "127.0.0.1:$P_ROSTER_HTTP" --parallel "$REGISTER_PARALLEL" --timeout 1800 \
    | tee "$RESULTS_DIR/register.txt" || die "registration failed (see above; roster log: $RESULTS_DIR/logs/roster.log)"
  echo "roster CPU during registration: $(awk -v a="$c0" -v b="$(python3 "$GEN" cpu "${PID[roster]}")" 'BEGIN{printf "%.2f", b-a}') s" \
    | tee -a "$RESULTS_DIR/register.txt"
  sleep 1
  echo "$(mem_snapshot roster) rss_empty_kib=$(sed 's/.*rss_kib=\([0-9]*\).*/\1/' <<<"$empty")" >"$RESULTS_DIR/mem-roster.txt"
}

# ------------------------------------------------------------ echo (the ceiling)
# bench/echo: its own cargo project and target dir, like the churn client.
start_echo() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found (needed to build bench/echo)"
  local dir="$REPO/bench/echo"
  log "building the echo ceiling: $dir"
  CARGO_TARGET_DIR="$dir/target" timeout 1800 cargo build --release --quiet \
    --manifest-path "$dir/Cargo.toml" || die "building bench/echo failed"
  local seconds=$(( (DURATION + 30) * ROUNDS * 4 + 600 ))
  log "starting the echo on 127.0.0.1:${PORT[echo]} ($WORKERS threads, exits by itself after $seconds s)"
  "$dir/target/release/roster-bench-echo" "127.0.0.1:${PORT[echo]}" "$WORKERS" "$seconds" \
    >"$RESULTS_DIR/logs/echo.log" 2>&1 &
  PID[echo]=$!; STARTED+=("${PID[echo]}")
  sleep 0.5
  kill -0 "${PID[echo]}" 2>/dev/null || { cat "$RESULTS_DIR/logs/echo.log"; die "the echo did not start"; }
  mem_snapshot echo >"$RESULTS_DIR/mem-echo.txt"
}

# ------------------------------------------------------------ knot
start_knot() {
  local d="$WORK/knot"
  mkdir -p "$d/run" "$d/storage" "$d/zones"
  ln -sf "$WORK/service.local.zone" "$d/zones/service.local.zone"
  cat >"$d/knot.conf" <<EOF
# generated by bench/dns/run.sh
server:
    rundir: "$d/run"
    pidfile: "$d/run/knot.pid"
    listen: 127.0.0.1@${PORT[knot]}
    udp-workers: $WORKERS
    tcp-workers: $WORKERS
    background-workers: 1
database:
    storage: "$d/storage"
control:
    listen: "$d/run/knot.sock"
log:
  - target: stderr
    any: notice
template:
  - id: default
    storage: "$d/zones"
    file: "%s.zone"
    journal-content: none
    zonefile-sync: -1
    zonefile-load: whole
    semantic-checks: off
zone:
  - domain: service.local.
EOF
  cp "$d/knot.conf" "$RESULTS_DIR/knot.conf"
  log "starting knotd -c $d/knot.conf (port ${PORT[knot]})"
  knotd -c "$d/knot.conf" >"$RESULTS_DIR/logs/knot.log" 2>&1 &
  PID[knot]=$!; STARTED+=("${PID[knot]}")
  if ! python3 "$GEN" ready --port "${PORT[knot]}" --timeout 300; then
    tail -20 "$RESULTS_DIR/logs/knot.log" || true
    die "knotd did not answer SOA service.local. within 300 s"
  fi
  sleep 1
  mem_snapshot knot >"$RESULTS_DIR/mem-knot.txt"
}

# ------------------------------------------------------------ nsd
start_nsd() {
  local d="$WORK/nsd"
  mkdir -p "$d"
  ln -sf "$WORK/service.local.zone" "$d/service.local.zone"
  # rrl-ratelimit 0: Debian's NSD is built with response rate limiting, which
  # at benchmark rates blocks the NXDOMAIN queries and stalls dnsperf.
  cat >"$d/nsd.conf" <<EOF
# generated by bench/dns/run.sh
server:
    ip-address: 127.0.0.1@${PORT[nsd]}
    port: ${PORT[nsd]}
    do-ip4: yes
    do-ip6: no
    server-count: $WORKERS
    reuseport: yes
    username: ""
    chroot: ""
    zonesdir: "$d"
    database: ""
    pidfile: "$d/nsd.pid"
    xfrdfile: "$d/xfrd.state"
    xfrdir: "$d"
    zonelistfile: "$d/zone.list"
    logfile: "$RESULTS_DIR/logs/nsd.log"
    verbosity: 1
    hide-version: yes
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: service.local
    zonefile: service.local.zone
EOF
  cp "$d/nsd.conf" "$RESULTS_DIR/nsd.conf"
  nsd-checkconf "$d/nsd.conf" || die "nsd-checkconf rejected $d/nsd.conf"
  log "starting nsd -d -c $d/nsd.conf (port ${PORT[nsd]})"
  nsd -d -c "$d/nsd.conf" >"$RESULTS_DIR/logs/nsd.stderr" 2>&1 &
  PID[nsd]=$!; STARTED+=("${PID[nsd]}")
  if ! python3 "$GEN" ready --port "${PORT[nsd]}" --timeout 300; then
    tail -20 "$RESULTS_DIR/logs/nsd.log" "$RESULTS_DIR/logs/nsd.stderr" || true
    die "nsd did not answer SOA service.local. within 300 s"
  fi
  sleep 1
  mem_snapshot nsd >"$RESULTS_DIR/mem-nsd.txt"
}

for s in $SERVERS; do
  "start_$s"
  check_answers "$s"
  log "$s loaded: $(cat "$RESULTS_DIR/mem-$s.txt")"
done

# What runs each round: every server, plus "roster_churn" (roster again,
# under churn) right after roster's idle run when --churn is given.
RUN_NAMES=""
for s in $SERVERS; do
  RUN_NAMES+="$s "
  [ "$s" = roster ] && [ -n "$CHURN" ] && RUN_NAMES+="roster_churn "
done
RUN_NAMES="${RUN_NAMES% }"

cat >"$RESULTS_DIR/meta.env" <<EOF
COMMAND=$CMDLINE
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
NPROC=$(nproc)
CPU_MODEL=$CPU_MODEL
LOAD_BEFORE=$LOAD_BEFORE
BUSY_BEFORE=$BUSY_BEFORE
VERSIONS=roster $ROSTER_REV$( [ -n "${ROSTER_BIN_TIME:-}" ] && echo " (binary built $ROSTER_BIN_TIME)"), Knot DNS $KNOT_VERSION, NSD $NSD_VERSION, dnsperf $DNSPERF_VERSION
SERVICES=$SERVICES
INSTANCES=$INSTANCES
DURATION=$DURATION
ROUNDS=$ROUNDS
CLIENTS=$CLIENTS
MODE=$MODE
SERVERS=$RUN_NAMES
CHURN=$CHURN
CHURN_THREADS=$CHURN_THREADS
CHURN_READS=$CHURN_READS
CHURN_REWRITES=$CHURN_REWRITES
CHURN_CPU=$CHURN_CPU
PIN_CLIENTS=$PIN_CLIENTS
MAX_QPS=$MAX_QPS
WORKERS=$WORKERS
LATENCY=$LATENCY
NX_PERCENT=$NX_PERCENT
NQUERIES=$NQUERIES
DNSPERF_ARGS=dnsperf -p PORT -d queries.txt ${DNSPERF_ARGS[*]}
EOF

# ------------------------------------------------------------ rounds
# --pin-clients: pins the threads of the dnsperf that process $1 (gen.py
# timed) starts, once they exist. dnsperf starts, per worker, a receiving
# thread and then a sending one, after its main thread: tasks 1-2 are
# worker 0, 3-4 worker 1, and so on.
pin_dnsperf() {
  local parent="$1" pid="" tids=() k n
  n="$(nproc)"
  for _ in $(seq 1 300); do
    pid="$(pgrep -P "$parent" -x dnsperf | head -1 || true)"
    if [ -n "$pid" ] && [ "$(ls "/proc/$pid/task" 2>/dev/null | wc -l)" -ge $((1 + 2 * THREADS)) ]; then
      break
    fi
    sleep 0.01
  done
  [ -n "$pid" ] || { log "WARNING: --pin-clients: no dnsperf under pid $parent; not pinned"; return 0; }
  mapfile -t tids < <(ls "/proc/$pid/task" | sort -n)
  for ((k = 1; k < ${#tids[@]}; k++)); do
    taskset -p -c $(( ((k - 1) / 2) % n )) "${tids[$k]}" >/dev/null 2>&1 \
      || log "WARNING: --pin-clients: could not pin dnsperf thread ${tids[$k]}"
  done
}

# roster's count of durable commits so far, from its /metrics
roster_commits() {
  python3 "$GEN" metric --http "127.0.0.1:$P_ROSTER_HTTP" roster_registry_commit_duration_seconds_count
}

for ((r = 1; r <= ROUNDS; r++)); do
  for name in $RUN_NAMES; do
    s="${name%_churn}"
    kill -0 "${PID[$s]}" 2>/dev/null || die "$s (pid ${PID[$s]}) is no longer running"
    log "round $r/$ROUNDS: $name (port ${PORT[$s]})"
    out="$WORK/dnsperf-r$r-$name.out"
    [ "$QUIET_WAIT" != 0 ] && python3 "$GEN" quiet --max-wait "$QUIET_WAIT"
    cpu0="$(python3 "$GEN" cpu "${PID[$s]}")"
    read -r busy0 total0 <<<"$(python3 "$GEN" machine)"
    churn_kv=()
    if [ "$name" = roster_churn ]; then
      commits0="$(roster_commits)"
      # starts its schedule 0.2 s from now, i.e. about when dnsperf starts
      ${CHURN_CPU:+taskset -c "$CHURN_CPU"} "$CHURN_BIN" churn --http "127.0.0.1:$P_ROSTER_HTTP" --services "$SERVICES" \
        --rate "$CHURN" --duration "$DURATION" --threads "$CHURN_THREADS" \
        $([ "$CHURN_READS" = 1 ] && echo --reads) $([ "$CHURN_REWRITES" = 1 ] && echo --rewrites) \
        --out "$WORK/churn.json" >"$RESULTS_DIR/runs/r$r-$name-churn.txt" 2>&1 &
      CHURN_PID=$!
    fi
    python3 "$GEN" timed --timeout $((DURATION + 60)) --cpu-out "$WORK/dnsperf.cpu" -- \
      dnsperf -p "${PORT[$s]}" -d "$QUERIES" "${DNSPERF_ARGS[@]}" >"$out" 2>&1 &
    DNSPERF_PID=$!
    if [ "$PIN_CLIENTS" = 1 ]; then pin_dnsperf "$DNSPERF_PID" & fi
    rc=0; wait "$DNSPERF_PID" || rc=$?
    DNSPERF_PID=""
    read -r busy1 total1 <<<"$(python3 "$GEN" machine)"
    cpu1="$(python3 "$GEN" cpu "${PID[$s]}")"
    [ "$rc" = 0 ] || { grep -v '^> ' "$out" | tail -20; die "dnsperf exited with status $rc"; }
    if [ -n "$CHURN_PID" ]; then
      crc=0; wait "$CHURN_PID" || crc=$?
      CHURN_PID=""
      sed 's/^/    /' "$RESULTS_DIR/runs/r$r-$name-churn.txt"
      [ "$crc" = 0 ] && [ -s "$WORK/churn.json" ] || die "churn client failed (status $crc)"
      # the churn client's CPU is "other" CPU for this run, reported apart
      mapfile -t churn_kv < <(python3 -c 'import json,sys; [print("%s=%s" % kv) for kv in json.load(open(sys.argv[1])).items()]' "$WORK/churn.json")
      rm -f "$WORK/churn.json"
      # roster's durable commits (syncs) in the run, the clean-up included
      churn_kv+=("churn_commits=$(( $(roster_commits) - commits0 ))")
    fi
    python3 "$REPORT" run "$out" "$RESULTS_DIR/runs/r$r-$name.txt" "$RESULTS_DIR/runs/r$r-$name.json" \
      "cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b-a}')" \
      "dnsperf_cpu=$(cat "$WORK/dnsperf.cpu")" \
      "machine_busy=$(awk -v a="$busy0" -v b="$busy1" 'BEGIN{printf "%.2f", b-a}')" \
      "machine_total=$(awk -v a="$total0" -v b="$total1" 'BEGIN{printf "%.2f", b-a}')" \
      "${churn_kv[@]+"${churn_kv[@]}"}"
    sleep 1
  done
done

echo "LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS_DIR/meta.env"
for s in $SERVERS; do
  kill -0 "${PID[$s]}" 2>/dev/null || log "WARNING: $s exited during the benchmark"
done
if has roster; then
  log "roster log: $(wc -l <"$RESULTS_DIR/logs/roster.log") lines, $(wc -c <"$RESULTS_DIR/logs/roster.log") bytes"
fi

echo
python3 "$REPORT" table "$RESULTS_DIR" | tee "$RESULTS_DIR/table.md"
echo
