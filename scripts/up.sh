#!/usr/bin/env bash
# The main job: build Strata and run `strata up` (origin + edge + the live
# `demo` channel on loopback). On a fresh Debian machine with only the Rust
# toolchain, it first installs what the build needs (cmake, a C compiler) —
# Pingora's zlib-ng needs both. Extra arguments go to `strata up`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
if ((${#need[@]})); then
    echo "up.sh: installing build dependencies: ${need[*]}"
    if [[ $(id -u) -eq 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "up.sh: need root (or sudo) to apt-get install ${need[*]}" >&2
        exit 1
    fi
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi

exec cargo run --release --bin strata -- up "$@"
