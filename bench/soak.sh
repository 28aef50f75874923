#!/usr/bin/env bash
# A soak run of the release switch on its default configuration (embedded demo data, risk on):
#   1. an independent acquirer (bench/soak_client.py, pyiso8583) places two holds and two
#      purchases;
#   2. loadtest runs for DURATION (closed loop 8 x 64 pipelined, or open loop at RATE/s), with
#      the switch's resident memory sampled every second into the JSON report;
#   3. the first hold is completed and the first purchase reversed (both past the hot window,
#      on disk by then), balances checked;
#   4. kill -9, restart (its duration from the "ledger recovered" line), and the second hold
#      and purchase are completed and reversed, the first ones' results checked again.
# Then a per-minute table: answers/s, resident memory at the start and end of each minute,
# the longest answer; each thread's CPU time per second in $OUT/threads.csv; and the embedded
# stores' compaction debt every 5 s in $OUT/store.csv, summed up at the end. Loopback
# only; needs `cargo build --release --workspace` and `pip install pyiso8583`.
#
#   bench/soak.sh 10m                  # full pipelined rate
#   RATE=60000 bench/soak.sh 30m       # open loop at 60,000/s
#   HOT=2000 bench/soak.sh 60s         # the short version: a small hot window
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-60s}
T=target/release
OUT=${OUT:-/tmp/soak}
rm -rf "$OUT" && mkdir -p "$OUT"
CONFIG="$OUT/switch.toml"
cp config/switch.toml "$CONFIG"
if [ -n "${HOT:-}" ]; then
  sed -i "s/^hot_transactions_per_shard_max = 4000000/hot_transactions_per_shard_max = $HOT/" "$CONFIG"
fi
start() {
  $T/switch run --config "$CONFIG" --wal-dir "$OUT/wal" --listen 127.0.0.1:18583 \
      --http 127.0.0.1:19583 >> "$OUT/switch.log" 2>&1 &
  SW=$!
  for _ in $(seq 1 6000); do   # a restart may replay minutes of log
    [ "$(grep -c "listening for acquirers" "$OUT/switch.log")" -ge "$1" ] && return 0
    kill -0 $SW 2>/dev/null || { tail -5 "$OUT/switch.log"; exit 1; }
    sleep 0.1
  done
  echo "the switch did not start"; exit 1
}
start 1
trap 'kill -9 $SW 2>/dev/null || true' EXIT
python3 bench/soak_client.py 18583 "$OUT/state.json" before
LOAD=(--connections 8 --in-flight 64)
if [ -n "${RATE:-}" ]; then LOAD=(--connections 8 --in-flight 64 --rate "$RATE"); fi
# Each thread's CPU time, second by second (bench/threadcpu.py --summary "$OUT/threads.csv").
python3 bench/threadcpu.py $SW "$OUT/threads.csv" & SAMPLER=$!
# The stores' gauges (switch_store_*), every 5 s (bench/storewatch.py --summary "$OUT/store.csv").
python3 bench/storewatch.py 127.0.0.1:19583 "$OUT/store.csv" & STOREWATCH=$!
$T/loadtest run --target 127.0.0.1:18583 "${LOAD[@]}" --duration "$DURATION" --warmup 1s \
    --no-money-check --watch-pid $SW --json "$OUT/load.json" > "$OUT/load.out" 2> "$OUT/load.progress" || true
kill $SAMPLER $STOREWATCH 2>/dev/null || true
grep -E "throughput|latency|response|unexpected|timeouts|errors" "$OUT/load.out"
curl -s 127.0.0.1:19583/metrics | grep -E "^switch_ledger_transactions|^switch_wal_fsync_duration_seconds_(bucket|count)" || true
du -sh "$OUT/wal" "$OUT/wal/cold" | tr '\n' ' '; echo
python3 bench/soak_client.py 18583 "$OUT/state.json" after-load
kill -9 $SW; wait $SW 2>/dev/null || true
echo "kill -9; restarting"
start 2
grep "ledger recovered" "$OUT/switch.log" | tail -1 | grep -oE "(records|replayed|elapsed)=[^ ]+" | tr '\n' ' '; echo
python3 bench/soak_client.py 18583 "$OUT/state.json" after-restart
kill $SW; wait $SW 2>/dev/null || true
python3 - "$OUT/load.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))["run"]
samples = run["samples"]
print("minute  answers/s  rss start MiB  rss end MiB  longest answer ms  unexpected so far")
for m in range(0, (len(samples) + 59) // 60):
    part = samples[m * 60:(m + 1) * 60]
    if not part:
        break
    rate = sum(s["answers"] for s in part) / len(part)
    rss = [s["rss_bytes"] >> 20 for s in part if s.get("rss_bytes")]
    print(f"{m + 1:>6}  {rate:>9.0f}  {rss[0] if rss else 0:>13}  {rss[-1] if rss else 0:>11}  "
          f"{max(s['max_us'] for s in part) / 1000:>17.1f}  {part[-1]['unexpected']:>17}")
print("response codes:", run["response_codes"])
PY
python3 bench/storewatch.py --summary "$OUT/store.csv"
