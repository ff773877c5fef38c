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
