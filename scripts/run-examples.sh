#!/usr/bin/env bash
# Sets up (ONNX Runtime library, Python env), builds, and starts Rampart on the bundled example models
# (examples/models): HTTP at 127.0.0.1:8000, gRPC at 127.0.0.1:8001, metrics at 127.0.0.1:8002/metrics.
# Extra arguments are passed to rampart.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
cargo build --release
exec target/release/rampart \
    --model-repository=examples/models \
    --backend-directory=third_party/onnxruntime \
    --http-address=127.0.0.1 --grpc-address=127.0.0.1 \
    "$@"
