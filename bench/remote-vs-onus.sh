#!/usr/bin/env bash
# The remote path beside the on-us path: the same closed loop (64 × 1, 10 s, no money check)
# against one switch, with `loadtest issuer-sim` as the remote issuer, on-us only, remote only
# and half each, twice over. For each run: answers, the switch process's CPU time per answer
# (utime + stime from /proc, so the simulator's and the load tool's CPU are left out),
# throughput and latency. Needs `cargo build --release --workspace` first; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
T=target/release
OUT=${OUT:-/tmp/remote-vs-onus}
rm -rf "$OUT" && mkdir -p "$OUT"
$T/loadtest issuer-sim --listen 127.0.0.1:9584 --duration 10m > "$OUT/sim.out" 2> "$OUT/sim.err" &
SIM=$!
sleep 0.5
$T/switch run --wal-dir "$OUT/wal" --listen 127.0.0.1:18583 --http 127.0.0.1:19583 > "$OUT/switch.log" 2>&1 &
SW=$!
trap 'kill $SW $SIM 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do grep -q "issuer link signed on" "$OUT/switch.log" && break; sleep 0.5; done
cpu() { awk '{print $14+$15}' "/proc/$SW/stat"; }
answered() { curl -s 127.0.0.1:19583/metrics | awk '/^switch_transactions_total/ {s+=$2} END {print s+0}'; }
run() {
  local mix=$1 name=$2
  local c0 t0 c1 t1
  c0=$(cpu); t0=$(answered)
  $T/loadtest run --target 127.0.0.1:18583 --connections 64 --in-flight 1 --duration 10s \
      --no-money-check --mix "$mix" --json "$OUT/$name.json" > "$OUT/$name.out" 2>&1
  c1=$(cpu); t1=$(answered)
  python3 - "$OUT/$name.json" "$name" "$mix" "$((t1 - t0))" "$((c1 - c0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
path, name, mix, n, ticks, hz = sys.argv[1:]
run = json.load(open(path))["run"]
us = int(ticks) * 1e6 / int(hz) / max(int(n), 1)
print(f"{name:8} {mix:20} answers {int(n):>7}  switch CPU {us:5.1f} us/answer  "
      f"{run['throughput_per_second']:>7.0f}/s  p50 {run['latency_us']['p50']} us  "
      f"p99 {run['latency_us']['p99']} us  codes {run['response_codes']}")
PY
}
run auth:100 on-us
run remote:100 remote
run auth:50,remote:50 mixed
run auth:100 on-us
run remote:100 remote
kill -USR1 $SIM; sleep 0.3
echo "simulator: $(tail -1 "$OUT/sim.out")"
