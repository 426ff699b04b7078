#!/usr/bin/env bash
# quickstart.sh: a complete local idgate demo, on 127.0.0.1 only, in one command.
#
#   ./quickstart.sh           bring everything up, print commands to try, run until Ctrl-C
#   ./quickstart.sh --check   bring everything up, run those commands, check their results
#                             (PASS/FAIL per step), stop everything; exit 1 on any failure
#
# What runs (every process is a child of this script and is stopped when it exits):
#
#   curl ──► HAProxy (the SHIPPED haproxy/haproxy.cfg, or haproxy-3.x.cfg for HAProxy >= 3.2,
#              │       configured through its IDGATE_* environment variables, unchanged)
#              ├─SPOP─► idgate (demo/idgate.toml) ──► local OIDC provider (JWKS)
#              │                                  └─► fake Databricks: token endpoint (M2M, token
#              │                                      exchange, data-plane tokens), endpoint lookups
#              ├─TLS──► fake Databricks workspace: echoes the headers it received
#              └─TLS──► fake data plane of a route-optimized serving endpoint, as if at
#                       https://<id>.serving.cloud.databricks.com (HAProxy resolves that name
#                       with the fake's DNS server): echoes too, only with an endpoint's token
#
#   - local OIDC provider: tests/oidc/server.mjs (npm oidc-provider), clients alice
#     (group ml-engineers) and bob (group analysts), client_credentials tokens.
#   - fake Databricks: demo/fake-databricks.mjs (node, no dependencies): serving endpoints
#     churn-model (classic) and churn-fast (route-optimized), a DNS server on UDP.
#   - HAProxy re-encrypts to the upstream with TLS and verifies its certificate, as in
#     production: this script makes a throw-away CA (openssl) in its run directory.
#
# Prerequisites, installed with apt-get when missing and running as root, else reported:
# haproxy, node (>= 20.19, for oidc-provider) + npm, curl, openssl. The idgate binary is built
# with `cargo build --release` (or set IDGATE_BIN to an existing binary).
#
# Environment (defaults shown). A port that is taken is replaced by the next free one, unless
# it was set explicitly, in which case the script stops with a clear message.
#   QS_GATEWAY_PORT=18080           HAProxy frontend: what you send requests to
#   QS_HAPROXY_STATS_PORT=18404     HAProxy /ready, /metrics, /stats
#   QS_SPOP_PORT=18345              idgate SPOP listener
#   QS_ADMIN_PORT=18180             idgate /metrics, /live, /ready
#   QS_OIDC_PORT=18400              local OIDC provider (the issuer)
#   QS_DATABRICKS_PORT=18443        fake Databricks workspace (HTTPS, HAProxy's upstream)
#   QS_DATABRICKS_TOKEN_PORT=18480  fake Databricks token endpoint (HTTP, for idgate)
#   QS_DATAPLANE_PORT=18444         fake data plane of route-optimized endpoints (HTTPS)
#   QS_DNS_PORT=18053               fake DNS server (UDP) HAProxy resolves data-plane hosts with
#   QS_HAPROXY=haproxy              HAProxy binary (2.6 .. 3.1: haproxy.cfg; 3.2+: haproxy-3.x.cfg)
#   IDGATE_BIN=                     idgate binary to use instead of building one
#   QS_READY_TIMEOUT=30             seconds each component may take to become ready
#   QS_KEEP=                        set to 1 to keep the run directory (logs, config) at exit
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly root

# --- limits -------------------------------------------------------------------------------
# Readiness: each component normally answers within a second; 30 s covers a loaded machine.
readonly READY_TIMEOUT_S=${QS_READY_TIMEOUT:-30}
# Pause between two readiness probes: fast start without burning a core.
readonly POLL_S=0.05
# How long the children get to exit after SIGTERM before SIGKILL (idgate drains in 2 s).
readonly STOP_GRACE_S=5
# How many ports after a taken default port are tried.
readonly PORT_FALLBACKS=20
# Every curl this script runs gives up after this long (a request normally takes ms).
readonly CURL_MAX_TIME_S=10

# The ports demo/idgate.toml is written with (rendered to the ports actually chosen).
readonly DEFAULT_GATEWAY_PORT=18080 DEFAULT_HAPROXY_STATS_PORT=18404 DEFAULT_SPOP_PORT=18345
readonly DEFAULT_ADMIN_PORT=18180 DEFAULT_OIDC_PORT=18400 DEFAULT_DATABRICKS_PORT=18443
readonly DEFAULT_DATABRICKS_TOKEN_PORT=18480 DEFAULT_DATAPLANE_PORT=18444 DEFAULT_DNS_PORT=18053

