#!/usr/bin/env bash
# Install everything the test suite needs on a Debian bookworm machine (CI or a developer's).
#
#   - HAProxy 2.6 (Debian's `haproxy`, /usr/sbin/haproxy)
#   - HAProxy 3.0 (trixie's), 3.2 (sid's) and 3.4 (experimental's), each unpacked beside it with
#     its own libraries by scripts/install-haproxy.sh: `haproxy30`, `haproxy32`, `haproxy34`
#   - Node.js >= 20.19 + npm for the test OIDC provider (tests/oidc): the node on PATH if it is
#     new enough, else official Node.js builds from PyPI (scripts/ensure-node.sh; Debian
#     bookworm's nodejs is 18, too old)
#   - redis-server (Debian's Redis 7.0) for the shared-store tests (tests/support/redis.rs starts
#     its own on a loopback port; the packaged service is not used). Valkey has no bookworm
#     package (`apt-cache policy valkey-server`: none), so only Redis is tested here.
#   - curl, ca-certificates, openssl (test certificates), systemd (systemd-analyze checks the unit
#     file), procps (`kill`)
#   - the test OIDC provider's npm packages (`npm ci` in tests/oidc, when it exists)
#   - python3 + python3-venv, and a venv with the pinned Databricks SDK for Python and
#     mlflow-skinny from PyPI for the real-client tests (scripts/python-deps.sh)
#
# Idempotent and quiet: each step is skipped when already done, so running it before every test
# run costs well under a second on a prepared machine. Needs root for the apt steps (CI runs as
# root); as non-root it only reports what is missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf 'ci-deps: %s\n' "$*" >&2; }

is_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

packages=(haproxy curl ca-certificates openssl systemd procps debian-archive-keyring)
packages+=(python3 python3-venv)
packages+=(redis-server)

missing=()
for p in "${packages[@]}"; do
    is_installed "$p" || missing+=("$p")
done

if ((${#missing[@]})); then
    if [[ $(id -u) != 0 ]]; then
        log "missing Debian packages (run as root to install): ${missing[*]}"
        exit 1
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ $(id -u) == 0 ]]; then
    bash "$root/scripts/install-haproxy.sh" 3.0 3.2 3.4
else
    for v in 30 32 34; do
        var=IDGATE_HAPROXY$v
        if ! command -v "${!var:-haproxy$v}" >/dev/null 2>&1; then
            log "haproxy$v missing (run scripts/install-haproxy.sh as root, or set $var)"
            exit 1
        fi
    done
fi

# Node.js for the test OIDC provider (on PATH afterwards: linked into /usr/local/bin as root).
node_dir=$(bash "$root/scripts/ensure-node.sh")
export PATH="$node_dir:$PATH"

# The test OIDC provider (a real `oidc-provider` server, tests/oidc/server.mjs).
oidc=$root/tests/oidc
if [[ -f $oidc/package.json ]]; then
    stamp=$oidc/node_modules/.ci-deps-stamp
    lock=$oidc/package-lock.json
    if [[ ! -f $stamp || ( -f $lock && $lock -nt $stamp ) || $oidc/package.json -nt $stamp ]]; then
        log "npm ci in tests/oidc"
        if [[ -f $lock ]]; then
            (cd "$oidc" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        else
            (cd "$oidc" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
        fi
        touch "$stamp"
    fi
fi

# The Python Databricks clients (tests/e2e_databricks_sdk.rs). As non-root only when the venv's
# directory is writable (IDGATE_PYTHON_VENV), else it must already be there.
if [[ $(id -u) == 0 || -w $(dirname "${IDGATE_PYTHON_VENV:-/opt/idgate-test-venv}") ]]; then
    bash "$root/scripts/python-deps.sh" >/dev/null
elif [[ ! -x ${IDGATE_PYTHON_VENV:-/opt/idgate-test-venv}/bin/python3 ]]; then
    log "the Python client venv is missing (run scripts/python-deps.sh as root)"
    exit 1
fi
