#!/usr/bin/env python3
"""Samples the CPU time of every thread of a process once a second, until it exits or for at
most SECONDS, into a CSV file: second, thread id, thread name, state, nice value, CPU
milliseconds in that second. Reads /proc only (Linux); bench/soak.sh runs it beside loadtest.

    bench/threadcpu.py PID OUT.csv [SECONDS]
    bench/threadcpu.py --summary OUT.csv [FROM TO]   # per thread name: CPU % over the seconds
"""
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def read(pid):
    out = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2:].split()
        # After the name: state is field 3, utime 14, stime 15, nice 19 (1-based in proc(5)).
        out[tid] = (name, rest[0], int(rest[11]) + int(rest[12]), int(rest[16]))
    return out


def sample(pid, path, seconds):
    start = time.monotonic()
    last = read(pid) or {}
    with open(path, "w") as f:
        f.write("second,tid,name,state,nice,cpu_ms\n")
        t = 0
        while t < seconds:
            t += 1
            time.sleep(max(0.0, start + t - time.monotonic()))
            now = read(pid)
            if now is None:
                break
            for tid, (name, state, ticks, nice) in now.items():
                # A thread not seen a second ago started since: all its time is this second's.
                # (One that ended within the second is not counted for it.)
                before = last[tid][2] if tid in last else 0
                ms = (ticks - before) * 1000 // TICK
                f.write(f"{t},{tid},{name.replace(',', ' ')},{state},{nice},{ms}\n")
            f.flush()
            last = now


def summary(path, first, end):
    total = {}
    seconds = set()
    with open(path) as f:
        next(f)
        for line in f:
            second, _, name, _, _, ms = line.rstrip("\n").split(",")
            second = int(second)
            if first <= second <= end:
                seconds.add(second)
                total[name] = total.get(name, 0) + int(ms)
    n = max(1, len(seconds))
    for name, ms in sorted(total.items(), key=lambda kv: -kv[1]):
        if ms:
            print(f"{name:<20} {ms / n / 10:6.1f} %")
    print(f"{'all':<20} {sum(total.values()) / n / 10:6.1f} %  over {len(seconds)} s")


if __name__ == "__main__":
    if sys.argv[1] == "--summary":
        lo = int(sys.argv[3]) if len(sys.argv) > 3 else 0
        hi = int(sys.argv[4]) if len(sys.argv) > 4 else 10**9
        summary(sys.argv[2], lo, hi)
    else:
        sample(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 86400)
