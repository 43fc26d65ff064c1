#!/usr/bin/env bash
# The one benchmark command (see bench/README.md):
#
#   bash bench/run.sh [--vs-triton] [--quick] [--no-build] [other bench.py args]
#
#  1. scripts/setup.sh                 (.venv, ONNX Runtime library; idempotent)
#  2. scripts/install-perf-analyzer.sh (perf_analyzer + libcudart; idempotent)
#  3. cargo build --release -p rampart-server -p rampart-bench
#     (--no-build: skip this step when both binaries already exist)
#  4. .venv/bin/python bench/bench.py "$@"   (Triton itself is installed by bench.py with --vs-triton)
#
# The report goes to stdout and to bench/results/<UTC date-time>.md (+ .json); progress to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { echo "[bench/run.sh] $*" >&2; }

NO_BUILD=0
ARGS=()
for a in "$@"; do
    if [[ "$a" == "--no-build" ]]; then NO_BUILD=1; else ARGS+=("$a"); fi
done

# Setup output goes to stderr so that stdout carries only the report.
log "scripts/setup.sh"
bash scripts/setup.sh >&2
log "scripts/install-perf-analyzer.sh"
bash scripts/install-perf-analyzer.sh >&2

if [[ "$NO_BUILD" == 1 && -x target/release/rampart && -x target/release/engine-ceiling ]]; then
    log "--no-build: using the existing target/release/{rampart,engine-ceiling}"
else
    command -v cargo >/dev/null || { log "ERROR: cargo not found (install Rust: https://rustup.rs)"; exit 1; }
    log "cargo build --release -p rampart-server -p rampart-bench"
    cargo build --release -p rampart-server -p rampart-bench >&2
fi

log ".venv/bin/python bench/bench.py ${ARGS[*]:-}"
exec .venv/bin/python bench/bench.py ${ARGS[@]+"${ARGS[@]}"}
