#!/usr/bin/env bash
# Rollcall's Debian packages, built with cargo-deb into target/debian/:
#   rollcall-gateway_<v>_arm64.deb    rollcalld, rollcall, the unit, the gpio udev rule, the
#                                     example config (Raspberry Pi, aarch64)
#   rollcall-ingest_<v>_arm64.deb     rollcall-ingest, rollcall, the unit, the example config
#   rollcall-ingest_<v>_<host>.deb    the same for this machine's architecture (amd64 here)
#
#   scripts/package.sh --release     a release: builds optimised binaries, then packages them
#   scripts/package.sh               the debug profile (quick to build; big, slow binaries)
#   scripts/package.sh --no-build    packages the debug binaries already built, as the test
#                                    (tests/tests/packages.rs) does with the ones CI built
# Options: --out DIR (instead of target/debian), --fast (faster, larger compression).
# cargo-deb 3.8 warns that packaging the dev profile is unsupported and may become an error in a
# later version; install-deps pins 3.8.0, and only the test packages debug builds.
# Needs cargo-deb, gcc-aarch64-linux-gnu and the rustup target: scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=dev
build=true
out=target/debian
fast=()
while (($#)); do
  case "$1" in
  --release) profile=release ;;
  --no-build) build=false ;;
  --out) out="$2"; shift ;;
  --fast) fast=(--fast) ;;
  -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
  *) echo "package.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if ! cargo deb --version >/dev/null 2>&1; then
  echo "package.sh: cargo-deb is missing: scripts/install-deps.sh installs it" >&2
  exit 1
fi

arm=aarch64-unknown-linux-gnu
host=$(rustc -vV | sed -n 's/^host: //p')

# Both packages take rollcall from rollcall-provisioning, so cargo-deb packages binaries built
# here rather than building each package's own alone (--no-build).
if $build; then
  cargo build --profile "$profile" --target "$arm" \
    -p rollcall-daemon -p rollcall-provisioning -p rollcall-ingest
  if [ "$host" != "$arm" ]; then
    cargo build --profile "$profile" -p rollcall-provisioning -p rollcall-ingest
  fi
fi

mkdir -p "$out"
deb() { cargo deb --no-build --profile "$profile" --output "$out" "${fast[@]}" "$@"; }
deb -p rollcall-daemon --target "$arm"
deb -p rollcall-ingest --target "$arm"
if [ "$host" != "$arm" ]; then
  deb -p rollcall-ingest
fi
ls -l "$out"/*.deb
