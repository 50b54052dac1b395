#!/usr/bin/env bash
# Durable write throughput: how many registrations per second roster
# acknowledges (each one committed to disk before its 2xx), at several
# client concurrencies.
#
#   bench/store/write_throughput.sh [options]     (each option also has an env variable)
#
#   -c, --connections "LIST"  keep-alive client connections, one run each  CONNECTIONS ("1 16 64 256")
#   -d, --duration S          measured seconds per run                      DURATION (10)
#   -w, --warmup S            unmeasured seconds before each run            WARMUP (2)
#   -s, --services N          services the instances are spread over       SERVICES (1000)
#   -i, --instances N         distinct instance IDs (then they are updated) INSTANCES (100000)
#   -t, --threads N           load generator threads                        THREADS (1)
#   -r, --rounds R            runs per connection count                     ROUNDS (1)
#   -q, --quiet-wait S        before each run, wait up to S s for the machine's
#                             CPU to be <= 25% busy (others' builds)        QUIET_WAIT (0)
#       --no-build            skip `cargo build --release`                  SKIP_BUILD (0)
#       --churn RATE          instead of the throughput runs, one run (per
#                             round) of the churn client of bench/dns/run.sh
#                             --churn: RATE paced registrations and
#                             deregistrations a second from 8 connections, as a
#                             fleet sends them, for the duration; prints the
#                             commits they took and roster's CPU     CHURN ("")
#       --perf DIR            also profile roster for 3 s in the middle of each
#                             run (`perf record --call-graph dwarf`), into
#                             DIR/c<connections>-<round>.data (it slows roster:
#                             read that run's rates as disturbed)          PERF_DIR ("")
#   ROSTER_BIN: the roster binary (default target/release/roster)
#
# Each run starts roster ($ROSTER_BIN) on a fresh data directory
# under /var/tmp (a real disk: fsync must cost what it costs), then runs
# bench/store/loadgen: C connections, one PUT in flight on each, every PUT a
# real change (a fresh sequence number in its metadata), for the duration.
# Prints one markdown table row per run: acknowledged writes per second,
# client-side latency, the CPU used by roster, the client and (during the
# run) everything else on the machine, roster's CPU per applied write and
# the writes per store commit (from its /metrics, read with curl).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

CONNECTIONS=${CONNECTIONS:-"1 16 64 256"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SERVICES=${SERVICES:-1000}
INSTANCES=${INSTANCES:-100000}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-1}
QUIET_WAIT=${QUIET_WAIT:-0}
SKIP_BUILD=${SKIP_BUILD:-0}
PERF_DIR=${PERF_DIR:-}
CHURN=${CHURN:-}

while (($#)); do
    case $1 in
        -c | --connections) CONNECTIONS=$2; shift 2 ;;
        -d | --duration) DURATION=$2; shift 2 ;;
        -w | --warmup) WARMUP=$2; shift 2 ;;
        -s | --services) SERVICES=$2; shift 2 ;;
        -i | --instances) INSTANCES=$2; shift 2 ;;
        -t | --threads) THREADS=$2; shift 2 ;;
        -r | --rounds) ROUNDS=$2; shift 2 ;;
        -q | --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
        --no-build) SKIP_BUILD=1; shift ;;
        --perf) PERF_DIR=$2; shift 2 ;;
        --churn) CHURN=$2; shift 2 ;;
        -h | --help) sed -n '2,37p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [[ $SKIP_BUILD != 1 ]]; then
    cargo build --release --quiet
fi
loadgen_dir=$repo/bench/store/loadgen
CARGO_TARGET_DIR=$loadgen_dir/target cargo build --release --quiet \
    --manifest-path "$loadgen_dir/Cargo.toml"
roster_bin=${ROSTER_BIN:-$repo/target/release/roster}
loadgen_bin=$loadgen_dir/target/release/roster-store-loadgen

