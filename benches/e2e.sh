#!/usr/bin/env bash
# End-to-end authorization benchmark: HAProxy (one thread) with idgate vs HAProxy's native
# jwt_verify vs the null agents vs no authorization at all, driven by wrk.
#
#   benches/e2e.sh                       # HAProxy 2.6, hot and cold variants, 3 rounds of 10 s
#   WITH_HAPROXY30=1 WITH_HAPROXY32=1 WITH_HAPROXY34=1 benches/e2e.sh   # also HAProxy 3.0, 3.2, 3.4
#   ROUNDS=5 DURATION=20s CONNS=64 benches/e2e.sh
#
# Frontends (benches/e2e/haproxy.cfg), each answering 200 itself so that only authorization
# is measured: noauth (a), jwt (b: alg/iss/aud/exp + jwt_verify RS256), null (c: SPOE to the
# Rust null agent, examples/null_agent.rs, answering allow/status/reason), nullid (c'': the same
# null agent answering every variable idgate answers for the hot token: sub, email, groups,
# issuer, rule, principal), spoa (c': SPOE to HAProxy's own C example agent, spoa_example, built
# by scripts/build-spoa-example.sh), idgate (d: SPOE to idgate, token cache on), cold (d':
# idgate, token cache off). The null agents answer every NOTIFY at once.
#
# Why nullid: HAProxy's cost per request grows with the variables the answer sets (each is a
# name lookup and an allocation in HAProxy). idgate / nullid is idgate's own overhead at the
# same answer; idgate / null adds HAProxy's cost of applying the identity variables.
#
# Variants:
#   hot   every request carries the same RS256 token (wrk -H): idgate answers from its
#         validated-token cache; jwt_verify checks the signature every time (it has no cache).
#   cold  every request carries the next of COLD_TOKENS distinct tokens (wrk + tokens.lua);
#         the idgate frontend is replaced by `cold` (cache off): a full RS256 check per request
#         on both sides.
#   mix   two wrk at once on the same frontend: CONNS - MIX_COLD_CONNS connections send the
#         hot token, MIX_COLD_CONNS (default 5) tokens with a broken signature (a full RS256
#         check each, never cached, answered 401). Frontends: jwt and `mix` (idgate with its cache on, on
#         COLD_AGENT_CPUS like the cold one). Each round first runs the hot half alone, so the
#         report shows whether cached answers wait behind the signature checks HAProxy sends
#         on the same agent connections: hot p99 alone, hot p99 in the mix, cold p99 in the mix.
#   serving  the payload checks (docs/payload.md) and what they cost everything else, all
#         with the hot token on the cached idgate: GET /bench/resource through bench_idgate
#         (`idgate`) and through bench_serving (`srvget`), a frontend with the shipped
#         haproxy.cfg's serving branch (path regex, wait-for-body, authorize-serving); a POST of
#         a SERVING_BODY_BYTES dataframe_split body to a serving path sent without its body
#         (`nobody`, bench_idgate), with its body to a rule without payload checks (`srvpost`),
#         with `payload = "serving"` (`srvformat`), and with a JSON Schema file too
#         (`srvschema`).
#
# Rounds interleave the frontends (round 1: a b c d, round 2: a b c d, ...) so that a change of
# background load hits all of them alike; the report gives the median over rounds.
#
# CPU placement (override with HAPROXY_CPUS, AGENT_CPUS, WRK_CPUS; taskset lists):
#   >= 4 CPUs: HAProxy 0, agents 1, wrk 2-3
#   2 CPUs:    HAProxy 0, agents 1, wrk 1 (wrk shares the agent's CPU: conservative for idgate)
#   1 CPU:     no pinning
# Agents run with TOKIO_WORKER_THREADS = number of CPUs in AGENT_CPUS; the cold idgate on
# COLD_AGENT_CPUS (default: all CPUs), with as many workers.
#
# CPU per request: utime+stime deltas from /proc/PID/stat (10 ms ticks) around each wrk run,
# divided by the requests wrk completed. SYSCALLS=1 also counts system calls per request of
# HAProxy and of the agent (`perf stat -e raw_syscalls:sys_enter`, all threads; needs perf and
# root or perf_event_paranoid <= 1): how well reads and writes are batched.
#
# Output: a Markdown report on stdout and in $OUT/report.md, raw rows in $OUT/runs.tsv.
# Exit status 1 if any run had non-2xx responses or socket errors, or a sanity check failed.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-50}
WRK_THREADS=${WRK_THREADS:-1}
VARIANTS=${VARIANTS:-hot cold}
COLD_TOKENS=${COLD_TOKENS:-2000}
MIX_TOKENS=${MIX_TOKENS:-500}
MIX_COLD_CONNS=${MIX_COLD_CONNS:-5}
SERVING_BODY_BYTES=${SERVING_BODY_BYTES:-2048}
PORT_BASE=${PORT_BASE:-19100}
HAPROXY26=${HAPROXY26:-/usr/sbin/haproxy}
HAPROXY30=${HAPROXY30:-/usr/local/bin/haproxy30}
WITH_HAPROXY30=${WITH_HAPROXY30:-0}
HAPROXY32=${HAPROXY32:-/usr/local/bin/haproxy32}
WITH_HAPROXY32=${WITH_HAPROXY32:-0}
HAPROXY34=${HAPROXY34:-/usr/local/bin/haproxy34}
WITH_HAPROXY34=${WITH_HAPROXY34:-0}
OUT=${OUT:-$ROOT/target/bench-e2e}
IDGATE_BENCH_AUDIT=${IDGATE_BENCH_AUDIT:-off}
SYSCALLS=${SYSCALLS:-0}

