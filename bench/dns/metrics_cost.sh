#!/usr/bin/env bash
# What roster's DNS counters (GET /metrics) cost the UDP path: two roster
# binaries, one without the counters (e.g. the parent commit's, built into a
# separate target directory) and one with, measured side by side.
#
#   bench/dns/metrics_cost.sh WITHOUT_BIN WITH_BIN [ROUNDS] [DURATION] [QUERIES]
#
# 1. ROUNDS (default 2) pairs of roster-only bench/dns/run.sh rounds
#    (1,000 services x 5 instances, dnsperf -c 10 -T 2 -q 100, DURATION s,
#    default 10), alternating without/with so both see the same machine;
#    QPS and roster CPU µs per answered query from each run's table.
# 2. Instructions per answered query of each binary under callgrind
#    (bench/dns/callgrind_per_query.sh BIN 1000 QUERIES, default 20000):
#    repeatable within a few instructions on a busy machine, and one query
#    per recvmmsg batch, the worst case for per-batch costs.
#
# Raw output under /tmp/roster-bench-metrics-DATE; prints a summary.
set -euo pipefail
WITHOUT=$1; WITH=$2; ROUNDS=${3:-2}; DURATION=${4:-10}; QUERIES=${5:-20000}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=/tmp/roster-bench-metrics-$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
for round in $(seq "$ROUNDS"); do
  for side in without with; do
    bin=$WITHOUT; [ "$side" = with ] && bin=$WITH
    ROSTER_BIN="$bin" "$HERE/run.sh" --no-build -s roster -r 1 -d "$DURATION" \
      -n 1000 -m 5 -o "$OUT/$side-$round" >"$OUT/$side-$round.log" 2>&1
    echo "## $side-$round ($bin)"
    cat "$OUT/$side-$round/table.md"
  done
done
for side in without with; do
  bin=$WITHOUT; [ "$side" = with ] && bin=$WITH
  echo "## callgrind, $side ($bin)"
  "$HERE/callgrind_per_query.sh" "$bin" 1000 "$QUERIES" | tee "$OUT/callgrind-$side.txt"
done
echo "raw output: $OUT"