work=$(mktemp -d /var/tmp/roster-store-bench.XXXXXX)
roster_pid=
cleanup() {
    if [[ -n $roster_pid ]]; then kill "$roster_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# CPU seconds (user + system) a process has used so far.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

# Starts roster on a fresh data dir; sets roster_pid and http_addr.
start_roster() {
    rm -rf "$work/run"
    mkdir -p "$work/run/zones"
    # cwd without a config.toml: built-in defaults plus the flags below.
    (cd "$work/run" && NO_COLOR=1 exec "$roster_bin" serve --dns 127.0.0.1:0 \
        --http 127.0.0.1:0 --data-dir "$work/run/data" --zones "$work/run/zones" \
        2>"$work/run/roster.log") &
    roster_pid=$!
    for _ in $(seq 300); do
        if grep -q 'roster is serving' "$work/run/roster.log" 2>/dev/null; then
            # From the "serving" line only: an earlier line ("connection
            # caps ... http=1024") also has an `http=`.
            http_addr=$(grep 'roster is serving' "$work/run/roster.log" | grep -o ' http=[0-9.:]*' | cut -d= -f2)
            return
        fi
        kill -0 "$roster_pid" 2>/dev/null || { cat "$work/run/roster.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "roster did not start in 30 s" >&2
    exit 1
}

# CPU seconds the whole machine has been busy (user, nice, system, irq,
# softirq, steal), summed over its cores.
machine_cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" 'NR == 1 { print ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat
}

# Percent of the machine's CPU time busy over the next second.
busy_percent() {
    local a b
    read -ra a < <(head -1 /proc/stat)
    sleep 1
    read -ra b < <(head -1 /proc/stat)
    local total=0 idle i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    idle=$((b[4] - a[4] + b[5] - a[5]))
    echo $(((total - idle) * 100 / (total > 0 ? total : 1)))
}

# Waits (at most QUIET_WAIT s) for others' work to calm down; sets busy.
wait_quiet() {
    local waited=0
    busy=$(busy_percent)
    while ((busy > 25 && waited < QUIET_WAIT)); do
        busy=$(busy_percent)
        waited=$((waited + 1))
    done
}

# Applied writes and store commits so far, from roster's /metrics: their
# ratio is the batch size group commit reached.
writes_and_commits() {
    curl -s --noproxy '*' "http://$http_addr/metrics" | awk '
        /^roster_registry_writes_total\{result="applied"\}/ { w = $2 }
        /^roster_registry_commit_duration_seconds_count/ { c = $2 }
        END { print w + 0, c + 0 }'
}

stop_roster() {
    kill -TERM "$roster_pid"
    wait "$roster_pid" || { echo "roster exited with $?" >&2; exit 1; }
    roster_pid=
}

# --churn: the churn client's paced writes instead of the throughput runs.
if [[ -n $CHURN ]]; then
    echo "# $(date -u +%Y-%m-%dT%H:%MZ), roster ${ROSTER_BIN:-$(git describe --always --dirty 2>/dev/null || echo unknown)}, nproc $(nproc), $(uname -m), churn $CHURN/s over $SERVICES services for ${DURATION}s"
    echo
    echo "| round | ops/s achieved | writes applied | commits | writes per commit | roster CPU s | roster CPU µs per write | HTTP p50 / p99 / max ms | failed |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for round in $(seq "$ROUNDS"); do
        wait_quiet
        start_roster
        read -r writes0 commits0 < <(writes_and_commits)
        roster_cpu0=$(cpu_seconds "$roster_pid")
        "$loadgen_bin" churn --http "$http_addr" --services "$SERVICES" --rate "$CHURN" \
            --duration "$DURATION" --out "$work/churn.json" >"$work/churn.out" 2>&1 ||
            { cat "$work/churn.out" >&2; exit 1; }
        roster_cpu1=$(cpu_seconds "$roster_pid")
        read -r writes1 commits1 < <(writes_and_commits)
        stop_roster
        # The clean-up of the client's leftovers is in both counts and the CPU.
        python3 - "$work/churn.json" "$round" $((writes1 - writes0)) $((commits1 - commits0)) \
            "$roster_cpu0" "$roster_cpu1" <<'PY'
import json, sys
churn = json.load(open(sys.argv[1]))
round_, writes, commits = (int(v) for v in sys.argv[2:5])
cpu = float(sys.argv[6]) - float(sys.argv[5])
print("| %d | %.0f | %d | %d | %.1f | %.2f | %.0f | %.1f / %.1f / %.1f | %d |" % (
    round_, churn["churn_rate"], writes, commits, writes / commits if commits else 0, cpu,
    cpu / writes * 1e6 if writes else 0, churn["churn_p50_ms"], churn["churn_p99_ms"],
    churn["churn_max_ms"], churn["churn_failed"]))
PY
    done
    exit 0
fi

echo "# $(date -u +%Y-%m-%dT%H:%MZ), roster ${ROSTER_BIN:-$(git describe --always --dirty 2>/dev/null || echo unknown)}, nproc $(nproc), $(uname -m), services $SERVICES, instance IDs $INSTANCES, ${DURATION}s per run (+${WARMUP}s warm-up), loadgen threads $THREADS"
echo
echo "| connections | acknowledged writes/s | p50 ms | p99 ms | max ms | roster CPU (cores) | loadgen CPU (cores) | others' CPU (cores) | roster CPU µs per write | writes per commit | store files MB | failures |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
if [[ -n $PERF_DIR ]]; then
    command -v perf >/dev/null || { echo "--perf needs perf (Debian: linux-perf)" >&2; exit 2; }
    mkdir -p "$PERF_DIR"
fi
for c in $CONNECTIONS; do
    for round in $(seq "$ROUNDS"); do
        wait_quiet
        start_roster
        read -r writes0 commits0 < <(writes_and_commits)
        roster_cpu0=$(cpu_seconds "$roster_pid")
        machine_cpu0=$(machine_cpu_seconds)
        "$loadgen_bin" --addr "$http_addr" --connections "$c" --duration "$DURATION" \
            --warmup "$WARMUP" --services "$SERVICES" --instances "$INSTANCES" \
            --threads "$THREADS" >"$work/loadgen.out" 2>"$work/loadgen.err" &
        loadgen_pid=$!
        if [[ -n $PERF_DIR ]]; then
            sleep "$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { print w + d / 2 - 1.5 }')"
            perf record -q -F 1000 --call-graph dwarf,16384 -p "$roster_pid" \
                -o "$PERF_DIR/c$c-$round.data" -- sleep 3 2>/dev/null || true
        fi
        wait "$loadgen_pid"
        machine_cpu1=$(machine_cpu_seconds)
        roster_cpu1=$(cpu_seconds "$roster_pid")
        read -r writes1 commits1 < <(writes_and_commits)
        stop_roster
        line=$(cat "$work/loadgen.out")
        get() { grep -o "$1=[^ ]*" <<<"$line" | cut -d= -f2; }
        elapsed=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { print d + w }')
        roster_cores=$(awk -v a="$roster_cpu0" -v b="$roster_cpu1" -v e="$elapsed" 'BEGIN { printf "%.2f", (b - a) / e }')
        loadgen_cores=$(awk -v a="$(get cpu | tr -d s)" -v e="$elapsed" 'BEGIN { printf "%.2f", a / e }')
        # What the machine did besides roster and the client: others' builds
        # and tests. Rows where this is large were disturbed.
        others_cores=$(awk -v a="$machine_cpu0" -v b="$machine_cpu1" -v e="$elapsed" \
            -v r="$roster_cores" -v l="$loadgen_cores" \
            'BEGIN { o = (b - a) / e - r - l; printf "%.2f", (o < 0 ? 0 : o) }')
        # Over the whole run, warm-up included, as the CPU is measured.
        us_per_write=$(awk -v a="$roster_cpu0" -v b="$roster_cpu1" -v w=$((writes1 - writes0)) \
            'BEGIN { printf "%.0f", (w > 0 ? (b - a) / w * 1e6 : 0) }')
        per_commit=$(awk -v w=$((writes1 - writes0)) -v c=$((commits1 - commits0)) \
            'BEGIN { printf "%.1f", (c > 0 ? w / c : 0) }')
        failures="$(get refused) refused, $(get connection_errors) connection errors"
        if [[ -s $work/loadgen.err ]]; then
            failures="$failures ($(head -c 200 "$work/loadgen.err" | tr '\n|' '  '))"
        fi
        # the database and its commit log (roster.log, since 2026-12-07;
        # an older binary has none)
        store_files=("$work/run/data/roster.redb")
        [[ -e $work/run/data/roster.log ]] && store_files+=("$work/run/data/roster.log")
        store_mb=$(du -mc "${store_files[@]}" | tail -1 | cut -f1)
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
            "$c" "$(get rate | tr -d /s)" "$(get p50 | tr -d ms)" "$(get p99 | tr -d ms)" \
            "$(get max | tr -d ms)" "$roster_cores" "$loadgen_cores" "$others_cores" \
            "$us_per_write" "$per_commit" "$store_mb" "$failures"
    done
done
