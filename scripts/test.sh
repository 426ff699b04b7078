#!/usr/bin/env bash
# The project's test command: `scripts/test.sh [extra cargo-nextest arguments]`.
#
# Works alone on a fresh Debian bookworm machine: it first installs what the tests need
# (scripts/ci-deps.sh: HAProxy 2.6 and 3.2, Node.js for the test OIDC provider), then runs every
# test target. The end-to-end tests run against BOTH HAProxy versions; here a missing HAProxy
# binary is a test failure, not a skip (IDGATE_REQUIRE_HAPROXY=1).
#
# Env (defaults shown):
#   IDGATE_HAPROXY26=/usr/sbin/haproxy   IDGATE_HAPROXY32=<haproxy32 on PATH>
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/ci-deps.sh

export IDGATE_HAPROXY26=${IDGATE_HAPROXY26:-/usr/sbin/haproxy}
if [[ -z ${IDGATE_HAPROXY32:-} ]]; then
    IDGATE_HAPROXY32=$(command -v haproxy32 || echo /usr/local/bin/haproxy32)
fi
export IDGATE_HAPROXY32
export IDGATE_REQUIRE_HAPROXY=1

if cargo nextest --version >/dev/null 2>&1; then
    # One process per test: the end-to-end tests start servers, and a hung one is reported by
    # nextest's slow-test timeout instead of stalling the whole binary.
    cargo nextest run --all-targets --no-fail-fast "$@"
    # nextest does not run doctests.
    cargo test --doc --quiet
else
    cargo test --all-targets --no-fail-fast "$@"
    cargo test --doc --quiet
fi
