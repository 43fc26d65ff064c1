"""The minimal build (compile-time features, issue 7): `cargo build -p rampart-server --no-default-features
--features grpc,tract`, which scripts/test.sh builds with the dev profile as target/debug/rampart (env
RAMPART_MINIMAL_BIN).

It must serve gRPC with tract, and every front end or feature left out must be absent: nothing listens for HTTP
or metrics, their code is not in the binary, and the flags that ask for them are refused at startup."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import REPO_ROOT, example_repo, rampart_bin

MINIMAL = Path(os.environ.get("RAMPART_MINIMAL_BIN", REPO_ROOT / "target/debug/rampart"))
GRPC_PORT_RE = re.compile(r"Started GRPCInferenceService at \S+:(\d+)")
NOT_BUILT = "this rampart build has no {feature} support (cargo feature '{feature}')"


@pytest.fixture(scope="module")
def minimal_bin() -> Path:
    if not MINIMAL.is_file():
        pytest.fail(f"{MINIMAL} missing: scripts/test.sh builds it (cargo build -p rampart-server --no-default-features --features grpc,tract)")
    if MINIMAL.resolve() == rampart_bin().resolve():
        pytest.fail(f"{MINIMAL} is the default build")
    return MINIMAL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def minimal_server(minimal_bin):
    http_port, metrics_port = free_port(), free_port()
    args = [
        str(minimal_bin),
        f"--model-repository={example_repo()}",
        "--http-address=127.0.0.1",
        f"--http-port={http_port}",
        f"--metrics-port={metrics_port}",
        "--grpc-address=127.0.0.1",
        "--grpc-port=0",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.time() + 60
    port = None
    while time.time() < deadline and port is None:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = GRPC_PORT_RE.search(line)
        if m:
            port = int(m.group(1))
    assert port, "minimal build did not start gRPC:\n" + "".join(lines)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    while not client.is_server_ready():
        assert time.time() < deadline, "not ready"
        time.sleep(0.05)
    yield {"proc": proc, "client": client, "log": "".join(lines), "http_port": http_port, "metrics_port": metrics_port}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def run_to_exit(binary: Path, *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    args = [str(binary), f"--model-repository={example_repo()}", "--http-port=0", "--grpc-port=0", "--allow-metrics=false", *flags]
    return subprocess.run(args, capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def test_startup_names_the_features_built(minimal_server):
    assert "built with: grpc, tract\n" in minimal_server["log"], minimal_server["log"]
    assert "--allow-http has no effect: this build has no http front end (cargo feature 'http')" in minimal_server["log"]
    assert "--allow-metrics has no effect: this build has no metrics front end (cargo feature 'metrics')" in minimal_server["log"]


def test_http_and_metrics_listeners_absent(minimal_server):
    assert refused(minimal_server["http_port"]), "something listens on the HTTP port"
    assert refused(minimal_server["metrics_port"]), "something listens on the metrics port"
    assert "Started HTTPService" not in minimal_server["log"] and "Started Metrics Service" not in minimal_server["log"]


def test_grpc_inference_with_tract(minimal_server):
    c = minimal_server["client"]
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 2, dtype=np.int32)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    r = c.infer("simple", inputs)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), a - b)
    # Every model loaded with tract, the only engine.
    assert all(m["state"] == "READY" for m in c.get_model_repository_index(as_json=True)["models"])


def test_left_out_features_answer_not_in_this_build(minimal_server):
    c = minimal_server["client"]
    with pytest.raises(InferenceServerException) as e:
        c.register_system_shared_memory("r", "/rampart_minimal", 8)
    assert e.value.status() == str(grpc.StatusCode.UNIMPLEMENTED)
    assert "system shared memory is not supported in this build (cargo feature 'shm')" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        c.get_trace_settings()
    assert "tracing is not supported in this build (cargo feature 'tracing')" in e.value.message()
    extensions = c.get_server_metadata(as_json=True)["extensions"]
    assert "system_shared_memory" not in extensions and "trace" not in extensions, extensions
    assert "statistics" in extensions


@pytest.mark.parametrize(
    "flags, env, message",
    [
        (["--allow-client-shm=true"], None, NOT_BUILT.format(feature="shm")),
        (["--allow-sagemaker=true"], None, NOT_BUILT.format(feature="sagemaker")),
        (["--allow-vertex-ai=true"], None, NOT_BUILT.format(feature="vertex")),
        ([], {"AIP_MODE": "PREDICTION"}, NOT_BUILT.format(feature="vertex")),
        (["--trace-config=rate=1"], None, NOT_BUILT.format(feature="tracing")),
        (["--trace-file=/tmp/rampart-minimal-trace.json"], None, NOT_BUILT.format(feature="tracing")),
        (
            ["--backend-config=onnxruntime,intra_op_thread_count=2"],
            None,
            "this rampart build has no ONNX Runtime engine (cargo feature 'onnxruntime')",
        ),
    ],
)
def test_flags_for_left_out_features_refused(minimal_bin, flags, env, message):
    proc = run_to_exit(minimal_bin, *flags, env=env)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]
    assert not Path("/tmp/rampart-minimal-trace.json").exists()


def test_onnxruntime_model_refused_at_load(minimal_bin, tmp_path):
    repo = tmp_path / "repo"
    model = repo / "simple"
    model.mkdir(parents=True)
    src = example_repo() / "simple"
    (model / "1").mkdir()
    (model / "1" / "model.onnx").write_bytes((src / "1" / "model.onnx").read_bytes())
    config = (src / "config.pbtxt").read_text()
    (model / "config.pbtxt").write_text(config + '\nparameters { key: "engine" value: { string_value: "onnxruntime" } }\n')
    proc = subprocess.run(
        [str(minimal_bin), f"--model-repository={repo}", "--grpc-port=0", "--exit-on-error=true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "this rampart build has no ONNX Runtime engine (cargo feature 'onnxruntime')" in proc.stderr, proc.stderr[-2000:]


def test_left_out_code_is_not_in_the_binary(minimal_bin):
    """Absent, not switched off: strings that only the left-out front ends contain are not in the file."""
    full = rampart_bin().read_bytes()
    small = minimal_bin.read_bytes()
    for marker in (
        b"application/vnd.sagemaker-triton.binary+json",
        b"application/vnd.vertex-ai-triton.binary+json",
        b"/v2/systemsharedmemory/region/{region}/register",
        b"nv_inference_request_success",
        b"onnxruntime::OrtEngine",
    ):
        assert marker in full, f"{marker!r} not found in the default build: the check would prove nothing"
        assert marker not in small, f"{marker!r} is in the minimal build"
