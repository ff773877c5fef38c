#!/usr/bin/env bash
# Runs Rollcall's main job with simulated readers: no hardware and no configuration needed.
# Starts a private Mosquitto on a free port in a temporary directory, then rollcalld with a
# simulated card reader and fingerprint reader that are presented a random student every
# second. Stop with Ctrl-C. Try, from another terminal, while it runs:
#   target/debug/rollcalld tap --socket <dir>/state/control.sock card door-card 0000000005
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build -p rollcall-daemon --bin rollcalld

dir=$(mktemp -d /tmp/rollcall-demo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root"
printf '%s\nlistener %s 127.0.0.1\nallow_anonymous true\n' "$user_line" "$port" >"$dir/mosquitto.conf"
"$mosquitto_bin" -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; wait 2>/dev/null; echo "demo state kept in $dir"' EXIT

echo "demo: broker on 127.0.0.1:$port, state in $dir/state"
echo "demo: tap by hand with: target/debug/rollcalld tap --socket $dir/state/control.sock card door-card 0000000005"
ROLLCALL_LOG=${ROLLCALL_LOG:-info,rumqttc=warn} target/debug/rollcalld run --simulate \
  --state-dir "$dir/state" --broker-port "$port" --demo-every "${DEMO_EVERY:-1s}"
