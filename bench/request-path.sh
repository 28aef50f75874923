#!/usr/bin/env bash
# The request-path figures of bench/RESULTS.md (issue 7), all in one run on this machine:
# closed loop 64 x 1 beside the echo ceiling, pipelined 8 x 64, the open loop at half the
# pipelined maximum with the disk's own fdatasync latency probed meanwhile, the same open loop
# with wal.sync = "none", and the Redis peer (bench/redis-peer.sh). Each open loop runs first
# against loadtest's in-process echo server on the same schedule: the generator wakes on tokio's
# 1 ms timer, so its own latency floor (p99 about 1.5 ms at 20,000/s here) is in every open-loop
# figure and is printed beside it.
#
#   cargo build --release -p switch -p loadtest -p bench && bash bench/request-path.sh
#
# SECONDS_EACH=10 by default; REDIS=0 skips the peer. Loopback only; every process started
# here is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_EACH:-10}
for tool in target/release/switch target/release/loadtest target/release/fsync-probe; do
  [ -x "$tool" ] || { echo "missing: $tool (cargo build --release -p switch -p loadtest -p bench)" >&2; exit 1; }
done
work=$(mktemp -d)
switch_pid=
cleanup() {
  [ -n "$switch_pid" ] && kill "$switch_pid" 2>/dev/null && wait "$switch_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start() { # $1: extra config (TOML text, may be empty)
  rm -rf "$work/wal"
  printf '%s\n' "$1" > "$work/config.toml"
  target/release/switch run --config "$work/config.toml" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
    --wal-dir "$work/wal" 2>"$work/switch.log" &
  switch_pid=$!
  for _ in $(seq 1 150); do grep -q "listening for acquirers on" "$work/switch.log" && break; sleep 0.2; done
  addr=$(grep -o "listening for acquirers on [0-9.:]*" "$work/switch.log" | awk '{print $NF}')
  [ -n "$addr" ] || { cat "$work/switch.log" >&2; exit 1; }
}
stop() { kill "$switch_pid"; wait "$switch_pid" 2>/dev/null || true; switch_pid=; }
load() { # $1: label, then loadtest arguments
  local label=$1; shift
  echo "== $label"
  target/release/loadtest run --target "$addr" --duration "${seconds}s" --warmup 2s --no-money-check \
    --json "$work/last.json" "$@" 2>/dev/null | grep -E "throughput|latency|fraction"
}
rate() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['run']['throughput_per_second']))" "$work/last.json"; }

start ""
load "closed loop 64 x 1, durable, beside the echo ceiling" --connections 64 --in-flight 1 --ceiling
load "pipelined 8 x 64, durable" --connections 8 --in-flight 64
half=$(( $(rate) / 2 ))
echo "== open loop at $half/s (half the pipelined maximum), durable; the disk's fdatasync meanwhile"
# After the echo's part of the run (its warm-up and measurement), during the switch's.
(sleep $((seconds + 3)); target/release/fsync-probe --dir "$work" --duration "$seconds") &
probe=$!
load "open loop $half/s, durable (first the echo server on the same schedule: the generator's own floor)" --connections 8 --in-flight 1024 --rate "$half" --ceiling
wait "$probe"
stop

start '[wal]
sync = "none"'
load "open loop $half/s, wal.sync = \"none\" (echo first)" --connections 8 --in-flight 1024 --rate "$half" --ceiling
stop

if [ "${REDIS:-1}" != 0 ]; then
  SECONDS_EACH=$seconds bash bench/redis-peer.sh
fi
