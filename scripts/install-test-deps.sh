#!/usr/bin/env bash
# Installs what the e2e tests need beyond cargo: the independent HTTP/3 client
# (aioquic) into a virtualenv. Point the tests at it with
#   STRATA_PYTHON=${STRATA_VENV:-.venv}/bin/python cargo test --test e2e
set -euo pipefail
venv=${STRATA_VENV:-.venv}
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet aioquic
echo "aioquic installed; run tests with STRATA_PYTHON=$venv/bin/python"
