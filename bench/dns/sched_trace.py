#!/usr/bin/env python3
"""Where the CPUs' time went during a DNS run, from a scheduler trace.

    perf record -a -g -e sched:sched_switch -e sched:sched_wakeup -o FILE -- sleep 2
    bench/dns/sched_trace.py FILE

(record it while `run.sh` runs, once in an idle run and once in a churn run,
and compare). Prints, over the trace's span:

- each CPU's idle time, and how much of it passed while the *other* CPUs
  had a runnable task waiting for a CPU (woken or preempted, not yet run):
  idle that a better placement of that task would have used; and that
  time by the kinds of thread that waited (roster names its UDP threads
  `roster-udp-N` and its writer `roster-writer`);
- the threads that ran most: run time, times switched in, average wait on
  a run queue after a wake-up, and why they were off the CPU (the kernel
  function they slept in, from the switch's call chain, or "preempted").

Why it exists: under 1,000 writes/s roster's DNS QPS fell about 10% while
the writes' CPU was a few percent, and vmstat showed the cores idle more
(bench/RESULTS.md, DNS, 2026-12-06 23:15 and 2026-12-07 10:28). This says
which threads waited and on what. Python 3 and perf only.
"""

import collections
import re
import subprocess
import sys

EVENT = re.compile(r"\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)")
SWITCH = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)")
WAKEUP = re.compile(r"comm=(.*?) pid=(\d+) .*target_cpu=(\d+)")
# Kernel functions that name why a thread slept, most telling first.
SLEEPS = ("skb_wait_for_more_packets", "futex", "ep_poll", "do_epoll_wait", "do_sys_poll",
          "do_select", "hrtimer_nanosleep", "io_schedule", "rwsem_down", "wait_for_completion",
          "pipe_read", "sk_wait_data", "tcp_recvmsg")
SCHEDULER = ("__schedule", "schedule", "__traceiter", "__trace", "trace_", "preempt_schedule")


def events(path):
    """(time, cpu, event, trace, call chain) per event, in time order."""
    out = subprocess.run(["perf", "script", "-i", path, "-F", "comm,tid,cpu,time,event,trace,ip,sym"],
                         capture_output=True, text=True, check=True).stdout
    found = []
    for block in out.split("\n\n"):
        lines = [line for line in block.split("\n") if line.strip()]
        if not lines:
            continue
        m = EVENT.match(lines[0])
        if not m:
            continue
        chain = [parts[1] for parts in (line.split() for line in lines[1:]) if len(parts) > 1]
        found.append((float(m.group(4)), int(m.group(3)), m.group(5), m.group(6), chain))
    found.sort(key=lambda e: e[0])
    return found


def kind(name):
    """A thread's name without a trailing number ("roster-udp-1" is a
    "roster-udp"), so that the threads of one kind add up."""
    return re.sub(r"[-_]?\d+$", "", name) or name


def sleep_reason(state, chain):
    if not state.startswith(("S", "D")):
        return "preempted"
    frames = [f for f in chain if not f.startswith(SCHEDULER)]
    for frame in frames:
        for word in SLEEPS:
            if word in frame:
                return frame
    return " < ".join(frames[:2]) or "?"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    trace = events(sys.argv[1])
    if not trace:
        sys.exit("no sched_switch/sched_wakeup events in " + sys.argv[1])
    cpus = sorted({cpu for _, cpu, _, _, _ in trace})
    running = {cpu: None for cpu in cpus}
    waiting = {cpu: set() for cpu in cpus}  # runnable, not running
    names = {}
    idle = collections.Counter()
    idle_with_waiters = collections.Counter()
    idle_by_waiters = collections.Counter()  # by the kinds of thread waiting
    run = collections.Counter()
    switched_in = collections.Counter()
    on_since = {}
    woken_at = {}
    queue_wait = collections.Counter()
    queue_waits = collections.Counter()
    off_since = {}
    off_reason = {}
    off = collections.defaultdict(collections.Counter)
    last = trace[0][0]
    for t, cpu, event, text, chain in trace:
        span = t - last
        last = t
        for c in cpus:
            if running[c] == 0:
                idle[c] += span
                others = set().union(*(waiting[o] for o in cpus if o != c))
                if others:
                    idle_with_waiters[c] += span
                    idle_by_waiters[tuple(sorted({kind(names.get(t, "?")) for t in others}))] += span
        if event == "sched_wakeup":
            m = WAKEUP.search(text)
            if not m:
                continue
            pid, target = int(m.group(2)), int(m.group(3))
            names[pid] = m.group(1)
            woken_at[pid] = t
            if pid not in running.values():
                for c in cpus:
                    waiting[c].discard(pid)
                waiting.setdefault(target, set()).add(pid)
            continue
        if event != "sched_switch":
            continue
        m = SWITCH.search(text)
        if not m:
            continue
        prev, state, nxt = int(m.group(2)), m.group(3), int(m.group(5))
        names[prev], names[nxt] = m.group(1), m.group(4)
        if prev in on_since:
            run[prev] += t - on_since.pop(prev)
        if prev != 0:
            off_since[prev] = t
            off_reason[prev] = sleep_reason(state, chain)
            if state.startswith("R"):
                waiting[cpu].add(prev)
        for c in cpus:
            waiting[c].discard(nxt)
        running[cpu] = nxt
        if nxt != 0:
            on_since[nxt] = t
            switched_in[nxt] += 1
            if nxt in woken_at:
                queue_wait[nxt] += t - woken_at.pop(nxt)
                queue_waits[nxt] += 1
            if nxt in off_since:
                off[nxt][off_reason.pop(nxt)] += t - off_since.pop(nxt)
    total = trace[-1][0] - trace[0][0]
    print("span %.3f s over %d CPUs" % (total, len(cpus)))
    for c in cpus:
        print("cpu %d: idle %.3f s, of which %.3f s while another CPU had a task waiting"
              % (c, idle[c], idle_with_waiters[c]))
    print("all CPUs: idle %.3f s, %.3f s of it with a task waiting elsewhere"
          % (sum(idle.values()), sum(idle_with_waiters.values())))
    for waiters, spent in idle_by_waiters.most_common(6):
        print("  while %s waited: %.3f s" % (" and ".join(waiters), spent))
    print()
    print("%-20s %7s %9s %8s  %s" % ("thread", "tid", "run ms", "ins", "avg wait on a run queue; off the CPU in"))
    for tid, ran in run.most_common(16):
        if tid == 0:
            continue
        wait = 1e6 * queue_wait[tid] / queue_waits[tid] if queue_waits[tid] else 0.0
        reasons = ", ".join("%s %.0f ms" % (reason, 1e3 * spent) for reason, spent in off[tid].most_common(3))
        print("%-20s %7d %9.1f %8d  %.0f µs; %s" % (names.get(tid, "?")[:20], tid, 1e3 * ran,
                                                   switched_in[tid], wait, reasons))


if __name__ == "__main__":
    main()
