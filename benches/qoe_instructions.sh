#!/bin/bash
# Instructions per `Qoe::observe` call for each CMCD case of benches/qoe.rs,
# counted by valgrind (cachegrind's `I refs`): unlike
# wall time, an instruction count does not change with the machine's load
# (this VM exposes no hardware counters to `perf stat`).
# Usage: bash benches/qoe_instructions.sh [calls]   (needs valgrind: apt-get install -y valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-100000}
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install -y valgrind" >&2; exit 1; }
cargo bench --bench qoe --no-run >/dev/null 2>&1
bin=$(ls -t target/release/deps/qoe-* | grep -v '\.d$' | head -1)
count() { # case calls -> instructions
    QOE_CALLS="$1:$2" valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
        "$bin" --bench 2>&1 >/dev/null | awk '/I *refs:/{gsub(",", "", $NF); if ($NF + 0 > max) max = $NF + 0} END{print max}'
}
printf '%-16s %18s\n' case instructions/call
for case in full-v1-query full-v1-headers v2-query no-cmcd; do
    i0=$(count "$case" 0)
    i1=$(count "$case" "$calls")
    awk -v i0="$i0" -v i1="$i1" -v n="$calls" -v name="$case" \
        'BEGIN{printf "%-16s %18.0f\n", name, (i1-i0)/n}'
done
