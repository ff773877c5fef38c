#!/usr/bin/env bash
# Installs the Debian packages Rollcall's tests, demo and benchmarks need, only if missing.
# Safe to run again. Needs root or sudo when something is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have mosquitto || need+=(mosquitto)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
have socat || need+=(socat)
have openssl || need+=(openssl)
have python3 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
have cc || need+=(gcc)
# The chaos soak (tests/src/chaos): libfaketime steps one gateway's wall clock; fusermount3 is the
# power-loss FUSE file system's fallback where mount(2) is not allowed (it mounts directly as root).
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1 ] || need+=(faketime)
have fusermount3 || need+=(fuse3)
# Operator views (issue 11): promtool checks and unit-tests the alert rules; headless Chromium
# renders the live fleet page in its test.
have promtool || need+=(prometheus)
have chromium || need+=(chromium)
# Cross build and emulation for the Raspberry Pi (aarch64); optional but installed when possible.
have aarch64-linux-gnu-gcc || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
have qemu-aarch64 || need+=(qemu-user)
# The Debian packages' test (tests/tests/packages.rs): dpkg-deb (dpkg, always there) reads them,
# systemd-analyze verifies their units, binutils-aarch64-linux-gnu strips the arm64 binaries.
have systemd-analyze || need+=(systemd)
have aarch64-linux-gnu-strip || need+=(binutils-aarch64-linux-gnu)

if ((${#need[@]})); then
  echo "install-deps: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # Optional packages may be missing on some releases; the required ones must install.
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" ||
    $sudo apt-get install -y -qq --no-install-recommends mosquitto postgresql socat openssl python3 python3-venv gcc faketime fuse3 prometheus chromium systemd
fi

# The aarch64 standard library for cross builds (rustup only; skipped elsewhere).
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -q aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu || echo "install-deps: aarch64 target unavailable; aarch64 steps will be skipped"
fi
# cargo-deb (a build tool, not a dependency of any crate) makes the Debian packages:
# scripts/package.sh. Pinned so every machine builds the same packages.
cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version"; then
  echo "install-deps: installing cargo-deb $cargo_deb_version"
  cargo install --locked --version "$cargo_deb_version" cargo-deb
fi
# The Debian mosquitto package starts a system broker on port 1883; Rollcall's tests never use
# it (each test starts its own on a free port). Likewise the prometheus package's server (port
# 9090) where it starts one: the tests only use its promtool.
exit 0
