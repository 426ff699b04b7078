#!/usr/bin/env bash
# Fleet benchmark (docs/fleet.md): two HAProxy nodes sharing the rate limit through peers, each
# in front of a pool of two idgate agents, against one node with one agent. Both run the
# SHIPPED configuration (haproxy/haproxy.cfg for 2.6/3.0, haproxy-3.x.cfg for 3.2+) through its
# environment variables; the Databricks upstream is a local HAProxy answering 200 over TLS
# (certificate verified, as in production). wrk drives each node with the cached token.
#
#   benches/fleet.sh                                   # HAProxy 2.6, 10 s per setup
#   HAPROXY=/usr/local/bin/haproxy34 DURATION=20s CONNS=64 benches/fleet.sh
#   SKIP_BUILD=1 BIN_DIR=target/debug DURATION=3s benches/fleet.sh   # smoke run
#
# Output: req/s of each setup (the fleet: the sum over both nodes, wrk on both at once) and
# their ratio. On a machine with few cores every process shares them: the ratio then shows the
# fleet's overhead, not its scaling; give each node and agent its own host (or cores) to
# measure scaling. Exit status 1 on any non-2xx answer, socket error or failed check.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
WRK_THREADS=${WRK_THREADS:-1}
PORT_BASE=${PORT_BASE:-19300}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
SKIP_BUILD=${SKIP_BUILD:-0}
BIN_DIR=${BIN_DIR:-$ROOT/target/release}

# A model-serving invocation: counted in the per-identity rate limit (a limit no run reaches),
# which the fleet's nodes share through peers.
BENCH_PATH=/serving-endpoints/bench/invocations

WORK=$(mktemp -d /tmp/idgate-fleet.XXXXXX)
LOG_TAG=fleet
# shellcheck source=benches/e2e/common.sh
source "$ROOT/benches/e2e/common.sh"

PORT_JWKS=$((PORT_BASE + 1)) PORT_UPSTREAM=$((PORT_BASE + 2)) PORT_LOG=$((PORT_BASE + 3))
AGENT1=$((PORT_BASE + 11)) AGENT2=$((PORT_BASE + 12)) ADMIN1=$((PORT_BASE + 21)) ADMIN2=$((PORT_BASE + 22))
FE1=$((PORT_BASE + 31)) FE2=$((PORT_BASE + 32)) STATS1=$((PORT_BASE + 41)) STATS2=$((PORT_BASE + 42))
PEER1=$((PORT_BASE + 51)) PEER2=$((PORT_BASE + 52))
for p in $PORT_JWKS $PORT_UPSTREAM $AGENT1 $AGENT2 $ADMIN1 $ADMIN2 $FE1 $FE2 $STATS1 $STATS2 \
  $PEER1 $PEER2; do
  port_free "$p" || die "port $p is in use (set PORT_BASE)"
done
command -v wrk >/dev/null || die "wrk is not installed"
[[ -x $HAPROXY ]] || die "no HAProxy at $HAPROXY"
case $("$HAPROXY" -v | head -1) in
  "HAProxy version 2.6."* | "HAProxy version 3.0."*) CFG=$ROOT/haproxy/haproxy.cfg ;;
  *) CFG=$ROOT/haproxy/haproxy-3.x.cfg ;;
esac

if [[ $SKIP_BUILD != 1 ]]; then
  log "building (release)"
  cargo build --release --quiet --bin idgate --example loadgen
fi
[[ -x $BIN_DIR/idgate && -x $BIN_DIR/examples/loadgen ]] ||
  die "no idgate or examples/loadgen in $BIN_DIR (cargo build --example loadgen)"

# ---- tokens, JWKS, agents ----------------------------------------------------------------------
ISSUER=https://idp.bench.invalid
AUDIENCE=idgate-bench
"$BIN_DIR/examples/loadgen" mint --out "$WORK/tokens" --alg RS256 --issuer "$ISSUER" \
  --audience "$AUDIENCE" --distinct 1 --invalid 1 2>>"$WORK/mint.log"
