#!/usr/bin/env bash
# Prepare a checkout for building and testing Rampart (idempotent; no sudo needed).
#
#  1. .venv at the repo root (python3 -m venv) if missing
#  2. pinned Python deps: tests/python/requirements.txt (+ tests/python/requirements-config.txt if present)
#  3. ONNX Runtime shared library from the PyPI wheel into third_party/onnxruntime/
#     (+ symlink libonnxruntime.so -> libonnxruntime.so.<version>)
#  4. an interpreter for Python models (backend "python"): /usr/bin/python3 with numpy (Debian's
#     python3-numpy, installed with apt-get when run as root). It must be readable by the unprivileged user
#     the workers run as, which an interpreter under /root is not.
#
# Steps that are already done are skipped. Env overrides: PYTHON (interpreter for the venv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ORT_VERSION=1.32.0
VENV="$ROOT/.venv"
ORT_DIR="$ROOT/third_party/onnxruntime"
REQS=("tests/python/requirements.txt")
[[ -f tests/python/requirements-config.txt ]] && REQS+=("tests/python/requirements-config.txt")

log() { echo "[setup] $*"; }
now() { date +%s; }
T_ALL=$(now)

# 1. virtualenv --------------------------------------------------------------------------------
t0=$(now)
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    log "venv: $VENV already present ($("$VENV/bin/python" --version 2>&1))"
else
    PY="${PYTHON:-python3}"
    command -v "$PY" >/dev/null || { log "ERROR: $PY not found"; exit 1; }
    rm -rf "$VENV"   # a half-made venv (e.g. without pip) would otherwise be kept forever
    log "venv: creating $VENV with $("$PY" --version 2>&1)"
    if ! "$PY" -m venv "$VENV"; then
        rm -rf "$VENV"
        # Debian's system python needs the python3-venv package for ensurepip.
        if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
            log "venv failed: installing python3-venv with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y -qq python3-venv >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
            "$PY" -m venv "$VENV"
        else
            log "ERROR: '$PY -m venv' failed; install python3-venv (Debian) and re-run"
            exit 1
        fi
    fi
    log "venv: created ($(( $(now) - t0 )) s)"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# 2. Python requirements -------------------------------------------------------------------------
t0=$(now)
STAMP="$VENV/.rampart-requirements.sha256"
want="$(cat "${REQS[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    log "python deps: up to date (${REQS[*]})"
else
    args=()
    for r in "${REQS[@]}"; do args+=(-r "$r"); done
    log "python deps: pip install ${args[*]}"
    "${PIP[@]}" install -q "${args[@]}"
    echo "$want" > "$STAMP"
    log "python deps: installed ($(( $(now) - t0 )) s)"
fi

# 3. ONNX Runtime shared library ----------------------------------------------------------------
t0=$(now)
LIB="libonnxruntime.so.$ORT_VERSION"
if [[ -f "$ORT_DIR/$LIB" ]]; then
    log "onnxruntime: $ORT_DIR/$LIB already present"
else
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    log "onnxruntime: pip download onnxruntime==$ORT_VERSION wheel"
    "${PIP[@]}" download -q --no-deps --only-binary=:all: -d "$TMP" "onnxruntime==$ORT_VERSION"
    whl=$(ls "$TMP"/onnxruntime-"$ORT_VERSION"-*.whl | head -n1)
    mkdir -p "$ORT_DIR"
    "$VENV/bin/python" "$ROOT/scripts/lib/unzip_glob.py" "$whl" 'onnxruntime/capi/libonnxruntime.so*' "$ORT_DIR"
    [[ -f "$ORT_DIR/$LIB" ]] || { log "ERROR: $LIB not found in $whl"; exit 1; }
    log "onnxruntime: extracted $LIB ($(( $(now) - t0 )) s)"
fi
if [[ "$(readlink "$ORT_DIR/libonnxruntime.so" 2>/dev/null || true)" != "$LIB" ]]; then
    ln -sfn "$LIB" "$ORT_DIR/libonnxruntime.so"
    log "onnxruntime: symlink libonnxruntime.so -> $LIB"
fi

# 4. interpreter for Python models ---------------------------------------------------------------
if /usr/bin/python3 -c 'import numpy' >/dev/null 2>&1; then
    log "python models: /usr/bin/python3 has numpy"
elif [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
    t0=$(now)
    log "python models: apt-get install python3-numpy"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq python3-numpy >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-numpy >/dev/null; }
    log "python models: installed ($(( $(now) - t0 )) s)"
else
    log "WARNING: /usr/bin/python3 cannot import numpy and this is not root: the python backend tests will fail (apt-get install python3-numpy)"
fi

log "done ($(( $(now) - T_ALL )) s). ORT_DYLIB_PATH=$ORT_DIR/libonnxruntime.so"
