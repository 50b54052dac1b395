#!/bin/bash
# Resident memory of roster with N instances (5 per service): after an import
# over HTTP, and after a restart from the store. usage: bench/dns/memtest.sh BINARY [N]
BIN=$(realpath "$1"); N=${2:-100000}
W=$(mktemp -d); mkdir $W/z
# roster runs in its work directory, so a config.toml where this is run
# from (the repository's) is not read.
(cd $W && exec $BIN serve --dns 127.0.0.1:29600 --http 127.0.0.1:29500 --data-dir $W/data --zones $W/z) 2>$W/log &
PID=$!
for i in $(seq 50); do curl -sf 127.0.0.1:29500/v1/services >/dev/null && break; sleep 0.1; done
echo "empty RSS: $(grep VmRSS /proc/$PID/status)"
python3 - $N > $W/imp.json <<'PY'
import json, sys
n = int(sys.argv[1])
inst = [{"service": f"svc-{i//5:05d}", "id": f"svc-{i//5:05d}-{i%5}", "address": f"10.{(i>>16)&255}.{(i>>8)&255}.{i&255}", "port": 8080, "weight": 1, "priority": 0} for i in range(n)]
print(json.dumps({"version": 1, "index": 0, "instances": inst}))
PY
/usr/bin/time -f "import %e s" curl -sf -X PUT --data-binary @$W/imp.json 127.0.0.1:29500/v1/import
echo
echo "loaded RSS: $(grep VmRSS /proc/$PID/status)"
kill $PID; wait $PID
T0=$(date +%s.%N)
(cd $W && exec $BIN serve --dns 127.0.0.1:29600 --http 127.0.0.1:29500 --data-dir $W/data --zones $W/z) 2>$W/log2 &
PID=$!
for i in $(seq 200); do dig +short +time=1 +tries=1 @127.0.0.1 -p 29600 svc-00007.service.local | grep -q 10 && break; sleep 0.02; done
T1=$(date +%s.%N)
echo "restart to first answer: $(echo "$T1 - $T0" | bc) s; RSS after restart: $(grep VmRSS /proc/$PID/status)"
kill $PID; wait $PID; rm -rf $W
