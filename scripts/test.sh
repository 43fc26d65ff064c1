#!/usr/bin/env bash
# Rampart's single test command: `bash scripts/test.sh`. It runs its own idempotent set-up steps first (the
# venv and ONNX Runtime, perf_analyzer, the Azurite emulator; each skips what is already there), then the static
# checks (rustfmt, clippy -D warnings, the deployment manifests) and every test. Any failing step fails it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck disable=SC1091
    source "$HOME/.cargo/env"
fi

PY="$ROOT/.venv/bin/python"
T_ALL=$(date +%s)
T_STEP=$T_ALL
banner() {
    local now; now=$(date +%s)
    echo
    echo "=================================================================================="
    echo "== $*"
    echo "==   (t+$(( now - T_ALL )) s, previous step $(( now - T_STEP )) s)"
    echo "=================================================================================="
    T_STEP=$now
}
trap 'rc=$?; if [[ $rc -ne 0 ]]; then echo; echo "== test.sh FAILED (exit $rc) after $(( $(date +%s) - T_ALL )) s"; fi' EXIT

banner "set-up: scripts/setup.sh, install-perf-analyzer.sh, install-azurite.sh (idempotent)"
bash scripts/setup.sh
bash scripts/install-perf-analyzer.sh
bash scripts/install-azurite.sh

banner "static checks: file sizes, module cycles, rustfmt, clippy -D warnings"
python3 scripts/lib/line_budget.py
python3 scripts/lib/module_cycles.py
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
cargo clippy --workspace --all-targets --locked -- -D warnings

banner "deployment manifests: scripts/check-deploy.sh"
bash scripts/check-deploy.sh

banner "model repositories: examples/models up to date, ONNX Runtime cross-check"
GEN_TMP="$(mktemp -d)"
"$PY" scripts/gen_models.py "$GEN_TMP/examples" --test-repo "$GEN_TMP/test" --bad-repo "$GEN_TMP/bad"
if ! diff -r "$GEN_TMP/examples" examples/models; then
    echo "ERROR: examples/models differs from scripts/gen_models.py output; regenerate and commit it" >&2
    exit 1
fi
"$PY" scripts/check_models.py --examples examples/models --test-repo "$GEN_TMP/test" --bad-repo "$GEN_TMP/bad" \
    > "$GEN_TMP/check.log" 2>&1 || { cat "$GEN_TMP/check.log"; exit 1; }
tail -n 1 "$GEN_TMP/check.log"
rm -rf "$GEN_TMP"

banner "cargo build: minimal variant (dev profile, --no-default-features --features grpc,tract)"
cargo --version
# The dev profile keeps it out of target/release: a release build with other features would recompile most of
# the release tree twice (feature sets differ all the way down), and the checks on it need no optimisation.
cargo build -p rampart-server --no-default-features --features grpc,tract

banner "cargo build --release --workspace"
cargo build --release --workspace

banner "embedding example (examples/embedding: the in-process API, no listener)"
target/release/rampart-embedding-example examples/models

banner "cargo test --release --workspace"
cargo test --release --workspace

banner "cargo fuzz (bounded)"
bash scripts/fuzz.sh

banner "pytest tests/python"
export RAMPART_BIN="$ROOT/target/release/rampart"
export RAMPART_PBTXT="$ROOT/target/release/rampart-pbtxt"
export RAMPART_ORT_DIR="$ROOT/third_party/onnxruntime"
export PERF_ANALYZER="$ROOT/third_party/perf_analyzer/perf_analyzer"
export RAMPART_MINIMAL_BIN="$ROOT/target/debug/rampart"
echo "RAMPART_BIN=$RAMPART_BIN"
echo "RAMPART_PBTXT=$RAMPART_PBTXT"
echo "RAMPART_ORT_DIR=$RAMPART_ORT_DIR"
echo "PERF_ANALYZER=$PERF_ANALYZER"
"$PY" -m pytest -q tests/python

banner "all tests passed"
