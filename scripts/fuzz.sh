#!/usr/bin/env bash
# Coverage-guided fuzzing of Rollcall's decoders with cargo-fuzz (libFuzzer), on stable Rust.
#
#   scripts/fuzz.sh                 every target for 120 s each, one after another
#   scripts/fuzz.sh ef01 600        one target (names: scripts/fuzz.sh list) for 600 s
#   scripts/fuzz.sh seed            rewrite the seed inputs (fuzz/examples/seed.rs)
#   scripts/fuzz.sh minimise [t]    shrink a corpus to the inputs that reach distinct code
#   scripts/fuzz.sh list            the target names
#
# The committed corpus, fuzz/corpus/<target>/, is read and never written while fuzzing: new
# inputs go to a scratch directory, and at the end only those that reach code the corpus did
# not are merged into it (libFuzzer's -merge=1 on edge coverage, -use_counters=0, which keeps
# the corpus small enough to commit). A crash stops the run and leaves the input in
# fuzz/libfuzzer/artifacts/<target>/; fix the decoder, copy the input into the corpus as
# fuzz/corpus/<target>/regression-<what>, and the ordinary tests replay it from then on.
#
# Runs niced, one fuzzing process at a time (-jobs is not used): the machine is shared.
# FUZZ_SANITIZER=address (needs a nightly toolchain: FUZZ_TOOLCHAIN=nightly) adds AddressSanitizer,
# worth it only for the unsafe code in dependencies; the default finds panics, overflows (debug
# assertions are on), unbounded allocation and broken round trips.
set -euo pipefail
cd "$(dirname "$0")/.."

toolchain="${FUZZ_TOOLCHAIN:-stable}"
sanitizer="${FUZZ_SANITIZER:-none}"
fuzz_dir=fuzz/libfuzzer
targets=$(sed -n 's/^name = "\([a-z0-9_]*\)"$/\1/p' "$fuzz_dir/Cargo.toml" | grep -v '^rollcall-fuzz')

case "${1:-all}" in
  list) echo "$targets"; exit 0 ;;
  seed) exec cargo run -p rollcall-fuzz --example seed ;;
  minimise) minimise=1; shift; selected=${1:-$targets} ;;
  all) selected=$targets ;;
  *)
    echo "$targets" | grep -qx "$1" || { echo "fuzz.sh: no target $1 (scripts/fuzz.sh list)" >&2; exit 2; }
    selected=$1 ;;
esac
seconds="${2:-120}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz from crates.io" >&2
  cargo install --locked cargo-fuzz
fi

fuzz() { nice -n 10 cargo "+$toolchain" fuzz "$1" --fuzz-dir "$fuzz_dir" -s "$sanitizer" "${@:2}"; }

fuzz build
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# Edge coverage only, and inputs of at most 4 KiB: enough for every frame and message shape
# (the size limits themselves are checked by the targets), and a corpus small to keep.
merge=(-merge=1 -use_counters=0 -rss_limit_mb=1024 -max_len=4096)

if [ -n "${minimise:-}" ]; then
  for t in $selected; do
    mkdir -p "$scratch/$t"
    # Seeds and regression inputs stay whatever coverage says; the rest must earn their place.
    cp fuzz/corpus/"$t"/seed-* fuzz/corpus/"$t"/regression-* "$scratch/$t"/ 2>/dev/null || true
    before=$(ls "fuzz/corpus/$t" | wc -l)
    fuzz run "$t" "$scratch/$t" "fuzz/corpus/$t" -- "${merge[@]}" 2>/dev/null
    rm -rf "fuzz/corpus/$t" && mv "$scratch/$t" "fuzz/corpus/$t"
    echo "== $t: corpus $before -> $(ls "fuzz/corpus/$t" | wc -l) files, $(du -s --apparent-size -k "fuzz/corpus/$t" | cut -f1) KiB"
  done
  exit 0
fi

for t in $selected; do
  mkdir -p "$scratch/$t" "fuzz/corpus/$t"
  before=$(ls "fuzz/corpus/$t" | wc -l)
  echo "== $t: ${seconds}s from $before corpus files"
  # -rss_limit_mb guards the machine; the targets' own allocation checks are much tighter.
  fuzz run "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=1024 -max_len=4096 -print_final_stats=1
  fuzz run "$t" "fuzz/corpus/$t" "$scratch/$t" -- "${merge[@]}" 2>/dev/null
  echo "== $t: corpus $before -> $(ls "fuzz/corpus/$t" | wc -l) files"
done
