#!/usr/bin/env bash
# Fuzz smoke test: run every cargo-fuzz target in fuzz/fuzz_targets for a short while, starting
# from its seed corpus, and fail on the first crash (panic, failed assertion, ASan report,
# timeout or out-of-memory).
#
# Usage: scripts/fuzz-smoke.sh [target...]          (default: every fuzz/fuzz_targets/*.rs)
#
# Environment:
#   FUZZ_SECONDS=60     libFuzzer's -max_total_time per target.
#   FUZZ_RUNS=          if set, stop each target after this many executions instead (libFuzzer
#                       -runs; FUZZ_SECONDS is then ignored). The README's 10M-execution
#                       figures come from FUZZ_RUNS=10000000.
#   FUZZ_JOBS=1         parallel fuzzing jobs per target (libFuzzer -fork; 1 = in-process).
#   FUZZ_BUILD_ARGS=    extra `cargo fuzz run` flags, e.g. "--debug-assertions" to also catch
#                       integer overflow (slower; rebuilds everything once).
#
# cargo-fuzz is installed with `cargo install cargo-fuzz --locked` if missing. The fuzz crate
# needs nightly-only rustc flags (-Zsanitizer=address, sancov passes); RUSTC_BOOTSTRAP=1 lets
# the stable toolchain accept them, so CI needs no second toolchain.
#
# Seeds (fuzz/seeds/<target>/) are copied into a temporary corpus directory, which libFuzzer
# grows as it finds new coverage: the repository is never modified, except that a crashing
# input is kept where cargo-fuzz puts it, fuzz/artifacts/<target>/ (git-ignored), so CI can
# upload it. Reproduce one with `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`; once fixed,
# copy it to fuzz/regressions/<target>/: tests/fuzz_seeds.rs runs every file there (and every
# seed) through the same target function on each `cargo test`, without this build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
RUNS="${FUZZ_RUNS:-}"
if [ -n "$RUNS" ]; then
    LIMIT=("-runs=$RUNS")
    WHAT="$RUNS executions"
else
    LIMIT=("-max_total_time=$SECONDS_PER_TARGET")
    WHAT="${SECONDS_PER_TARGET}s"
fi
JOBS="${FUZZ_JOBS:-1}"
read -r -a BUILD_ARGS <<<"${FUZZ_BUILD_ARGS:-}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_targets/*.rs; do
        [ -e "$f" ] || continue
        t="$(basename "$f" .rs)"
        targets+=("$t")
    done
fi
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz-smoke: no targets in fuzz/fuzz_targets" >&2
    exit 1
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/idgate-fuzz.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# One build for every target (cargo fuzz run would otherwise rebuild-check each time).
cargo fuzz build "${BUILD_ARGS[@]}"

failed=()
for t in "${targets[@]}"; do
    corpus="$WORK/$t"
    mkdir -p "$corpus"
    if [ -d "fuzz/seeds/$t" ]; then
        cp -R "fuzz/seeds/$t/." "$corpus/"
    fi
    echo "fuzz-smoke: $t for $WHAT ($(find "$corpus" -type f | wc -l) seeds)" >&2
    extra=()
    if [ "$JOBS" -gt 1 ]; then
        extra+=("-fork=$JOBS")
    fi
    # -timeout: one input taking over 10 s is a hang worth failing on (the parsers are linear).
    # -rss_limit_mb: libFuzzer's default 2 GiB, explicit so a leak fails the same everywhere.
    if ! cargo fuzz run "${BUILD_ARGS[@]}" "$t" "$corpus" -- \
        "${LIMIT[@]}" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${extra[@]}"; then
        echo "fuzz-smoke: $t FAILED; the crashing input is in fuzz/artifacts/$t/" >&2
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz-smoke: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-smoke: ${#targets[@]} target(s) ran $WHAT each without a crash" >&2
