#!/bin/bash
# Resident memory and open descriptors of roster while a client holds N idle
# DNS-over-TCP connections, and whether a new TCP client is still answered.
# usage: bench/dns/tcp_idle.sh BINARY [N] [EXTRA_DNS_TOML]
#   EXTRA_DNS_TOML: lines added to the config's [dns] section, e.g.
#   $'tcp_max_connections = 10000\ntcp_idle_timeout = 60' (needs a roster
#   that knows those keys; omit for older builds).
BIN=$(realpath "$1"); N=${2:-5000}; EXTRA=${3:-}
W=$(mktemp -d); mkdir $W/z
CONFIG=()
if [ -n "$EXTRA" ]; then
  printf '[dns]\nlisten = "127.0.0.1:29601"\nzones = "%s"\n%s\n[http]\nlisten = "127.0.0.1:29501"\n' "$W/z" "$EXTRA" > $W/config.toml
  CONFIG=(--config $W/config.toml)
fi
ulimit -n 20000
# roster runs in its work directory, so a config.toml where this is run
# from (the repository's) is not read.
(cd $W && exec $BIN serve "${CONFIG[@]}" --dns 127.0.0.1:29601 --http 127.0.0.1:29501 --data-dir $W/data --zones $W/z) 2>$W/log &
PID=$!
for i in $(seq 100); do curl -sf 127.0.0.1:29501/v1/services >/dev/null && break; sleep 0.1; done
curl -sf -X PUT -H 'content-type: application/json' -d '{"address":"10.0.0.1","port":80}' 127.0.0.1:29501/v1/services/web/instances/web-1 >/dev/null
echo "no connections: $(grep VmRSS /proc/$PID/status | tr -s ' \t' ' '), fds $(ls /proc/$PID/fd | wc -l)"
python3 - $PID $N <<'PY'
import socket, subprocess, sys, time
pid, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", 29601))
    held.append(s)
time.sleep(2)
rss = [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0]
import os
fds = len(os.listdir(f"/proc/{pid}/fd"))
t0 = time.time()
out = subprocess.run(["dig", "+tcp", "+short", "+time=3", "+tries=1", "@127.0.0.1", "-p", "29601", "web.service.local", "A"], capture_output=True, text=True).stdout.strip()
t1 = time.time()
open_count = 0
for s in held:
    s.setblocking(False)
    try:
        open_count += 1 if s.recv(1) else 0  # b"": closed by roster
    except BlockingIOError:
        open_count += 1
    except OSError:
        pass
print(f"{n} idle connections held: VmRSS {rss} kB, fds {fds}; new TCP query -> {out or 'no answer'!r} in {t1-t0:.2f} s; {open_count} of {n} still open")
PY
kill $PID; wait $PID 2>/dev/null; rm -rf $W
