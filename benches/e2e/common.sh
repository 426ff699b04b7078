# Shell helpers shared by benches/e2e.sh and benches/e2e/agent.sh (sourced, not run).
#
# The sourcing script sets LOG_TAG (its log prefix) and WORK (a temporary directory, removed on
# exit) before sourcing, and appends every background PID it starts to PIDS: the EXIT trap
# stops them all.

READY_SECS=${READY_SECS:-30}
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "[$LOG_TAG] $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# Number of CPUs in a taskset list like "1", "2-3", "0,2" (1 for an empty list).
cpu_count() {
  local n=0 part parts
  [[ -z $1 ]] && { echo 1; return; }
  IFS=, read -ra parts <<<"$1"
  for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then n=$((n + ${part#*-} - ${part%-*} + 1)); else n=$((n + 1)); fi
  done
  echo "$n"
}
pin() { # pin CPUS cmd...
  local cpus=$1; shift
  if [[ -n $cpus ]]; then taskset -c "$cpus" "$@"; else "$@"; fi
}
# Start `cmd` in the background pinned to CPUS; $! is the command's own PID (exec, no
# wrapper shell), so /proc/$!/stat and kill reach the process itself.
spawn() { # spawn CPUS cmd...
  local cpus=$1; shift
  if [[ -n $cpus ]]; then
    (exec taskset -c "$cpus" "$@") &
  else
    ("$@") &
  fi
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port pid name (its log, if any: $WORK/name.log)
  local i
  for ((i = 0; i < READY_SECS * 10; i++)); do
    kill -0 "$2" 2>/dev/null || die "$3 exited during startup: $(tail -n 20 "$WORK/$3.log" 2>/dev/null)"
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$3 did not listen on $1 within ${READY_SECS}s"
}
wait_ready() { # admin-port pid name
  local i
  for ((i = 0; i < READY_SECS * 10; i++)); do
    kill -0 "$2" 2>/dev/null || die "$3 exited during startup: $(tail -n 20 "$WORK/$3.log" 2>/dev/null)"
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/ready") == 200 ]] && return 0
    sleep 0.1
  done
  die "$3 not ready within ${READY_SECS}s: $(curl -s "http://127.0.0.1:$1/ready")"
}
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# benches/e2e/idgate.toml.in rendered for one agent.
idgate_config() { # spop-port admin-port cache-size issuer audience audit jwks-port > file
  sed -e "s|@SPOP_PORT@|$1|" -e "s|@ADMIN_PORT@|$2|" -e "s|@CACHE_SIZE@|$3|" \
    -e "s|@ISSUER@|$4|" -e "s|@AUDIENCE@|$5|" -e "s|@AUDIT@|$6|" \
    -e "s|@JWKS_URI@|http://127.0.0.1:$7/jwks|" -e "s|@EXTRA_ISSUER@||" \
    "$ROOT/benches/e2e/idgate.toml.in"
}
