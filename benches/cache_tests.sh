#!/usr/bin/env bash
# Runs the public HTTP caching test suite (npm `http-cache-tests`, the tests
# behind cache-tests.fyi) through a Strata edge, and prints its required,
# optimal and check pass counts next to the results the package publishes
# for other caches (a test passes when its result is `true`, as the site
# counts it).
#
#   benches/cache_tests.sh [RESULTS.json]
#   CACHE_TEST_ID=stale-close benches/cache_tests.sh   # one test, requests and responses dumped
#
# Topology, all on loopback: the suite's origin server <- strata edge <- the
# suite's CLI (`--base` at the edge). The edge runs with the configuration
# below: the suite's setup and invalidation requests (`PUT /config/…`,
# POST/PUT/DELETE `/test/…`) are passed through (`cache.pass_through`), and
# the per-kind default lifetimes are zero, so only what a response says
# about its freshness counts (the suite's FAQ asks for "default caching"
# off; see benches/README.md).
#
# Needs: node, benches/cache-tests/node_modules (scripts/install-test-deps.sh
# installs both) and a strata binary (STRATA_BIN, else the debug build,
# built here if missing).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
SUITE=$ROOT/benches/cache-tests/node_modules/http-cache-tests
OUT=${1:-}

die() { printf 'cache_tests: ERROR: %s\n' "$*" >&2; exit 1; }

[[ -d .venv/node/bin ]] && PATH=$ROOT/.venv/node/bin:$PATH
command -v node >/dev/null || die "node not found: run scripts/install-test-deps.sh"
[[ -f $SUITE/cli.mjs ]] \
    || die "http-cache-tests is not installed in benches/cache-tests: run scripts/install-test-deps.sh"

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${STRATA_BIN:-$TARGET/debug/strata}
if [[ ! -x $BIN ]]; then
    nice cargo build --bin strata >&2 || die "cargo build failed"
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_for() { # url
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    die "nothing answered at $1"
}

ORIGIN_PORT=$(free_port)
EDGE_PORT=$(free_port)
ADMIN_PORT=$(free_port)

(cd "$SUITE" && npm_config_port=$ORIGIN_PORT npm_config_protocol=http \
    npm_config_pidfile=$WORK/server.pid exec node server/server.mjs >"$WORK/server.log" 2>&1) &
PIDS+=($!)
wait_for "http://127.0.0.1:$ORIGIN_PORT/state/none"

cat >"$WORK/edge.toml" <<EOF
[server]
listen = ["127.0.0.1:$EDGE_PORT"]
admin = "127.0.0.1:$ADMIN_PORT"
node_id = "strata-cache-tests"

[server.h3]
enabled = false

[cache]
pass_through = ["/config/", "/test/"]

[cache.ttl]
playlist = "0s"
manifest = "0s"
segment = "0s"
init = "0s"
other = "0s"
negative = "0s"
stale_if_error = "0s"
stale_while_revalidate = "0s"

[upstream]
urls = ["http://127.0.0.1:$ORIGIN_PORT"]
EOF
"$BIN" edge --config "$WORK/edge.toml" >"$WORK/edge.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$ADMIN_PORT/healthz"

if [[ -n ${CACHE_TEST_ID:-} ]]; then
    (cd "$SUITE" && npm_config_base="http://127.0.0.1:$EDGE_PORT" npm_config_id="$CACHE_TEST_ID" \
        node --no-warnings cli.mjs)
    exit
fi
(cd "$SUITE" && npm_config_base="http://127.0.0.1:$EDGE_PORT" npm_config_id='' npm_package_config_id='' \
    node --no-warnings cli.mjs >"$WORK/results.json") || die "the suite's CLI failed"
[[ -n $OUT ]] && cp "$WORK/results.json" "$OUT"

cp "$WORK/results.json" "$SUITE/strata-results.tmp.json"
(cd "$SUITE" && node --input-type=module -e '
import fs from "fs"
import tests from "./tests/index.mjs"
const names = { strata: "Strata (this run)", squid: "Squid", apache: "Apache", trafficserver: "ATS",
  varnish: "Varnish", nginx: "nginx", fastly: "Fastly", nuster: "nuster" }
const count = r => {
  const c = { required: [0, 0], optimal: [0, 0], check: [0, 0] }
  for (const suite of tests) for (const t of suite.tests) {
    if (t.browser_only) continue
    const k = c[t.kind || "required"]
    k[1]++
    if (r[t.id] === true) k[0]++
  }
  return c
}
const rows = [["strata", JSON.parse(fs.readFileSync("strata-results.tmp.json"))]]
for (const f of ["squid", "apache", "trafficserver", "varnish", "nginx", "fastly"]) {
  rows.push([f, JSON.parse(fs.readFileSync(`results/${f}.json`))])
}
console.log("cache                 required   optimal    check")
for (const [name, r] of rows) {
  const c = count(r)
  const cell = k => `${c[k][0]}/${c[k][1]}`.padEnd(11)
  console.log(`${names[name].padEnd(22)}${cell("required")}${cell("optimal")}${cell("check")}`)
}
const mine = rows[0][1]
const failed = []
for (const suite of tests) for (const t of suite.tests) {
  if (t.browser_only || (t.kind || "required") !== "required") continue
  if (mine[t.id] !== true) failed.push(`  ${t.id}: ${JSON.stringify(mine[t.id])}`)
}
console.log(`\nrequired tests Strata does not pass (${failed.length}):`)
console.log(failed.join("\n"))
')
rm -f "$SUITE/strata-results.tmp.json"
