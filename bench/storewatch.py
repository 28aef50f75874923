#!/usr/bin/env python3
"""Samples the embedded stores' gauges (`switch_store_*{store}` on /metrics) every INTERVAL
seconds (5) until the switch stops answering or for at most SECONDS, into a CSV file: second,
store, then one column per gauge. bench/soak.sh runs it beside loadtest, so that a long run
shows the stores' compaction debt: fjall slows its writes from 20 level-0 runs and halts them
at 30, or at 4 sealed memtables.

    bench/storewatch.py HOST:PORT OUT.csv [SECONDS] [INTERVAL]
    bench/storewatch.py --summary OUT.csv   # per store: the highest of each gauge, the last bytes
"""
import csv
import sys
import time
import urllib.request

GAUGES = ["l0_runs", "sealed_memtables", "flushes_queued", "compactions_running", "journals",
          "tables_bytes"]


def scrape(http):
    try:
        text = urllib.request.urlopen(f"http://{http}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        if not line.startswith("switch_store_"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        store = labels.split('store="', 1)[-1].split('"', 1)[0]
        out.setdefault(store, {})[name[len("switch_store_"):]] = int(float(value))
    return out


def sample(http, path, seconds, interval):
    start = time.monotonic()
    misses = 0
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["second", "store"] + GAUGES)
        while time.monotonic() - start < seconds:
            stores = scrape(http)
            if stores is None:
                misses += 1
                if misses >= 3:
                    break
            else:
                misses = 0
                second = round(time.monotonic() - start)
                for store, gauges in sorted(stores.items()):
                    out.writerow([second, store] + [gauges.get(g, "") for g in GAUGES])
                f.flush()
            time.sleep(interval)


def summary(path):
    rows = list(csv.DictReader(open(path)))
    stores = sorted({r["store"] for r in rows})
    print("store          samples  " + "  ".join(f"{g} max" for g in GAUGES[:-1])
          + "  tables MiB at the end")
    for store in stores:
        mine = [r for r in rows if r["store"] == store]
        highest = [max(int(r[g] or 0) for r in mine) for g in GAUGES[:-1]]
        last = int(mine[-1]["tables_bytes"] or 0) >> 20
        cells = "  ".join(f"{h:>{len(g) + 4}}" for h, g in zip(highest, GAUGES[:-1]))
        print(f"{store:<13}  {len(mine):>7}  {cells}  {last:>21}")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--summary":
        summary(sys.argv[2])
    elif len(sys.argv) >= 3:
        sample(sys.argv[1], sys.argv[2],
               float(sys.argv[3]) if len(sys.argv) > 3 else 86400.0,
               float(sys.argv[4]) if len(sys.argv) > 4 else 5.0)
    else:
        sys.exit(__doc__)
