#!/usr/bin/env bash
# Pipelined load while every new transaction moves an older one to disk: the store's work and
# its stalls, seen from an acquirer (bench/RESULTS.md, "the store on disk off the shard's
# thread"). A config naming only a hot window of HOT (10,000) per shard, a fresh WAL, then
# loadtest 8 x 64 for DURATION (30s) of MIX (auth:100); prints the figures and the longest
# answer of each second. With a mix of reversals (each connection reverses one of its last 1,024
# approvals at random), most reversals find their original on disk: the script also prints how
# many transactions the shards read ahead, off their threads. Then, with REPLAY=1, a restart on
# the same log and its "ledger recovered" line.
# Loopback only; needs `cargo build --release -p switch -p loadtest`.
#
#   bench/hot-window.sh                 # this build
#   SWITCH=/tmp/switch-old bench/hot-window.sh 30s   # another build of the switch
#   HOT=1000 MIX=auth:60,purchase:30,reversal:10 bench/hot-window.sh 60s
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-30s}
HOT=${HOT:-10000}
MIX=${MIX:-auth:100}
SWITCH=${SWITCH:-target/release/switch}
LOADTEST=${LOADTEST:-target/release/loadtest}
WORK=$(mktemp -d /tmp/switch-hot-window.XXXXXX)
trap 'kill "$PID" 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp "$WORK/switch.log" "$KEEP"; rm -rf "$WORK"' EXIT
printf '[ledger]\nhot_transactions_per_shard_max = %s\n' "$HOT" > "$WORK/hot.toml"

# shellcheck source=bench/start-switch.sh
. bench/start-switch.sh

start
echo "== 8 x 64 for $DURATION of $MIX, hot window $HOT per shard ($SWITCH)"
"$LOADTEST" run --target "$ADDR" --connections 8 --in-flight 64 --duration "$DURATION" \
  --mix "$MIX" --warmup 2s --no-money-check --json "$WORK/report.json" 2>/dev/null |
  grep -E "throughput|latency (p99|max)|^operation|^response"
python3 - "$WORK/report.json" <<'PY'
import json, sys
samples = json.load(open(sys.argv[1]))["run"]["samples"]
worst = [round(s["max_us"] / 1000) for s in samples]
print("longest answer per second (ms):", worst)
print("seconds with an answer over 100 ms:", sum(1 for w in worst if w > 100))
PY
python3 - "$HTTP" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics").read().decode()
def total(name):
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name + "{"))
print("transactions on disk:", int(total("switch_ledger_transactions_on_disk")),
      "read ahead off the shards' threads:", int(total("switch_ledger_reads_ahead_total")))
PY
kill "$PID"; wait "$PID" || true
if [ "${REPLAY:-0}" = 1 ]; then
  start
  grep -o "ledger recovered.*" "$WORK/switch.log" | head -1
  kill "$PID"; wait "$PID" || true
fi
