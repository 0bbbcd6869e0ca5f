#!/usr/bin/env bash
# A short run (FUZZ_SECONDS each, default 10) of every cargo-fuzz target in
# fuzz/, starting from the committed seed corpora, for CI. A crash fails the
# run and leaves its input under fuzz/artifacts/<target>/.
# Long runs: cd fuzz && cargo +nightly fuzz run -O <target> -- -max_total_time=1800
# The short run builds with --dev (FUZZ_BUILD overrides): no optimisation and
# 16 codegen units instead of -O's opt-level 3 with one, so the ASan build of
# the whole edge and origin costs far less CI time, for fewer executions per
# second that seconds-long runs do not miss; debug assertions and overflow
# checks are on (-O turns them off).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz-short: needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz-short: needs cargo-fuzz: cargo install cargo-fuzz --locked" >&2
  exit 1
fi
secs=${FUZZ_SECONDS:-10}
build=${FUZZ_BUILD:---dev}
for target in $(cargo +nightly fuzz list); do
  # A scratch copy of the seeds, so CI leaves the tree as it found it.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r "corpus/$target/." "$work/" 2>/dev/null || true
  echo "fuzz-short: $target for ${secs}s"
  nice cargo +nightly fuzz run "$build" "$target" "$work" -- -max_total_time="$secs"
  rm -rf "$work"
done
echo "fuzz-short: every target ran ${secs}s without a crash"
