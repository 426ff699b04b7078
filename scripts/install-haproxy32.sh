#!/usr/bin/env bash
# Install HAProxy 3.2 next to the distribution's HAProxy 2.6 on Debian bookworm, without building
# anything and without touching the system's package state.
#
# Why: bookworm ships HAProxy 2.6 only; trixie's 3.0 predates the SPOP multiplexer (mux_spop) that
# changed how HAProxy talks to SPOE agents; Debian sid ships 3.2. The sid .deb needs a newer glibc
# and OpenSSL than bookworm has, so we download it together with its shared libraries, unpack them
# into one directory, and run the binary through the bundled dynamic loader with --library-path
# (docs/spop-protocol.md §15). Nothing is installed with dpkg; the system's glibc is untouched.
#
# Result:
#   $HAPROXY32_DIR (default /opt/haproxy32)   unpacked packages (usr/sbin/haproxy, usr/lib/<triplet>)
#   $HAPROXY32_BIN (default /usr/local/bin/haproxy32)   wrapper: `haproxy32 -vv`, `haproxy32 -f cfg -db`
#
# Idempotent: if the wrapper already runs and reports 3.2.x, nothing is downloaded.
# apt uses a private state directory and a temporary sources list for sid (removed on exit);
# /etc/apt and /var/lib/apt are never modified. The mirror host is taken from the machine's own
# bookworm sources so the script works wherever `apt-get` works.
#
# Env: HAPROXY32_DIR, HAPROXY32_BIN, HAPROXY32_MIRROR (override the mirror URL),
#      HAPROXY32_FORCE=1 (reinstall even when present).
set -euo pipefail

DIR=${HAPROXY32_DIR:-/opt/haproxy32}
BIN=${HAPROXY32_BIN:-/usr/local/bin/haproxy32}
WANT_VERSION_RE='^HAProxy version 3\.2\.'

log() { printf 'install-haproxy32: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The first line of `haproxy -v`, or nothing. (Captured rather than piped into `grep -q`, which
# could SIGPIPE the writer and, under pipefail, turn a match into a failure.)
installed_version() {
    local out
    out=$("$BIN" -v 2>/dev/null) || return 0
    printf '%s\n' "${out%%$'\n'*}"
}

if [[ ${HAPROXY32_FORCE:-0} != 1 ]] && [[ -x $BIN ]]; then
    current=$(installed_version)
    if [[ $current =~ $WANT_VERSION_RE ]]; then
        log "already installed: $current"
        exit 0
    fi
fi

command -v apt-get >/dev/null || die "apt-get not found (this script is for Debian)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

arch=$(dpkg --print-architecture)
case $arch in
    amd64) triplet=x86_64-linux-gnu ;;
    arm64) triplet=aarch64-linux-gnu ;;
    *) die "unsupported architecture $arch" ;;
esac

# The mirror: the first Debian (not -security) URI the system already uses, else deb.debian.org.
mirror=${HAPROXY32_MIRROR:-}
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
mirror=${mirror%/}

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r $keyring ]] || die "$keyring missing (apt-get install debian-archive-keyring)"

work=$(mktemp -d /tmp/haproxy32.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/root"
: >"$work/status"
printf 'deb [signed-by=%s] %s sid main\n' "$keyring" "$mirror" >"$work/sources.list"

# A private apt: its own sources, lists, cache and (empty) dpkg status, so nothing of the
# system's apt state is read or written. Only the host architecture is considered.
apt_opts=(
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

log "fetching the sid package index from $mirror"
apt-get "${apt_opts[@]}" -qq update >"$work/update.log" 2>&1 || {
    cat "$work/update.log" >&2
    die "apt-get update for sid failed"
}

# The runtime closure of haproxy, restricted to shared-library packages: a breadth-first walk
# over Depends/PreDepends that only follows lib*/zlib* packages (maintainer-script dependencies
# such as adduser and debconf are irrelevant when we only run the binary). The list in
# docs/spop-protocol.md §15 is the floor, in case the walk misses one.
floor=(haproxy libc6 libssl3t64 liblua5.4-0 libjemalloc2 libpcre2-8-0 libcrypt1 libstdc++6 libgcc-s1
    zlib1g libzstd1)
direct_lib_deps() {
    apt-cache "${apt_opts[@]}" depends --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "$1" 2>/dev/null |
        sed -nE 's/^ *\|?(Pre)?Depends: ([^ <>]+).*/\2/p' | grep -E '^(lib|zlib)' | sort -u || true
}
declare -A seen=([haproxy]=1)
queue=(haproxy)
while ((${#queue[@]})); do
    pkg=${queue[0]}
    queue=("${queue[@]:1}")
    while read -r dep; do
        [[ -n $dep && -z ${seen[$dep]:-} ]] || continue
        seen[$dep]=1
        queue+=("$dep")
    done < <(direct_lib_deps "$pkg")
done
mapfile -t pkgs < <(printf '%s\n' "${floor[@]}" "${!seen[@]}" | sed '/^$/d' | sort -u)
# Some names in the floor may not exist any more (t64 renames); keep those apt knows about.
known=()
for p in "${pkgs[@]}"; do
    if apt-cache "${apt_opts[@]}" show "$p" >/dev/null 2>&1; then
        known+=("$p")
    else
        log "note: $p not in sid, skipped"
    fi
done

log "downloading ${#known[@]} packages: ${known[*]}"
(cd "$work/debs" && apt-get "${apt_opts[@]}" -qq download "${known[@]}") >"$work/download.log" 2>&1 || {
    cat "$work/download.log" >&2
    die "apt-get download failed"
}

for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
done

libdir=usr/lib/$triplet
loader=$(find "$work/root/$libdir" "$work/root/lib64" "$work/root/usr/lib64" -maxdepth 1 -name 'ld-linux*.so*' 2>/dev/null | head -n1 || true)
[[ -n $loader ]] || die "no dynamic loader in the unpacked libc6"
[[ -x $work/root/usr/sbin/haproxy ]] || die "no usr/sbin/haproxy in the unpacked haproxy package"
loader_rel=${loader#"$work/root/"}

# Replace the installation atomically-enough: unpack next to it, then rename.
mkdir -p "$(dirname "$DIR")" "$(dirname "$BIN")"
rm -rf "$DIR.new"
mv "$work/root" "$DIR.new"
rm -rf "$DIR.old"
if [[ -e $DIR ]]; then mv "$DIR" "$DIR.old"; fi
mv "$DIR.new" "$DIR"
rm -rf "$DIR.old"

cat >"$BIN.tmp" <<EOF
#!/bin/sh
# HAProxy 3.2 from Debian sid, run with its own glibc and libraries (installed by
# scripts/install-haproxy32.sh). Arguments are passed to haproxy unchanged.
exec "$DIR/$loader_rel" --library-path "$DIR/$libdir" "$DIR/usr/sbin/haproxy" "\$@"
EOF
chmod 0755 "$BIN.tmp"
mv "$BIN.tmp" "$BIN"

version=$(installed_version)
[[ $version =~ $WANT_VERSION_RE ]] || die "installed binary reports: ${version:-nothing}"
log "installed: $version ($BIN -> $DIR)"
