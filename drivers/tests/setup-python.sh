#!/bin/sh
# Installs the Python side of the EF01 cross-check (Adafruit's CircuitPython fingerprint driver
# and pyserial) into a virtual environment under the workspace's target/ directory.
# Idempotent: a second run with the packages present does nothing but check them.
# Exits 0 with "skipped: <reason>" when python3 or its venv module is unavailable, so the
# README's test command keeps working on machines without Python; the Rust test then skips too.
# Under CI (CI=true) it exits 1 instead, and the Rust test fails: CI must run the cross-check.
set -eu

skip() {
    case "${CI:-}" in
    true | TRUE | True | 1)
        echo "error: $1; under CI (CI=true) the Adafruit cross-check must run" >&2
        exit 1
        ;;
    esac
    echo "skipped: $1; the Adafruit fingerprint cross-check will not run"
    exit 0
}

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/../.." && pwd)
venv="${ROLLCALL_PY_VENV:-$workspace/target/python-venv}"
packages="adafruit-circuitpython-fingerprint pyserial"

if ! command -v python3 >/dev/null 2>&1; then
    skip "python3 not found"
fi

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import adafruit_fingerprint, serial' 2>/dev/null; then
    echo "python venv ready: $venv"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        skip "python3 -m venv failed (install python3-venv)"
    fi
fi

if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $packages; then
    skip "pip could not install $packages (offline?)"
fi
"$venv/bin/python" -c 'import adafruit_fingerprint, serial'
echo "python venv ready: $venv"
