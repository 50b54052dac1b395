#!/usr/bin/env bash
# Instructions roster executes per answered DNS query, counted by callgrind:
# unlike QPS or CPU time, the count is repeatable on a busy 2-core machine,
# so it says whether a change made the DNS path dearer even when the change
# is far smaller than the noise of bench/dns/run.sh.
#
#   bench/dns/callgrind_per_query.sh BINARY [SERVICES] [QUERIES]
#
# Starts BINARY under `valgrind --tool=callgrind --instr-atstart=no` on
# loopback with an empty data directory and no zones, imports SERVICES
# (default 1000) x 5 instances through PUT /v1/import (named as gen.py names
# them), switches instrumentation on, sends QUERIES (default 20000) UDP queries
# without EDNS one at a time, each waiting for its answer, from gen.py's query
# file (fixed seed: an A and an SRV query per service, shuffled, and ~3%
# nonexistent names, which go the general path), dumps the counts, and
# prints instructions (Ir) per answered query. Counts cover every thread of
# roster while the queries run (the other threads are idle then), not the
# client. Needs valgrind, curl and python3; stops everything it started.
set -euo pipefail
BIN=$(realpath "$1"); N=${2:-1000}; Q=${3:-20000}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d); mkdir "$W/z"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
read -r DP HP <<<"$(python3 "$HERE/gen.py" ports 2)"
# roster runs in its work directory, so a config.toml where this is run
# from (the repository's) is not read.
(cd "$W" && exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/callgrind.out" \
  "$BIN" serve --dns 127.0.0.1:"$DP" --http 127.0.0.1:"$HP" --data-dir "$W/data" --zones "$W/z") \
  2>"$W/log" &
PID=$!
for _ in $(seq 600); do curl -sf 127.0.0.1:"$HP"/v1/services >/dev/null && break; sleep 0.1; done
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
callgrind_control -i on "$PID" >/dev/null 2>&1
ANSWERED=$(python3 - "$DP" "$W/queries.txt" "$Q" <<'PY'
import socket, struct, sys
port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
types = {"A": 1, "AAAA": 28, "SRV": 33}
lines = [line.split() for line in open(path) if line.strip()]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(10)
sock.connect(("127.0.0.1", port))
answered = 0
for i in range(count):
    name, qtype = lines[i % len(lines)]
    query = struct.pack(">HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0)  # RD, one question
    for label in name.rstrip(".").split("."):
        query += bytes([len(label)]) + label.encode()
    query += b"\0" + struct.pack(">HH", types[qtype], 1)
    sock.send(query)
    try:
        while sock.recv(4096)[:2] != query[:2]:
            pass
        answered += 1
    except socket.timeout:
        pass
print(answered)
PY
)
callgrind_control -d "$PID" >/dev/null 2>&1
OUT=$(ls "$W"/callgrind.out* | grep -v '\.out$' | head -1)
IR=$(awk '/^(summary|totals):/ {print $2; exit}' "$OUT")
python3 -c "import sys; n, q, a, ir = sys.argv[1:]; print('services=%s queries=%s answered=%s Ir=%s Ir_per_query=%.0f' % (n, q, a, ir, int(ir) / max(int(a), 1)))" \
  "$N" "$Q" "$ANSWERED" "$IR"
