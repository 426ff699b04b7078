#!/usr/bin/env bash
# The Python Databricks clients the real-client tests drive (tests/e2e_databricks_sdk.rs):
# a virtual environment with the Databricks SDK for Python and MLflow (skinny: the client
# side only, no server or ML libraries), pinned, from PyPI.
#
#   scripts/python-deps.sh            create/update the venv, print its interpreter's path
#
# Env: IDGATE_PYTHON_VENV (default /opt/idgate-test-venv). The tests find the interpreter
# through IDGATE_TEST_PYTHON (scripts/test.sh sets it to "$IDGATE_PYTHON_VENV/bin/python3",
# which is also the tests' default); a missing interpreter is a test failure, not a skip.
#
# Idempotent: a stamp file records the pinned requirements; when it matches, nothing is
# downloaded (well under a second). Called by scripts/ci-deps.sh; python3 and python3-venv
# come from Debian (installed there).
set -euo pipefail

venv=${IDGATE_PYTHON_VENV:-/opt/idgate-test-venv}

# Bump together: the tests assert on these clients' behaviour (exception classes, retries,
# /.well-known/databricks-config lookup, data-plane routing).
requirements=(
    "databricks-sdk==0.162.0"
    "mlflow-skinny==3.17.2"
)

log() { printf 'python-deps: %s\n' "$*" >&2; }

stamp=$venv/.idgate-requirements
want=$(printf '%s\n' "${requirements[@]}")
if [[ -x $venv/bin/python3 && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    printf '%s\n' "$venv/bin/python3"
    exit 0
fi

# Debian's python3, not whatever python3 comes first on PATH (pyenv shims and the like): the
# venv must not depend on a developer's shell setup.
python=/usr/bin/python3
[[ -x $python ]] || python=$(command -v python3)

if [[ ! -x $venv/bin/python3 ]]; then
    log "creating $venv"
    "$python" -m venv "$venv"
fi
log "installing ${requirements[*]}"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-input "${requirements[@]}" >&2
"$venv/bin/python3" -c 'import databricks.sdk, mlflow.deployments' >&2
printf '%s\n' "$want" >"$stamp"
printf '%s\n' "$venv/bin/python3"
