#!/usr/bin/env python3
"""What one durable registration costs the disk.

Registers COUNT new instances (IDs PREFIX0..), one at a time over one
keep-alive connection, against a roster already running with its data
directory on the disk DEVICE, and prints the time a write took and the
disk writes and sectors each cost, from /proc/diskstats before and after.
Each write waits for its answer, so each is a commit of its own.

    bench/store/commit_io.py --http 127.0.0.1:8500 [--count 1000]
        [--device vda] [--prefix a]

Anything else writing to DEVICE meanwhile is counted too: run it on a
quiet machine. Writes 127.0.0.1 instances without checks (nothing is
probed). Bounded: COUNT requests, each with a 30 s timeout.
"""

import argparse
import http.client
import json
import sys
import time


def disk(device):
    with open("/proc/diskstats") as stats:
        for line in stats:
            fields = line.split()
            if fields[2] == device:
                # writes completed, sectors written
                return int(fields[7]), int(fields[9])
    sys.exit(f"no device {device!r} in /proc/diskstats")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", required=True, help="roster's HTTP address, HOST:PORT")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--device", default="vda", help="the data directory's disk")
    parser.add_argument("--prefix", default="a", help="instance ID prefix (new IDs each run)")
    args = parser.parse_args()
    host, port = args.http.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = json.dumps({"address": "127.0.0.1", "port": 8080})
    writes0, sectors0 = disk(args.device)
    started = time.monotonic()
    for n in range(args.count):
        connection.request(
            "PUT",
            f"/v1/services/s{n % 100}/instances/{args.prefix}{n}",
            body,
            {"Content-Type": "application/json"},
        )
        reply = connection.getresponse()
        reply.read()
        if reply.status >= 300:
            sys.exit(f"write {n}: HTTP {reply.status}")
    elapsed = time.monotonic() - started
    writes1, sectors1 = disk(args.device)
    count = args.count
    print(
        f"{count} writes in {elapsed:.2f} s: {elapsed / count * 1e6:.0f} us each; "
        f"disk writes {(writes1 - writes0) / count:.2f} a write, "
        f"sectors {(sectors1 - sectors0) / count:.1f} a write"
    )


if __name__ == "__main__":
    main()
