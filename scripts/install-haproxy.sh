#!/usr/bin/env bash
# Install newer HAProxy versions next to the distribution's HAProxy 2.6 on Debian bookworm, from
# Debian's own packages, without building anything and without touching the system's package
# state:  scripts/install-haproxy.sh 3.0 3.2 3.4   (any of them; the default is all three)
#
#   version  Debian suite   wrapper                    unpacked into
#   3.0      trixie         /usr/local/bin/haproxy30   /opt/haproxy30
#   3.2      sid            /usr/local/bin/haproxy32   /opt/haproxy32
#   3.4      experimental   /usr/local/bin/haproxy34   /opt/haproxy34
#
# Why: bookworm ships HAProxy 2.6 only (bookworm-backports has none). The newer .debs need a
# newer glibc and OpenSSL than bookworm has, so each is downloaded together with its shared
# libraries, unpacked into one directory, and run through the bundled dynamic loader with
# --library-path (docs/haproxy-versions.md). Nothing is installed with dpkg; the system's glibc
# is untouched.
#
# One private apt index covers every suite needed (fetched once: 3.2 and 3.4 share sid's), and
# each version picks its suite as the default release (what `apt-get -t SUITE` does): haproxy and
# its libraries come from that suite, the highest-priority one. Experimental is a partial suite
# on top of sid: for 3.4 whatever experimental lacks comes from sid.
#
# Idempotent: a version whose wrapper already runs and reports that version is not downloaded.
# apt uses a private state directory and a temporary sources list (removed on exit); /etc/apt
# and /var/lib/apt are never modified. The mirror host is taken from the machine's own sources
# so the script works wherever `apt-get` works.
#
# Env: HAPROXY_INSTALL_ROOT (install under this directory instead of /, e.g. to try the script
# without replacing a working installation), DEBIAN_MIRROR (the Debian mirror URL),
# HAPROXY_FORCE=1 (reinstall even when present).
set -euo pipefail

log() { printf 'install-haproxy: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
# shellcheck source=scripts/lib/debian-apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/debian-apt.sh"

# The first line of `haproxy -v`, or nothing. (Captured rather than piped into `grep -q`, which
# could SIGPIPE the writer and, under pipefail, turn a match into a failure.)
installed_version() {
    local out
    out=$("$1" -v 2>/dev/null) || return 0
    printf '%s\n' "${out%%$'\n'*}"
}

# The Debian suite a version comes from, and the suites its index needs.
suite_of() {
    case $1 in
        3.0) echo trixie ;;
        3.2) echo sid ;;
        3.4) echo experimental ;;
        *) die "unsupported version $1 (3.0, 3.2 or 3.4)" ;;
    esac
}
index_suites_of() {
    case $1 in
        3.4) echo sid experimental ;;
        *) suite_of "$1" ;;
    esac
}

# True when BIN runs and reports VERSION.
is_installed() { # version bin
    local want_re="^HAProxy version ${1//./\\.}\\." current
    [[ -x $2 ]] || return 1
    current=$(installed_version "$2")
    [[ $current =~ $want_re ]]
}

