#!/usr/bin/env bash
# Installs Azurite (Microsoft's Azure Storage emulator, from npm) into third_party/azurite for the as://
# model-repository tests (tests/python/test_cloud_repository.py). Idempotent; needs node and npm.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AZURITE_VERSION=3.37.0
DIR="$ROOT/third_party/azurite"
BIN="$DIR/node_modules/.bin/azurite-blob"
if [[ -x "$BIN" ]] && grep -q "\"version\": \"$AZURITE_VERSION\"" "$DIR/node_modules/azurite/package.json" 2>/dev/null; then
    echo "[azurite] $AZURITE_VERSION already in $DIR"
    exit 0
fi
command -v npm >/dev/null || { echo "[azurite] ERROR: npm not found (apt-get install nodejs npm)" >&2; exit 1; }
mkdir -p "$DIR"
echo "[azurite] npm install azurite@$AZURITE_VERSION into $DIR"
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
[[ -x "$BIN" ]] || { echo "[azurite] ERROR: $BIN missing after install" >&2; exit 1; }
echo "[azurite] installed"
