"""Purchases placed before a load, reversed after a restart with the page cache dropped: each
reversal reads its original from disk (bench/cold-reads.sh). Uses the soak's independent
acquirer (pyiso8583).

    python3 bench/cold_reads.py PORT STATE.json place COUNT
    python3 bench/cold_reads.py PORT STATE.json reverse

Prints each phase's answers and, for the reversals, their latencies. Exits 1 if any answer is
not 00.
"""

import json
import sys

from soak_client import Link, message, referring

FIRST_CARD = 100  # demo accounts below the load's (loadtest uses 1000 and up)


def main():
    port, state_path, phase = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    link = Link(port)
    codes = {}
    if phase == "place":
        count = int(sys.argv[4])
        placed = []
        for i in range(count):
            m = message("0200", FIRST_CARD + i, "000000", 100, 1 + i)
            code = link.call(m).get("39")
            codes[code] = codes.get(code, 0) + 1
            placed.append(m)
        json.dump(placed, open(state_path, "w"))
    else:
        placed = json.load(open(state_path))
        latencies = []
        for i, original in enumerate(placed):
            answer = link.call(referring("0400", original, 100, 100_000 + i))
            latencies.append(link.last_ms)
            code = answer.get("39")
            codes[code] = codes.get(code, 0) + 1
        latencies.sort()
        q = lambda f: latencies[min(len(latencies) - 1, int(f * len(latencies)))]
        print(f"reversals of originals on disk: {len(latencies)}, "
              f"p50 {q(0.5):.2f} ms, p99 {q(0.99):.2f} ms, max {latencies[-1]:.2f} ms")
    print(f"{phase}: answers {codes}")
    sys.exit(0 if set(codes) == {"00"} else 1)


if __name__ == "__main__":
    main()
