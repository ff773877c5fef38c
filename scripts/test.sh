#!/usr/bin/env bash
# Rollcall's whole test suite: installs what it needs, then runs every test against real
# Mosquitto and PostgreSQL servers that the tests start themselves on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
[ -x drivers/tests/setup-python.sh ] && drivers/tests/setup-python.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# The Raspberry Pi build: the whole workspace for aarch64, and the drivers' tests as aarch64
# binaries under qemu-user (both skipped, saying so, where the target or the tools are missing).
# tests/tests/packages.rs makes the arm64 Debian packages from these debug binaries.
if command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu; then
  cargo build --workspace --target aarch64-unknown-linux-gnu
elif [ "${CI:-}" = true ]; then
  echo "error: aarch64 workspace build impossible (no aarch64-linux-gnu-gcc or rustup target); scripts/install-deps.sh installs them" >&2
  exit 1
else
  echo "skipped: aarch64 workspace build (no aarch64-linux-gnu-gcc or rustup target)"
fi
[ -x drivers/aarch64-test.sh ] && drivers/aarch64-test.sh

# Everything, on this machine's architecture.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
echo "all Rollcall tests passed"
