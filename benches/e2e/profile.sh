#!/usr/bin/env bash
# Instruction profile of idgate's hot path under callgrind, driven by the loadgen.
#
#   benches/e2e/profile.sh [OUT_DIR]        # default target/profile
#   N=20000 MIX="--invalid-share 0.01" AGENT=null benches/e2e/profile.sh
#
# Why callgrind: it counts instructions, which do not depend on the (shared, noisy) machine's
# load, so before/after comparisons of a hot-path change are exact. Its figures are not time:
# valgrind does not emulate SHA-NI, so sha2 runs its portable code here (~35k instructions for a
# 650-byte token) while the real process uses the SHA extensions (a few hundred cycles). The
# report therefore also gives the total without sha2.
#
# The counters are zeroed after a warm-up (2000 decisions: token cached, connections open,
# buffers grown) and dumped after N more decisions, so startup is excluded.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=${1:-$ROOT/target/profile}
N=${N:-20000}
MIX=${MIX:-}
AGENT=${AGENT:-idgate}
PORT_BASE=${PORT_BASE:-19300}
SPOP=$((PORT_BASE + 1)) ADMIN=$((PORT_BASE + 2)) JWKS=$((PORT_BASE + 3))
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/idgate-prof.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --quiet --bin idgate --example loadgen --example null_agent
BIN=$ROOT/target/release
LOADGEN=$BIN/examples/loadgen
"$LOADGEN" mint --out "$WORK/t" --distinct 1000 --invalid 10 2>/dev/null
"$LOADGEN" jwks --file "$WORK/t/jwks.json" --listen "127.0.0.1:$JWKS" >/dev/null &
PIDS+=($!)
sed -e "s|@SPOP_PORT@|$SPOP|" -e "s|@ADMIN_PORT@|$ADMIN|" -e "s|@CACHE_SIZE@|100000|" \
  -e "s|@ISSUER@|https://idp.bench.invalid|" -e "s|@AUDIENCE@|idgate-bench|" -e "s|@AUDIT@|off|" \
  -e "s|@JWKS_URI@|http://127.0.0.1:$JWKS/jwks|" -e "s|@EXTRA_ISSUER@||" \
  benches/e2e/idgate.toml.in >"$WORK/idgate.toml"

OUTFILE=$OUT/callgrind.$AGENT.out
rm -f "$OUTFILE"*
if [[ $AGENT == null ]]; then
  CMD=("$BIN/examples/null_agent" "127.0.0.1:$SPOP")
  EXPECT=allow-all
else
  CMD=("$BIN/idgate" run -c "$WORK/idgate.toml" --log-format text)
  EXPECT=idgate
fi
TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$OUTFILE" "${CMD[@]}" \
  2>"$WORK/valgrind.log" &
VG=$!
PIDS+=($VG)
for ((i = 0; i < 600; i++)); do
  (exec 3<>"/dev/tcp/127.0.0.1/$SPOP") 2>/dev/null && break
  sleep 0.1
done
if [[ $AGENT != null ]]; then
  for ((i = 0; i < 600; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN/ready") == 200 ]] && break
    sleep 0.1
  done
fi
# shellcheck disable=SC2086
"$LOADGEN" run --tokens "$WORK/t" --target "127.0.0.1:$SPOP" --expect "$EXPECT" --max-requests 2000 $MIX >/dev/null
callgrind_control -z "$VG" >/dev/null
# shellcheck disable=SC2086
"$LOADGEN" run --tokens "$WORK/t" --target "127.0.0.1:$SPOP" --expect "$EXPECT" --max-requests "$N" $MIX |
  grep -E "decisions|checks"
callgrind_control -d "$VG" >/dev/null
kill -TERM "$VG"
wait "$VG" 2>/dev/null || true
# The explicit dump is OUTFILE.1; OUTFILE itself holds what ran after it (shutdown).
DUMP=$OUTFILE.1
[[ -s $DUMP ]] || { echo "no callgrind dump at $DUMP" >&2; exit 1; }
TOP=$(python3 benches/e2e/callers.py "$DUMP" top 30)
TOTAL=$(awk 'NR == 1 { print $2 }' <<<"$TOP")
SHA=$(awk '/sha2::sha256::soft::compress/ { s += $1 } END { print s + 0 }' <<<"$TOP")
echo "profile: $DUMP"
awk -v t="$TOTAL" -v s="$SHA" -v n="$N" 'BEGIN {
  printf "instructions per decision: %.0f total, %.0f without sha2 (soft SHA-256 under valgrind: %.0f)\n", t / n, (t - s) / n, s / n }'
echo "allocations per decision:"
python3 benches/e2e/callers.py "$DUMP" calls '^(malloc|realloc|calloc)$' $((N / 10)) |
  awk -v n="$N" '{ printf "  %6.2f  %s\n", $1 / n, substr($0, index($0, $2)) }'
echo "top functions (exclusive instructions per decision):"
awk -v n="$N" 'NR > 1 { printf "  %8.0f %s  %s\n", $1 / n, $2, substr($0, index($0, $3)) }' <<<"$TOP"
