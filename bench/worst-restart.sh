#!/usr/bin/env bash
# The worst restart (bench/RESULTS.md, "the worst restart"): the default configuration under
# 8 x 64 pipelined load for about 4.5 minutes, `kill -9` 28 s after a "snapshot written" line
# (close to the 2 M records that bring the next one), the log kept aside in $LOG_DIR; then
# each build in SWITCHES restarted on a fresh copy of it, in turn, ROUNDS times. Prints, per
# restart, the time to listening, the CPU seconds the process used, and the recovery's steps.
# Loopback only; needs `cargo build --release -p switch -p loadtest`; about 4 GB of disk.
#
#   bench/worst-restart.sh                                        # make the log, restart once
#   SWITCHES="/tmp/switch-old target/release/switch" ROUNDS=2 bench/worst-restart.sh
#   MAKE=no SWITCHES=... bench/worst-restart.sh                   # reuse the log in $LOG_DIR
#   CONFIG=ret.toml ...                                           # restart with a config (e.g. a
#                                                                 # longer retention, so that the
#                                                                 # log's age changes nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
SWITCH=${SWITCH:-target/release/switch}
SWITCHES=${SWITCHES:-$SWITCH}
LOADTEST=${LOADTEST:-target/release/loadtest}
LOG_DIR=${LOG_DIR:-/tmp/switch-worst-log}
ROUNDS=${ROUNDS:-1}
WORK=$(mktemp -d /tmp/switch-worst.XXXXXX)
PID=
trap 'kill -9 "$PID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

if [ "${MAKE:-yes}" != no ]; then
  rm -rf "$LOG_DIR"
  "$SWITCH" run --listen 127.0.0.1:0 --http 127.0.0.1:0 --wal-dir "$LOG_DIR" 2> "$WORK/load.log" &
  PID=$!
  for _ in $(seq 1 600); do grep -q "listening for acquirers on" "$WORK/load.log" && break; sleep 0.2; done
  ADDR=$(grep -o "listening for acquirers on [0-9.:]*" "$WORK/load.log" | awk '{print $NF}')
  "$LOADTEST" run --target "$ADDR" --connections 8 --in-flight 64 --duration 340s \
    --warmup 1s --no-money-check > "$WORK/loadtest.txt" 2>&1 &
  LOAD=$!
  sleep 265
  N=$(grep -c "snapshot written" "$WORK/load.log" || true)
  for _ in $(seq 1 600); do
    [ "$(grep -c "snapshot written" "$WORK/load.log" || true)" -gt "$N" ] && break; sleep 0.1
  done
  sleep 28
  kill -9 "$PID"; wait "$PID" 2>/dev/null || true
  kill "$LOAD" 2>/dev/null || true; wait "$LOAD" 2>/dev/null || true
  echo "log made: $(du -sh "$LOG_DIR" | cut -f1), killed 28 s after: $(grep "snapshot written" "$WORK/load.log" | tail -1 | grep -o 'file=[^ ]*')"
fi

for round in $(seq 1 "$ROUNDS"); do
  for build in $SWITCHES; do
    rm -rf "$WORK/wal"; cp -r "$LOG_DIR" "$WORK/wal"; sync
    STARTED=$(date +%s.%N)
    "$build" run ${CONFIG:+--config "$CONFIG"} --listen 127.0.0.1:0 --http 127.0.0.1:0 \
      --wal-dir "$WORK/wal" 2> "$WORK/restart.log" &
    PID=$!
    for _ in $(seq 1 1500); do
      grep -q "listening for acquirers on" "$WORK/restart.log" && break
      kill -0 "$PID" 2>/dev/null || { cat "$WORK/restart.log" >&2; exit 1; }
      sleep 0.2
    done
    echo "round $round, $build: listening after $(echo "$(date +%s.%N) - $STARTED" | bc) s, cpu $(awk '{print ($14+$15)/100}' "/proc/$PID/stat") s"
    grep -E "snapshot loaded|store of transactions on disk opened|rolled back|answers within|ledger recovered" \
      "$WORK/restart.log" | sed -E 's/^[0-9T:.-]*Z +INFO [a-z_:]*: //' | cut -c1-200 | sed 's/^/  /'
    kill -9 "$PID"; wait "$PID" 2>/dev/null || true
  done
done