NPROC=$(nproc)
if ((NPROC >= 4)); then
  : "${HAPROXY_CPUS:=0}" "${AGENT_CPUS:=1}" "${WRK_CPUS:=2-$((NPROC - 1))}"
elif ((NPROC >= 2)); then
  : "${HAPROXY_CPUS:=0}" "${AGENT_CPUS:=1}" "${WRK_CPUS:=1}"
else
  : "${HAPROXY_CPUS:=}" "${AGENT_CPUS:=}" "${WRK_CPUS:=}"
fi

PORT_NOAUTH=$((PORT_BASE + 1)) PORT_JWT=$((PORT_BASE + 2)) PORT_NULL=$((PORT_BASE + 3))
PORT_IDGATE=$((PORT_BASE + 4)) PORT_COLD=$((PORT_BASE + 5)) PORT_SPOA=$((PORT_BASE + 6))
PORT_NULLID=$((PORT_BASE + 7)) AGENT_NULLID=$((PORT_BASE + 15))
PORT_MIX=$((PORT_BASE + 8)) AGENT_MIX=$((PORT_BASE + 16)) ADMIN_MIX=$((PORT_BASE + 23))
PORT_SERVING=$((PORT_BASE + 9))
AGENT_NULL=$((PORT_BASE + 11)) AGENT_IDGATE=$((PORT_BASE + 12)) AGENT_COLD=$((PORT_BASE + 13))
AGENT_SPOA=$((PORT_BASE + 14))
ADMIN_IDGATE=$((PORT_BASE + 21)) ADMIN_COLD=$((PORT_BASE + 22)) PORT_JWKS=$((PORT_BASE + 30))

WORK=$(mktemp -d /tmp/idgate-e2e.XXXXXX)
LOG_TAG=e2e
# shellcheck source=benches/e2e/common.sh
source "$ROOT/benches/e2e/common.sh"
AGENT_THREADS=$(cpu_count "$AGENT_CPUS")
: "${COLD_AGENT_CPUS:=$( ((NPROC >= 2)) && echo "0-$((NPROC - 1))")}"

for p in $PORT_NOAUTH $PORT_JWT $PORT_NULL $PORT_IDGATE $PORT_COLD $PORT_SPOA $AGENT_NULL \
  $AGENT_IDGATE $AGENT_COLD $AGENT_SPOA $ADMIN_IDGATE $ADMIN_COLD $PORT_JWKS $PORT_NULLID \
  $AGENT_NULLID $PORT_MIX $AGENT_MIX $ADMIN_MIX $PORT_SERVING; do
  port_free "$p" || die "port $p is in use (set PORT_BASE)"
