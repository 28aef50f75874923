#!/usr/bin/env bash
# The peer of bench/RESULTS.md: Redis 7 with every write fsynced (appendonly yes, appendfsync
# always) running a Lua check-and-decrement on 100,000 keys, at the same concurrency as the
# switch's closed loop, measured in the same run as the switch's durable authorizations/s.
#
#   bash bench/redis-peer.sh            # 64 clients, 10 s each; CLIENTS=... SECONDS_EACH=... to change
#
# Needs redis-server and redis-benchmark (Debian: apt-get install redis-server redis-tools) and
# the release binaries (cargo build --release -p switch -p loadtest). Loopback only; both servers
# are started here on free ports and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${CLIENTS:-64}
seconds=${SECONDS_EACH:-10}
for tool in redis-server redis-cli redis-benchmark target/release/switch target/release/loadtest; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "$tool" ] || { echo "missing: $tool (see the header of this script)" >&2; exit 1; }
done
work=$(mktemp -d)
cleanup() {
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
  [ -n "${switch_pid:-}" ] && kill "$switch_pid" 2>/dev/null || true
  sleep 1
  rm -rf "$work"
}
trap cleanup EXIT

echo "== switch: $clients connections x 1 in flight, durable WAL, $seconds s"
target/release/switch run --listen 127.0.0.1:0 --http 127.0.0.1:0 --wal-dir "$work/wal" 2>"$work/switch.log" &
switch_pid=$!
for _ in $(seq 1 100); do grep -q "listening for acquirers on" "$work/switch.log" && break; sleep 0.2; done
switch_addr=$(grep -o "listening for acquirers on [0-9.:]*" "$work/switch.log" | awk '{print $NF}')
target/release/loadtest run --target "$switch_addr" --connections "$clients" --in-flight 1 \
  --duration "${seconds}s" --warmup 2s --no-money-check --json "$work/switch.json" 2>/dev/null | grep -E "throughput|p50|p99 "
switch_rate=$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['run']['throughput_per_second']))" "$work/switch.json")

echo "== redis $(redis-server --version | awk '{print $3}'): $clients clients, EVALSHA check-and-decrement on 100,000 keys, appendfsync always"
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --appendonly yes --appendfsync always \
  --save "" --daemonize yes --pidfile "$work/redis.pid" --logfile "$work/redis.log"
for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$port" EVAL "for i=0,99999 do redis.call('SET', 'acct:' .. string.format('%012d', i), 1000000) end return 1" 0 >/dev/null
sha=$(redis-cli -p "$port" SCRIPT LOAD "local b = tonumber(redis.call('GET', KEYS[1])) if b and b >= tonumber(ARGV[1]) then return redis.call('DECRBY', KEYS[1], ARGV[1]) end return -1")
# Enough requests for about $seconds seconds at the switch's rate, at most 5 million.
requests=$(( switch_rate * seconds < 5000000 ? switch_rate * seconds : 5000000 ))
redis_rate=$(redis-benchmark -p "$port" -c "$clients" -n "$requests" -r 100000 --csv EVALSHA "$sha" 1 "acct:__rand_int__" 1 \
  | tail -1 | cut -d, -f2 | tr -d '"' | cut -d. -f1)
echo "redis: $redis_rate ops/s"
python3 - "$switch_rate" "$redis_rate" <<'PY'
import sys
switch, redis = int(sys.argv[1]), int(sys.argv[2])
print(f"switch {switch} durable authorizations/s, redis {redis} durable check-and-decrements/s: {switch / redis:.2f}x")
PY