# install VERSION DIR BIN: one version, from its suite (the index is already fetched).
install() {
    local version=$1 dir=$2 bin=$3
    local suite
    suite=$(suite_of "$version")
    local opts=("${apt_opts[@]}" -o "APT::Default-Release=$suite")
    local candidate
    candidate=$(apt-cache "${opts[@]}" policy haproxy | sed -nE 's/^ *Candidate: *//p')
    [[ $candidate == "$version".* ]] || die "Debian $suite offers haproxy ${candidate:-none}, not $version"

    # The runtime closure of haproxy, restricted to shared-library packages: a breadth-first
    # walk over Depends/PreDepends that only follows lib*/zlib* packages (maintainer-script
    # dependencies such as adduser and debconf are irrelevant when we only run the binary).
    # The floor is the list observed for 3.2, in case the walk misses one.
    local floor=(haproxy libc6 libssl3t64 liblua5.4-0 libjemalloc2 libpcre2-8-0 libcrypt1 libstdc++6
        libgcc-s1 zlib1g libzstd1)
    direct_lib_deps() {
        apt-cache "${opts[@]}" depends --no-recommends --no-suggests --no-conflicts --no-breaks \
            --no-replaces --no-enhances "$1" 2>/dev/null |
            sed -nE 's/^ *\|?(Pre)?Depends: ([^ <>]+).*/\2/p' | grep -E '^(lib|zlib)' | sort -u || true
    }
    local -A seen=([haproxy]=1)
    local queue=(haproxy) pkg dep
    while ((${#queue[@]})); do
        pkg=${queue[0]}
        queue=("${queue[@]:1}")
        while read -r dep; do
            [[ -n $dep && -z ${seen[$dep]:-} ]] || continue
            seen[$dep]=1
            queue+=("$dep")
        done < <(direct_lib_deps "$pkg")
    done
    local pkgs known=() p
    mapfile -t pkgs < <(printf '%s\n' "${floor[@]}" "${!seen[@]}" | sed '/^$/d' | sort -u)
    # Some names in the floor may not exist in every suite (t64 renames); keep those apt knows.
    for p in "${pkgs[@]}"; do
        if apt-cache "${opts[@]}" show "$p" >/dev/null 2>&1; then
            known+=("$p")
        else
            log "note: $p not in $suite, skipped"
        fi
    done

    log "$version: downloading ${#known[@]} packages (haproxy $candidate from $suite): ${known[*]}"
    local unpack=$work/$version
    mkdir -p "$unpack/debs" "$unpack/root"
    (cd "$unpack/debs" && apt-get "${opts[@]}" -qq download "${known[@]}") >"$work/download.log" 2>&1 || {
        cat "$work/download.log" >&2
        die "apt-get download failed"
    }

    local deb
    for deb in "$unpack"/debs/*.deb; do
        dpkg-deb -x "$deb" "$unpack/root"
    done

    local libdir=usr/lib/$triplet loader
    loader=$(find "$unpack/root/$libdir" "$unpack/root/lib64" "$unpack/root/usr/lib64" -maxdepth 1 -name 'ld-linux*.so*' 2>/dev/null | head -n1 || true)
    [[ -n $loader ]] || die "no dynamic loader in the unpacked libc6"
    [[ -x $unpack/root/usr/sbin/haproxy ]] || die "no usr/sbin/haproxy in the unpacked haproxy package"
    local loader_rel=${loader#"$unpack/root/"}

    # Replace the installation atomically-enough: unpack next to it, then rename.
    mkdir -p "$(dirname "$dir")" "$(dirname "$bin")"
    rm -rf "$dir.new"
    mv "$unpack/root" "$dir.new"
    rm -rf "$dir.old"
    if [[ -e $dir ]]; then mv "$dir" "$dir.old"; fi
    mv "$dir.new" "$dir"
    rm -rf "$dir.old"

    cat >"$bin.tmp" <<EOF
#!/bin/sh
# HAProxy $version from Debian $suite, run with its own glibc and libraries (installed by
# scripts/install-haproxy.sh). Arguments are passed to haproxy unchanged.
exec "$dir/$loader_rel" --library-path "$dir/$libdir" "$dir/usr/sbin/haproxy" "\$@"
EOF
    chmod 0755 "$bin.tmp"
    mv "$bin.tmp" "$bin"

    is_installed "$version" "$bin" || die "installed binary reports: $(installed_version "$bin")"
    log "$version installed: $(installed_version "$bin") ($bin -> $dir)"
    rm -rf "$unpack"
}

versions=("$@")
((${#versions[@]})) || versions=(3.0 3.2 3.4)
prefix=${HAPROXY_INSTALL_ROOT:-}
prefix=${prefix%/}

arch=$(dpkg --print-architecture 2>/dev/null || true)
case $arch in
    amd64) triplet=x86_64-linux-gnu ;;
    arm64) triplet=aarch64-linux-gnu ;;
    *) die "unsupported architecture ${arch:-unknown} (or no dpkg: this script is for Debian)" ;;
esac
command -v apt-get >/dev/null || die "apt-get not found (this script is for Debian)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

# What is missing, and the suites their index needs.
todo=() suites=()
for v in "${versions[@]}"; do
    short=${v//./}
    dir=$prefix/opt/haproxy$short
    bin=$prefix/usr/local/bin/haproxy$short
    suite_of "$v" >/dev/null
    if [[ ${HAPROXY_FORCE:-0} != 1 ]] && is_installed "$v" "$bin"; then
        log "$v already installed: $(installed_version "$bin")"
        continue
    fi
    todo+=("$v:$dir:$bin")
    read -ra needed <<<"$(index_suites_of "$v")"
    suites+=("${needed[@]}")
done
((${#todo[@]})) || exit 0

work=$(mktemp -d /tmp/install-haproxy.XXXXXX)
trap 'rm -rf "$work"' EXIT
mapfile -t suites < <(printf '%s\n' "${suites[@]}" | sort -u)
private_apt "$work" deb "${suites[@]}"
for t in "${todo[@]}"; do
    IFS=: read -r v dir bin <<<"$t"
    install "$v" "$dir" "$bin"
done
