#!/usr/bin/env python3
"""What deleting (or writing over) a large file does to a log's fdatasync on the same file system.

One thread appends 4 KiB to a file written ahead with zeros and calls fdatasync after each, as
the WAL writer does with its segments written ahead; meanwhile the main thread makes a file of
SIZE MiB of real blocks and then, after a second, does one of:

- `unlink`: deletes it;
- `fresh`: writes a new file of SIZE MiB, synced every 4 MiB, then deletes the first (what a
  snapshot written to a new file and the old one's removal did);
- `overwrite`: writes over it in place, synced every 4 MiB (a snapshot written over the spare).

Prints the fdatasync latency before and from that moment on.

    bench/delete-stall.py DIR unlink|fresh|overwrite [SIZE_MIB=1024]

DIR must be on the file system under test (the WAL's); the script removes what it made.
"""
import os
import sys
import threading
import time


def main():
    if len(sys.argv) < 3 or sys.argv[2] not in ("unlink", "fresh", "overwrite"):
        sys.exit(__doc__)
    directory, mode = sys.argv[1], sys.argv[2]
    size_mib = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    big = os.path.join(directory, "delete-stall.big")
    log = os.path.join(directory, "delete-stall.log")
    piece = os.urandom(1 << 20)
    fd = os.open(big, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
    for _ in range(size_mib):
        os.write(fd, piece)
    os.fsync(fd)
    os.close(fd)
    log_fd = os.open(log, os.O_CREAT | os.O_RDWR | os.O_TRUNC)
    zeros = bytes(1 << 20)
    for _ in range(64):
        os.write(log_fd, zeros)
    os.fsync(log_fd)
    time.sleep(2)

    samples = []
    stop = threading.Event()

    def appender():
        record = os.urandom(4096)
        offset = 0
        while not stop.is_set():
            os.pwrite(log_fd, record, offset)
            offset = (offset + 4096) % (64 << 20)
            started = time.perf_counter()
            os.fdatasync(log_fd)
            samples.append((started, time.perf_counter() - started))

    thread = threading.Thread(target=appender)
    thread.start()
    time.sleep(1)
    at = time.perf_counter()
    if mode == "unlink":
        os.unlink(big)
    else:
        target = big if mode == "overwrite" else big + ".new"
        fd = os.open(target, os.O_CREAT | os.O_WRONLY)
        for _ in range(0, size_mib, 4):
            os.write(fd, piece * 4)
            os.fdatasync(fd)
        os.fsync(fd)
        os.close(fd)
        if mode == "fresh":
            os.rename(target, big)  # replaces the first file: its blocks are freed here
    took = time.perf_counter() - at
    time.sleep(3)
    stop.set()
    thread.join()
    os.close(log_fd)
    os.unlink(log)
    if os.path.exists(big):
        os.unlink(big)

    def summary(values):
        values = sorted(values)
        p99 = values[min(len(values) - 1, int(0.99 * len(values)))] * 1000
        over = sum(1 for v in values if v > 0.005)
        return f"n={len(values)} p99={p99:.2f} ms max={values[-1] * 1000:.1f} ms over 5 ms: {over}"

    print(f"{mode} {size_mib} MiB took {took:.2f} s")
    print("  fdatasync before:     " + summary([v for t, v in samples if t < at]))
    print("  fdatasync from then:  " + summary([v for t, v in samples if t >= at]))


if __name__ == "__main__":
    main()
