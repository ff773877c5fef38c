#!/bin/sh
# Installs the Python side of the EF01 cross-check (Adafruit's CircuitPython fingerprint driver
# and pyserial) into a virtual environment under the workspace's target/ directory.
# Idempotent: a second run with the packages present does nothing but check them.
# Exits 0 with "skipped: <reason>" when python3 or its venv module is unavailable, so the
# README's test command keeps working on machines without Python; the Rust test then skips too.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
workspace=$(cd "$here/../.." && pwd)
venv="${ROLLCALL_PY_VENV:-$workspace/target/python-venv}"
packages="adafruit-circuitpython-fingerprint pyserial"

if ! command -v python3 >/dev/null 2>&1; then
    echo "skipped: python3 not found; the Adafruit fingerprint cross-check will not run"
    exit 0
fi

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import adafruit_fingerprint, serial' 2>/dev/null; then
    echo "python venv ready: $venv"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        echo "skipped: python3 -m venv failed (install python3-venv); the cross-check will not run"
        exit 0
    fi
fi

if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $packages; then
    echo "skipped: pip could not install $packages (offline?); the cross-check will not run"
    exit 0
fi
"$venv/bin/python" -c 'import adafruit_fingerprint, serial'
echo "python venv ready: $venv"