done
command -v wrk >/dev/null || die "wrk is not installed"
if [[ $SYSCALLS == 1 ]]; then
  perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1 ||
    die "SYSCALLS=1 needs perf with access to the raw_syscalls tracepoints"
fi
[[ -x $HAPROXY26 ]] || die "no HAProxy 2.6 at $HAPROXY26"
HAPROXIES=("2.6:$HAPROXY26")
if [[ $WITH_HAPROXY30 == 1 ]]; then
  [[ -x $HAPROXY30 ]] || die "no HAProxy 3.0 at $HAPROXY30"
  HAPROXIES+=("3.0:$HAPROXY30")
fi
if [[ $WITH_HAPROXY32 == 1 ]]; then
  [[ -x $HAPROXY32 ]] || die "no HAProxy 3.2 at $HAPROXY32"
  HAPROXIES+=("3.2:$HAPROXY32")
fi
if [[ $WITH_HAPROXY34 == 1 ]]; then
  [[ -x $HAPROXY34 ]] || die "no HAProxy 3.4 at $HAPROXY34"
  HAPROXIES+=("3.4:$HAPROXY34")
fi

log "building (release)"
cargo build --release --quiet --bin idgate --example loadgen --example null_agent
BIN=$ROOT/target/release
SPOA=$(bash "$ROOT/scripts/build-spoa-example.sh")
LOADGEN=$BIN/examples/loadgen

# ---- tokens, keys, JWKS --------------------------------------------------------------------
ISSUER=https://idp.bench.invalid
AUDIENCE=idgate-bench
"$LOADGEN" mint --out "$WORK/tokens" --alg RS256 --issuer "$ISSUER" --audience "$AUDIENCE" \
  --distinct "$COLD_TOKENS" --invalid "$MIX_TOKENS" 2>>"$WORK/mint.log"
openssl pkey -in "$ROOT/tests/fixtures/keys/rsa1.pem" -pubout -out "$WORK/pubkey.pem" 2>/dev/null
HOT=$(cat "$WORK/tokens/hot.jwt")
BAD=$(head -1 "$WORK/tokens/invalid.txt")

"$LOADGEN" jwks --file "$WORK/tokens/jwks.json" --listen "127.0.0.1:$PORT_JWKS" \
  >"$WORK/jwks.log" 2>&1 &
PIDS+=($!)
wait_port "$PORT_JWKS" $! jwks

idgate_config "$AGENT_IDGATE" "$ADMIN_IDGATE" 100000 "$ISSUER" "$AUDIENCE" "$IDGATE_BENCH_AUDIT" \
  "$PORT_JWKS" >"$WORK/idgate.toml"
idgate_config "$AGENT_COLD" "$ADMIN_COLD" 0 "$ISSUER" "$AUDIENCE" "$IDGATE_BENCH_AUDIT" \
  "$PORT_JWKS" >"$WORK/idgate-cold.toml"
idgate_config "$AGENT_MIX" "$ADMIN_MIX" 100000 "$ISSUER" "$AUDIENCE" "$IDGATE_BENCH_AUDIT" \
  "$PORT_JWKS" >"$WORK/idgate-mix.toml"
# The serving variant's body, schema and rules (on the cached idgate, after the bench rule).
python3 - "$SERVING_BODY_BYTES" "$WORK" <<'PY'
import json, sys
want, work = int(sys.argv[1]), sys.argv[2]
cols = [f"f{i}" for i in range(8)]
rows = []
while len(json.dumps({"dataframe_split": {"columns": cols, "data": rows}})) < want:
    rows.append([round(0.125 * (len(rows) + i), 3) for i in range(8)])
