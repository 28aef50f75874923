#!/usr/bin/env bash
# Reads from disk with a cold page cache, and what they do to everyone else's answers
# (bench/RESULTS.md, "reads of the store off the shard's thread"). A config naming only a hot
# window of 1,000 per shard and a fresh WAL; COUNT (400) purchases placed by an independent
# acquirer (bench/cold_reads.py, pyiso8583), a pipelined load that moves them to disk, a
# restart, the page cache dropped (root only; without it the reads are warm and the script
# says so); then an open-loop load of RATE (20,000/s) for 20 s, during which the purchases
# are reversed one by one, each reading its original from disk. Prints the reversals'
# latencies and the load's latency, overall and for each second.
# Loopback only; needs `cargo build --release -p switch -p loadtest` and `pip install pyiso8583`.
#
#   bench/cold-reads.sh                                  # this build
#   SWITCH=/tmp/switch-old bench/cold-reads.sh           # another build of the switch
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-400}
RATE=${RATE:-20000}
SWITCH=${SWITCH:-target/release/switch}
LOADTEST=${LOADTEST:-target/release/loadtest}
WORK=$(mktemp -d /tmp/switch-cold-reads.XXXXXX)
trap 'kill "$PID" 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp "$WORK/switch.log" "$KEEP"; rm -rf "$WORK"' EXIT
printf '[ledger]\nhot_transactions_per_shard_max = 1000\n' > "$WORK/hot.toml"

# shellcheck source=bench/start-switch.sh
. bench/start-switch.sh

drop_caches() {
  sync
  if ! echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then
    echo "(cannot drop the page cache: not root; the reads below are warm)"
  fi
}

echo "== $SWITCH: $COUNT purchases, then 8 x 64 for 15s"
start
python3 bench/cold_reads.py "$PORT" "$WORK/placed.json" place "$COUNT"
"$LOADTEST" run --target "$ADDR" --connections 8 --in-flight 64 --duration 15s \
  --warmup 1s --no-money-check 2>/dev/null | grep -E "throughput"
kill "$PID"; wait "$PID" || true
drop_caches
start
grep -o "ledger recovered.*" "$WORK/switch.log" | head -1 | cut -c1-160
drop_caches
echo "== open loop at $RATE/s for 20s; the reversals start after 3 s"
"$LOADTEST" run --target "$ADDR" --connections 8 --in-flight 64 --rate "$RATE" --duration 20s \
  --warmup 0s --no-money-check --json "$WORK/report.json" > "$WORK/load.txt" 2>/dev/null &
LOAD=$!
sleep 3
python3 bench/cold_reads.py "$PORT" "$WORK/placed.json" reverse
wait "$LOAD"
grep -E "throughput|latency (p50|p99|max)|^response" "$WORK/load.txt"
python3 - "$WORK/report.json" <<'PY'
import json, sys
samples = json.load(open(sys.argv[1]))["run"]["samples"]
print("longest answer per second (ms):", [round(s["max_us"] / 1000, 1) for s in samples])
PY
