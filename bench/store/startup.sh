#!/usr/bin/env bash
# Start-up time and memory of roster with 100,000 stored instances.
#
#   bench/store/startup.sh [options]            (each option also has an env variable)
#
#   -n, --instances N    instances in the store                INSTANCES (100000)
#   -s, --services N     services they are spread over         SERVICES (1000)
#       --ttl-fraction F share of instances with a TTL check   TTL_FRACTION (0.1)
#   -r, --runs R         start-ups measured (median reported)  RUNS (3)
#       --no-build       skip `cargo build --release`          SKIP_BUILD (0)
#   ROSTER_BIN: the roster binary (default target/release/roster)
#
# Fills a fresh data directory under /var/tmp with one PUT /v1/import of a
# generated export, stops roster, then starts it R times on that directory
# and times each start-up until "roster is serving" is logged and until the
# first DNS answer for a registered service arrives; reads VmRSS/VmHWM from
# /proc then. The work is in startup.py (python3 stdlib).
set -euo pipefail
cd "$(dirname "$0")/../.."

INSTANCES=${INSTANCES:-100000}
SERVICES=${SERVICES:-1000}
TTL_FRACTION=${TTL_FRACTION:-0.1}
RUNS=${RUNS:-3}
SKIP_BUILD=${SKIP_BUILD:-0}

while (($#)); do
    case $1 in
        -n | --instances) INSTANCES=$2; shift 2 ;;
        -s | --services) SERVICES=$2; shift 2 ;;
        --ttl-fraction) TTL_FRACTION=$2; shift 2 ;;
        -r | --runs) RUNS=$2; shift 2 ;;
        --no-build) SKIP_BUILD=1; shift ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [[ $SKIP_BUILD != 1 ]]; then
    cargo build --release --quiet
fi
echo "# $(date -u +%Y-%m-%dT%H:%MZ), roster ${ROSTER_BIN:-$(git describe --always --dirty 2>/dev/null || echo unknown)}, nproc $(nproc), $(uname -m), load average $(cut -d' ' -f1-3 /proc/loadavg)"
exec python3 bench/store/startup.py --binary "${ROSTER_BIN:-$PWD/target/release/roster}" \
    --instances "$INSTANCES" --services "$SERVICES" --ttl-fraction "$TTL_FRACTION" \
    --runs "$RUNS"