json.dump({"dataframe_split": {"columns": cols, "data": rows}}, open(f"{work}/body.json", "w"))
json.dump({"dataframe_split": {"columns": cols, "data": [["x"] * 8]}}, open(f"{work}/body-schema-bad.json", "w"))
open(f"{work}/body-bad.json", "w").write('{"dataframe_split": {"data": [[1]], "data": [[2]]}}')
json.dump({"type": "object", "required": ["dataframe_split"], "properties": {"dataframe_split": {
    "type": "object", "required": ["data"], "properties": {
        "columns": {"type": "array", "items": {"enum": cols}},
        "data": {"type": "array", "items": {"type": "array", "minItems": 8, "maxItems": 8,
                                            "items": {"type": "number"}}}}}}},
          open(f"{work}/schema.json", "w"))
PY
for name in plain format schema; do
  echo "[[rule]]"
  echo "name = \"serving-$name\""
  echo 'methods = ["POST"]'
  echo "paths = [\"/serving-endpoints/$name/invocations\"]"
  echo 'groups = ["bench"]'
  [[ $name != plain ]] && echo 'payload = "serving"'
  [[ $name == schema ]] && echo "payload_schema = \"$WORK/schema.json\""
  echo
done >>"$WORK/idgate.toml"
"$BIN/idgate" check-config -c "$WORK/idgate.toml" >/dev/null

# ---- agents --------------------------------------------------------------------------------
export TOKIO_WORKER_THREADS=$AGENT_THREADS
spawn "$AGENT_CPUS" "$BIN/examples/null_agent" "127.0.0.1:$AGENT_NULL" >"$WORK/null.log" 2>&1
NULL_PID=$!
PIDS+=($NULL_PID)
NULL_AGENT_IDENTITY=1 spawn "$AGENT_CPUS" "$BIN/examples/null_agent" "127.0.0.1:$AGENT_NULLID" \
  >"$WORK/nullid.log" 2>&1
NULLID_PID=$!
PIDS+=($NULLID_PID)
# HAProxy's C example agent: one worker thread per agent CPU, pipelining like the Rust one.
spawn "$AGENT_CPUS" "$SPOA" -p "$AGENT_SPOA" -n "$AGENT_THREADS" -c pipelining >"$WORK/spoa.log" 2>&1
SPOA_PID=$!
PIDS+=($SPOA_PID)
spawn "$AGENT_CPUS" "$BIN/idgate" run -c "$WORK/idgate.toml" --log-format text \
  >"$WORK/idgate.log" 2>&1
IDGATE_PID=$!
PIDS+=($IDGATE_PID)
# The cold agent may use COLD_AGENT_CPUS (default: every CPU, as an unpinned agent would):
# its signature checks spread over the runtime's workers, while jwt_verify is bound to
# HAProxy's one thread. COLD_AGENT_CPUS=$AGENT_CPUS measures it on the agents' CPU alone.
TOKIO_WORKER_THREADS=$(cpu_count "$COLD_AGENT_CPUS") \
  spawn "$COLD_AGENT_CPUS" "$BIN/idgate" run -c "$WORK/idgate-cold.toml" --log-format text \
  >"$WORK/cold.log" 2>&1
COLD_PID=$!
PIDS+=($COLD_PID)
TOKIO_WORKER_THREADS=$(cpu_count "$COLD_AGENT_CPUS") \
  spawn "$COLD_AGENT_CPUS" "$BIN/idgate" run -c "$WORK/idgate-mix.toml" --log-format text \
  >"$WORK/mix.log" 2>&1
MIX_PID=$!
PIDS+=($MIX_PID)
unset TOKIO_WORKER_THREADS
wait_port "$AGENT_NULL" $NULL_PID null
wait_port "$AGENT_NULLID" $NULLID_PID nullid
wait_port "$AGENT_SPOA" $SPOA_PID spoa
wait_ready "$ADMIN_IDGATE" $IDGATE_PID idgate
wait_ready "$ADMIN_COLD" $COLD_PID cold
wait_ready "$ADMIN_MIX" $MIX_PID mix
[[ $(cat "/proc/$IDGATE_PID/comm") == idgate ]] || die "PID $IDGATE_PID is not idgate"
IDLE_RSS=$(rss_kib $IDGATE_PID)

