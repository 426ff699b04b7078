#!/usr/bin/env bash
# The agent alone, without HAProxy: the loadgen plays HAProxy against idgate (and the null agent)
# on loopback, every ACK checked.
#
#   benches/e2e/agent.sh
#   DURATION=20s CONNS=8 DEPTH=20 benches/e2e/agent.sh
#
# Runs, each with the agent pinned to AGENT_CPUS with TOKIO_WORKER_THREADS = its CPU count and
# the loadgen pinned to LOADGEN_CPUS (defaults: agent on CPU 1, loadgen on CPU 0):
#   null         the null agent, hot token: the SPOP/shell floor
#   hot          idgate, one cached RS256 token (target: >= 250k decisions/s on one core and
#                < 4 us agent CPU per decision)
#   mix          idgate, 89% hot, 10% of 1000 distinct cached tokens, 1% invalid signatures
#                (full RS256 check each, never cached)
#   coldmix      idgate, half hot, half invalid signatures (a full RS256 check each): the hot
#                requests' own latency (column "hot p99") shows whether cached answers wait
#                behind signature checks on the same connection
#   fill         idgate, 100k distinct EdDSA tokens sent once each: RSS with 100k cached
#                identities (target < 150 MB); idle RSS is read right after startup (< 20 MB)
#
# Output: a Markdown report on stdout and in $OUT/agent.md; loadgen JSON in $OUT/agent-*.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-4}
DEPTH=${DEPTH:-16}
FILL=${FILL:-100000}
RUNS=${RUNS:-null hot mix coldmix fill}
PORT_BASE=${PORT_BASE:-19400}
OUT=${OUT:-$ROOT/target/bench-e2e}
NPROC=$(nproc)
if ((NPROC >= 2)); then
  : "${AGENT_CPUS:=1}" "${LOADGEN_CPUS:=0}"
else
  : "${AGENT_CPUS:=}" "${LOADGEN_CPUS:=}"
fi
SPOP=$((PORT_BASE + 1)) ADMIN=$((PORT_BASE + 2)) JWKS=$((PORT_BASE + 3)) NULLP=$((PORT_BASE + 4))
WORK=$(mktemp -d /tmp/idgate-agent.XXXXXX)
LOG_TAG=agent
# shellcheck source=benches/e2e/common.sh
source "$ROOT/benches/e2e/common.sh"

cargo build --release --quiet --bin idgate --example loadgen --example null_agent
BIN=$ROOT/target/release
LOADGEN=$BIN/examples/loadgen
ISSUER=https://idp.bench.invalid
log "minting tokens (1000 RS256, $FILL EdDSA)"
"$LOADGEN" mint --out "$WORK/rs" --alg RS256 --kid rs-1 --issuer "$ISSUER" --distinct 1000 \
  --invalid 100 2>/dev/null
"$LOADGEN" mint --out "$WORK/ed" --alg EdDSA --kid ed-1 --issuer "$ISSUER" --distinct "$FILL" \
  --invalid 0 2>/dev/null
python3 -c 'import json,sys; print(json.dumps({"keys": [k for f in sys.argv[1:] for k in json.load(open(f))["keys"]]}))' \
  "$WORK/rs/jwks.json" "$WORK/ed/jwks.json" >"$WORK/jwks.json"
"$LOADGEN" jwks --file "$WORK/jwks.json" --listen "127.0.0.1:$JWKS" >/dev/null &
PIDS+=($!)
wait_port "$JWKS" $! jwks
idgate_config "$SPOP" "$ADMIN" $((FILL + 10000)) "$ISSUER" idgate-bench off "$JWKS" >"$WORK/idgate.toml"

