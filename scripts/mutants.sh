#!/usr/bin/env bash
# Mutation testing of Rollcall's pure cores with cargo-mutants: each area's code is mutated one
# change at a time and the fast tests that exercise it are run; a mutant no test notices is a
# behaviour nobody would notice changing. Prints, per area, caught / viable mutants.
#
#   scripts/mutants.sh                  protocol, ingest, journal, drivers (in that order)
#   scripts/mutants.sh protocol journal only those areas
#   scripts/mutants.sh --matcher        the four areas and the fingerprint matcher
#   scripts/mutants.sh --list [AREA..]  list the mutants each area would test, run nothing
#   scripts/mutants.sh AREA.. -- ARGS   pass ARGS on to cargo mutants, e.g. a part of an area:
#       -- --shard 1/2 --sharding round-robin   every second mutant of the list, from the second
#       -- -e daemon/src/journal/mod.rs ...   leave those files out (`-F REGEX` on mutant names
#                                             also lets through some `delete field` mutants)
#       -- --cargo-test-arg=--lib             judged by the unit tests only (faster, a lower bound)
#     Round-robin shards are cut from the list after the equivalents are left out, so a change
#     to mutants/equivalent.txt moves mutants between shards.
#
# Equivalent mutants (no observable difference) are listed with their reason in
# mutants/equivalent.txt and are not tested, so a run reports only new survivors. Not part of
# CI: it takes hours on a 2-core machine. Results: target/mutants/<area>/mutants.out/
# (missed.txt lists the survivors; a later run of the area replaces them). Environment:
# MUTANTS_JOBS (default 1), MUTANTS_TIMEOUT (seconds per test run, default: per area below).
set -euo pipefail
cd "$(dirname "$0")/.."

version=27.1.0
if ! cargo mutants --version 2>/dev/null | grep -q "^cargo-mutants 27\."; then
  cargo install --locked "cargo-mutants@$version"
fi

# No debug info in the mutants' builds: linking each mutant's test binary is most of its time.
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-0}"
export CARGO_PROFILE_TEST_DEBUG="${CARGO_PROFILE_TEST_DEBUG:-0}"

all_areas=(protocol ingest journal drivers)
list=false
areas=()
extra=()
while [ $# -gt 0 ]; do
  arg="$1"
  shift
  case "$arg" in
    --)
      extra=("$@")
      break
      ;;
    --matcher) all_areas+=(matcher) ;;
    --list) list=true ;;
    protocol | ingest | journal | drivers | matcher) areas+=("$arg") ;;
    *)
      echo "usage: scripts/mutants.sh [--matcher] [--list] [protocol|ingest|journal|drivers|matcher]... [-- CARGO_MUTANTS_ARGS]" >&2
      exit 2
      ;;
  esac
done
[ ${#areas[@]} -eq 0 ] && areas=("${all_areas[@]}")

# What each area mutates and which tests judge it. Test filters are cargo test's (the mutants are
# judged by `cargo test -p <package> <filters>`).
area_args() {
  case "$1" in
    protocol)
      # The wire contract and the uplink state machine, with the crate's own tests.
      echo "--package rollcall-protocol --timeout ${MUTANTS_TIMEOUT:-120}"
      ;;
    ingest)
      # The attendance rules and the batch steps, pure functions tested without a database (the
      # lib's unit tests and ingest/tests/attendance_rules.rs; every rule is reachable there).
      echo "--package rollcall-ingest -f ingest/src/decide.rs -f ingest/src/admit.rs"
      echo "-f ingest/src/db/batch.rs --cargo-test-arg=--lib --cargo-test-arg=--test=attendance_rules"
      echo "--timeout ${MUTANTS_TIMEOUT:-180}"
      ;;
    journal)
      # The journal (redb file, power-cut backend, actor) with its own unit tests only.
      echo "--package rollcall-daemon -f daemon/src/journal/** --cargo-test-arg=--lib"
      echo "--cargo-test-arg=journal --timeout ${MUTANTS_TIMEOUT:-300}"
      ;;
    drivers)
      # The reader codecs and the Wiegand decoder, with the drivers' tests (scripted bytes,
      # simulators, fuzzing).
      echo "--package rollcall-drivers -f drivers/src/ef01/codec.rs -f drivers/src/pn532/codec.rs"
      echo "-f drivers/src/rdm6300/codec.rs -f drivers/src/wiegand/decoder.rs"
      echo "--timeout ${MUTANTS_TIMEOUT:-300}"
      ;;
    matcher)
      echo "--package rollcall-matcher --timeout ${MUTANTS_TIMEOUT:-300}"
      ;;
  esac
}

