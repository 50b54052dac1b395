# Usage: python3 bench/http/slow.py HTTP_ADDR PID COUNT
# Opens COUNT connections that each send half a request head and stop;
# prints roster's VmRSS and descriptor count 2 s and 15 s later.
import resource, socket, sys, time, os
host, port = sys.argv[1].rsplit(":", 1)
pid, count = sys.argv[2], int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
def stats():
    rss = [l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0].split()[1]
    return f"VmRSS={rss} kB fds={len(os.listdir(f'/proc/{pid}/fd'))}"
print("before:", stats())
socks = []
for i in range(count):
    s = socket.socket(); s.connect((host, int(port)))
    s.sendall(b"GET /v1/services HTTP/1.1\r\nhost: x\r\nx-slow: ")
    socks.append(s)
t = time.time()
time.sleep(2); print(f"{count} slow heads, 2 s:", stats())
time.sleep(13); print(f"{count} slow heads, 15 s:", stats())
