#!/usr/bin/env bash
# Does roster give memory back once instances are gone?
#
#   bench/import/release_memory.sh target/release/roster [instances]   # default 100000
#
# Imports N instances (the shape of memory.sh: 2 tags, 2 meta keys, no
# checks, over 500 services) into a roster that keeps nothing on disk
# (data_dir = ""), then deregisters every one of them over one keep-alive
# HTTP connection, waits 15 s, and prints VmRSS at each step and the peak
# (VmHWM). Memory the allocator keeps after the deregistrations is memory
# roster cannot use for anything else. Raw files go to /tmp/roster-release-bench.
set -euo pipefail
bin=$(realpath "${1:?usage: $0 path/to/roster [instances]}")
count=${2:-100000}
work=/tmp/roster-release-bench
mkdir -p "$work"
cd "$work"
printf 'data_dir = ""\n' > config.toml

python3 - "$count" <<'PY'
import json, sys
count = int(sys.argv[1])
with open("body.json", "w") as out:
    out.write('{"version": 1, "index": 1, "instances": [')
    for n in range(count):
        inst = {"service": "svc-%d" % (n % 500), "id": "inst-%d" % n,
                "address": "10.%d.%d.%d" % ((n >> 16) & 255, (n >> 8) & 255, n & 255),
                "port": 8080, "tags": ["http", "v1"], "meta": {"zone": "a", "build": str(n)},
                "weight": 1, "priority": 0, "checks": []}
        out.write((',' if n else '') + json.dumps(inst))
    out.write(']}')
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status"; }

http=$(free_port); dns=$(free_port)
"$bin" serve --config config.toml --zones "$work" --http "127.0.0.1:$http" --dns "127.0.0.1:$dns" \
    > server.log 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$http/v1/services" && break; sleep 0.1; done
started=$(rss)
code=$(curl -s -o reply.json -w '%{http_code}' -X PUT -H 'content-type: application/json' \
    --data-binary @body.json "http://127.0.0.1:$http/v1/import")
[ "$code" = 200 ] || { echo "import answered $code: $(cat reply.json)" >&2; exit 1; }
sleep 15
imported=$(rss)

python3 - "$http" "$count" <<'PY'
import http.client, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for n in range(count):
    conn.request("DELETE", "/v1/services/svc-%d/instances/inst-%d" % (n % 500, n))
    reply = conn.getresponse()
    reply.read()
    if reply.status not in (200, 204):
        sys.exit("DELETE inst-%d answered %d" % (n, reply.status))
PY
left=$(curl -s "http://127.0.0.1:$http/v1/services")
sleep 15
emptied=$(rss)
hwm=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$pid/status")

echo "| instances | RSS at start MB | RSS after import MB | RSS after deleting all MB | peak MB | services left |"
echo "| --- | --- | --- | --- | --- | --- |"
echo "| $count | $started | $imported | $emptied | $hwm | $left |"
