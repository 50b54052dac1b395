#!/usr/bin/env bash
# Peak memory (VmHWM) of roster while it takes one big /v1/import.
#
#   bench/import/memory.sh target/release/roster [MiB]      # default 64 MiB
#
# Two bodies of the same size (instances with 2 tags and 2 meta keys, about
# 190 bytes each, over 500 services):
#   valid     - imported; the peak includes the registry holding the result.
#   bad-last  - the last instance has port 70000, so the body is parsed in
#               full and refused: the peak is the parsing alone.
# The server keeps nothing on disk (data_dir = ""), so only parsing and the
# in-memory registry count. Raw files go to /tmp/roster-import-bench.
set -euo pipefail
bin=$(realpath "${1:?usage: $0 path/to/roster [MiB]}")
mib=${2:-64}
work=/tmp/roster-import-bench
mkdir -p "$work"
cd "$work"
printf 'data_dir = ""\n' > config.toml

python3 - "$mib" <<'PY'
import json, sys
limit = int(sys.argv[1]) * 1024 * 1024
with open("valid.json", "w") as out:
    out.write('{"version": 1, "index": 1, "instances": [')
    size, n = 0, 0
    while size < limit:
        inst = {"service": "svc-%d" % (n % 500), "id": "inst-%d" % n,
                "address": "10.%d.%d.%d" % ((n >> 16) & 255, (n >> 8) & 255, n & 255),
                "port": 8080, "tags": ["http", "v1"], "meta": {"zone": "a", "build": str(n)},
                "weight": 1, "priority": 0, "checks": []}
        text = (',' if n else '') + json.dumps(inst)
        out.write(text)
        size += len(text)
        n += 1
    out.write(']}')
text = open("valid.json").read()
i = text.rfind('"port": 8080')
open("bad-last.json", "w").write(text[:i] + '"port": 70000' + text[i + len('"port": 8080'):])
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "| body | size | HTTP | curl s | VmHWM MB | VmRSS after MB |"
echo "| --- | --- | --- | --- | --- | --- |"
for body in valid bad-last; do
    http=$(free_port); dns=$(free_port)
    "$bin" serve --config config.toml --zones "$work" --http "127.0.0.1:$http" --dns "127.0.0.1:$dns" \
        > "server-$body.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$http/v1/services" && break; sleep 0.1; done
    start=$(date +%s.%N)
    code=$(curl -s -o "reply-$body.json" -w '%{http_code}' -X PUT -H 'content-type: application/json' \
        --data-binary "@$body.json" "http://127.0.0.1:$http/v1/import")
    end=$(date +%s.%N)
    hwm=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$pid/status")
    rss=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    size=$(( $(stat -c %s "$body.json") / 1024 / 1024 ))
    printf '| %s | %d MiB | %s | %.1f | %d | %d |\n' "$body" "$size" "$code" \
        "$(echo "$end - $start" | bc)" "$hwm" "$rss"
done
