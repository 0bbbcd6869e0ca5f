#!/usr/bin/env bash
# Long fuzzing runs (issue 11): each named target (default: all of them) runs
# until FUZZ_SECONDS (default 1800) have passed or FUZZ_RUNS (default
# 10,000,000) inputs were executed, whichever comes first, from a scratch copy
# of its committed seeds, on an optimised build with debug assertions and
# overflow checks on (`-O -a`). Prints one summary line per target; a crash
# stops the script, and its input stays under fuzz/artifacts/<target>/.
#
#   bash benches/fuzz-long.sh [target ...]
#   FUZZ_SECONDS=600 bash benches/fuzz-long.sh srt_packet rtmp_chunks
#
# Runs at nice 19: it only takes what the machine leaves idle.
# The short version CI runs is scripts/fuzz-short.sh.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${FUZZ_SECONDS:-1800}
runs=${FUZZ_RUNS:-10000000}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
nice -n 19 cargo +nightly fuzz build -O -a
for target in "${targets[@]}"; do
  work=$(mktemp -d)
  log=$(mktemp)
  cp -r "corpus/$target/." "$work/" 2>/dev/null || true
  started=$(date +%s)
  if ! nice -n 19 cargo +nightly fuzz run -O -a "$target" "$work" -- \
      -max_total_time="$secs" -runs="$runs" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz-long: $target CRASHED after $(( $(date +%s) - started )) s; input under fuzz/artifacts/$target/" >&2
    exit 1
  fi
  wall=$(( $(date +%s) - started ))
  done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -1)
  rate=$(sed -nE 's/^stat::average_exec_per_sec: *([0-9]+)/\1/p' "$log" | tail -1)
  corpus=$(find "$work" -type f | wc -l)
  echo "fuzz-long: $target: ${execs:-?} runs in ${wall} s (${rate:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${corpus} inputs, no crash (${done_line})"
  rm -rf "$work" "$log"
done
