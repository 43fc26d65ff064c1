#!/usr/bin/env bash
# Bounded fuzzing of the wire decoders (fuzz/: cargo-fuzz targets json_infer, binary_split, bytes_decode, pbtxt).
#
#  1. installs cargo-fuzz (pinned) if missing
#  2. builds every target: stable toolchain, `--sanitizer none` (AddressSanitizer needs nightly, and the code
#     under test forbids `unsafe`), release with debug assertions and overflow checks, libFuzzer coverage
#  3. runs each target for FUZZ_SECONDS from a scratch copy of its corpus: the committed seeds in
#     fuzz/corpus/<target>/ (and any saved failures in fuzz/regressions/<target>/) are read, never written
#  4. prints one summary line per target; fails if any target crashed, panicked, timed out or ran out of memory,
#     printing the failing input's path (under fuzz/artifacts/<target>/) and the start of its hexdump.
#
# Usage: scripts/fuzz.sh [TARGET...]     (default: all targets)
# Env:   FUZZ_SECONDS (30 per target), FUZZ_MAX_LEN (65536), FUZZ_TIMEOUT (seconds per input, 25),
#        FUZZ_TOOLCHAIN (rustup toolchain for the build, default: the active one, which CI has as stable).
# Reproduce a failure: cargo fuzz run --sanitizer none <target> <file>
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi

CARGO_FUZZ_VERSION=0.13.2
ALL_TARGETS=(json_infer binary_split bytes_decode pbtxt)
SECONDS_PER_TARGET="${FUZZ_SECONDS:-30}"
MAX_LEN="${FUZZ_MAX_LEN:-65536}"
TIMEOUT="${FUZZ_TIMEOUT:-25}"
CARGO=(cargo)
[[ -n "${FUZZ_TOOLCHAIN:-}" ]] && CARGO=(cargo "+$FUZZ_TOOLCHAIN")
# Same flags for build and run, or `cargo fuzz run` rebuilds.
BUILD_FLAGS=(--sanitizer none)

log() { echo "[fuzz] $*"; }
now() { date +%s; }

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [[ -f "fuzz/fuzz_targets/$t.rs" ]] || { log "ERROR: unknown target '$t' (have: ${ALL_TARGETS[*]})"; exit 2; }
done

# 1. cargo-fuzz, and the C++ compiler that libfuzzer-sys builds libFuzzer with -------------------------
if ! command -v c++ >/dev/null 2>&1; then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "no C++ compiler: installing g++ with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq g++ >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq g++ >/dev/null; }
    else
        log "ERROR: libFuzzer needs a C++ compiler (c++): install g++ and re-run"
        exit 1
    fi
fi
t0=$(now)
if [[ "$("${CARGO[@]}" fuzz --version 2>/dev/null || true)" == "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    log "cargo-fuzz $CARGO_FUZZ_VERSION already installed"
else
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    "${CARGO[@]}" install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
    log "cargo-fuzz installed ($(( $(now) - t0 )) s)"
fi
"${CARGO[@]}" --version

# 2. build -----------------------------------------------------------------------------------------
# The fuzz project is its own workspace; its lock file starts from the main one, so it builds the dependency
# versions the tests use (cargo adds libfuzzer-sys and drops what the fuzz targets do not need).
cp Cargo.lock fuzz/Cargo.lock
t0=$(now)
log "building ${targets[*]}"
for t in "${targets[@]}"; do
    "${CARGO[@]}" fuzz build "${BUILD_FLAGS[@]}" "$t"
done
log "build done ($(( $(now) - t0 )) s)"

# 3. run -------------------------------------------------------------------------------------------
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
    corpus="$WORK/$t/corpus"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    seeds=("fuzz/corpus/$t")
    [[ -d "fuzz/regressions/$t" ]] && seeds+=("fuzz/regressions/$t")
    dict=()
    case "$t" in
        json_infer | binary_split) dict=(-dict=fuzz/dict/json_infer.dict) ;;
        pbtxt) dict=(-dict=fuzz/dict/pbtxt.dict) ;;
    esac
    n_seeds=$(find "${seeds[@]}" -type f | wc -l)
    touch "$WORK/$t/stamp"
    log "running $t for ${SECONDS_PER_TARGET} s from $n_seeds seeds"
    rc=0
    # New corpus entries go to the first directory (scratch); the seed directories are only read.
    "${CARGO[@]}" fuzz run "${BUILD_FLAGS[@]}" "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -max_len="$MAX_LEN" -timeout="$TIMEOUT" \
        -print_final_stats=1 "${dict[@]}" >"$WORK/$t/log" 2>&1 || rc=$?

    fstat() { sed -n "s/^stat::$1: *//p" "$WORK/$t/log" | tail -n 1; }
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$WORK/$t/log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")
    line="$t: execs=$(fstat number_of_executed_units) exec/s=$(fstat average_exec_per_sec) cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?} (seeds $n_seeds) peak_rss=$(fstat peak_rss_mb)MB"
    artifacts=$(find "fuzz/artifacts/$t" -type f -newer "$WORK/$t/stamp" 2>/dev/null || true)
    if [[ $rc -ne 0 || -n "$artifacts" ]]; then
        failed+=("$t")
        summary+=("FAIL $line (exit $rc)")
        log "FAILED: $t (exit $rc). Panic message and stack (project frames), then libFuzzer's verdict:"
        # the panic message runs from 'panicked at' to 'stack backtrace:'; keep the frames up to libFuzzer's own
        awk '/panicked at/ {p=1} /rust_fuzzer_test_input|__rust_begin_short_backtrace/ {p=0} p' "$WORK/$t/log" | head -n 80
        grep -E 'ERROR: libFuzzer|ALARM|out-of-memory|Slowest unit|SUMMARY|Test unit written' "$WORK/$t/log" || true
        grep -q 'panicked at' "$WORK/$t/log" || grep -v -E '^#[0-9]+' "$WORK/$t/log" | tail -n 40
        for a in $artifacts; do
            log "failing input: $a ($(wc -c <"$a") bytes); first 256 bytes:"
            od -A x -t x1z -N 256 -v "$a"
        done
    else
        summary+=("ok   $line")
    fi
done

echo
log "summary (${SECONDS_PER_TARGET} s per target, max_len $MAX_LEN):"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    log "ERROR: failing targets: ${failed[*]}; reproduce with: cargo fuzz run --sanitizer none <target> <input>"
    exit 1
fi
