#!/usr/bin/env bash
# A real Prometheus server (Debian's `prometheus` package) scraping a running switch: its query
# API must agree with the traffic sent; `promtool check metrics` lints the exposition; and the
# scrape's time and size are measured under full pipelined load. Loopback only; every run ends
# by itself. Usage: bash bench/prometheus-scrape.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi
cargo build --release -q -p switch -p loadtest
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

switch_addr=127.0.0.1:18583 http_addr=127.0.0.1:19583 prom_addr=127.0.0.1:19090
target/release/switch run --listen $switch_addr --http $http_addr --wal-dir "$work/wal" >"$work/switch.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do grep -q "listening for acquirers" "$work/switch.log" && break; sleep 0.1; done

cat >"$work/prometheus.yml" <<YAML
global: { scrape_interval: 1s }
scrape_configs:
  - job_name: switch
    static_configs: [{ targets: ["$http_addr"] }]
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address=$prom_addr >"$work/prometheus.log" 2>&1 &
pids+=($!)

echo "== promtool check metrics (an empty list of problems is a pass)"
curl -sf "http://$http_addr/metrics" | promtool check metrics

query() {
    curl -sfG "http://$prom_addr/api/v1/query" --data-urlencode "query=$1" |
        python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else 0)'
}
echo "== waiting for Prometheus's first scrape (its discovery takes about 5 s)"
for _ in $(seq 1 60); do [ "$(query 'up{job="switch"}' 2>/dev/null || echo 0)" = 1 ] && break; sleep 0.5; done

echo "== a known burst: 20,000 authorizations, no money check (so nothing else is sent)"
target/release/loadtest run --target $switch_addr --connections 8 --in-flight 16 --warmup 0s \
    --requests 20000 --duration 60s --no-money-check --json "$work/burst.json" >/dev/null
for _ in $(seq 1 30); do
    [ "$(query 'sum(switch_transactions_total)')" = 20000 ] && break
    sleep 0.5
done
approved=$(query 'sum(switch_transactions_total{mti="0100",response_code="00",route="on-us"})')
answered=$(query 'sum(switch_transactions_total)')
stage=$(query 'switch_stage_duration_seconds_count{stage="total"}')
echo "Prometheus says: $approved approved 0100s, $answered answers, $stage total-stage observations"
if [ "$approved" != 20000 ] || [ "$answered" != 20000 ] || [ "$stage" != 20000 ]; then
    echo "FAIL: Prometheus disagrees with the 20,000 requests sent" >&2
    exit 1
fi

echo "== scrape time and size under full pipelined load (8 x 64)"
target/release/loadtest run --target $switch_addr --connections 8 --in-flight 64 --duration 12s \
    --no-money-check >"$work/load.txt" 2>&1 &
load=$!
sleep 3
for _ in $(seq 1 8); do
    curl -s -o /dev/null -w '%{time_total} s, %{size_download} bytes\n' "http://$http_addr/metrics"
    sleep 1
done
wait $load
grep -E '^throughput' "$work/load.txt"
echo "PASS"