HOT=$(cat "$WORK/tokens/hot.jwt")
"$BIN_DIR/examples/loadgen" jwks --file "$WORK/tokens/jwks.json" --listen "127.0.0.1:$PORT_JWKS" \
  >"$WORK/jwks.log" 2>&1 &
PIDS+=($!)
wait_port "$PORT_JWKS" $! jwks
for i in 1 2; do
  spop_var=AGENT$i admin_var=ADMIN$i
  idgate_config "${!spop_var}" "${!admin_var}" 100000 "$ISSUER" "$AUDIENCE" off "$PORT_JWKS" \
    >"$WORK/idgate$i.toml"
  # The model-serving path, so that every request is counted in the per-identity rate limit
  # (and, in the fleet, sent to the peer).
  printf '\n[[rule]]\nname = "serving"\npaths = ["/serving-endpoints/*/invocations"]\ngroups = ["bench"]\n' \
    >>"$WORK/idgate$i.toml"
  "$BIN_DIR/idgate" run -c "$WORK/idgate$i.toml" --log-format text >"$WORK/idgate$i.log" 2>&1 &
  PIDS+=($!)
  wait_ready "${!admin_var}" $! "idgate$i"
done

# ---- the upstream: HAProxy answering 200 over TLS, certificate for bench.local ---------------
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bench.local \
  -addext subjectAltName=DNS:bench.local -keyout "$WORK/up.key" -out "$WORK/up.crt" 2>/dev/null
cat "$WORK/up.crt" "$WORK/up.key" >"$WORK/up.pem"
cat >"$WORK/upstream.cfg" <<EOF
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend upstream
    bind 127.0.0.1:$PORT_UPSTREAM ssl crt $WORK/up.pem
    http-request return status 200 content-type text/plain string "ok"
EOF
"$HAPROXY" -db -f "$WORK/upstream.cfg" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$PORT_UPSTREAM" $! upstream

# ---- the gateways: the shipped configuration ---------------------------------------------------
# node N [extra VAR=value...]: starts gateway node N (frontend FE<N>, stats STATS<N>).
node() {
  local n=$1 fe stats
  shift
  fe=FE$n stats=STATS$n
  env IDGATE_HAPROXY_UNPRIVILEGED=1 IDGATE_HAPROXY_LOG="127.0.0.1:$PORT_LOG" \
    IDGATE_FRONTEND_BIND="127.0.0.1:${!fe}" IDGATE_STATS_BIND="127.0.0.1:${!stats}" \
    IDGATE_STATS_SOCKET="$WORK/admin$n.sock" IDGATE_SPOE_CONF="$ROOT/haproxy/idgate.spoe.conf" \
    IDGATE_AGENT_ADDR="127.0.0.1:$AGENT1" IDGATE_DATABRICKS_HOST=bench.local \
    IDGATE_DATABRICKS_ADDR="127.0.0.1:$PORT_UPSTREAM" IDGATE_DATABRICKS_CA_FILE="$WORK/up.crt" \
    IDGATE_SERVING_RATE_LIMIT=1000000000 \
    "$@" "$HAPROXY" -db -f "$CFG" >"$WORK/node$n.log" 2>&1 &
  NODE_PID=$!
  PIDS+=($NODE_PID)
  wait_ready "${!stats}" $NODE_PID "node$n"
}
runtime_api() { # admin-socket command: HAProxy's answer on stdout
  python3 - "$1" "$2" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while chunk := s.recv(65536):
    out += chunk
print(out.decode())
EOF
}
peers_up() { # admin socket: every remote peer's session established
  local remote
  remote=$(runtime_api "$1" "show peers" | grep '(remote') || return 1
  ! grep -qv 'last_status=ESTA' <<<"$remote"
}
stop_nodes() {
  local p
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}
check_200() { # port
  local got
  got=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: bench.local" \
    -H "Authorization: Bearer $HOT" "http://127.0.0.1:$1$BENCH_PATH")
  [[ $got == 200 ]] || die "port $1 answered $got to the valid token (logs in $WORK)"
}
wrk_on() { # port out-file
  wrk -t "$WRK_THREADS" -c "$CONNS" -d "$DURATION" -H "Host: bench.local" \
    -H "Authorization: Bearer $HOT" "http://127.0.0.1:$1$BENCH_PATH" >"$2" 2>&1
}
req_s() { # wrk output file; dies on errors
  grep -q "Non-2xx\|Socket errors" "$1" && die "errors in $(basename "$1"): $(cat "$1")"
  awk '/^Requests\/sec:/ { print $2 }' "$1"
}

