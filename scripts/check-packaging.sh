#!/usr/bin/env bash
# Check idgate's packaging: the systemd unit, the monitoring files and the Debian package.
#
# Usage: scripts/check-packaging.sh [unit] [monitoring] [deb]     (default: all three)
#
#   unit        systemd-analyze verify prints nothing for packaging/idgate.service, and
#               systemd-analyze security --offline rates it 2.0 or less ("OK").
#   monitoring  packaging/prometheus-alerts.yml parses, `promtool check rules` and
#               `promtool test rules` pass, the Grafana dashboard is valid JSON, and every
#               idgate_* metric the two reference is registered in src/metrics/mod.rs.
#   deb         builds the .deb with cargo-deb and checks its control data and contents, then
#               verifies the unit *as installed* by the package, with the packaged binary.
#
# Environment:
#   IDGATE_DEB_NO_BUILD=1   package the existing target/release/idgate (`cargo deb --no-build`)
#                           instead of letting cargo-deb run a release build.
#
# Missing tools are installed with the ordinary clients: systemd (apt-get), cargo-deb
# (cargo install), PyYAML (pip). promtool is taken from Debian's `prometheus` package with
# `apt-get download` and unpacked under target/, never installed: installing the package would
# start a Prometheus server on a systemd machine.
#
# Why the temporary root for `systemd-analyze verify`: verify checks that ExecStart's binary
# exists, and /usr/bin/idgate is not installed on a build machine. `--root=DIR` resolves every
# path inside DIR, so the script builds a tree with the host's unit files (verify needs
# sysinit.target and friends), the unit under test, /bin/kill and an idgate executable.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
UNIT=packaging/idgate.service
MAX_EXPOSURE=2.0
TOOLS="$ROOT/target/packaging-tools"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