# The upstream's name: HAProxy sends it as Host and SNI and verifies the certificate for it.
readonly DATABRICKS_HOST=dbc-quickstart.demo.internal
# The demo service principal (the fake token endpoint checks it; the secret is random per run).
readonly SP_CLIENT_ID=demo-serving-sp
readonly SERVING_PATH=/serving-endpoints/churn-model/invocations
# A route-optimized endpoint of the fake: same gateway URL scheme, served by its data plane.
readonly RO_ENDPOINT=churn-fast
readonly RO_SERVING_PATH=/serving-endpoints/$RO_ENDPOINT/invocations
# The data plane's certificate name (and idgate's default data_plane_hosts entry).
readonly DATA_PLANE_DOMAIN=serving.cloud.databricks.com

[[ $READY_TIMEOUT_S =~ ^[1-9][0-9]*$ ]] || {
    echo "quickstart: QS_READY_TIMEOUT=$READY_TIMEOUT_S is not a number of seconds" >&2
    exit 2
}

mode=demo
case ${1:-} in
    "") ;;
    --check) mode=check ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: $0 [--check|--help]" >&2
        exit 2
        ;;
esac

say() { printf 'quickstart: %s\n' "$*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

now_us() {
    if [[ -n ${EPOCHREALTIME:-} ]]; then
        echo "${EPOCHREALTIME//[!0-9]/}"
    else
        date +%s%6N
    fi
}

# Never send loopback requests through an HTTP proxy from the environment.
qcurl() { curl --noproxy '*' --max-time "$CURL_MAX_TIME_S" "$@"; }

is_root() { [[ $(id -u) == 0 ]]; }

# --- prerequisites ------------------------------------------------------------------------
apt_install() {
    say "installing with apt-get: $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_haproxy() {
    if [[ -n ${QS_HAPROXY:-} ]]; then
        command -v "$QS_HAPROXY" 2>/dev/null || true
        return
    fi
    # /usr/sbin is not on a non-root user's PATH on Debian.
    command -v haproxy 2>/dev/null || { [[ -x /usr/sbin/haproxy ]] && echo /usr/sbin/haproxy; } || true
}

prerequisites() {
    local missing=()
    [[ -n $(find_haproxy) || -n ${QS_HAPROXY:-} ]] || missing+=(haproxy)
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    # Node.js comes from scripts/ensure-node.sh below (PATH's node if new enough, else PyPI);
    # it needs python3 with venv only when it has to install.
    command -v python3 >/dev/null || missing+=(python3 python3-venv)
    if ((${#missing[@]})); then
        if is_root && command -v apt-get >/dev/null; then
            apt_install ca-certificates "${missing[@]}"
        else
            die "missing: ${missing[*]}. Install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}) or run this script as root."
        fi
    fi

    haproxy_bin=$(find_haproxy)
    [[ -n $haproxy_bin ]] || die "HAProxy binary ${QS_HAPROXY:-haproxy} not found (QS_HAPROXY)"
    local version
    version=$("$haproxy_bin" -v 2>/dev/null | sed -n '1s/^HA-\{0,1\}Proxy version \([0-9]*\.[0-9]*\).*/\1/p')
    [[ $version =~ ^([0-9]+)\.([0-9]+)$ ]] || die "cannot tell the version of $haproxy_bin"
    local major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
    if ((major > 3 || (major == 3 && minor >= 2))); then
        haproxy_cfg=$root/haproxy/haproxy-3.x.cfg
    else
        haproxy_cfg=$root/haproxy/haproxy.cfg
        ((major > 2 || (major == 2 && minor >= 6))) ||
            say "warning: HAProxy $version is older than 2.6, the oldest version idgate is tested with"
    fi
    haproxy_version=$version

    # oidc-provider 9 needs Node.js >= 20.19 (tests/oidc/package.json "engines"): the node on
    # PATH if it is new enough, else official builds from PyPI (Debian bookworm's is 18).
    local node_dir
    node_dir=$(bash "$root/scripts/ensure-node.sh") ||
        die "no usable Node.js >= 20.19 (scripts/ensure-node.sh says why above)"
    export PATH="$node_dir:$PATH"

    # The OIDC provider's packages. npm writes node_modules/.package-lock.json on every
    # install, whoever ran it (scripts/ci-deps.sh, the test harness, this script): installed
    # and not older than the lock file means up to date.
    local oidc=$root/tests/oidc
    local marker=$oidc/node_modules/.package-lock.json
    if [[ ! -f $oidc/node_modules/oidc-provider/package.json || ! -f $marker ||
        $oidc/package-lock.json -nt $marker ]]; then
        say "npm ci in tests/oidc (the local OIDC provider's packages)"
        (cd "$oidc" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
            die "npm ci in tests/oidc failed (network? registry?)"
    fi
}

idgate_binary() {
    if [[ -n ${IDGATE_BIN:-} ]]; then
        [[ -x $IDGATE_BIN ]] || die "IDGATE_BIN=$IDGATE_BIN is not an executable"
        idgate_bin=$IDGATE_BIN
        return
    fi
    local target=${CARGO_TARGET_DIR:-$root/target}
    [[ $target == /* ]] || target=$root/$target
    if command -v cargo >/dev/null; then
        if [[ -x $target/release/idgate ]]; then
            say "cargo build --release"
        else
            say "cargo build --release (a first build takes a few minutes)"
        fi
        (cd "$root" && cargo build --release --locked --bin idgate) || die "cargo build failed"
    elif [[ -x $target/release/idgate ]]; then
        say "cargo not found: reusing $target/release/idgate"
    else
        die "cargo not found: install Rust (https://rustup.rs) or set IDGATE_BIN to an idgate binary"
    fi
    idgate_bin=$target/release/idgate
}

# --- ports --------------------------------------------------------------------------------
used_ports=()

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A UDP port is taken when a socket is bound to it on any address (the kernel's table: bash
# cannot probe UDP).
udp_port_in_use() {
    local hex f tables=()
    printf -v hex '%04X' "$1"
    for f in /proc/net/udp /proc/net/udp6; do [[ -r $f ]] && tables+=("$f"); done
    ((${#tables[@]})) || return 1
    awk -v h=":$hex" 'FNR > 1 && substr($2, length($2) - 4) == h { found = 1 } END { exit !found }' \
        "${tables[@]}"
}

port_in_use_proto() { # PROTO PORT
    if [[ $1 == udp ]]; then udp_port_in_use "$2"; else port_in_use "$2"; fi
}

port_taken_here() {
    local p
    for p in "${used_ports[@]}"; do [[ $p == "$1" ]] && return 0; done
    return 1
}

# reserve_port ENV_NAME WHAT: an explicitly set port must be a port number, and not also set
# for another component. Checked before anything is installed or built.
reserve_port() {
    local env=$1 p
    [[ -n ${!env:-} ]] || return 0
    p=${!env}
    if [[ ! $p =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then die "$env=$p is not a port number"; fi
    port_taken_here "$p" && die "$env=$p: that port is also set for another component"
    used_ports+=("$p")
}

# pick_port VAR ENV_NAME DEFAULT PROTO WHAT: sets VAR to the explicit port (which must be free),
# or to the default or the next free port after it, skipping every explicit port (all reserved
# before the first pick_port). PROTO: tcp or udp.
pick_port() {
    local var=$1 env=$2 def=$3 proto=$4 what=$5 p
    if [[ -n ${!env:-} ]]; then
        p=${!env}
        port_in_use_proto "$proto" "$p" &&
            die "$env=$p: 127.0.0.1:$p ($what) is already in use; choose another port"
    else
        for ((p = def; p < def + PORT_FALLBACKS; p++)); do
            port_taken_here "$p" || port_in_use_proto "$proto" "$p" || break
        done
        ((p < def + PORT_FALLBACKS)) ||
            die "no free port in 127.0.0.1:$def..$((def + PORT_FALLBACKS - 1)) for $what; set $env"
        ((p == def)) || say "port $def is in use: $what uses $p instead (set $env to choose)"
        used_ports+=("$p")
    fi
    printf -v "$var" '%s' "$p"
}

# --- processes ----------------------------------------------------------------------------
pids=()
names=()
logs=()
run=""

# How children are started (both util-linux, present on every Debian/Ubuntu):
# - setsid: in a session of their own, so the terminal's Ctrl-C reaches only this script,
#   whose trap then stops them in order (and a component that dies by itself is told apart
#   from one stopped by Ctrl-C). Not a process group leader here, so setsid does not fork
#   and $! stays the component's PID.
# - setpriv --pdeathsig: a child gets SIGTERM if this script dies without running its EXIT
#   trap (e.g. SIGKILL), so nothing can be left behind.
launcher=()
if command -v setsid >/dev/null; then
    launcher+=(setsid)
fi
if setpriv --help 2>&1 | grep -q -- --pdeathsig; then
    launcher+=(setpriv --pdeathsig TERM --)
fi

# start NAME LOG CMD...: starts CMD in the background, stdin from the keep-alive FIFO (the
# node servers exit when it closes, i.e. when this script is gone).
start() {
    local name=$1 log=$2
    shift 2
    "${launcher[@]}" "$@" <"$run/stdin" >"$log" 2>&1 7>&- &
    pids+=("$!")
    names+=("$name")
    logs+=("$log")
}

alive() {
    kill -0 "$1" 2>/dev/null || return 1
    # An exited child stays a zombie until reaped: kill -0 still succeeds on it. Read the state
    # once: a process reaped between two reads of /proc would otherwise count as alive.
    local state
    state=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$1/status" 2>/dev/null) || state=
    [[ -n $state && $state != Z ]]
}

tail_log() { # NAME LOG
    printf -- '--- last lines of %s (%s) ---\n' "$1" "$2" >&2
    tail -n 25 "$2" >&2 2>/dev/null || true
}

# wait_ready NAME PROBE...: polls PROBE until it succeeds; fails if the process exits or the
# timeout passes.
wait_ready() {
    local name=$1 i pid="" log=""
    shift
    for i in "${!names[@]}"; do
        [[ ${names[i]} == "$name" ]] && pid=${pids[i]} && log=${logs[i]}
    done
    local deadline=$(($(now_us) + READY_TIMEOUT_S * 1000000))
    while ! "$@" >/dev/null 2>&1; do
        if ! alive "$pid"; then
            tail_log "$name" "$log"
            die "$name exited during startup (log above)"
        fi
        if (($(now_us) >= deadline)); then
            tail_log "$name" "$log"
            die "$name not ready after ${READY_TIMEOUT_S}s (log above)"
        fi
        sleep "$POLL_S"
    done
    say "$name ready ($(since "$t_start"))"
}

# since T0_US: seconds elapsed since T0, e.g. "1.4 s".
since() {
    local ms=$((($(now_us) - $1) / 1000))
    printf '%d.%01d s' $((ms / 1000)) $((ms % 1000 / 100))
}

stop_all() {
    local i pid deadline
    # Reverse start order: HAProxy first, so nothing new reaches idgate while it drains.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    deadline=$(($(now_us) + STOP_GRACE_S * 1000000))
    for pid in "${pids[@]}"; do
        while alive "$pid" && (($(now_us) < deadline)); do sleep "$POLL_S"; done
    done
    for i in "${!pids[@]}"; do
        if alive "${pids[i]}"; then
            say "${names[i]} (pid ${pids[i]}) ignored SIGTERM for ${STOP_GRACE_S}s: SIGKILL"
            kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
    done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((${#pids[@]})); then
        stop_all
        say "stopped everything it started"
    fi
    exec 7>&- 2>/dev/null || true
    if [[ -n $run && -d $run ]]; then
        if [[ ${QS_KEEP:-} == 1 ]]; then
            say "run directory kept: $run"
        else
            rm -rf -- "$run"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- setup --------------------------------------------------------------------------------
# Set by pick_port below.
GATEWAY_PORT="" HAPROXY_STATS_PORT="" SPOP_PORT="" ADMIN_PORT="" OIDC_PORT="" DATABRICKS_PORT=""
DATABRICKS_TOKEN_PORT="" DATAPLANE_PORT="" DNS_PORT=""
# VAR ENV_NAME DEFAULT PROTO WHAT, one component per line.
port_table=(
    "GATEWAY_PORT QS_GATEWAY_PORT $DEFAULT_GATEWAY_PORT tcp HAProxy frontend"
    "HAPROXY_STATS_PORT QS_HAPROXY_STATS_PORT $DEFAULT_HAPROXY_STATS_PORT tcp HAProxy stats"
    "SPOP_PORT QS_SPOP_PORT $DEFAULT_SPOP_PORT tcp idgate SPOP"
    "ADMIN_PORT QS_ADMIN_PORT $DEFAULT_ADMIN_PORT tcp idgate admin"
    "OIDC_PORT QS_OIDC_PORT $DEFAULT_OIDC_PORT tcp OIDC provider"
    "DATABRICKS_PORT QS_DATABRICKS_PORT $DEFAULT_DATABRICKS_PORT tcp fake Databricks (HTTPS)"
    "DATABRICKS_TOKEN_PORT QS_DATABRICKS_TOKEN_PORT $DEFAULT_DATABRICKS_TOKEN_PORT tcp fake Databricks token endpoint"
    "DATAPLANE_PORT QS_DATAPLANE_PORT $DEFAULT_DATAPLANE_PORT tcp fake Databricks data plane (HTTPS)"
    "DNS_PORT QS_DNS_PORT $DEFAULT_DNS_PORT udp fake DNS server on UDP"
)
for row in "${port_table[@]}"; do
    read -r var env def proto what <<<"$row"
    reserve_port "$env"
done

prerequisites
idgate_binary

# Whether a port is free is only checked now, after a build that can take minutes.
for row in "${port_table[@]}"; do
    read -r var env def proto what <<<"$row"
    pick_port "$var" "$env" "$def" "$proto" "$what"
done

umask 077
run=$(mktemp -d "${TMPDIR:-/tmp}/idgate-quickstart.XXXXXX")
mkfifo "$run/stdin"
# Held open (read-write, so opening never blocks) for the script's lifetime: the children's
# stdin reaches EOF only when this script is gone.
exec 7<>"$run/stdin"

t_start=$(now_us)

# The OIDC provider takes longest to start (it loads oidc-provider and generates its keys):
# start it first, and prepare the rest meanwhile.
start oidc "$run/oidc.log" node "$root/tests/oidc/server.mjs" "$OIDC_PORT"

# Throw-away CA and server certificates for the fake workspace and its data plane (P-256,
# valid 2 days).
openssl_quiet() { openssl "$@" >/dev/null 2>&1 || die "openssl $1 failed"; }
openssl_quiet req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$run/ca.key" -out "$run/ca.pem" -days 2 -subj "/CN=idgate quickstart demo CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl_quiet req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$run/databricks.key" -out "$run/databricks.csr" -subj "/CN=$DATABRICKS_HOST"
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=DNS:$DATABRICKS_HOST" >"$run/databricks.ext"
openssl_quiet x509 -req -in "$run/databricks.csr" -CA "$run/ca.pem" -CAkey "$run/ca.key" \
    -CAcreateserial -days 2 -extfile "$run/databricks.ext" -out "$run/databricks.pem"
# Route-optimized endpoints are at <endpoint id>.serving.cloud.databricks.com: a wildcard, as
# Databricks' own certificate. HAProxy verifies it against the SNI name it sends.
openssl_quiet req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$run/dataplane.key" -out "$run/dataplane.csr" -subj "/CN=*.$DATA_PLANE_DOMAIN"
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=DNS:*.$DATA_PLANE_DOMAIN" >"$run/dataplane.ext"
openssl_quiet x509 -req -in "$run/dataplane.csr" -CA "$run/ca.pem" -CAkey "$run/ca.key" \
    -CAcreateserial -days 2 -extfile "$run/dataplane.ext" -out "$run/dataplane.pem"

# The demo service principal's secret: random per run, in a file as idgate requires.
sp_secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
(umask 077 && printf '%s\n' "$sp_secret" >"$run/demo-serving-sp.secret")

# The policy, rendered with the chosen ports and the secret's absolute path.
sed_escape() { printf '%s' "$1" | sed 's/[&|\\]/\\&/g'; }
idgate_cfg=$run/idgate.toml
sed -e "s|127\.0\.0\.1:$DEFAULT_SPOP_PORT\\b|127.0.0.1:$SPOP_PORT|g" \
    -e "s|127\.0\.0\.1:$DEFAULT_ADMIN_PORT\\b|127.0.0.1:$ADMIN_PORT|g" \
    -e "s|127\.0\.0\.1:$DEFAULT_OIDC_PORT\\b|127.0.0.1:$OIDC_PORT|g" \
    -e "s|127\.0\.0\.1:$DEFAULT_DATABRICKS_TOKEN_PORT\\b|127.0.0.1:$DATABRICKS_TOKEN_PORT|g" \
    -e "s|^client_secret_file = \"demo-serving-sp.secret\"|client_secret_file = \"$(sed_escape "$run")/demo-serving-sp.secret\"|" \
    "$root/demo/idgate.toml" >"$idgate_cfg"
for want in "listen = \"127.0.0.1:$SPOP_PORT\"" "listen = \"127.0.0.1:$ADMIN_PORT\"" \
    "issuer = \"http://127.0.0.1:$OIDC_PORT\"" \
    "token_url = \"http://127.0.0.1:$DATABRICKS_TOKEN_PORT/oidc/v1/token\"" \
    "client_secret_file = \"$run/demo-serving-sp.secret\""; do
    grep -qF "$want" "$idgate_cfg" ||
        die "demo/idgate.toml does not render as expected (no \`$want\`): keep its default ports and secret file name"
done

# --- start the rest -------------------------------------------------------------------------
FAKE_DBX_CLIENT_ID=$SP_CLIENT_ID FAKE_DBX_CLIENT_SECRET=$sp_secret \
    start fake-databricks "$run/fake-databricks.log" node "$root/demo/fake-databricks.mjs" \
    --tls-port "$DATABRICKS_PORT" --http-port "$DATABRICKS_TOKEN_PORT" \
    --cert "$run/databricks.pem" --key "$run/databricks.key" \
    --dataplane-port "$DATAPLANE_PORT" --dataplane-cert "$run/dataplane.pem" \
    --dataplane-key "$run/dataplane.key" --dns-port "$DNS_PORT"

"$idgate_bin" check-config -c "$idgate_cfg" >"$run/check-config.log" 2>&1 || {
    tail_log "idgate check-config" "$run/check-config.log"
    die "idgate rejects the rendered demo policy $idgate_cfg"
}

wait_ready oidc qcurl -fsS "http://127.0.0.1:$OIDC_PORT/.well-known/openid-configuration"
wait_ready fake-databricks grep -q '"token_url"' "$run/fake-databricks.log"
# Where the fake serves the route-optimized endpoint (its ready line), e.g.
# https://<id>.serving.cloud.databricks.com:18444/<workspace id>/serving-endpoints/churn-fast/invocations
ro_url=$(sed -n "s|.*\"$RO_ENDPOINT\":\"\(https://[^\"]*\)\".*|\1|p" "$run/fake-databricks.log" | head -n 1)
[[ $ro_url =~ ^https://([a-z0-9-]+\.)"$DATA_PLANE_DOMAIN":([0-9]+)(/[^?#]*)$ ]] ||
    die "fake-databricks did not report a data-plane URL for $RO_ENDPOINT (see $run/fake-databricks.log)"
ro_host=${BASH_REMATCH[1]}$DATA_PLANE_DOMAIN
ro_authority=$ro_host:${BASH_REMATCH[2]}
ro_path=${BASH_REMATCH[3]}

start idgate "$run/idgate.log" "$idgate_bin" run -c "$idgate_cfg"
# /ready: SPOP listener up and the issuer's keys loaded.
wait_ready idgate qcurl -fsS "http://127.0.0.1:$ADMIN_PORT/ready"

# The shipped HAProxy configuration, parameterised through its documented variables only.
hap_env=(
    IDGATE_FRONTEND_BIND="127.0.0.1:$GATEWAY_PORT"
    IDGATE_STATS_BIND="127.0.0.1:$HAPROXY_STATS_PORT"
    IDGATE_AGENT_ADDR="127.0.0.1:$SPOP_PORT"
    IDGATE_SPOE_CONF="$root/haproxy/idgate.spoe.conf"
    IDGATE_DATABRICKS_HOST="$DATABRICKS_HOST"
    IDGATE_DATABRICKS_ADDR="127.0.0.1:$DATABRICKS_PORT"
    IDGATE_DATABRICKS_CA_FILE="$run/ca.pem"
    IDGATE_DNS_NAMESERVER="127.0.0.1:$DNS_PORT"
    IDGATE_STATS_SOCKET="$run/haproxy.sock"
    IDGATE_HAPROXY_LOG=stderr
    IDGATE_HAPROXY_UNPRIVILEGED=1
)
start haproxy "$run/haproxy.log" env "${hap_env[@]}" "$haproxy_bin" -db -f "$haproxy_cfg"
# /ready: 200 once the gateway serves and the idgate agent is UP.
wait_ready haproxy qcurl -fsS "http://127.0.0.1:$HAPROXY_STATS_PORT/ready"

up_time=$(since "$t_start")

gateway=http://127.0.0.1:$GATEWAY_PORT
oidc_url=http://127.0.0.1:$OIDC_PORT

# --- the commands ---------------------------------------------------------------------------
# Printed for the demo, run for --check: one definition so the two cannot drift apart.
token_cmd() { # CLIENT
    printf "curl -s -u %s:%s-secret -d grant_type=client_credentials %s/token | sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\\\1/'" \
        "$1" "$1" "$oidc_url"
}
cmd_allowed="curl -s -H \"Authorization: Bearer \$A\" -H 'Content-Type: application/json' -d '{\"inputs\": [[1, 2, 3]]}' $gateway$SERVING_PATH"
cmd_route_optimized="curl -s -H \"Authorization: Bearer \$A\" -H 'Content-Type: application/json' -d '{\"inputs\": [[1, 2, 3]]}' $gateway$RO_SERVING_PATH"
cmd_refused="curl -si -w '\\n' -H \"Authorization: Bearer \$B\" -H 'Content-Type: application/json' -d '{\"inputs\": [[1, 2, 3]]}' $gateway$SERVING_PATH"
cmd_no_token="curl -si -w '\\n' -d '{}' $gateway$SERVING_PATH"
cmd_spoofed="curl -s -H 'X-Forwarded-User: admin' -H 'X_Forwarded_User: admin' $gateway/healthz"
cmd_analyst="curl -s -H \"Authorization: Bearer \$B\" $gateway/api/2.0/clusters/list"
cmd_explain="$idgate_bin explain -c $idgate_cfg --method POST --path $SERVING_PATH --token \"\$B\"; echo \"exit status \$?\""

print_commands() {
    cat <<EOF

idgate quickstart is up ($up_time). Everything listens on 127.0.0.1; Ctrl-C here stops it all.

  gateway          $gateway  (HAProxy $haproxy_version, ${haproxy_cfg#"$root"/})
  idgate           SPOP 127.0.0.1:$SPOP_PORT, metrics http://127.0.0.1:$ADMIN_PORT/metrics
  OIDC provider    $oidc_url  (alice: ml-engineers, bob: analysts)
  fake Databricks  https://127.0.0.1:$DATABRICKS_PORT (echoes what it receives),
                   token endpoint http://127.0.0.1:$DATABRICKS_TOKEN_PORT/oidc/v1/token,
                   data plane of $RO_ENDPOINT https://127.0.0.1:$DATAPLANE_PORT as https://$ro_authority,
                   DNS server udp://127.0.0.1:$DNS_PORT (*.$DATA_PLANE_DOMAIN -> 127.0.0.1)
  policy           $idgate_cfg  (rendered from demo/idgate.toml)
  logs             $run/{idgate,haproxy,oidc,fake-databricks}.log
                   (idgate.log has one JSON audit line per decision)
EOF
    if [[ -n ${http_proxy:-}${HTTP_PROXY:-}${all_proxy:-}${ALL_PROXY:-} ]]; then
        cat <<EOF

An HTTP proxy is set in your environment; keep curl away from it for these loopback requests:
  export no_proxy=127.0.0.1 NO_PROXY=127.0.0.1
EOF
    fi
    cat <<EOF

Paste these into another terminal:

# 1. Tokens from the IdP (client_credentials; they last 5 minutes, fetch again after that).
A=\$($(token_cmd alice))
B=\$($(token_cmd bob))

# 2a. alice (ml-engineers) invokes a model serving endpoint: 200. The echo shows
#     X-Forwarded-User: alice and Authorization: Bearer dbx-demo-sp-1, the Databricks credential
#     idgate obtained for the demo service principal. alice's own token is not forwarded.
$cmd_allowed

# 2b. The same for $RO_ENDPOINT, a ROUTE-OPTIMIZED endpoint, at the same gateway URL: 200 from
#     its data plane, not the workspace. idgate looked the endpoint up and minted a token scoped
#     to it; HAProxy resolved the data-plane host (the demo's DNS server) and verified its
#     certificate for that name:  https://$ro_authority
#     The echo says DATA PLANE, path $ro_path,
#     Authorization: Bearer dbx-demo-dp-$RO_ENDPOINT-N (this endpoint only), not alice's token.
$cmd_route_optimized

# 3. bob (analysts) may not invoke model serving: 403 no_matching_rule.
$cmd_refused

# 4. No token: 401 with a WWW-Authenticate challenge.
$cmd_no_token

# 5. A client-supplied identity header is stripped (public /healthz: no X-Forwarded-User at all).
$cmd_spoofed

# 6. Why was bob refused? The same decision, explained (exit status 1 = deny).
$cmd_explain

# 7. bob reads the workspace API as himself: 200. idgate exchanged his IdP token for his own
#    Databricks token (RFC 8693 token federation): the echo shows
#    Authorization: Bearer dbx-demo-user-bob-N, never bob's IdP token.
$cmd_analyst

EOF
}

# --- --check --------------------------------------------------------------------------------
passed=0
failed=0
pass() {
    printf 'PASS  %s\n' "$1"
    passed=$((passed + 1))
}
fail() {
    printf 'FAIL  %s: %s\n' "$1" "$2"
    [[ -z ${3:-} ]] || printf '%s\n' "$3" | head -n 40 | sed 's/^/      | /'
    failed=$((failed + 1))
}

# run_curl BODY_FILE HEADERS_FILE CMD: runs a printed curl command (with the variables A and
# B set) and prints the HTTP status.
run_curl() {
    local body=$1 headers=$2 cmd=$3
    local prefix="curl --noproxy '*' --max-time $CURL_MAX_TIME_S -o '$body' -D '$headers' -w '%{http_code}' "
    # -si is for humans; here the headers go to their own file.
    cmd=${cmd/curl -si /curl -s }
    cmd=${cmd/ -w \'\\n\'/}
    cmd=${cmd/curl /"$prefix"}
    A=$A B=$B bash -c "$cmd" 2>/dev/null || true
}

header_value() { # FILE NAME
    tr -d '\r' <"$1" | sed -n "s/^$2:[[:space:]]*//Ip" | head -n 1
}

json_field() { # FILE NAME: the echo's pretty-printed headers, `"name": "value"`
    sed -n "s/^    \"$2\": \"\(.*\)\",\{0,1\}$/\1/p" "$1" | head -n 1
}

run_checks() {
    local d=$run/check status what body
    mkdir -p "$d"
    A=""
    B=""

    what="1a token for alice (group ml-engineers) from the IdP"
    A=$(bash -c "$(token_cmd alice | sed "s|^curl |curl --noproxy '*' --max-time $CURL_MAX_TIME_S |")" 2>/dev/null || true)
    if [[ $A =~ ^eyJ[A-Za-z0-9_.-]+$ ]]; then pass "$what"; else fail "$what" "no JWT" "$A"; fi
    what="1b token for bob (group analysts) from the IdP"
    B=$(bash -c "$(token_cmd bob | sed "s|^curl |curl --noproxy '*' --max-time $CURL_MAX_TIME_S |")" 2>/dev/null || true)
    if [[ $B =~ ^eyJ[A-Za-z0-9_.-]+$ ]]; then pass "$what"; else fail "$what" "no JWT" "$B"; fi

    what="2a alice invokes model serving: 200, X-Forwarded-User alice, the Databricks bearer upstream, her token not forwarded"
    status=$(run_curl "$d/2a.body" "$d/2a.headers" "$cmd_allowed")
    body=$(cat "$d/2a.body" 2>/dev/null || true)
    if [[ $status != 200 ]]; then
        fail "$what" "status $status" "$body"
    elif [[ $body != *'"note": "fake Databricks workspace:'* ]]; then
        fail "$what" "the answer is not the workspace's echo" "$body"
    elif [[ $(json_field "$d/2a.body" x-forwarded-user) != alice ]]; then
        fail "$what" "echo has no X-Forwarded-User: alice" "$body"
    elif [[ ! $(json_field "$d/2a.body" authorization) =~ ^Bearer\ dbx-demo-sp-[0-9]+$ ]]; then
        fail "$what" "upstream Authorization is not the fake Databricks token" "$body"
    elif [[ -z $A ]] || grep -qF "$A" "$d/2a.body" || grep -qF "${A%%.*}" "$d/2a.body"; then
        fail "$what" "the caller's token (or its header) reached the upstream" "$body"
    else
        pass "$what"
    fi

    what="2b alice invokes route-optimized $RO_ENDPOINT at the same gateway URL: 200 from its data plane, with a token scoped to it"
    status=$(run_curl "$d/2b.body" "$d/2b.headers" "$cmd_route_optimized")
    body=$(cat "$d/2b.body" 2>/dev/null || true)
    if [[ $status != 200 ]]; then
        fail "$what" "status $status" "$body"
    elif [[ $body != *"\"note\": \"fake Databricks DATA PLANE of route-optimized endpoint $RO_ENDPOINT:"* ]]; then
        fail "$what" "the answer is not the data plane's echo" "$body"
    elif [[ $body != *"\"path\": \"$ro_path\""* || $body != *"\"tls_sni\": \"$ro_host\""* ||
        $(json_field "$d/2b.body" host) != "$ro_authority" ]]; then
        fail "$what" "not sent to $ro_path at $ro_authority (path, TLS SNI, Host)" "$body"
    elif [[ ! $(json_field "$d/2b.body" authorization) =~ ^Bearer\ dbx-demo-dp-$RO_ENDPOINT-[0-9]+$ ]]; then
        fail "$what" "upstream Authorization is not a data-plane token scoped to $RO_ENDPOINT" "$body"
    elif [[ $(json_field "$d/2b.body" x-forwarded-user) != alice ]]; then
        fail "$what" "echo has no X-Forwarded-User: alice" "$body"
    elif [[ -z $A ]] || grep -qF "$A" "$d/2b.body" || grep -qF "${A%%.*}" "$d/2b.body"; then
        fail "$what" "the caller's token (or its header) reached the upstream" "$body"
    else
        pass "$what"
    fi

    what="3  bob invokes model serving: 403 no_matching_rule"
    status=$(run_curl "$d/3.body" "$d/3.headers" "$cmd_refused")
    body=$(cat "$d/3.body" 2>/dev/null || true)
    if [[ $status == 403 && $body == *no_matching_rule* ]]; then
        pass "$what"
    else
        fail "$what" "status $status" "$body"
    fi

    what="4  no token: 401 with WWW-Authenticate: Bearer"
    status=$(run_curl "$d/4.body" "$d/4.headers" "$cmd_no_token")
    local challenge
    challenge=$(header_value "$d/4.headers" www-authenticate)
    if [[ $status == 401 && $challenge == Bearer* ]]; then
        pass "$what ($challenge)"
    else
        fail "$what" "status $status, WWW-Authenticate ${challenge:-absent}" "$(cat "$d/4.headers" "$d/4.body" 2>/dev/null)"
    fi

    what="5  spoofed X-Forwarded-User / X_Forwarded_User headers are stripped"
    status=$(run_curl "$d/5.body" "$d/5.headers" "$cmd_spoofed")
    body=$(cat "$d/5.body" 2>/dev/null || true)
    if [[ $status == 200 && $body == *'"path": "/healthz"'* && $body != *admin* &&
        -z $(json_field "$d/5.body" x-forwarded-user) && -z $(json_field "$d/5.body" x_forwarded_user) ]]; then
        pass "$what"
    else
        fail "$what" "status $status" "$body"
    fi

    what="6  idgate explain for bob's request: exit 1, reason no_matching_rule"
    local rc=0
    B=$B bash -c "${cmd_explain%%;*}" >"$d/6.out" 2>"$d/6.err" || rc=$?
    if [[ $rc == 1 ]] && grep -q '"no_matching_rule"' "$d/6.out"; then
        pass "$what"
    else
        fail "$what" "exit status $rc" "$(cat "$d/6.out" "$d/6.err")"
    fi

    what="7  bob reads the workspace API with his own exchanged Databricks token"
    status=$(run_curl "$d/7.body" "$d/7.headers" "$cmd_analyst")
    body=$(cat "$d/7.body" 2>/dev/null || true)
    if [[ $status != 200 ]]; then
        fail "$what" "status $status" "$body"
    elif [[ ! $(json_field "$d/7.body" authorization) =~ ^Bearer\ dbx-demo-user-bob-[0-9]+$ ]]; then
        fail "$what" "upstream Authorization is not bob's exchanged token" "$body"
    elif [[ -z $B ]] || grep -qF "$B" "$d/7.body"; then
        fail "$what" "bob's IdP token reached the upstream" "$body"
    else
        pass "$what"
    fi
}

if [[ $mode == check ]]; then
    say "demo up in $up_time (HAProxy $haproxy_version, ${haproxy_cfg#"$root"/}); running the checks"
    run_checks
    printf 'quickstart --check: %d passed, %d failed (demo up in %s)\n' "$passed" "$failed" "$up_time"
    if ((failed)); then
        for i in "${!names[@]}"; do tail_log "${names[i]}" "${logs[i]}"; done
        exit 1
    fi
    exit 0
fi

print_commands
# Run until Ctrl-C, or until a component dies (then say which, and stop the rest).
while :; do
    wait -n 2>/dev/null || true
    for i in "${!pids[@]}"; do
        if ! alive "${pids[i]}"; then
            tail_log "${names[i]}" "${logs[i]}"
            die "${names[i]} exited unexpectedly (log above); stopping the demo"
        fi
    done
done