# mutants/equivalent.txt: one mutant per line as `cargo mutants --list` names it, with or without
# its `:line:col` (without, it matches that description anywhere in the file), followed by
# indented lines giving the reason.
esc() { printf '%s' "$1" | sed 's/[][\.*^$()+?{}|]/\\&/g'; }
patterns=()
entry=""    # the mutant line still waiting for its reason
reasoned=false # the line before was a reason, so more reason lines may follow
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    '' | '#'*) reasoned=false ;;
    [[:space:]]*)
      [ -n "$entry" ] || $reasoned || { echo "mutants/equivalent.txt: a reason with no mutant: $line" >&2; exit 2; }
      entry=""
      reasoned=true
      ;;
    *)
      [ -z "$entry" ] || { echo "mutants/equivalent.txt: no reason given for: $entry" >&2; exit 2; }
      entry="$line"
      reasoned=false
      if [[ "$line" =~ ^([^:]+):([0-9]+):([0-9]+):\ (.*)$ ]]; then
        patterns+=("^$(esc "${BASH_REMATCH[1]}"):${BASH_REMATCH[2]}:${BASH_REMATCH[3]}: $(esc "${BASH_REMATCH[4]}")\$")
      else
        patterns+=("^$(esc "${line%%: *}"):[0-9]+:[0-9]+: $(esc "${line#*: }")\$")
      fi
      ;;
  esac
done <mutants/equivalent.txt
[ -z "$entry" ] || { echo "mutants/equivalent.txt: no reason given for: $entry" >&2; exit 2; }
excludes=()
for p in "${patterns[@]}"; do excludes+=(--exclude-re "$p"); done

count() { if [ -f "$1" ]; then grep -c . "$1" || true; else echo 0; fi; }

summary=()
for area in "${areas[@]}"; do
  # shellcheck disable=SC2046 # area_args is a list of words without spaces or globs to expand
  set -f
  args=($(area_args "$area"))
  set +f
  all=$(cargo mutants --list "${args[@]}" ${extra[@]+"${extra[@]}"})
  if $list; then
    if [ ${#patterns[@]} -eq 0 ]; then
      printf '%s\n' "$all"
    else
      printf '%s\n' "$all" | grep -v -E -f <(printf '%s\n' "${patterns[@]}") || true
    fi
    continue
  fi
  # An entry for this area's files that matches nothing is stale (the line moved, the code
  # changed): say so, since its mutant is tested again.
  for p in "${patterns[@]}"; do
    file=$(printf '%s' "$p" | sed -E 's/^\^//; s/:\[?[0-9].*$//; s/\\//g')
    if printf '%s\n' "$all" | grep -q "^$file:" && ! printf '%s\n' "$all" | grep -q -E "$p"; then
      echo "mutants/equivalent.txt: matches no mutant any more (update it): $p" >&2
    fi
  done
  out="target/mutants/$area"
  mkdir -p "$out"
  echo "=== $area: cargo mutants ${args[*]} ${extra[*]-}" >&2
  status=0
  cargo mutants --jobs "${MUTANTS_JOBS:-1}" --output "$out" "${args[@]}" ${excludes[@]+"${excludes[@]}"} \
    ${extra[@]+"${extra[@]}"} || status=$?
  # 0: all caught; 2: some missed; 3: some timed out. Anything else is a failure to run.
  case "$status" in 0 | 2 | 3) ;; *) echo "$area: cargo mutants failed ($status)" >&2; exit "$status" ;; esac
  dir="$out/mutants.out"
  caught=$(count "$dir/caught.txt")
  missed=$(count "$dir/missed.txt")
  timeout=$(count "$dir/timeout.txt")
  unviable=$(count "$dir/unviable.txt")
  viable=$((caught + missed + timeout))
  pct=$(awk -v c="$caught" -v v="$viable" 'BEGIN { if (v > 0) printf "%.1f", 100 * c / v; else print "-" }')
  summary+=("$(printf '%-9s %4d / %-4d %6s %%   missed %d, timed out %d, unviable %d' \
    "$area" "$caught" "$viable" "$pct" "$missed" "$timeout" "$unviable")")
  if [ "$missed" -gt 0 ]; then
    echo "$area: survivors (missed):" >&2
    sed 's/^/  /' "$dir/missed.txt" >&2
  fi
done

if ! $list; then
  echo
  echo "area      caught / viable   (timeouts count as not caught; equivalent mutants excluded)"
  printf '%s\n' "${summary[@]}"
fi