fail() { echo "check-packaging: FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }
ok() { echo "   ok: $*"; }

apt_updated=
apt_install() {
    [ -n "$apt_updated" ] || { apt-get update -qq >/dev/null; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_systemd_analyze() {
    command -v systemd-analyze >/dev/null || { step "installing systemd (for systemd-analyze)"; apt_install systemd; }
}

# A --root tree in which `systemd-analyze verify` can load idgate.service.
# $1: tree, $2: unit file to verify, $3: executable to install as /usr/bin/idgate (optional).
make_verify_root() {
    local r="$1" unit="$2" exe="${3:-}"
    mkdir -p "$r/usr/lib/systemd/system" "$r/usr/bin" "$r/bin"
    cp -a /usr/lib/systemd/system/. "$r/usr/lib/systemd/system/"
    cp "$unit" "$r/usr/lib/systemd/system/idgate.service"
    # ExecReload's /bin/kill must exist too; a stub will do where procps is not installed.
    if [ -x /bin/kill ]; then cp /bin/kill "$r/bin/kill"; else printf '#!/bin/sh\n' >"$r/bin/kill"; fi
    chmod 755 "$r/bin/kill"
    if [ -n "$exe" ]; then
        cp "$exe" "$r/usr/bin/idgate"
    else
        printf '#!/bin/sh\nexit 0\n' >"$r/usr/bin/idgate"
    fi
    chmod 755 "$r/usr/bin/idgate"
}

# verify must exit 0 and print nothing: unknown keys and bad values are only warnings.
verify_in_root() {
    local r="$1" out
    out="$(systemd-analyze verify --root="$r" idgate.service 2>&1)" || fail "systemd-analyze verify failed:
$out"
    [ -z "$out" ] || fail "systemd-analyze verify is not silent:
$out"
}

check_unit() {
    step "systemd unit: $UNIT"
    need_systemd_analyze
    for directive in 'Type=notify' 'User=idgate' 'Group=idgate' \
        'ExecStart=/usr/bin/idgate run -c /etc/idgate/idgate.toml' \
        'ExecReload=/bin/kill -HUP $MAINPID' 'Restart=on-failure' 'NoNewPrivileges=yes' \
        'ProtectSystem=strict' 'CapabilityBoundingSet=' 'LimitNOFILE=65536' \
        'RuntimeDirectory=idgate' 'RuntimeDirectoryMode=0711' 'RuntimeDirectoryPreserve=yes'; do
        grep -qxF "$directive" "$UNIT" || fail "$UNIT lacks the line: $directive"
    done
    ok "required directives present"

    make_verify_root "$TMP/unit-root" "$UNIT"
    verify_in_root "$TMP/unit-root"
    ok "systemd-analyze verify: silent"

    local report exposure
    report="$(systemd-analyze security --offline=true "$UNIT" 2>&1)" || true
    exposure="$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for idgate.service: \([0-9.]*\).*/\1/p')"
    [ -n "$exposure" ] || fail "no exposure level in systemd-analyze security output:
$report"
    awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' \
        || fail "exposure $exposure > $MAX_EXPOSURE:
$report"
    ok "systemd-analyze security: exposure $exposure (<= $MAX_EXPOSURE)"
}

need_promtool() {
    if command -v promtool >/dev/null; then PROMTOOL=promtool; return; fi
    PROMTOOL="$TOOLS/usr/bin/promtool"
    [ -x "$PROMTOOL" ] && return
    step "fetching promtool from Debian's prometheus package (not installed)"
    mkdir -p "$TOOLS/deb"
    [ -n "$apt_updated" ] || { apt-get update -qq >/dev/null; apt_updated=1; }
    (cd "$TOOLS/deb" && apt-get download -qq prometheus >/dev/null 2>"$TMP/apt-download.log") \
        || { cat "$TMP/apt-download.log"; fail "apt-get download prometheus"; }
    dpkg-deb -x "$(ls "$TOOLS"/deb/prometheus_*.deb | head -n1)" "$TOOLS"
    [ -x "$PROMTOOL" ] || fail "promtool not found in the prometheus package"
}

check_monitoring() {
    step "monitoring: alerts and dashboard"
    python3 -c 'import yaml' 2>/dev/null || { step "installing PyYAML"; pip install -q pyyaml; }
    python3 - <<'PY' || fail "monitoring files are invalid (see above)"
import json, re, sys, yaml

ok = True
def bad(msg):
    global ok
    ok = False
    print("   " + msg, file=sys.stderr)

rules = yaml.safe_load(open("packaging/prometheus-alerts.yml"))
names = set()
for group in rules["groups"]:
    for r in group["rules"]:
        for key in ("alert", "expr", "labels", "annotations"):
            if key not in r:
                bad(f"rule {r.get('alert')} has no {key}")
        if r.get("labels", {}).get("severity") not in ("critical", "warning"):
            bad(f"rule {r.get('alert')}: severity must be critical or warning")
        if r["alert"] in names:
            bad(f"duplicate alert {r['alert']}")
        names.add(r["alert"])
yaml.safe_load(open("packaging/prometheus-alerts.test.yml"))
dash = json.load(open("packaging/grafana-dashboard.json"))
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
if not dash.get("uid") or not dash["panels"]:
    bad("dashboard has no uid or no panels")
ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    bad("dashboard panel ids are not unique")

registered = open("src/metrics/mod.rs").read()
used = set()
for e in exprs:
    for m in re.findall(r"\bidgate_[a-z0-9_]+", e):
        used.add(re.sub(r"_(bucket|sum|count)$", "", m))
for m in sorted(used):
    if f'"{m}"' not in registered:
        bad(f"{m} is referenced but not registered in src/metrics/mod.rs")
print(f"   ok: {len(names)} alerts, {len(dash['panels'])} dashboard panels, "
      f"{len(used)} idgate metrics referenced, all registered")
sys.exit(0 if ok else 1)
PY
    need_promtool
    "$PROMTOOL" check rules packaging/prometheus-alerts.yml >/dev/null \
        || { "$PROMTOOL" check rules packaging/prometheus-alerts.yml; fail "promtool check rules"; }
    ok "promtool check rules"
    (cd packaging && "$PROMTOOL" test rules prometheus-alerts.test.yml >"$TMP/promtool-test.txt" 2>&1) \
        || { cat "$TMP/promtool-test.txt"; fail "promtool test rules"; }
    ok "promtool test rules"
}

check_deb() {
    step "Debian package"
    need_systemd_analyze
    # Assets listed in [package.metadata.deb] that other parts of the repository provide.
    [ -f README.md ] || fail "README.md is missing (the package ships it as documentation)"
    compgen -G 'haproxy/*' >/dev/null || fail "haproxy/ is missing or empty (shipped as examples)"
    command -v cargo-deb >/dev/null || { step "installing cargo-deb"; cargo install -q cargo-deb --locked; }
    local args=(--locked)
    [ "${IDGATE_DEB_NO_BUILD:-}" = 1 ] && args+=(--no-build)
    local deb
    deb="$(cargo deb "${args[@]}" 2>"$TMP/cargo-deb.log" | tail -n1)" \
        || { cat "$TMP/cargo-deb.log"; fail "cargo deb"; }
    [ -f "$deb" ] || { cat "$TMP/cargo-deb.log"; fail "cargo deb did not report a .deb ($deb)"; }
    ok "built $deb"

    dpkg-deb -I "$deb" >"$TMP/info.txt"
    dpkg-deb -c "$deb" >"$TMP/contents.txt"
    dpkg-deb -e "$deb" "$TMP/control"

    grep -q '^ Package: idgate$' "$TMP/info.txt" || fail "package name is not idgate"
    grep -q '^ Depends:.*adduser' "$TMP/info.txt" || fail "Depends lacks adduser (postinst uses it)"
    for c in /etc/idgate/idgate.toml /etc/logrotate.d/idgate; do
        grep -qxF "$c" "$TMP/control/conffiles" || fail "$c is not a conffile"
    done
    for s in postinst postrm prerm; do
        [ -f "$TMP/control/$s" ] || fail "no $s maintainer script"
        sh -n "$TMP/control/$s" || fail "$s is not valid sh"
        ! grep -q '#DEBHELPER#' "$TMP/control/$s" || fail "#DEBHELPER# left unexpanded in $s"
    done
    grep -q 'adduser --system' "$TMP/control/postinst" || fail "postinst does not create the user"
    grep -q 'chown root:idgate /etc/idgate' "$TMP/control/postinst" || fail "postinst does not own /etc/idgate"
    grep -q 'adduser --quiet idgate haproxy' "$TMP/control/postinst" \
        || fail "postinst does not add idgate to group haproxy (needed for socket_group = \"haproxy\")"
    grep -q 'deb-systemd-helper' "$TMP/control/postinst" || fail "postinst does not enable the unit"
    ok "control: name, Depends, conffiles, maintainer scripts"

    local unit_path=
    for p in ./usr/lib/systemd/system/idgate.service ./lib/systemd/system/idgate.service; do
        grep -q " $p\$" "$TMP/contents.txt" && unit_path="$p"
    done
    [ -n "$unit_path" ] || fail "the unit file is not in the package"
    grep -qE '^-rwxr-xr-x (root/root|0/0) .* \./usr/bin/idgate$' "$TMP/contents.txt" \
        || fail "/usr/bin/idgate missing or not 0755 root:root"
    for f in ./etc/idgate/idgate.toml ./usr/share/doc/idgate/README.md \
        ./usr/share/doc/idgate/copyright ./usr/share/doc/idgate/examples/grafana-dashboard.json \
        ./usr/share/doc/idgate/examples/prometheus-alerts.yml ./etc/logrotate.d/idgate \
        ./usr/lib/systemd/system/haproxy.service.d/idgate.conf; do
        grep -q " $f\$" "$TMP/contents.txt" || fail "$f is not in the package"
    done
    grep -q ' \./usr/share/doc/idgate/haproxy/' "$TMP/contents.txt" \
        || fail "the haproxy/ examples are not in the package"
    ok "contents: binary, unit ($unit_path), conffile, docs, examples"

    dpkg-deb -x "$deb" "$TMP/pkg"
    "$TMP/pkg/usr/bin/idgate" --version >/dev/null || fail "the packaged binary does not run"
    cmp -s "$TMP/pkg/$unit_path" "$UNIT" || fail "the packaged unit differs from $UNIT"
    make_verify_root "$TMP/deb-root" "$TMP/pkg/$unit_path" "$TMP/pkg/usr/bin/idgate"
    verify_in_root "$TMP/deb-root"
    ok "installed unit verifies with the packaged binary"
}

stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(unit monitoring deb)
for s in "${stages[@]}"; do
    case "$s" in
    unit) check_unit ;;
    monitoring) check_monitoring ;;
    deb) check_deb ;;
    *) fail "unknown stage $s (expected unit, monitoring or deb)" ;;
    esac
done
echo "check-packaging: all checks passed (${stages[*]})"
