# A private apt for Debian's archive (sourced by scripts/install-haproxy.sh and
# scripts/build-spoa-example.sh, which define log and die): its own sources list, package lists,
# cache and (empty) dpkg status in a directory of the caller's, so that nothing of the system's
# apt state is read or written (/etc/apt and /var/lib/apt stay untouched), and only the host
# architecture is considered. The index is verified against Debian's archive keyring as usual,
# and so is every file apt downloads through it.

# The mirror: the first Debian (not -security) URI the system already uses, else deb.debian.org.
debian_mirror() {
    local mirror=${DEBIAN_MIRROR:-}
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

# private_apt DIR TYPE SUITE...: fetch the index of SUITEs (TYPE deb or deb-src, main) into DIR
# and set apt_opts, the options that make apt-get/apt-cache use it.
apt_opts=()
private_apt() {
    local dir=$1 type=$2 suite mirror
    shift 2
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [[ -r $keyring ]] || die "$keyring missing (apt-get install debian-archive-keyring)"
    mirror=$(debian_mirror)
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    : >"$dir/status"
    for suite in "$@"; do
        printf '%s [signed-by=%s] %s %s main\n' "$type" "$keyring" "$mirror" "$suite"
    done >"$dir/sources.list"
    apt_opts=(
        -o "Dir::Etc::SourceList=$dir/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::Etc::Preferences=/dev/null"
        -o "Dir::Etc::PreferencesParts=/dev/null"
        -o "Dir::State::Lists=$dir/lists"
        -o "Dir::State::status=$dir/status"
        -o "Dir::Cache=$dir/cache"
        -o "APT::Architectures=$(dpkg --print-architecture)"
        -o "APT::Get::List-Cleanup=false"
        -o "Acquire::Languages=none"
        -o "Debug::NoLocking=true"
    )
    log "fetching the $type index of $* from $mirror"
    apt-get "${apt_opts[@]}" -qq update >"$dir/update.log" 2>&1 || {
        cat "$dir/update.log" >&2
        die "apt-get update for $* failed"
    }
}