# ---- HAProxy ---------------------------------------------------------------------------------
export BENCH_BIND_NOAUTH=127.0.0.1:$PORT_NOAUTH BENCH_BIND_JWT=127.0.0.1:$PORT_JWT
export BENCH_BIND_NULL=127.0.0.1:$PORT_NULL BENCH_BIND_IDGATE=127.0.0.1:$PORT_IDGATE
export BENCH_BIND_COLD=127.0.0.1:$PORT_COLD BENCH_BIND_SPOA=127.0.0.1:$PORT_SPOA
export BENCH_BIND_NULLID=127.0.0.1:$PORT_NULLID BENCH_NULLID_AGENT=127.0.0.1:$AGENT_NULLID
export BENCH_BIND_MIX=127.0.0.1:$PORT_MIX BENCH_MIX_AGENT=127.0.0.1:$AGENT_MIX
export BENCH_BIND_SERVING=127.0.0.1:$PORT_SERVING
export BENCH_NULL_AGENT=127.0.0.1:$AGENT_NULL BENCH_IDGATE_AGENT=127.0.0.1:$AGENT_IDGATE
export BENCH_SPOA_AGENT=127.0.0.1:$AGENT_SPOA
export BENCH_COLD_AGENT=127.0.0.1:$AGENT_COLD
export BENCH_SPOE_CONF=$ROOT/benches/e2e/spoe.conf BENCH_PUBKEY=$WORK/pubkey.pem
export BENCH_ISSUER=$ISSUER BENCH_AUDIENCE=$AUDIENCE
export BENCH_TOKENS=$WORK/tokens/distinct.txt

declare -A FE_PORT=([noauth]=$PORT_NOAUTH [jwt]=$PORT_JWT [null]=$PORT_NULL [spoa]=$PORT_SPOA
  [idgate]=$PORT_IDGATE [cold]=$PORT_COLD [nullid]=$PORT_NULLID [mix]=$PORT_MIX
  [srvget]=$PORT_SERVING [nobody]=$PORT_IDGATE [srvpost]=$PORT_SERVING [srvformat]=$PORT_SERVING
  [srvschema]=$PORT_SERVING)
declare -A FE_AGENT=([noauth]= [jwt]= [null]=$NULL_PID [spoa]=$SPOA_PID [idgate]=$IDGATE_PID
  [cold]=$COLD_PID [nullid]=$NULLID_PID [mix]=$MIX_PID [srvget]=$IDGATE_PID [nobody]=$IDGATE_PID
  [srvpost]=$IDGATE_PID [srvformat]=$IDGATE_PID [srvschema]=$IDGATE_PID)
# The serving variant's POSTs (every other frontend: GET /bench/resource).
declare -A FE_POST=([nobody]=/serving-endpoints/plain/invocations
  [srvpost]=/serving-endpoints/plain/invocations [srvformat]=/serving-endpoints/format/invocations
  [srvschema]=/serving-endpoints/schema/invocations)
frontends_of() { # variant
  case $1 in
    hot) echo "${HOT_FRONTENDS:-noauth jwt null nullid spoa idgate}" ;;
    cold) echo "${COLD_FRONTENDS:-noauth jwt null spoa cold}" ;;
    mix) echo "${MIX_FRONTENDS:-jwt mix}" ;;
    serving) echo "${SERVING_FRONTENDS:-idgate srvget nobody srvpost srvformat srvschema}" ;;
  esac
}