export TOKIO_WORKER_THREADS
TOKIO_WORKER_THREADS=$(cpu_count "$AGENT_CPUS")
spawn "$AGENT_CPUS" "$BIN/examples/null_agent" "127.0.0.1:$NULLP" 2>"$WORK/null.log"
NULL_PID=$!
PIDS+=($NULL_PID)
spawn "$AGENT_CPUS" "$BIN/idgate" run -c "$WORK/idgate.toml" --log-format text 2>"$WORK/idgate.log"
IDGATE_PID=$!
PIDS+=($IDGATE_PID)
wait_port "$NULLP" $NULL_PID null
[[ $(cat "/proc/$IDGATE_PID/comm") == idgate ]] || die "PID $IDGATE_PID is not idgate"
wait_ready "$ADMIN" "$IDGATE_PID" idgate
IDLE_RSS=$(rss_kib "$IDGATE_PID")
mkdir -p "$OUT"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

run() { # name target pid args...
  local name=$1 target=$2 pid=$3
  shift 3
  log "run $name"
  pin "$LOADGEN_CPUS" "$LOADGEN" run --json --target "127.0.0.1:$target" --agent-pid "$pid" \
    --connections "$CONNS" --depth "$DEPTH" "$@" >"$OUT/agent-$name.json" ||
    die "$name: checks failed: $(cat "$OUT/agent-$name.json")"
}
TIMED=(--duration "$DURATION" --warmup "$WARMUP")
for name in $RUNS; do
  case $name in
    null) run null "$NULLP" "$NULL_PID" --tokens "$WORK/rs" --expect allow-all "${TIMED[@]}" ;;
    hot) run hot "$SPOP" "$IDGATE_PID" --tokens "$WORK/rs" "${TIMED[@]}" ;;
    mix) run mix "$SPOP" "$IDGATE_PID" --tokens "$WORK/rs" --distinct-share 0.1 \
      --invalid-share 0.01 "${TIMED[@]}" ;;
    coldmix) run coldmix "$SPOP" "$IDGATE_PID" --tokens "$WORK/rs" --invalid-share 0.5 \
      "${TIMED[@]}" ;;
    fill) run fill "$SPOP" "$IDGATE_PID" --tokens "$WORK/ed" --distinct-share 1 \
      --order sequential --max-requests "$FILL" ;;
    *) die "unknown run $name" ;;
  esac
done
FILLED_RSS=$(rss_kib "$IDGATE_PID")
CACHED=$(curl -s "http://127.0.0.1:$ADMIN/metrics" |
  awk '$1 ~ /^idgate_token_cache_requests_total\{result="miss"\}/ { print $2 }')

{
  echo "## Agent alone ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "- machine: $NPROC CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo);" \
    "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- agent CPUs '${AGENT_CPUS:-any}' (TOKIO_WORKER_THREADS=$TOKIO_WORKER_THREADS)," \
    "loadgen CPUs '${LOADGEN_CPUS:-any}' (1 thread); $CONNS connections x $DEPTH in flight;" \
    "$DURATION measured after $WARMUP warm-up"
  echo
  echo "| run | decisions/s | p50 µs | p99 µs | hot p99 µs | agent CPU µs/decision | agent CPU share | loadgen CPU share |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for name in $RUNS; do
    python3 - "$OUT/agent-$name.json" "$name" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
share = (s["agent_cpu_seconds"] or 0) / s["seconds"]
print(f'| {sys.argv[2]} | {s["decisions_per_sec"]:.0f} | {s["latency_us"]["p50"]:.0f} | '
      f'{s["latency_us"]["p99"]:.0f} | {s["hot_latency_us"]["p99"]:.0f} | '
      f'{s["agent_cpu_us_per_decision"]:.2f} | {share:.0%} | '
      f'{s["loadgen_cpu_share"]:.0%} |')
PY
  done
  echo
  echo "- idgate RSS: $IDLE_RSS KiB ($((IDLE_RSS * 1024 / 1000000)) MB) idle after start;" \
    "$FILLED_RSS KiB ($((FILLED_RSS * 1024 / 1000000)) MB) after the runs ($RUNS), with $FILL" \
    "distinct identities cached" \
    "(token cache misses so far: ${CACHED:-?})"
} | tee "$OUT/agent.md"
