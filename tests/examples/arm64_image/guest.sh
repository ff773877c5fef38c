#!/bin/sh
# Runs inside the arm64 guest at boot (rollcall-arm64-image.service): the README's "On the Pi"
# commands, as IT types them, on the files the host put in /root/arm64-image (the package, the
# CA, the device's certificate and key, and `env` naming the broker). Everything is written to
# the console (hvc0), where the host reads it: a line `ARM64-IMAGE: step NAME rc=N SECONDSs`
# per command, `ARM64-IMAGE: tap` when the card reader is ready for the host's card, and
# `ARM64-IMAGE: done` before powering off. No `sudo`: the unit runs as root.
set -u
cd /root/arm64-image
. ./env # DEB, BROKER, DEVICE

say() { echo "ARM64-IMAGE: $*"; }
now() { date +%s.%N; }
# step NAME COMMAND...: runs the command with its output on the console, then its exit status and
# how long it took.
step() {
    name=$1
    shift
    say "step $name: $*"
    t0=$(now)
    "$@" 2>&1
    rc=$?
    say "step $name rc=$rc $(echo "$(now) - $t0" | awk '{printf "%.1f", $1 - $3}')s"
    return $rc
}
# until_ok SECONDS COMMAND...: runs the command every second until it succeeds, at most SECONDS.
until_ok() {
    end=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 1
    done
}
finish() {
    say "uptime $(cut -d' ' -f1 /proc/uptime)s"
    say "done"
    sync
    systemctl poweroff
    exit 0
}

say "booted: $(uname -srm), $(nproc) cpu, $(cut -d' ' -f1 /proc/uptime)s since the kernel started"
say "cmdline: $(cat /proc/cmdline)"
ls -l /dev/ttyAMA0 /dev/hvc0

step install apt install -y ./"$DEB" || finish
step provision rollcall provision "$DEVICE" --site north --room R101 --broker "$BROKER" \
    --ca-file ca.pem --cert "$DEVICE.pem" --key "$DEVICE.key" \
    --reader card:rdm6300:/dev/ttyAMA0 || finish
step enable systemctl enable --now rollcalld || { journalctl -u rollcalld --no-pager -n 40; finish; }
step active until_ok 120 systemctl is-active rollcalld ||
    journalctl -u rollcalld --no-pager -n 40 -o short-monotonic
step status-before timeout 120 rollcall status

say "tap"
# The host taps a card on the RDM6300 it plays on ttyAMA0; wait for the centre's ack.
acked() { timeout 20 rollcall status --json | grep -Eq '"acked": ?[1-9]'; }
step acked until_ok 150 acked
step status timeout 120 rollcall status
step status-json timeout 120 rollcall status --json
step doctor timeout 300 rollcall doctor
journalctl -u rollcalld --no-pager -n 30 -o cat
finish
