#!/usr/bin/env bash
# Build HAProxy's own example SPOE agent (spoa_example, "a random IP reputation service") as the
# C reference null agent of the benchmarks (benches/e2e.sh): it acknowledges every NOTIFY at
# once, and answers its `check-client-ip` message with a variable `ip_score`.
#
#   scripts/build-spoa-example.sh          # -> target/spoa-example/spoa (path printed on stdout)
#
# Source: the agent lived in HAProxy's tree as contrib/spoa_example until it moved to its own
# repository, github.com/haproxy/spoa-example (same code). No Debian package ships it, and
# bookworm's HAProxy 2.6 source no longer has it, but Debian bullseye's haproxy source (2.2.x)
# does: its original tarball is fetched through a private apt index of bullseye's sources
# (scripts/lib/debian-apt.sh; apt verifies the tarball against the signed index) and only
# contrib/spoa_example is extracted. SPOA_EXAMPLE_SRC=/path/to/spoa-example (a directory with
# spoa.c, e.g. a clone of the repository) builds from there instead, without the network.
#
# One change is made to the source before building: the example listens on every interface
# (INADDR_ANY); the copy built here listens on 127.0.0.1 only, as everything the benchmarks start.
#
# Needs gcc, make and libevent-dev (installed with apt-get when running as root).
# Env: SPOA_EXAMPLE_SRC, SPOA_EXAMPLE_OUT (default target/spoa-example), SPOA_EXAMPLE_SUITE
# (default bullseye), DEBIAN_MIRROR. Idempotent: an existing build of the same source is kept.
set -euo pipefail

log() { printf 'build-spoa-example: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/debian-apt.sh
source "$root/scripts/lib/debian-apt.sh"

out=${SPOA_EXAMPLE_OUT:-$root/target/spoa-example}
suite=${SPOA_EXAMPLE_SUITE:-bullseye}

missing=()
for p in gcc make libevent-dev; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) == installed ]] ||
        missing+=("$p")
done
if ((${#missing[@]})); then
    [[ $(id -u) == 0 ]] || die "missing Debian packages (run as root to install): ${missing[*]}"
    log "installing: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/spoa-example.XXXXXX)
trap 'rm -rf "$work"' EXIT

if [[ -n ${SPOA_EXAMPLE_SRC:-} ]]; then
    [[ -f $SPOA_EXAMPLE_SRC/spoa.c ]] || die "no spoa.c in $SPOA_EXAMPLE_SRC"
    cp -r "$SPOA_EXAMPLE_SRC" "$work/src"
    origin="local source $SPOA_EXAMPLE_SRC"
else
    private_apt "$work/apt" deb-src "$suite"
    version=$(apt-cache "${apt_opts[@]}" showsrc haproxy | sed -n 's/^Version: //p' | sort -V | tail -n1)
    [[ -n $version ]] || die "no haproxy source package in $suite"
    log "downloading the original tarball of haproxy $version ($suite)"
    mkdir -p "$work/dl"
    (cd "$work/dl" && apt-get "${apt_opts[@]}" -qq source --download-only --tar-only "haproxy=$version") \
        >"$work/download.log" 2>&1 || {
        cat "$work/download.log" >&2
        die "apt-get source haproxy=$version failed"
    }
    tarball=$(find "$work/dl" -maxdepth 1 -name 'haproxy_*.orig.tar.*' | head -n1)
    [[ -n $tarball ]] || die "no original tarball downloaded"
    mkdir -p "$work/x"
    tar -xf "$tarball" -C "$work/x" --wildcards '*/contrib/spoa_example/*' 2>/dev/null ||
        die "$(basename "$tarball") has no contrib/spoa_example"
    mv "$work"/x/*/contrib/spoa_example "$work/src"
    origin="contrib/spoa_example of Debian's haproxy $version source ($suite)"
fi

# Listen on loopback only (exactly one INADDR_ANY in the example, on its listening socket).
[[ $(grep -c 'INADDR_ANY' "$work/src/spoa.c") == 1 ]] ||
    die "spoa.c does not bind INADDR_ANY exactly once: review the loopback change"
sed -i 's/INADDR_ANY/htonl(INADDR_LOOPBACK)/' "$work/src/spoa.c"

stamp=$(cat "$work/src/spoa.c" "$work/src/Makefile" "$work"/src/include/*.h 2>/dev/null | sha256sum | cut -d' ' -f1)
if [[ -x $out/spoa && -f $out/source.sha256 && $(cat "$out/source.sha256") == "$stamp" ]]; then
    log "up to date: $out/spoa"
    printf '%s\n' "$out/spoa"
    exit 0
fi

log "building spoa from $origin"
make -C "$work/src" -s spoa >"$work/build.log" 2>&1 || {
    cat "$work/build.log" >&2
    die "building spoa failed"
}
mkdir -p "$out"
install -m 0755 "$work/src/spoa" "$out/spoa"
printf '%s\n' "$origin" >"$out/ORIGIN"
printf '%s\n' "$stamp" >"$out/source.sha256"
log "built $out/spoa"
printf '%s\n' "$out/spoa"
