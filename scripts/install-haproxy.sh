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
# is untouched. Experimental is a partial suite on top of sid: its sources list has both, and
# experimental is made the default release (what `apt-get -t experimental` does), so haproxy and
# any library experimental has come from there and the rest from sid.
#
# Idempotent: a version whose wrapper already runs and reports that version is not downloaded.
# apt uses a private state directory and a temporary sources list (removed on exit); /etc/apt
# and /var/lib/apt are never modified. The mirror host is taken from the machine's own sources
# so the script works wherever `apt-get` works.
#
# Env (with one version only): HAPROXY_INSTALL_DIR, HAPROXY_INSTALL_BIN (override the paths
# above). Any number of versions: HAPROXY_MIRROR (the Debian mirror URL), HAPROXY_FORCE=1
# (reinstall even when present).
set -euo pipefail

log() { printf 'install-haproxy: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The first line of `haproxy -v`, or nothing. (Captured rather than piped into `grep -q`, which
# could SIGPIPE the writer and, under pipefail, turn a match into a failure.)
installed_version() {
    local out
    out=$("$1" -v 2>/dev/null) || return 0
    printf '%s\n' "${out%%$'\n'*}"
}

# The mirror: the first Debian (not -security) URI the system already uses, else deb.debian.org.
debian_mirror() {
    local mirror=${HAPROXY_MIRROR:-}
    if [[ -z $mirror ]]; then
        mirror=$(
            {
                grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{for (i = 2; i <= NF; i++) print $i}'
                grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
                    sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}'
            } | grep -E '/debian/?$' | head -n1 || true
        )
        mirror=${mirror:-http://deb.debian.org/debian}
    fi
    printf '%s\n' "${mirror%/}"
}

# install VERSION DIR BIN: one version, from its suite(s).
install() {
    local version=$1 dir=$2 bin=$3
    local suites default_release=""
    case $version in
        3.0) suites=(trixie) ;;
        3.2) suites=(sid) ;;
        3.4) suites=(sid experimental) default_release=experimental ;;
        *) die "unsupported version $version (3.0, 3.2 or 3.4)" ;;
    esac
    local want_re="^HAProxy version ${version//./\\.}\\."
    local current
    if [[ ${HAPROXY_FORCE:-0} != 1 && -x $bin ]]; then
        current=$(installed_version "$bin")
        if [[ $current =~ $want_re ]]; then
            log "$version already installed: $current"
            return 0
        fi
    fi

    local work
    work=$(mktemp -d "/tmp/haproxy${version//./}.XXXXXX")
    # shellcheck disable=SC2064 # expand now: $work is local
    trap "rm -rf '$work'" EXIT
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/root"
    : >"$work/status"
    local suite
    for suite in "${suites[@]}"; do
        printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$suite"
    done >"$work/sources.list"

    # A private apt: its own sources, lists, cache and (empty) dpkg status, so nothing of the
    # system's apt state is read or written. Only the host architecture is considered.
    local apt_opts=(
        -o "Dir::Etc::SourceList=$work/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::Etc::Preferences=/dev/null"
        -o "Dir::Etc::PreferencesParts=/dev/null"
        -o "Dir::State::Lists=$work/lists"
        -o "Dir::State::status=$work/status"
        -o "Dir::Cache=$work/cache"
        -o "APT::Architectures=$arch"
        -o "APT::Get::List-Cleanup=false"
        -o "Acquire::Languages=none"
        -o "Debug::NoLocking=true"
    )
    [[ -z $default_release ]] || apt_opts+=(-o "APT::Default-Release=$default_release")

    log "$version: fetching the ${suites[*]} package index from $mirror"
    apt-get "${apt_opts[@]}" -qq update >"$work/update.log" 2>&1 || {
        cat "$work/update.log" >&2
        die "apt-get update for ${suites[*]} failed"
    }
    local candidate
    candidate=$(apt-cache "${apt_opts[@]}" policy haproxy | sed -nE 's/^ *Candidate: *//p')
    [[ $candidate == "$version".* ]] || die "${suites[*]} offers haproxy ${candidate:-none}, not $version"

    # The runtime closure of haproxy, restricted to shared-library packages: a breadth-first
    # walk over Depends/PreDepends that only follows lib*/zlib* packages (maintainer-script
    # dependencies such as adduser and debconf are irrelevant when we only run the binary).
    # The floor is the list observed for 3.2, in case the walk misses one.
    local floor=(haproxy libc6 libssl3t64 liblua5.4-0 libjemalloc2 libpcre2-8-0 libcrypt1 libstdc++6
        libgcc-s1 zlib1g libzstd1)
    direct_lib_deps() {
        apt-cache "${apt_opts[@]}" depends --no-recommends --no-suggests --no-conflicts --no-breaks \
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
        if apt-cache "${apt_opts[@]}" show "$p" >/dev/null 2>&1; then
            known+=("$p")
        else
            log "note: $p not in ${suites[*]}, skipped"
        fi
    done

    log "$version: downloading ${#known[@]} packages (haproxy $candidate): ${known[*]}"
    (cd "$work/debs" && apt-get "${apt_opts[@]}" -qq download "${known[@]}") >"$work/download.log" 2>&1 || {
        cat "$work/download.log" >&2
        die "apt-get download failed"
    }

    local deb
    for deb in "$work"/debs/*.deb; do
        dpkg-deb -x "$deb" "$work/root"
    done

    local libdir=usr/lib/$triplet loader
    loader=$(find "$work/root/$libdir" "$work/root/lib64" "$work/root/usr/lib64" -maxdepth 1 -name 'ld-linux*.so*' 2>/dev/null | head -n1 || true)
    [[ -n $loader ]] || die "no dynamic loader in the unpacked libc6"
    [[ -x $work/root/usr/sbin/haproxy ]] || die "no usr/sbin/haproxy in the unpacked haproxy package"
    local loader_rel=${loader#"$work/root/"}

    # Replace the installation atomically-enough: unpack next to it, then rename.
    mkdir -p "$(dirname "$dir")" "$(dirname "$bin")"
    rm -rf "$dir.new"
    mv "$work/root" "$dir.new"
    rm -rf "$dir.old"
    if [[ -e $dir ]]; then mv "$dir" "$dir.old"; fi
    mv "$dir.new" "$dir"
    rm -rf "$dir.old"

    cat >"$bin.tmp" <<EOF
#!/bin/sh
# HAProxy $version from Debian ${suites[-1]}, run with its own glibc and libraries (installed by
# scripts/install-haproxy.sh). Arguments are passed to haproxy unchanged.
exec "$dir/$loader_rel" --library-path "$dir/$libdir" "$dir/usr/sbin/haproxy" "\$@"
EOF
    chmod 0755 "$bin.tmp"
    mv "$bin.tmp" "$bin"

    current=$(installed_version "$bin")
    [[ $current =~ $want_re ]] || die "installed binary reports: ${current:-nothing}"
    log "$version installed: $current ($bin -> $dir)"
    rm -rf "$work"
    trap - EXIT
}

versions=("$@")
((${#versions[@]})) || versions=(3.0 3.2 3.4)
if ((${#versions[@]} > 1)) && [[ -n ${HAPROXY_INSTALL_DIR:-}${HAPROXY_INSTALL_BIN:-} ]]; then
    die "HAPROXY_INSTALL_DIR/HAPROXY_INSTALL_BIN need exactly one version"
fi

arch=$(dpkg --print-architecture 2>/dev/null || true)
case $arch in
    amd64) triplet=x86_64-linux-gnu ;;
    arm64) triplet=aarch64-linux-gnu ;;
    *) die "unsupported architecture ${arch:-unknown} (or no dpkg: this script is for Debian)" ;;
esac
command -v apt-get >/dev/null || die "apt-get not found (this script is for Debian)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r $keyring ]] || die "$keyring missing (apt-get install debian-archive-keyring)"
mirror=$(debian_mirror)

for v in "${versions[@]}"; do
    short=${v//./}
    install "$v" "${HAPROXY_INSTALL_DIR:-/opt/haproxy$short}" "${HAPROXY_INSTALL_BIN:-/usr/local/bin/haproxy$short}"
done
