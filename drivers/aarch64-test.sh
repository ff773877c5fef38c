#!/bin/sh
# Builds rollcall-drivers for aarch64-unknown-linux-gnu (Raspberry Pi 4/5, 64-bit Pi OS) and runs
# its tests as aarch64 binaries under qemu-user. Exits 0 with "skipped: <reason>" when the Rust
# target, the cross linker or qemu is missing, so the README's test command works everywhere.
#
# The linker and runner are set through the environment, not .cargo/config.toml, so this
# script works whatever that file holds. Uses the workspace's normal target/ directory.
#
# Under qemu-user (Debian 12's 7.2) opening a tty through tokio-serial fails with ENOSYS
# ("Function not implemented") while setting the port up, so the tests in tests/pty.rs print
# "skipped: ..." and pass there; everything else runs, including the Adafruit cross-check (the
# host's python talks to the aarch64 test binary's simulator over a pty pair).
set -eu

cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "skipped: rust target $target not installed (rustup target add $target)"
    exit 0
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
    echo "skipped: aarch64-linux-gnu-gcc not found (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
    exit 0
fi
if ! command -v qemu-aarch64 >/dev/null 2>&1; then
    echo "skipped: qemu-aarch64 not found (apt-get install qemu-user)"
    exit 0
fi
if [ ! -d /usr/aarch64-linux-gnu/lib ]; then
    echo "skipped: /usr/aarch64-linux-gnu/lib missing (apt-get install libc6-dev-arm64-cross)"
    exit 0
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
exec cargo test -p rollcall-drivers --target "$target" "$@"
