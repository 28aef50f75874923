# Sourced by the bench scripts: `start` runs "$SWITCH" on "$WORK/hot.toml" with its WAL in
# "$WORK/wal" and its log in "$WORK/switch.log" (loopback, ports chosen by the system), waits
# until it listens, and sets PID, ADDR (acquirers), PORT and HTTP (metrics). A switch that
# exits first prints its log and ends the script.
start() {
  "$SWITCH" run --config "$WORK/hot.toml" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
    --wal-dir "$WORK/wal" 2> "$WORK/switch.log" &
  PID=$!
  for _ in $(seq 1 1200); do
    grep -q "listening for acquirers on" "$WORK/switch.log" && break
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/switch.log" >&2; exit 1; }
    sleep 0.2
  done
  ADDR=$(grep -o "listening for acquirers on [0-9.:]*" "$WORK/switch.log" | awk '{print $NF}')
  PORT=${ADDR##*:}
  HTTP=$(grep -o "HTTP (healthz, readyz) on [0-9.:]*" "$WORK/switch.log" | awk '{print $NF}')
}
