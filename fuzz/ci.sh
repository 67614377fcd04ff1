#!/usr/bin/env bash
# A short fuzzing pass over every target, for CI or before a release:
#
#   fuzz/ci.sh [SECONDS_PER_TARGET]   (default 30)
#
# Installs cargo-afl when missing (from crates.io; it builds AFL++ from the source it ships, with
# the C compiler and make), builds the targets once, then runs each for SECONDS_PER_TARGET seconds
# through fuzz/run.sh, one at a time. Prints one line per target and exits non-zero when any
# target crashed. It is not part of .ci/run: the instrumented build alone takes longer than the
# few minutes .ci/run can spend on it (docs/fuzzing.md).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
seconds="${1:-30}"

if ! command -v cc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends build-essential >/dev/null
fi
if ! cargo afl --version >/dev/null 2>&1; then
  echo "== installing cargo-afl"
  cargo install --locked cargo-afl --version 0.18.2
fi
export CARGO_TARGET_DIR="${MACHA_FUZZ_TARGET_DIR:-$here/target}"
if ! out=$(cargo afl config --build 2>&1); then
  grep -q "already built" <<<"$out" || { echo "$out" >&2; exit 1; }
fi
echo "== building every target"
started=$(date +%s)
nice -n "${MACHA_FUZZ_NICE:-10}" cargo afl build --release
echo "build: $(($(date +%s) - started))s"

failed=()
summary=()
for target in $(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^macha-fuzz$'); do
  report=$(./run.sh "$target" "$seconds" 2>&1) || failed+=("$target")
  field() { sed -n "s|^$1: *||p" <<<"$report"; }
  summary+=("$(printf '%-16s %12s execs %8s/s  corpus %-28s crashes %s' "$target" \
    "$(field executions)" "$(field execs/s)" "$(field corpus)" "$(field crashes)")")
  if [[ " ${failed[*]-} " == *" $target "* ]]; then
    echo "$report"
  fi
done
echo "== fuzzing, ${seconds}s per target"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
echo "${#summary[@]} passed, 0 failed"