log "one node, one agent ($("$HAPROXY" -v | head -1 | cut -d' ' -f3), $(basename "$CFG"))"
node 1
check_200 "$FE1"
wrk_on "$FE1" "$WORK/single.txt"
SINGLE=$(req_s "$WORK/single.txt")
stop_nodes "$NODE_PID"

log "two nodes (peers), two agents each"
decisions() { # agent number
  local admin_var=ADMIN$1
  curl -s "http://127.0.0.1:${!admin_var}/metrics" |
    awk '/^idgate_decisions_total/ { s += $NF } END { printf "%d\n", s }'
}
BEFORE=([1]=$(decisions 1) [2]=$(decisions 2))
FLEET_ENV=(IDGATE_AGENT2_ADDR="127.0.0.1:$AGENT2"
  IDGATE_PEER1_NAME=node1 IDGATE_PEER1_ADDR="127.0.0.1:$PEER1"
  IDGATE_PEER2_NAME=node2 IDGATE_PEER2_ADDR="127.0.0.1:$PEER2")
node 1 "${FLEET_ENV[@]}" IDGATE_PEER_NAME=node1
N1=$NODE_PID
node 2 "${FLEET_ENV[@]}" IDGATE_PEER_NAME=node2
N2=$NODE_PID
for ((i = 0; i < READY_SECS * 10; i++)); do
  peers_up "$WORK/admin1.sock" && peers_up "$WORK/admin2.sock" && break
  sleep 0.1
done
((i < READY_SECS * 10)) || die "the peers did not connect within ${READY_SECS}s"
check_200 "$FE1"
check_200 "$FE2"
wrk_on "$FE1" "$WORK/fleet1.txt" &
W1=$!
wrk_on "$FE2" "$WORK/fleet2.txt" &
W2=$!
wait $W1 $W2
F1=$(req_s "$WORK/fleet1.txt")
F2=$(req_s "$WORK/fleet2.txt")
# node1 holds node2's counts (peers at work): the caller's entry, with a rate.
runtime_api "$WORK/admin1.sock" "show table idgate_peers/rate_node2" | grep -q 'http_req_rate(10000)=[1-9]' ||
  die "node1 never received node2's counts: $(runtime_api "$WORK/admin1.sock" "show table idgate_peers/rate_node2")"
stop_nodes "$N1" "$N2"
for i in 1 2; do
  decided=$(($(decisions $i) - ${BEFORE[$i]}))
  ((decided > 0)) || die "idgate$i decided nothing in the fleet: the pool is not balanced"
  log "idgate$i: $decided decisions in the fleet run"
done

awk -v s="$SINGLE" -v a="$F1" -v b="$F2" -v d="$DURATION" -v c="$CONNS" 'BEGIN {
  printf "| setup (%s, %d connections per node) | req/s |\n|---|---:|\n", d, c
  printf "| one node, one agent | %.0f |\n", s
  printf "| two nodes (peers), two agents: node1 + node2 | %.0f + %.0f = %.0f |\n", a, b, a + b
  printf "| ratio | %.2fx |\n", (a + b) / s
}'
