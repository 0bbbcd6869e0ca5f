#!/usr/bin/env bash
# The one command that runs all of Strata's tests (CI runs it via .ci/run):
#   1. scripts/install-test-deps.sh   (apt, .venv, tests/browser/node_modules)
#   2. cargo test --workspace --all-targets   (debug profile)
#   3. scripts/fuzz-short.sh: seconds of each cargo-fuzz target; a short
#      benches/chaos.py (network namespaces; needs root), benches/soak.py and
#      tests/multihost/run.py (Ansible over SSH into network namespaces; root)
#   4. the non-cargo checks that exist: promtool on prometheus*.yml and
#      *.rules.yml, `promtool test rules` on *.rules.test.yml, JSON validity
#      of grafana/**/*.json, ansible-lint on ansible/, the browser harness's
#      self-test (tests/browser/selftest.sh) and the benchmark peers' check
#      (benches/load/peers/verify.sh)
# Exits non-zero when any step failed; the last line is a summary.
set -uo pipefail

cd "$(dirname "$0")/.."

export RUST_BACKTRACE=1
export STRATA_CHROMIUM=${STRATA_CHROMIUM:-/usr/bin/chromium}
export STRATA_PYTHON=$PWD/.venv/bin/python

passed=()
failed=()

step() {
    local name=$1
    shift
    echo "==> $name"
    if "$@"; then
        passed+=("$name")
    else
        local rc=$?
        echo "==> $name FAILED (exit $rc)"
        failed+=("$name")
    fi
}

if ! bash scripts/install-test-deps.sh; then
    echo "==> install-test-deps FAILED; not running tests"
    echo "test.sh: 0 passed, 1 failed (install-test-deps)"
    exit 1
fi

# Node >= 20 from PyPI when the machine's is older (see install-test-deps.sh).
if [[ -x .venv/node/bin/node ]]; then
    export PATH=$PWD/.venv/node/bin:$PATH
fi

# cargo's own "test result:" lines are summed into the final summary.
cargo_log=$(mktemp)
trap 'rm -f "$cargo_log"' EXIT
step cargo-test bash -c 'cargo test --workspace --all-targets --no-fail-fast 2>&1 | tee "$0"; exit "${PIPESTATUS[0]}"' "$cargo_log"
tests_passed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^passed/) n += $i } END { print n + 0 }' "$cargo_log")
tests_failed=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i+1) ~ /^failed/) n += $i } END { print n + 0 }' "$cargo_log")

# Every cargo-fuzz target for FUZZ_SECONDS (default 10) from its seed corpus;
# the long runs and their figures are in benches/README.md.
step fuzz-short bash scripts/fuzz-short.sh

# The chaos run, short (benches/README.md has the long one): a publisher in its
# own network namespace over a degraded link, a shield and the origin killed.
step chaos-short python3 benches/chaos.py --bin target/debug/strata --seconds 15

# The multi-host run, short (tests/multihost/run.py; benches/README.md has the
# figures): Ansible deploys an origin pair, a shield with nats-server and two
# edges over real SSH into network namespaces (needs root), rolls them to a
# new build while hls.js plays, then fails an upgrade to a broken binary and
# rolls it back; fails on any failed request or player error.
step multihost-short python3 tests/multihost/run.py --bin target/debug/strata --play-seconds 40

# The soak, short (the 30-minute run and its figures: benches/README.md): two
# live channels (RTMP, SRT), players, wrk on hits, purges and token-key
# rotation at once; fails on a player/API/hit error, a panic, RSS over the
# cache size + 100 MiB, or fd/thread growth.
step soak-short python3 benches/soak.py --bin target/debug/strata --seconds 60 --players 4 \
    --player-seconds 15 --rotate-every 25 --purge-every 5 --wrk-connections 2

# Repo files by glob, outside build output and installed deps.
repo_files() {
    find . \( -path ./target -o -path './target-*' -o -path ./.venv -o -path ./fuzz/target -o -path '*/node_modules' -o -path ./.git \) -prune \
        -o -type f \( "$@" \) -print | sort
}

# Prometheus configs and rule files: promtool (Debian's prometheus package).
mapfile -t prom_configs < <(repo_files -name 'prometheus*.yml' -o -name 'prometheus*.yaml')
mapfile -t prom_rules < <(repo_files -name '*.rules.yml' -o -name '*.rules.yaml')
if ((${#prom_configs[@]})); then
    step promtool-config promtool check config --syntax-only "${prom_configs[@]}"
fi
if ((${#prom_rules[@]})); then
    step promtool-rules promtool check rules "${prom_rules[@]}"
fi
# Alerting rules' unit tests (*.rules.test.yml beside the rules).
mapfile -t prom_rule_tests < <(repo_files -name '*.rules.test.yml' -o -name '*.rules.test.yaml')
if ((${#prom_rule_tests[@]})); then
    step promtool-rule-tests promtool test rules "${prom_rule_tests[@]}"
fi

# Grafana dashboards must at least be valid JSON.
if [[ -d grafana ]]; then
    step grafana-json bash -c 'find grafana -name "*.json" -print0 | xargs -0 -r -n1 python3 -m json.tool >/dev/null'
fi

if [[ -d ansible ]]; then
    # ansible-lint finds its own config (.ansible-lint) in ansible/ if present.
    step ansible-lint bash -c 'cd ansible && PATH="$OLDPWD/.venv/bin:$PATH" ansible-lint --offline'
fi

# The harnesses the tests and benchmarks stand on, proved without Strata code:
# the players on ffmpeg-made streams, and the peers (nginx, Varnish) the
# benchmarks race.
step module-cycles python3 scripts/module-cycles.py
step browser-selftest bash tests/browser/selftest.sh
step peers-verify bash benches/load/peers/verify.sh

# Counts: cargo tests one by one, every other check as one; a cargo run that
# failed without a failing test (a build error) counts as one failure.
n_passed=$tests_passed
n_failed=$tests_failed
for name in "${passed[@]}"; do [[ $name == cargo-test ]] || n_passed=$((n_passed + 1)); done
for name in "${failed[@]}"; do
    if [[ $name == cargo-test ]]; then
        ((tests_failed > 0)) || n_failed=$((n_failed + 1))
    else
        n_failed=$((n_failed + 1))
    fi
done
summary="$n_passed passed, $n_failed failed"
# CI shows the tail of this output: the failing tests are named here, last.
failed_tests=$(grep -E '^test .* \.\.\. FAILED$' "$cargo_log" | sed -E 's/^test (.*) \.\.\. FAILED$/\1/' | sort -u)
if [[ -n $failed_tests ]]; then
    echo "test.sh: failed cargo tests:"
    sed 's/^/    /' <<<"$failed_tests"
    echo "test.sh: their panics (first lines):"
    grep -E -A2 "panicked at" "$cargo_log" | head -40 | sed 's/^/    /'
fi
if grep -q '^RETRY' "$cargo_log"; then
    echo "test.sh: retries during the cargo tests:"
    grep '^RETRY' "$cargo_log" | head -20 | sed 's/^/    /'
fi
if ((${#failed[@]})); then
    echo "test.sh: failed steps: ${failed[*]}"
    echo "test.sh: $summary"
    exit 1
fi
echo "test.sh: $summary"
