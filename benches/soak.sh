#!/usr/bin/env bash
# Soak test: minutes of mixed traffic through HAProxy 2.6 into idgate, with IdP key rotation
# and periodic SIGHUP reloads, sampling idgate's RSS and error counters into a CSV.
#
#   benches/soak.sh                       # 10 minutes, release build
#   SOAK_MINUTES=3 benches/soak.sh        # shorter
#
# The traffic, the sampling and the checks are in tests/ops_soak.rs (an ignored test, so the
# normal suite never runs it); this script builds and runs it and keeps its CSV. It fails
# (exit 1) if idgate's RSS grows more than SOAK_MAX_GROWTH_PCT (10) between the end of the
# warm-up and the end, if a valid request is refused or an invalid one let through, if
# anything reaches the upstream without an allow, or on internal errors or failed reloads.
#
# Env (defaults): SOAK_MINUTES=10 SOAK_WARMUP_SECS=max(60, duration/4) SOAK_SAMPLE_SECS=5
#   SOAK_CLIENTS=8 SOAK_MAX_GROWTH_PCT=10 SOAK_CSV=target/soak/soak-<time>.csv
#   SOAK_PROFILE=release (or dev: quicker to build, slower to run)
#   IDGATE_HAPROXY26=/usr/sbin/haproxy
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

export SOAK_MINUTES=${SOAK_MINUTES:-10}
export SOAK_CSV=${SOAK_CSV:-$root/target/soak/soak-$(date +%Y%m%d-%H%M%S).csv}
export IDGATE_HAPROXY26=${IDGATE_HAPROXY26:-/usr/sbin/haproxy}
profile=${SOAK_PROFILE:-release}

echo "soak: ${SOAK_MINUTES} min through HAProxy 2.6 ($IDGATE_HAPROXY26), profile $profile"
echo "soak: CSV $SOAK_CSV"
log=${SOAK_CSV%.csv}.log
mkdir -p "$(dirname "$SOAK_CSV")"
set +e
cargo test --profile "$profile" --test ops_soak -- --ignored --exact soak --nocapture \
    --test-threads 1 >"$log" 2>&1
status=$?
set -e
grep -E '^soak:' "$log" || true
if [[ $status -ne 0 ]]; then
    echo "soak: FAILED (exit $status); last lines of $log:"
    grep -v '^[{<\[]' "$log" | tail -n 40
fi
if [[ -s $SOAK_CSV ]]; then
    echo "soak: $(($(wc -l <"$SOAK_CSV") - 1)) samples in $SOAK_CSV"
fi
exit "$status"