status_of() { # port token
  curl -s -o /dev/null -w '%{http_code}' -H "Host: bench.local" \
    ${2:+-H "Authorization: Bearer $2"} "http://127.0.0.1:$1/bench/resource"
}
post_status() { # frontend body-file
  curl -s -o /dev/null -w '%{http_code}' -H "Host: bench.local" -H "Authorization: Bearer $HOT" \
    -H "Content-Type: application/json" --data-binary "@$2" \
    "http://127.0.0.1:${FE_PORT[$1]}${FE_POST[$1]}"
}
sanity() { # checks each frontend answers 200 to a valid token and refuses what it should
  local fe want_bad got
  for fe in noauth jwt null nullid spoa idgate cold mix; do
    got=$(status_of "${FE_PORT[$fe]}" "$HOT")
    [[ $got == 200 ]] || die "$fe answered $got to the valid token (logs in $WORK)"
    case $fe in jwt | idgate | cold | mix) want_bad=401 ;; *) want_bad=200 ;; esac
    got=$(status_of "${FE_PORT[$fe]}" "$BAD")
    [[ $got == "$want_bad" ]] || die "$fe answered $got to a bad signature, want $want_bad"
    if [[ $want_bad == 401 ]]; then
      got=$(status_of "${FE_PORT[$fe]}" "")
      [[ $got == 401 ]] || die "$fe answered $got without a token, want 401"
    fi
  done
  got=$(status_of "$PORT_COLD" "$(sed -n 7p "$BENCH_TOKENS")")
  [[ $got == 200 ]] || die "cold answered $got to a distinct token"
  # The payload checks run where the serving variant says: a duplicate key passes the rule
  # without checks and is refused by the others; a row of strings only by the schema.
  local want
  for fe in nobody srvpost srvformat srvschema; do
    got=$(post_status "$fe" "$WORK/body.json")
    [[ $got == 200 ]] || die "$fe answered $got to the serving body, want 200"
    want=401 && [[ $fe == nobody || $fe == srvpost ]] && want=200
    got=$(post_status "$fe" "$WORK/body-bad.json")
    [[ $got == "$want" ]] || die "$fe answered $got to a duplicate key, want $want"
    want=401 && [[ $fe != srvschema ]] && want=200
    got=$(post_status "$fe" "$WORK/body-schema-bad.json")
    [[ $got == "$want" ]] || die "$fe answered $got to a body against the schema, want $want"
  done
}

# to_us VALUE-WITH-UNIT (wrk prints us, ms or s)
to_us() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000;
    else if (v ~ /s$/) print n * 1000000; else print n }'
}

RUNS=$OUT/runs.tsv
mkdir -p "$OUT"
printf 'haproxy\tvariant\tround\tfrontend\treq_s\tp50_us\tp99_us\trequests\tnon2xx\tsock_err\thaproxy_us_req\tagent_us_req\thaproxy_sys_req\tagent_sys_req\n' >"$RUNS"
FAILED=0

