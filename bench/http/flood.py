# Usage: python3 bench/http/flood.py HTTP_ADDR PID COUNT HOLD_SECONDS
# Opens COUNT idle TCP connections to roster's HTTP API, then prints
# roster's VmRSS and descriptor count after HOLD_SECONDS.
import resource, socket, sys, time, os, subprocess
host, port = sys.argv[1].rsplit(":", 1)
pid, count, hold = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
def stats():
    rss = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return f"VmRSS={rss} kB fds={fds}"
print("before flood:", stats())
socks = []
for i in range(count):
    s = socket.socket(); s.connect((host, int(port)))
    if i % 2 == 0:
        s.sendall(b"GET /v1/services HTTP/1.1\r\nhost: x\r\n\r\n")  # then keep-alive idle
    socks.append(s)
time.sleep(hold)
print(f"{count} connections held {hold}s:", stats())
