#!/usr/bin/env python3
"""A neighbour that syncs small writes to disk at a steady rate.

Run beside a DNS benchmark to see what a synced write costs the machine
beyond its own CPU (on a virtual machine, a sync can stall the guest):

    bench/dns/sync_load.py FILE --rate 250 --seconds 150 --mode log|pages

FILE is created (64 MiB of zeros, synced) if it is smaller. Each round is
one `fdatasync` after either one 1.6 KB write appended in turn (`log`, as
roster's commit log writes) or seven 4 KB writes at random places
(`pages`, as a B-tree commit does). Stops after SECONDS, or on Ctrl-C,
and prints the disk writes and sectors a sync cost (from /proc/diskstats
for DEVICE, default vda). A new FILE's zero fill keeps reaching the disk
for a while after it is synced: create it with a short run first, and
wait half a minute before measuring.
"""

import argparse
import os
import random
import time

SIZE = 64 << 20


def disk(device):
    with open("/proc/diskstats") as stats:
        for line in stats:
            fields = line.split()
            if fields[2] == device:
                return int(fields[7]), int(fields[9])
    raise SystemExit(f"no device {device!r} in /proc/diskstats")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--rate", type=int, default=250, help="syncs a second")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--mode", choices=["log", "pages"], default="log")
    parser.add_argument("--device", default="vda")
    args = parser.parse_args()
    fd = os.open(args.file, os.O_RDWR | os.O_CREAT)
    if os.fstat(fd).st_size < SIZE:
        os.pwrite(fd, b"\0" * SIZE, 0)
        os.fsync(fd)
    page, record = os.urandom(4096), os.urandom(1600)
    offset, syncs = 0, 0
    writes0, sectors0 = disk(args.device)
    started = time.monotonic()
    try:
        while time.monotonic() - started < args.seconds:
            if args.mode == "log":
                os.pwrite(fd, record, offset)
                offset = (offset + len(record)) % (SIZE - 4096)
            else:
                for _ in range(7):
                    os.pwrite(fd, page, random.randrange(SIZE // 4096) * 4096)
            os.fdatasync(fd)
            syncs += 1
            pause = started + syncs / args.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    except KeyboardInterrupt:
        pass
    writes1, sectors1 = disk(args.device)
    per = max(syncs, 1)
    print(
        f"{args.mode}: {syncs} syncs in {time.monotonic() - started:.1f} s, "
        f"disk writes {(writes1 - writes0) / per:.2f} a sync, "
        f"sectors {(sectors1 - sectors0) / per:.1f} a sync",
        flush=True,
    )


if __name__ == "__main__":
    main()