# wrk_run MODE CONNS DURATION PORT [PATH]: wrk's output on stdout. MODE: hot (the one token),
# cold (the distinct valid tokens), bad (the tokens with a broken signature), post (the hot
# token, POST of the serving body to PATH).
wrk_run() {
  local tokens=$WORK/tokens/distinct.txt path=/bench/resource
  [[ $1 == bad ]] && tokens=$WORK/tokens/invalid.txt
  local args=(-t "$WRK_THREADS" -c "$2" -d "$3" --latency -H "Host: bench.local")
  case $1 in
    hot) args+=(-H "Authorization: Bearer $HOT") ;;
    post) args+=(-H "Authorization: Bearer $HOT" -s "$ROOT/benches/e2e/serving.lua") path=$5 ;;
    *) args+=(-s "$ROOT/benches/e2e/tokens.lua") ;;
  esac
  BENCH_TOKENS=$tokens BENCH_BODY=$WORK/body.json pin "$WRK_CPUS" wrk "${args[@]}" \
    "http://127.0.0.1:$4$path"
}
# The wrk mode of a frontend in a variant.
mode_of() { # variant frontend
  case $1 in
    mix) echo hot ;;
    serving) if [[ -n ${FE_POST[$2]:-} ]]; then echo post; else echo hot; fi ;;
    *) echo "$1" ;;
  esac
}
# record VERSION VARIANT ROUND FRONTEND WRK-OUTPUT HAPROXY-TICKS AGENT-TICKS CPU-REQUESTS WANT
# One row of runs.tsv from wrk's output. CPU ticks are divided by CPU-REQUESTS (all requests
# the processes served meanwhile); WANT is 2xx (every answer 2xx) or 401 (every answer 401).
record() {
  local v=$1 variant=$2 round=$3 fe=$4 out=$5 ht=$6 at=$7 creqs=$8 want=$9 hsys=${10:-} asys=${11:-}
  local rps p50 p99 reqs non2xx sockerr
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
  sockerr=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' <<<"$out")
  non2xx=${non2xx:-0} sockerr=${sockerr:-0}
  local hus aus=""
  hus=$(awk -v t="$ht" -v r="$creqs" 'BEGIN { printf "%.2f", t * 10000 / r }')
  [[ -n $at ]] && aus=$(awk -v t="$at" -v r="$creqs" 'BEGIN { printf "%.2f", t * 10000 / r }')
  [[ -n $hsys ]] && hsys=$(awk -v c="$hsys" -v r="$creqs" 'BEGIN { printf "%.2f", c / r }')
  [[ -n $asys ]] && asys=$(awk -v c="$asys" -v r="$creqs" 'BEGIN { printf "%.2f", c / r }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$v" "$variant" "$round" \
    "$fe" "$rps" "$p50" "$p99" "$reqs" "$non2xx" "$sockerr" "$hus" "$aus" "$hsys" "$asys" >>"$RUNS"
  log "$v $variant round $round $fe: $rps req/s, p99 ${p99}us, haproxy ${hus}us/req${aus:+, agent ${aus}us/req}, non-2xx $non2xx"
  local bad=$non2xx
  [[ $want == 401 ]] && bad=$((reqs - non2xx))
  if [[ $bad != 0 || $sockerr != 0 ]]; then
    log "  ^ $bad answers other than $want, $sockerr socket errors"
    FAILED=1
  fi
}
wrk_requests() { awk '/requests in/ { print $1 }' <<<"$1"; }

# Count system calls of PID until count_stop (SYSCALLS=1); count_read prints the count.
count_start() { # pid name
  [[ $SYSCALLS == 1 && -n $1 ]] || return 0
  perf stat -x, -e raw_syscalls:sys_enter -o "$WORK/perf-$2.csv" -p "$1" &
  COUNTERS+=($!)
}
count_stop() {
  local p
  for p in "${COUNTERS[@]}"; do kill -INT "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done
  COUNTERS=()
}
count_read() { # name
  [[ -f $WORK/perf-$1.csv ]] || return 0
  awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$WORK/perf-$1.csv"
  rm -f "$WORK/perf-$1.csv"
}
COUNTERS=()

run_wrk() { # version variant round frontend haproxy-pid
  local v=$1 variant=$2 round=$3 fe=$4 hp=$5 port=${FE_PORT[$4]} agent=${FE_AGENT[$4]}
  local h0 a0="" h1 a1="" out
  count_start "$hp" haproxy
  count_start "$agent" agent
  h0=$(cpu_ticks "$hp")
  [[ -n $agent ]] && a0=$(cpu_ticks "$agent")
  out=$(wrk_run "$(mode_of "$variant" "$fe")" "$CONNS" "$DURATION" "$port" "${FE_POST[$fe]:-}")
  h1=$(cpu_ticks "$hp")
  [[ -n $agent ]] && a1=$(cpu_ticks "$agent")
  count_stop
  record "$v" "$variant" "$round" "$fe" "$out" $((h1 - h0)) "${agent:+$((a1 - a0))}" \
    "$(wrk_requests "$out")" 2xx "$(count_read haproxy)" "$(count_read agent)"
}

# run_mix: the hot part alone (fe:hot-alone), then hot and broken-signature halves at once
# (fe:hot, fe:cold). CPU per request of the mixed run is over both parts' requests.
run_mix() { # version round frontend haproxy-pid
  local v=$1 round=$2 fe=$3 hp=$4 port=${FE_PORT[$3]} agent=${FE_AGENT[$3]}
  local hot_conns=$((CONNS - MIX_COLD_CONNS))
  local h0 a0="" h1 a1="" out cold_out cold_pid
  h0=$(cpu_ticks "$hp")
  [[ -n $agent ]] && a0=$(cpu_ticks "$agent")
  out=$(wrk_run hot "$hot_conns" "$DURATION" "$port")
  h1=$(cpu_ticks "$hp")
  [[ -n $agent ]] && a1=$(cpu_ticks "$agent")
  record "$v" mix "$round" "$fe:hot-alone" "$out" $((h1 - h0)) "${agent:+$((a1 - a0))}" \
    "$(wrk_requests "$out")" 2xx
  h0=$(cpu_ticks "$hp")
  [[ -n $agent ]] && a0=$(cpu_ticks "$agent")
  wrk_run bad "$MIX_COLD_CONNS" "$DURATION" "$port" >"$WORK/mix-cold.out" &
  cold_pid=$!
  out=$(wrk_run hot "$hot_conns" "$DURATION" "$port")
  wait "$cold_pid" || die "the broken-signature wrk failed"
  h1=$(cpu_ticks "$hp")
  [[ -n $agent ]] && a1=$(cpu_ticks "$agent")
  cold_out=$(cat "$WORK/mix-cold.out")
  local total=$(($(wrk_requests "$out") + $(wrk_requests "$cold_out")))
  record "$v" mix "$round" "$fe:hot" "$out" $((h1 - h0)) "${agent:+$((a1 - a0))}" "$total" 2xx
  record "$v" mix "$round" "$fe:cold" "$cold_out" $((h1 - h0)) "${agent:+$((a1 - a0))}" \
    "$total" 401
}

for hv in "${HAPROXIES[@]}"; do
  version=${hv%%:*} binary=${hv#*:}
  "$binary" -c -q -f "$ROOT/benches/e2e/haproxy.cfg" || die "HAProxy $version rejects the config"
  spawn "$HAPROXY_CPUS" "$binary" -db -f "$ROOT/benches/e2e/haproxy.cfg" >"$WORK/haproxy-$version.log" 2>&1
  HP=$!
  PIDS+=($HP)
  wait_port "$PORT_COLD" $HP "haproxy-$version"
  sanity
  log "HAProxy $version: sanity checks passed; warming up"
  for variant in $VARIANTS; do
    for fe in $(frontends_of "$variant"); do
      wrk_run "$(mode_of "$variant" "$fe")" "$CONNS" "$WARMUP" "${FE_PORT[$fe]}" \
        "${FE_POST[$fe]:-}" >/dev/null
    done
  done
  for ((round = 1; round <= ROUNDS; round++)); do
    for variant in $VARIANTS; do
      for fe in $(frontends_of "$variant"); do
        if [[ $variant == mix ]]; then
          run_mix "$version" "$round" "$fe" "$HP"
        else
          run_wrk "$version" "$variant" "$round" "$fe" "$HP"
        fi
      done
    done
  done
  kill -TERM "$HP"
  wait "$HP" 2>/dev/null || true
done
LOADED_RSS=$(rss_kib $IDGATE_PID)

# ---- report ----------------------------------------------------------------------------------
{
  echo "## End-to-end benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "- machine: $NPROC CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo);" \
    "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- placement: HAProxy CPUs '${HAPROXY_CPUS:-any}', agents '${AGENT_CPUS:-any}'" \
    "(cold idgate '${COLD_AGENT_CPUS:-any}')" \
    "(TOKIO_WORKER_THREADS=$AGENT_THREADS), wrk '${WRK_CPUS:-any}'"
  echo "- wrk: $WRK_THREADS thread(s), $CONNS connections, $DURATION per run, $ROUNDS rounds" \
    "(medians shown); cold variant: $COLD_TOKENS distinct RS256 tokens"
  echo "- idgate RSS: ${IDLE_RSS} KiB idle after start, ${LOADED_RSS} KiB after the runs"
  echo
  awk -F'\t' -v conns="$CONNS" -v cold="$MIX_COLD_CONNS" -v body="$(wc -c <"$WORK/body.json")" \
    -f "$ROOT/benches/e2e/report.awk" "$RUNS"
  echo
  echo "Raw runs: $RUNS"
} | tee "$OUT/report.md"

if ((FAILED)); then
  log "some runs had errors (see above)"
  exit 1
fi
