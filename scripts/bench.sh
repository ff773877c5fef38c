#!/usr/bin/env bash
# Rollcall's benchmarks; results are printed as Markdown tables (see BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
echo "## Machine"
echo
echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) cores), memory $(free -g | awk '/Mem:/ {print $2}') GiB"
target_dir="${CARGO_TARGET_DIR:-target}"   # where cargo builds and the benchmarks write
echo "- Disk under $target_dir/: $(df -h "$target_dir" 2>/dev/null | awk 'NR==2 {print $1, $2}')"
echo
echo "## Edge (rollcalld)"
echo
cargo bench -p rollcall-daemon --bench edge
echo
echo "## Centre (rollcall-ingest)"
echo
# Gateways over MQTT and, alongside them, ZKTeco terminals over HTTP (--terminals 0 leaves them out).
cargo run --release -p rollcall-ingest --example bench
echo
echo "## Fleet (a campus at the start of a period)"
echo
# Simulated gateways tap a seeded campus in through real Mosquitto and rollcall-ingest replicas;
# every combination of the lists runs on a fresh PostgreSQL and broker (see BENCHMARKS.md, Fleet).
cargo run --release -p rollcall-tests --example fleet -- --gateways 100,300,1000 --per-room 40 --replicas 2 --time-scale 10
cargo run --release -p rollcall-tests --example fleet -- --gateways 300 --students 12000 --replicas 1,2,4 --time-scale 30
cargo run --release -p rollcall-tests --example fleet -- --gateways 300 --students 12000 --replicas 2 --time-scale 5,15,30,60,120
