#!/usr/bin/env bash
# Runs one fuzz target under AFL++ for a fixed time and reports what it did.
#
#   fuzz/run.sh TARGET SECONDS
#
# Builds the target with `cargo afl build --release` (instrumented, overflow checks on), fuzzes it
# from the seeds in fuzz/corpus/TARGET for SECONDS seconds, then prints executions, executions per
# second, the corpus size and the crashes and hangs found. Exits non-zero on any crash, after
# printing each crashing input and the panic it causes. docs/fuzzing.md has the targets and figures.
#
# Environment: MACHA_FUZZ_TARGET_DIR (default fuzz/target), MACHA_FUZZ_OUT (default fuzz/out; the
# run writes MACHA_FUZZ_OUT/TARGET, replacing an earlier run's), MACHA_FUZZ_NICE (default 10),
# MACHA_FUZZ_EXECS (stop after this many executions, if that comes before SECONDS).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

usage() {
  echo "usage: fuzz/run.sh TARGET SECONDS" >&2
  echo "targets: $(targets | tr '\n' ' ')" >&2
  exit 2
}
targets() { sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^macha-fuzz$'; }

[ $# -eq 2 ] || usage
target="$1"
seconds="$2"
targets | grep -qx -- "$target" || { echo "unknown target: $target" >&2; usage; }
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || { echo "SECONDS must be a positive number" >&2; usage; }
[ -d "corpus/$target" ] || { echo "no seeds in fuzz/corpus/$target" >&2; exit 2; }

if ! cargo afl --version >/dev/null 2>&1; then
  echo "== installing cargo-afl (crates.io; it builds AFL++ from the source it ships)"
  cargo install --locked cargo-afl --version 0.18.2
fi
# AFL++ is built once per Rust toolchain; cargo-afl refuses to build it twice, which is fine.
if ! out=$(cargo afl config --build 2>&1); then
  grep -q "already built" <<<"$out" || { echo "$out" >&2; exit 1; }
fi

export CARGO_TARGET_DIR="${MACHA_FUZZ_TARGET_DIR:-$here/target}"
nice_level="${MACHA_FUZZ_NICE:-10}"
echo "== building $target"
nice -n "$nice_level" cargo afl build --release --bin "$target"
bin="$CARGO_TARGET_DIR/release/$target"

out_root="${MACHA_FUZZ_OUT:-$here/out}"
out_dir="$out_root/$target"
rm -rf "$out_dir"
mkdir -p "$out_root"

echo "== fuzzing $target for ${seconds}s"
# No UI (a log instead), no CPU binding (the machine may be shared), no core-dump check (the
# crashes are AFL's own findings, whatever the system does with core files).
export AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_NO_CRASH_README=1 AFL_SKIP_CRASHES=0
log="$out_root/$target.log"
limit=()
if [ -n "${MACHA_FUZZ_EXECS:-}" ]; then
  limit=(-E "$MACHA_FUZZ_EXECS")
fi
status=0
# -V stops fuzzing after that many seconds; the outer timeout only guards against a fuzzer that
# does not stop (calibration of the seeds happens before the clock starts).
timeout --kill-after=30 $((seconds + 300)) \
  nice -n "$nice_level" cargo afl fuzz -i "corpus/$target" -o "$out_dir" -V "$seconds" "${limit[@]}" -- "$bin" \
  >"$log" 2>&1 || status=$?
stats="$out_dir/default/fuzzer_stats"
if [ ! -f "$stats" ]; then
  echo "afl-fuzz did not start (exit $status); the end of its log:" >&2
  tail -n 40 "$log" >&2
  exit 1
fi
stat() { sed -n "s/^$1 *: *//p" "$stats"; }
execs=$(stat execs_done)
run_time=$(stat run_time)
paths=$(stat corpus_count)
edges=$(stat edges_found)
total_edges=$(stat total_edges)
crashes=$(stat saved_crashes)
hangs=$(stat saved_hangs)
stability=$(stat stability)
rate=$(awk -v e="$execs" -v t="$run_time" 'BEGIN { if (t > 0) printf "%.0f", e / t; else print 0 }')
ten_million=$(awk -v r="$rate" 'BEGIN { if (r > 0) printf "%.1f", 1e7 / r / 3600; else print "inf" }')

echo "== $target: ${run_time}s"
echo "executions:   $execs"
echo "execs/s:      $rate"
echo "corpus:       $paths inputs ($(ls "corpus/$target" | wc -l) seeds)"
echo "edges:        $edges of $total_edges"
echo "stability:    $stability"
echo "crashes:      $crashes"
echo "hangs:        $hangs"
echo "10 M execs:   ${ten_million} h at this rate"
echo "output:       $out_dir"

if [ "$hangs" != "0" ]; then
  echo "== hangs (inputs over the time limit; check them by hand: a loaded machine makes some)"
  ls "$out_dir/default/hangs/" | grep -v README || true
fi
if [ "$crashes" != "0" ]; then
  echo "== crashes"
  for f in "$out_dir"/default/crashes/id:*; do
    echo "--- $f"
    od -A d -c "$f" | head -n 40
    echo "--- the panic:"
    "$bin" <"$f" 2>&1 | grep -v '^$' | head -n 20 || true
  done
  exit 1
fi
