#!/usr/bin/env bash
# The project's test command: `scripts/test.sh [extra cargo-nextest arguments]`.
#
# Works alone on a fresh Debian bookworm machine: it first installs what the tests need
# (scripts/ci-deps.sh: HAProxy 2.6, 3.0, 3.2 and 3.4, Node.js for the test OIDC provider), then
# runs every test target. The end-to-end suite runs on HAProxy 2.6 and 3.4, its compatibility
# subset on 3.0 and 3.2 as well (docs/haproxy-versions.md); here a missing HAProxy binary is a
# test failure, not a skip (tests/support/haproxy.rs).
#
# Env (defaults shown):
#   IDGATE_HAPROXY26=/usr/sbin/haproxy
#   IDGATE_HAPROXY30, IDGATE_HAPROXY32, IDGATE_HAPROXY34=<haproxy30/32/34 on PATH, else in
#   /usr/local/bin>
#   IDGATE_TEST_PYTHON=$IDGATE_PYTHON_VENV/bin/python3 (the venv of scripts/python-deps.sh,
#   /opt/idgate-test-venv by default: the Databricks SDK and MLflow the real-client tests run)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/ci-deps.sh

export IDGATE_HAPROXY26=${IDGATE_HAPROXY26:-/usr/sbin/haproxy}
for v in 30 32 34; do
    var=IDGATE_HAPROXY$v
    if [[ -z ${!var:-} ]]; then
        printf -v "$var" '%s' "$(command -v "haproxy$v" || echo "/usr/local/bin/haproxy$v")"
    fi
    export "${var?}"
done
export IDGATE_TEST_PYTHON=${IDGATE_TEST_PYTHON:-${IDGATE_PYTHON_VENV:-/opt/idgate-test-venv}/bin/python3}

if cargo nextest --version >/dev/null 2>&1; then
    # One process (group) per test: the end-to-end tests start servers, and a hung test is
    # killed with its children by the slow-test timeout in .config/nextest.toml.
    # Benches are not run here (criterion binaries); .ci/run builds them with `cargo bench
    # --no-run`.
    # --features fuzzing: tests/fuzz_seeds.rs runs every fuzz seed and saved crasher.
    cargo nextest run --lib --bins --tests --features fuzzing --no-fail-fast "$@"
    # nextest does not run doctests.
    cargo test --doc --quiet
else
    cargo test --lib --bins --tests --features fuzzing --no-fail-fast "$@"
    cargo test --doc --quiet
fi
