"""SageMaker front end (docs/protocol.md, "SageMaker", "Restricted APIs", "Security history (CVEs)":
CVE-2026-24206/24207, CVE-2026-24208/24209, CVE-2026-47481, CVE-2025-33238, CVE-2025-23310 many chunks).

`--allow-sagemaker=true` starts a listener on `--http-address` at `--sagemaker-port` (0 here), announced by
"Started Sagemaker HTTPService at <addr>:<port>". Routes: GET /ping (health), POST /invocations (infer on
$SAGEMAKER_TRITON_DEFAULT_MODEL_NAME), and with SAGEMAKER_MULTI_MODEL=true the multi-model (MME) routes
GET /models, GET /models/{m}, POST /models (load), POST /models/{m}/invoke, DELETE /models/{m}. Any other path
-> 400. `--http-restricted-api` applies (/ping = health, /invocations and /models/{m}/invoke = inference, the
rest of /models = model-repository); `--http-max-input-size` applies.

MME load urls must be `<root>/<alnum name>/model` or `<root>/<name>/model/<one subdir>` with root =
`--sagemaker-multi-model-root` (a tmp dir here); everything else (`..`, /proc, /dev, /sys, symlinks out,
other shapes) is refused with 400 and nothing is loaded.

Servers run on the first selected engine (the front end does not depend on it). The SageMaker listener is
found from its log line; the main HTTP listener stays on (port 0) for cross-checks unless a test says otherwise.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import requests

from cloud_frontends import DIFF, JSON_HDR, SIMPLE_BODY, SIMPLE_JSON, SUM, FrontEnd
from cloud_frontends import binary_request, chunked_post, concurrent_answers, front_end as sm, main, padded
from cloud_frontends import assert_alive, assert_denied, assert_simple_binary_body, outputs_of
from cloud_frontends import assert_simple_json as _assert_simple_json
from cloud_frontends import key_header, other_key_headers
from conftest import (
    HTTP_TIMEOUT,
    assert_error,
    base_args,
    error_message,
    example_repo,
    finish_server,
    selected_engines,
    wait_models_settled,
)

ENGINE = selected_engines()[0]
SAGEMAKER = FrontEnd("Sagemaker HTTPService", health_route="/ping")
SM_RE = SAGEMAKER.listener
BINARY_MIME = "application/vnd.sagemaker-triton.binary+json;json-header-size="
UNSET_MODEL = "unspecified_SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"

# Restricted server credentials (one key per category).
KEYS = {
    "health": ("sm-health-key", "sm-H3alth-v4lue"),
    "inference": ("sm-infer-key", "sm-Inf3r:v4l=ue"),
    "model-repository": ("sm-repo-key", "sm-R3po-v4lue"),
}


# ---------------------------------------------------------------------------------------------------------------
# Servers (cloud_frontends.CloudServer: `extra_port` is the SageMaker listener, `port` the main HTTP port)
# ---------------------------------------------------------------------------------------------------------------

# start_sm(args, label, env=None, wait=True, **kw) -> started server; sm_running(...): the same for one test;
# startup_failure(args, env, timeout=60) -> the output of a refused start.
start_sm = SAGEMAKER.start
sm_running = SAGEMAKER.running
startup_failure = SAGEMAKER.startup_failure


def sm_args(repo, *extra) -> list[str]:
    return base_args(repo, ENGINE, ["--allow-sagemaker=true", "--sagemaker-port=0", *extra])


def mme_args(repo, root, *extra) -> list[str]:
    return sm_args(repo, "--model-control-mode=explicit", f"--sagemaker-multi-model-root={root}", *extra)


# ---------------------------------------------------------------------------------------------------------------
# Request / response helpers (sm(): one request to the SageMaker port, main(): to the main port)
# ---------------------------------------------------------------------------------------------------------------


def assert_simple_json(r: requests.Response, model: str = "simple") -> dict:
    """The shared check, with each output's datatype and shape (INT32 [1, 16]) checked too."""
    return _assert_simple_json(r, model, typed=True)


def binary_header(json_size: int) -> dict:
    return {"Content-Type": f"{BINARY_MIME}{json_size}"}


def response_header_size(r: requests.Response) -> int | None:
    """JSON header size of a SageMaker infer response: from the binary Content-Type (Triton's SageMaker form),
    else from Inference-Header-Content-Length, else None (a plain JSON response)."""
    ctype = r.headers.get("Content-Type", "")
    if ctype.startswith(BINARY_MIME):
        return int(ctype[len(BINARY_MIME):])
    if "Inference-Header-Content-Length" in r.headers:
        return int(r.headers["Inference-Header-Content-Length"])
    return None


def assert_simple_binary(r: requests.Response, model: str = "simple") -> None:
    assert r.status_code == 200, f"{r.status_code}: {r.content[:1000]!r}"
    size = response_header_size(r)
    assert size is not None and 0 < size < len(r.content), (r.headers, len(r.content))
    outs = assert_simple_binary_body(r.content, size, model)
    assert "binary_data_size" not in (outs["OUTPUT1"].get("parameters") or {}), outs


def assert_serving(srv, headers: dict | None = None) -> None:
    """The process runs and answers a normal /invocations and /ping on fresh connections."""
    assert_alive(srv)
    hdrs = dict(headers or {})
    assert_simple_json(sm(srv, "POST", "/invocations", data=SIMPLE_BODY, headers={**JSON_HDR, **hdrs}))
    assert sm(srv, "GET", "/ping", headers=hdrs).status_code == 200


# ---------------------------------------------------------------------------------------------------------------
# Model directories for the multi-model endpoint
# ---------------------------------------------------------------------------------------------------------------


def write_model(model_dir: Path) -> Path:
    """A copy of examples/models/simple at `model_dir` (config without `name`, so any directory name fits);
    nothing is done when it is already there."""
    if (model_dir / "config.pbtxt").is_file():
        return model_dir
    model_dir.mkdir(parents=True, exist_ok=True)
    config = (example_repo() / "simple" / "config.pbtxt").read_text()
    config = re.sub(r'(?m)^name:\s*"simple"\s*\n', "", config)
    assert "name:" not in config.split("input")[0]
    (model_dir / "config.pbtxt").write_text(config)
    shutil.copytree(example_repo() / "simple" / "1", model_dir / "1")
    return model_dir


def mme_list(srv, headers: dict | None = None) -> list[dict]:
    r = sm(srv, "GET", "/models", headers=headers or {})
    assert r.status_code == 200, f"GET /models -> {r.status_code} {r.content[:500]!r}"
    body = r.json()
    assert list(body) == ["models"] and isinstance(body["models"], list), body
    return body["models"]


def mme_load(srv, name, url, headers: dict | None = None) -> requests.Response:
    return sm(srv, "POST", "/models", data=json.dumps({"model_name": name, "url": str(url)}), headers={**JSON_HDR, **(headers or {})})


def index_state(srv, headers: dict | None = None) -> list[tuple]:
    """The main port's repository index as sorted (name, version, state) tuples."""
    r = main(srv, "POST", "/v2/repository/index", headers=headers or {})
    assert r.status_code == 200, r.content[:500]
    return sorted((e["name"], e.get("version", ""), e.get("state", "")) for e in r.json())


def snapshot(srv, headers: dict | None = None):
    return mme_list(srv, headers), index_state(srv, headers)


# ===============================================================================================================
# Fixtures
# ===============================================================================================================


@pytest.fixture(scope="module")
def sm_server():
    """examples/models, SAGEMAKER_TRITON_DEFAULT_MODEL_NAME=simple, no MME, main HTTP on too."""
    srv = start_sm(sm_args(example_repo()), "rampart[sagemaker]", {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple"})
    yield srv
    finish_server(srv)


@pytest.fixture(scope="module")
def mme_dirs(tmp_path_factory):
    """root (the --sagemaker-multi-model-root) and a sibling `outside` dir holding a valid model."""
    base = tmp_path_factory.mktemp("sm_mme")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    write_model(outside / "evil" / "model" / "evil")
    write_model(outside / "direct")  # a model dir itself (config.pbtxt at its top)
    return root, outside


@pytest.fixture(scope="module")
def mme_server(mme_dirs):
    """Explicit mode, SAGEMAKER_MULTI_MODEL=true, root = mme_dirs root, `simple` loaded for /invocations."""
    root, _ = mme_dirs
    srv = start_sm(
        mme_args(example_repo(), root, "--load-model=simple"),
        "rampart[sagemaker mme]",
        {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple", "SAGEMAKER_MULTI_MODEL": "true"},
    )
    yield srv
    finish_server(srv)


# ===============================================================================================================
# Startup, /ping, /invocations
# ===============================================================================================================


def test_started_line_and_both_listeners_serve(sm_server):
    m = SM_RE.search(sm_server.stderr_text() + sm_server.stdout_text())
    assert m and m.group(1) == "127.0.0.1", sm_server.output()
    assert sm_server.extra_port not in (0, sm_server.port, 8080), (sm_server.extra_port, sm_server.port)
    assert sm(sm_server, "GET", "/ping").status_code == 200
    assert main(sm_server, "GET", "/v2/health/ready").status_code == 200
    # The SageMaker port does not serve the KServe routes, and the main port does not serve /ping.
    assert sm(sm_server, "GET", "/v2/health/ready").status_code == 400
    assert main(sm_server, "GET", "/ping").status_code == 404


def test_ping_ready(sm_server):
    r = sm(sm_server, "GET", "/ping")
    assert (r.status_code, r.content) == (200, b""), (r.status_code, r.content)


def test_ping_wrong_method(sm_server):
    r = sm(sm_server, "POST", "/ping", data=b"{}")
    assert_error(r, 405, exact="Method Not Allowed")
    assert_serving(sm_server)


def test_invocations_json_equals_main_infer(sm_server):
    r = sm(sm_server, "POST", "/invocations", data=SIMPLE_BODY, headers=JSON_HDR)
    body = assert_simple_json(r)
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    reference = main(sm_server, "POST", "/v2/models/simple/infer", data=SIMPLE_BODY, headers=JSON_HDR)
    assert reference.status_code == 200 and body == reference.json(), (body, reference.content)


def test_invocations_json_with_request_id_and_outputs(sm_server):
    req = {**SIMPLE_JSON, "id": "sm-req-7", "outputs": [{"name": "OUTPUT1"}]}
    r = sm(sm_server, "POST", "/invocations", json=req)
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["id"] == "sm-req-7" and outputs_of(body) == {"OUTPUT1": DIFF}, body


def test_invocations_binary_content_type(sm_server):
    body, json_size = binary_request()
    assert json_size is not None and json_size < len(body)
    r = sm(sm_server, "POST", "/invocations", data=body, headers=binary_header(json_size))
    assert_simple_binary(r)


def test_invocations_binary_header_json_inputs(sm_server):
    """JSON inputs, binary output requested: the request header size is the whole JSON (body length)."""
    body, json_size = binary_request(binary_inputs=False)
    assert json_size is None
    r = sm(sm_server, "POST", "/invocations", data=body, headers=binary_header(len(body)))
    assert_simple_binary(r)


def test_invocations_binary_response_content_type(sm_server):
    """Triton's SageMaker front end announces the JSON size of a binary response in the Content-Type (SageMaker
    passes Content-Type through to the caller, not Inference-Header-Content-Length)."""
    body, json_size = binary_request()
    r = sm(sm_server, "POST", "/invocations", data=body, headers=binary_header(json_size))
    assert r.status_code == 200, r.content[:500]
    ctype = r.headers.get("Content-Type", "")
    assert ctype.startswith(BINARY_MIME), f"Content-Type {ctype!r}; headers {dict(r.headers)}"
    size = int(ctype[len(BINARY_MIME):])
    assert json.loads(r.content[:size])["model_name"] == "simple"


def test_invocations_binary_header_size_out_of_range(sm_server):
    body, json_size = binary_request()
    r = sm(sm_server, "POST", "/invocations", data=body, headers=binary_header(len(body) + 1))
    assert_error(r, 400, "inference header size should be in range (0, ", str(len(body) + 1))
    assert_serving(sm_server)


@pytest.mark.parametrize("suffix", ["abc", "-5", "99999999999999999999", ""])
def test_invocations_binary_header_size_malformed(sm_server, suffix):
    body, json_size = binary_request()
    r = sm(sm_server, "POST", "/invocations", data=body, headers={"Content-Type": BINARY_MIME + suffix})
    assert_error(r, 400, "json-header-size")
    assert_serving(sm_server)


def test_invocations_binary_mime_not_first(sm_server):
    """The vendor type must be the content type, not a later item: the body is then taken as JSON, which it is
    not (binary tensors follow the JSON)."""
    body, json_size = binary_request()
    r = sm(sm_server, "POST", "/invocations", data=body, headers={"Content-Type": f"text/plain, {BINARY_MIME}{json_size}"})
    assert_error(r, 400, "failed to parse the request JSON buffer")
    assert_serving(sm_server)


def test_invocations_malformed_json(sm_server):
    r = sm(sm_server, "POST", "/invocations", data=b'{"inputs": [', headers=JSON_HDR)
    assert_error(r, 400, "failed to parse the request JSON buffer")
    assert_serving(sm_server)


def test_invocations_wrong_method(sm_server):
    assert_error(sm(sm_server, "GET", "/invocations"), 405, exact="Method Not Allowed")


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/"),
        ("POST", "/v2/models/simple/infer"),
        ("GET", "/v2"),
        ("GET", "/pings"),
        ("GET", "/ping/"),
        ("POST", "/invocations/x"),
        ("POST", "/Invocations"),
        ("GET", "/metrics"),
        # Multi-model routes are off without SAGEMAKER_MULTI_MODEL=true.
        ("GET", "/models"),
        ("GET", "/models/simple"),
        ("POST", "/models/simple/invoke"),
        ("DELETE", "/models/simple"),
    ],
)
def test_other_paths_are_400(sm_server, method, path):
    r = sm(sm_server, method, path, data=SIMPLE_BODY if method == "POST" else None)
    assert r.status_code == 400, (method, path, r.status_code, r.content[:300])
    # simple is still loaded (a DELETE /models/simple did nothing).
    assert main(sm_server, "GET", "/v2/models/simple/ready").status_code == 200


def test_unset_default_model_name():
    with sm_running(sm_args(example_repo()), "rampart[sagemaker no default]") as srv:
        r = sm(srv, "POST", "/invocations", data=SIMPLE_BODY, headers=JSON_HDR)
        assert_error(r, 404, exact=f"Request for unknown model: '{UNSET_MODEL}' is not found")
        assert sm(srv, "GET", "/ping").status_code == 200


def test_default_model_name_other_model(tmp_path):
    """The env var picks the model: identity_fp32 answers /invocations."""
    env = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "identity_fp32", "SAGEMAKER_TRITON_INFERENCE_TYPE": "infer"}
    with sm_running(sm_args(example_repo()), "rampart[sagemaker identity]", env) as srv:
        cfg = main(srv, "GET", "/v2/models/identity_fp32").json()
        inp = cfg["inputs"][0]
        shape = [1 if d == -1 else d for d in inp["shape"]]
        n = int(np.prod(shape))
        data = [float(i) + 0.5 for i in range(n)]
        req = {"inputs": [{"name": inp["name"], "datatype": "FP32", "shape": shape, "data": data}]}
        r = sm(srv, "POST", "/invocations", json=req)
        assert r.status_code == 200, r.content[:500]
        body = r.json()
        assert body["model_name"] == "identity_fp32" and body["outputs"][0]["data"] == data, body
        # The SIMPLE body is wrong for this model: an error naming the model's inputs, the server goes on.
        bad = sm(srv, "POST", "/invocations", data=SIMPLE_BODY, headers=JSON_HDR)
        assert bad.status_code == 400, bad.content[:500]
        error_message(bad)


@pytest.mark.parametrize("value", ["generate", "generate_stream"])
def test_inference_type_generate(value):
    """SAGEMAKER_TRITON_INFERENCE_TYPE=generate|generate_stream: /invocations takes the generate extension's
    body (top-level keys are inputs) and answers its JSON object or its Server-Sent Events."""
    env = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple", "SAGEMAKER_TRITON_INFERENCE_TYPE": value}
    with sm_running(sm_args(example_repo()), f"rampart[sagemaker {value}]", env) as srv:
        a, b = list(range(16)), [1] * 16
        r = sm(srv, "POST", "/invocations", json={"INPUT0": a, "INPUT1": b})
        assert r.status_code == 200, r.content[:500]
        if value == "generate":
            assert r.headers["content-type"] == "application/json", r.headers
            body = r.json()
        else:
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8", r.headers
            events = [line for line in r.text.split("\n\n") if line]
            assert len(events) == 1 and events[0].startswith("data: "), r.text
            body = json.loads(events[0][len("data: "):])
        assert body["model_name"] == "simple" and body["model_version"] == "1", body
        assert body["OUTPUT0"] == [x + 1 for x in a] and body["OUTPUT1"] == [x - 1 for x in a], body


def test_ping_mode_unknown_refused():
    out = startup_failure(sm_args(example_repo()), {"SAGEMAKER_TRITON_PING_MODE": "sometimes"})
    assert "SAGEMAKER_TRITON_PING_MODE" in out and "sometimes" in out, out[-2000:]


def test_inference_type_unknown_refused():
    out = startup_failure(sm_args(example_repo()), {"SAGEMAKER_TRITON_INFERENCE_TYPE": "bogus"})
    assert "SAGEMAKER_TRITON_INFERENCE_TYPE" in out and "bogus" in out, out[-2000:]


# ---------------------------------------------------------------------------------------------------------------
# /ping and readiness (SAGEMAKER_TRITON_PING_MODE)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("sm_broken_repo")
    shutil.copytree(example_repo() / "simple", repo / "simple")
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 0\n')
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"this is not an ONNX model")
    return repo


@pytest.mark.parametrize("mode,expected", [(None, 400), ("ready", 400), ("live", 200)])
def test_ping_mode_with_a_failed_model(broken_repo, mode, expected):
    env = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple"}
    if mode is not None:
        env["SAGEMAKER_TRITON_PING_MODE"] = mode
    args = sm_args(broken_repo, "--exit-on-error=false", "--strict-readiness=true")
    with sm_running(args, f"rampart[sagemaker ping {mode}]", env, wait=False) as srv:
        idx = {e["name"]: e["state"] for e in wait_models_settled(srv)}
        assert idx == {"simple": "READY", "broken": "UNAVAILABLE"}, idx
        assert main(srv, "GET", "/v2/health/ready").status_code == 400
        r = sm(srv, "GET", "/ping")
        assert r.status_code == expected, (mode, r.status_code, r.content)
        # Inference on the loaded model works either way.
        assert_simple_json(sm(srv, "POST", "/invocations", data=SIMPLE_BODY, headers=JSON_HDR))


def test_ping_mode_live_when_ready():
    env = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple", "SAGEMAKER_TRITON_PING_MODE": "live"}
    with sm_running(sm_args(example_repo()), "rampart[sagemaker ping live]", env) as srv:
        r = sm(srv, "GET", "/ping")
        assert (r.status_code, r.content) == (200, b"")


# ===============================================================================================================
# Multi-model endpoint (MME)
# ===============================================================================================================


def test_mme_lifecycle(mme_server, mme_dirs):
    root, _ = mme_dirs
    url = root / "abc123" / "model"
    write_model(url / "abc123")
    before = index_state(mme_server)
    assert mme_list(mme_server) == []
    assert sm(mme_server, "GET", "/models/abc123").status_code == 404

    r = mme_load(mme_server, "abc123", url)
    assert r.status_code == 200, r.content[:1000]
    entry = {"modelName": "abc123", "modelUrl": str(url)}
    assert mme_list(mme_server) == [entry]
    r = sm(mme_server, "GET", "/models/abc123")
    assert r.status_code == 200 and r.json() == entry, r.content
    # Loaded under the given name, visible on the main port too.
    assert main(mme_server, "GET", "/v2/models/abc123/ready").status_code == 200
    assert ("abc123", "1", "READY") in index_state(mme_server)

    assert_simple_json(sm(mme_server, "POST", "/models/abc123/invoke", data=SIMPLE_BODY, headers=JSON_HDR), model="abc123")
    # The SageMaker target-model header is only informational.
    r = sm(mme_server, "POST", "/models/abc123/invoke", data=SIMPLE_BODY, headers={**JSON_HDR, "X-Amzn-SageMaker-Target-Model": "other.tar.gz"})
    assert_simple_json(r, model="abc123")
    # /invocations still serves the default model.
    assert_simple_json(sm(mme_server, "POST", "/invocations", data=SIMPLE_BODY, headers=JSON_HDR))

    r = sm(mme_server, "DELETE", "/models/abc123")
    assert r.status_code == 200, r.content[:500]
    assert mme_list(mme_server) == []
    assert sm(mme_server, "GET", "/models/abc123").status_code == 404
    assert sm(mme_server, "POST", "/models/abc123/invoke", data=SIMPLE_BODY, headers=JSON_HDR).status_code == 404
    # Unloaded, as after a repository unload: known but not ready.
    assert_error(main(mme_server, "GET", "/v2/models/abc123/ready"), 400, exact="Model version not ready")
    assert sm(mme_server, "DELETE", "/models/abc123").status_code == 404

    # Load again after unload.
    assert mme_load(mme_server, "abc123", url).status_code == 200
    assert_simple_json(sm(mme_server, "POST", "/models/abc123/invoke", data=SIMPLE_BODY, headers=JSON_HDR), model="abc123")
    assert sm(mme_server, "DELETE", "/models/abc123").status_code == 200
    assert mme_list(mme_server) == []
    assert {n for n, _, s in index_state(mme_server) if s == "READY"} == {n for n, _, s in before if s == "READY"}


def test_mme_load_customer_subdir(mme_server, mme_dirs):
    root, _ = mme_dirs
    url = root / "def456" / "model" / "custsub"
    write_model(url / "def456")
    r = mme_load(mme_server, "def456", url)
    assert r.status_code == 200, r.content[:1000]
    try:
        assert mme_list(mme_server) == [{"modelName": "def456", "modelUrl": str(url)}]
        assert_simple_json(sm(mme_server, "POST", "/models/def456/invoke", data=SIMPLE_BODY, headers=JSON_HDR), model="def456")
    finally:
        assert sm(mme_server, "DELETE", "/models/def456").status_code == 200
    assert mme_list(mme_server) == []


def test_mme_two_models_side_by_side(mme_server, mme_dirs):
    root, _ = mme_dirs
    for name in ("aaa1", "bbb2"):
        write_model(root / name / "model" / name)
        assert mme_load(mme_server, name, root / name / "model").status_code == 200
    try:
        listed = sorted(mme_list(mme_server), key=lambda e: e["modelName"])
        assert listed == [
            {"modelName": "aaa1", "modelUrl": str(root / "aaa1" / "model")},
            {"modelName": "bbb2", "modelUrl": str(root / "bbb2" / "model")},
        ]
        for name in ("aaa1", "bbb2"):
            assert_simple_json(sm(mme_server, "POST", f"/models/{name}/invoke", data=SIMPLE_BODY, headers=JSON_HDR), model=name)
    finally:
        for name in ("aaa1", "bbb2"):
            sm(mme_server, "DELETE", f"/models/{name}")
    assert mme_list(mme_server) == []


def test_mme_invoke_binary(mme_server, mme_dirs):
    root, _ = mme_dirs
    write_model(root / "bin789" / "model" / "bin789")
    assert mme_load(mme_server, "bin789", root / "bin789" / "model").status_code == 200
    try:
        body, json_size = binary_request()
        r = sm(mme_server, "POST", "/models/bin789/invoke", data=body, headers=binary_header(json_size))
        assert_simple_binary(r, model="bin789")
    finally:
        assert sm(mme_server, "DELETE", "/models/bin789").status_code == 200


def test_mme_duplicate_name_conflict(mme_server, mme_dirs):
    root, _ = mme_dirs
    write_model(root / "dup1" / "model" / "dup1")
    write_model(root / "dup2" / "model" / "dup2")
    assert mme_load(mme_server, "dup1", root / "dup1" / "model").status_code == 200
    try:
        before = snapshot(mme_server)
        r = mme_load(mme_server, "dup1", root / "dup2" / "model")
        assert r.status_code == 409, r.content[:500]
        error_message(r)
        assert snapshot(mme_server) == before
        assert mme_list(mme_server) == [{"modelName": "dup1", "modelUrl": str(root / "dup1" / "model")}]
    finally:
        assert sm(mme_server, "DELETE", "/models/dup1").status_code == 200
    assert_serving(mme_server)


def test_mme_invoke_unknown_and_not_mme_loaded(mme_server):
    # Unknown model.
    assert sm(mme_server, "POST", "/models/nosuch/invoke", data=SIMPLE_BODY, headers=JSON_HDR).status_code == 404
    # `simple` is loaded, but not through the MME API: not an MME model.
    assert sm(mme_server, "GET", "/models/simple").status_code == 404
    assert sm(mme_server, "POST", "/models/simple/invoke", data=SIMPLE_BODY, headers=JSON_HDR).status_code == 404
    assert sm(mme_server, "DELETE", "/models/simple").status_code == 404
    assert main(mme_server, "GET", "/v2/models/simple/ready").status_code == 200
    assert_serving(mme_server)


@pytest.mark.parametrize(
    "method,path",
    [
        ("PUT", "/models"),
        ("DELETE", "/models"),
        ("PATCH", "/models/x"),
        ("PUT", "/models/x"),
        ("POST", "/models/x/other"),
        ("GET", "/models/x/y/z"),
        ("POST", "/models/x/invoke/y"),
    ],
)
def test_mme_other_methods_and_shapes_are_400(mme_server, method, path):
    r = sm(mme_server, method, path, data=b"{}")
    assert r.status_code == 400, (method, path, r.status_code, r.content[:300])
    assert_serving(mme_server)


def test_mme_model_served_under_the_sagemaker_name(mme_server, mme_dirs):
    """Triton maps the archive's model directory to the SageMaker name (TRITONSERVER_ServerRegisterModelRepository
    with subdir -> model_name): the model is served, listed and reported as `<name>`, whatever its directory is
    called inside the archive."""
    root, _ = mme_dirs
    write_model(root / "nmq1" / "model" / "resnet")
    r = mme_load(mme_server, "nmq1", root / "nmq1" / "model")
    assert r.status_code == 200, r.content[:500]
    try:
        assert_simple_json(sm(mme_server, "POST", "/models/nmq1/invoke", data=SIMPLE_BODY, headers=JSON_HDR), model="nmq1")
        assert main(mme_server, "GET", "/v2/models/nmq1/ready").status_code == 200
    finally:
        assert sm(mme_server, "DELETE", "/models/nmq1").status_code == 200


def test_mme_two_archives_with_the_same_inner_model_name(mme_server, mme_dirs):
    """Two SageMaker models whose archives both hold a directory `resnet` (two versions of one model, the common
    MME case): both load and each invoke reaches its own archive."""
    root, _ = mme_dirs
    for name in ("sam1", "sam2"):
        write_model(root / name / "model" / "resnet")
    loaded = []
    try:
        for name in ("sam1", "sam2"):
            r = mme_load(mme_server, name, root / name / "model")
            assert r.status_code == 200, (name, r.status_code, r.content[:500])
            loaded.append(name)
        assert sorted(e["modelName"] for e in mme_list(mme_server)) == ["sam1", "sam2"]
        for name in ("sam1", "sam2"):
            r = sm(mme_server, "POST", f"/models/{name}/invoke", data=SIMPLE_BODY, headers=JSON_HDR)
            assert r.status_code == 200 and outputs_of(r.json()) == {"OUTPUT0": SUM, "OUTPUT1": DIFF}, r.content[:500]
    finally:
        for name in loaded:
            sm(mme_server, "DELETE", f"/models/{name}")
    assert mme_list(mme_server) == []


def test_mme_load_cannot_replace_or_unload_a_repository_model(tmp_path):
    """An archive whose model directory is called `simple` (the operator's model, loaded from the repository)
    holds a different model (identity_fp32). Loading it must not replace the served `simple`, and unloading the
    SageMaker model must not unload `simple`. (Own server: a failure here would break the shared one.)"""
    root = tmp_path / "root"
    inner = root / "hij1" / "model" / "simple"
    inner.mkdir(parents=True)
    config = (example_repo() / "identity_fp32" / "config.pbtxt").read_text()
    (inner / "config.pbtxt").write_text(re.sub(r'(?m)^name:.*\n', "", config))
    shutil.copytree(example_repo() / "identity_fp32" / "1", inner / "1")
    env = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple", "SAGEMAKER_MULTI_MODEL": "true"}
    with sm_running(mme_args(example_repo(), root, "--load-model=simple"), "rampart[sagemaker mme replace]", env) as srv:
        md_before = main(srv, "GET", "/v2/models/simple").json()
        # The archive's model is served under the requested name `hij1` (its directory name does not matter), so
        # the load succeeds and `simple` stays the repository's model.
        r = mme_load(srv, "hij1", root / "hij1" / "model")
        assert r.status_code == 200, r.content[:500]
        md_after = main(srv, "GET", "/v2/models/simple").json()
        assert md_after == md_before, f"the repository model `simple` was replaced: {md_after}"
        assert_simple_json(main(srv, "POST", "/v2/models/simple/infer", data=SIMPLE_BODY, headers=JSON_HDR))
        assert sm(srv, "DELETE", "/models/hij1").status_code == 200
        assert main(srv, "GET", "/v2/models/simple/ready").status_code == 200, "unloading hij1 unloaded `simple`"
        assert_serving(srv)


def test_mme_unauthenticated_on_a_non_loopback_address_is_refused(mme_dirs):
    """Rampart refuses explicit model control whose model-repository API answers without credentials on a
    non-loopback address (unless --allow-unauthenticated-model-control=true). The SageMaker MME load route is such
    an API: with the main HTTP listener off, the check must still see the SageMaker listener."""
    root, _ = mme_dirs
    args = [a for a in mme_args(example_repo(), root) if a != "--http-address=127.0.0.1"]
    args += ["--http-address=0.0.0.0", "--allow-http=false"]
    out = startup_failure(args, {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple", "SAGEMAKER_MULTI_MODEL": "true"}, timeout=8)
    assert "--allow-unauthenticated-model-control" in out, out[-2000:]


# ---------------------------------------------------------------------------------------------------------------
# CVE-2026-24208 / 24209: path traversal in the MME load url and name; nothing outside the root is loaded
# ---------------------------------------------------------------------------------------------------------------


def _hostile_urls(root: Path, outside: Path) -> dict[str, str]:
    """id -> url; prepared on disk by _prepare_hostile (every target holds a loadable model)."""
    rel_out = os.path.relpath(outside, root)
    return {
        "outside-direct": f"{outside}/evil/model",
        "outside-model-dir": f"{outside}/direct",
        "dotdot-out": f"{root}/good1/model/../../{rel_out}/evil/model",
        "dotdot-root-out": f"{root}/../{outside.name}/evil/model",
        "dotdot-stays-inside": f"{root}/good1/../good1/model",
        "dotdot-trailing": f"{root}/good1/model/..",
        "dotdot-inner": f"{root}/good1/model/good1/../good1",
        "proc-self-root": f"/proc/self/root{root}/good1/model",
        "proc-self-cwd": "/proc/self/cwd/examples/models",
        "proc-environ": "/proc/self/environ",
        "dev-shm": "/dev/shm",
        "dev-stdin": "/dev/stdin",
        "sys": "/sys/kernel",
        "opt-ml-default-root": "/opt/ml/models/abc/model",
        "relative": "good1/model",
        "relative-dot": f"./{root}/good1/model",
        "root-itself": f"{root}",
        "no-model-component": f"{root}/good1",
        "not-model-component": f"{root}/good1/notmodel",
        "too-deep": f"{root}/deep1/model/sub/m",
        "non-alnum-name-dot": f"{root}/bad.name/model",
        "hidden-name": f"{root}/.hidden/model",
        "symlink-name-out": f"{root}/link1/model",
        "symlink-model-out": f"{root}/link2/model",
        "symlink-subdir-out": f"{root}/link3/model",
        "symlink-custsub-out": f"{root}/link4/model/sub",
        "nul-byte": f"{root}/good1/model\x00/../../../{rel_out}/evil/model",
        "newline": f"{root}/good1/model\n",
        "prefix-sibling": f"{root}x/good1/model",
        "file-url-scheme": f"file://{root}/good1/model",
        "s3-url": "s3://bucket/good1/model",
    }


@pytest.fixture(scope="module")
def hostile(mme_dirs):
    root, outside = mme_dirs
    write_model(root / "good1" / "model" / "good1")
    write_model(root / "good1" / "notmodel" / "good1")
    write_model(root / "deep1" / "model" / "sub" / "m" / "x")
    write_model(root / "bad.name" / "model" / "m")
    write_model(root / ".hidden" / "model" / "m")
    write_model(Path(f"{root}x") / "good1" / "model" / "m")
    (root / "link1").symlink_to(outside / "evil", target_is_directory=True)
    (root / "link2").mkdir()
    (root / "link2" / "model").symlink_to(outside / "evil" / "model", target_is_directory=True)
    (root / "link3" / "model").mkdir(parents=True)
    (root / "link3" / "model" / "evil").symlink_to(outside / "evil" / "model" / "evil", target_is_directory=True)
    (root / "link4" / "model").mkdir(parents=True)
    (root / "link4" / "model" / "sub").symlink_to(outside / "evil" / "model", target_is_directory=True)
    return _hostile_urls(root, outside)


HOSTILE_IDS = list(_hostile_urls(Path("/r/root"), Path("/r/outside")))


@pytest.mark.parametrize("case", HOSTILE_IDS)
def test_cve_2026_24208_mme_load_url_refused(mme_server, hostile, case):
    url = hostile[case]
    before = snapshot(mme_server)
    r = mme_load(mme_server, "hostile1", url)
    assert r.status_code == 400, f"{case}: url {url!r} -> {r.status_code} {r.content[:500]!r}"
    error_message(r)
    assert snapshot(mme_server) == before, f"{case}: something was loaded"
    assert sm(mme_server, "GET", "/models/hostile1").status_code == 404
    assert main(mme_server, "GET", "/v2/models/hostile1").status_code == 404
    assert_serving(mme_server)


@pytest.mark.parametrize("what", ["version-dir", "model-file", "config-file"])
def test_cve_2026_24208_mme_symlink_inside_the_model_leading_out(mme_server, mme_dirs, what):
    """The archive's model directory is inside the root, but its version directory / model file / config is a
    symbolic link to the model outside: following it loads files from outside the root."""
    root, outside = mme_dirs
    name = {"version-dir": "syv1", "model-file": "syf1", "config-file": "syc1"}[what]
    inner = root / name / "model" / name
    evil = outside / "evil" / "model" / "evil"
    if not inner.exists():
        inner.mkdir(parents=True)
        if what == "version-dir":
            shutil.copy(evil / "config.pbtxt", inner / "config.pbtxt")
            (inner / "1").symlink_to(evil / "1", target_is_directory=True)
        elif what == "model-file":
            shutil.copy(evil / "config.pbtxt", inner / "config.pbtxt")
            (inner / "1").mkdir()
            (inner / "1" / "model.onnx").symlink_to(evil / "1" / "model.onnx")
        else:
            (inner / "config.pbtxt").symlink_to(evil / "config.pbtxt")
            shutil.copytree(evil / "1", inner / "1")
    before = snapshot(mme_server)
    r = mme_load(mme_server, name, root / name / "model")
    try:
        assert r.status_code == 400, f"{what}: {r.status_code} {r.content[:500]!r}"
        error_message(r)
        assert snapshot(mme_server) == before
    finally:
        if r.status_code == 200:
            sm(mme_server, "DELETE", f"/models/{name}")
    assert_serving(mme_server)


def test_mme_valid_control_for_hostile_targets(mme_server, hostile, mme_dirs):
    """Control: the good1 model that hostile urls reach by other spellings loads by its canonical url."""
    root, _ = mme_dirs
    r = mme_load(mme_server, "good1", root / "good1" / "model")
    assert r.status_code == 200, r.content[:500]
    try:
        assert_simple_json(sm(mme_server, "POST", "/models/good1/invoke", data=SIMPLE_BODY, headers=JSON_HDR), model="good1")
    finally:
        assert sm(mme_server, "DELETE", "/models/good1").status_code == 200


@pytest.mark.parametrize(
    "name",
    ["../evil", "..", ".", "a/b", "/abs", "a\\b", "", " ", "a\x00b", "x" * 4096, "a\nb"],
    ids=["dotdot-slash", "dotdot", "dot", "slash", "absolute", "backslash", "empty", "blank", "nul", "long", "newline"],
)
def test_cve_2026_24209_mme_load_hostile_name_refused(mme_server, mme_dirs, name):
    root, _ = mme_dirs
    url = root / "nm01" / "model"
    write_model(url / "nm01")
    before = snapshot(mme_server)
    r = mme_load(mme_server, name, url)
    assert r.status_code == 400, f"name {name[:40]!r} -> {r.status_code} {r.content[:500]!r}"
    error_message(r)
    assert snapshot(mme_server) == before
    assert_serving(mme_server)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"x"',
        b"{}",
        b'{"model_name": "abc"}',
        b'{"url": "/x"}',
        b'{"model_name": 5, "url": "/x"}',
        b'{"model_name": "abc", "url": 5}',
        b'{"model_name": "abc", "url": null}',
        b'{"model_name": "abc", "url": ["a"]}',
        b'{"model_name": "abc", "url": {"a": 1}}',
    ],
)
def test_cve_2025_33238_mme_load_malformed_bodies(mme_server, body):
    before = snapshot(mme_server)
    r = sm(mme_server, "POST", "/models", data=body, headers=JSON_HDR)
    assert r.status_code == 400, (body, r.status_code, r.content[:500])
    error_message(r)
    assert snapshot(mme_server) == before
    assert_serving(mme_server)


def _failing_archives(root: Path) -> list[str]:
    """Archives that pass the url checks and then fail to load: missing dir, empty dir, a file, two models, a model
    that does not load, a config that does not parse."""
    (root / "empty1" / "model").mkdir(parents=True)
    (root / "file1").mkdir()
    (root / "file1" / "model").write_text("not a directory")
    write_model(root / "two1" / "model" / "m1")
    write_model(root / "two1" / "model" / "m2")
    (root / "brk1" / "model" / "brk1" / "1").mkdir(parents=True)
    (root / "brk1" / "model" / "brk1" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 0\n')
    (root / "brk1" / "model" / "brk1" / "1" / "model.onnx").write_bytes(b"garbage")
    (root / "cfg1" / "model" / "cfg1").mkdir(parents=True)
    (root / "cfg1" / "model" / "cfg1" / "config.pbtxt").write_text("this is { not protobuf text")
    return ["missing1", "empty1", "file1", "two1", "brk1", "cfg1"]


MME_ENV = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple", "SAGEMAKER_MULTI_MODEL": "true"}


def test_cve_2025_33238_mme_error_paths(tmp_path):
    """Each failing load is a 400 with a message, nothing is listed or invocable, the server keeps serving."""
    root = tmp_path / "root"
    names = _failing_archives(root)
    with sm_running(mme_args(example_repo(), root, "--load-model=simple"), "rampart[sagemaker mme errors]", MME_ENV) as srv:
        for name in names:
            r = mme_load(srv, name, root / name / "model")
            assert r.status_code == 400, (name, r.status_code, r.content[:500])
            error_message(r)
            assert mme_list(srv) == [], name
            assert sm(srv, "GET", f"/models/{name}").status_code == 404
            assert sm(srv, "POST", f"/models/{name}/invoke", data=SIMPLE_BODY, headers=JSON_HDR).status_code == 404
            assert sm(srv, "DELETE", f"/models/{name}").status_code == 404
            # A failed load leaves no entry behind: an unknown model.
            assert_error(main(srv, "GET", f"/v2/models/{name}/ready"), 404, exact=f"Request for unknown model: '{name}' is not found")
            assert_simple_json(sm(srv, "POST", "/invocations", data=SIMPLE_BODY, headers=JSON_HDR))
            assert srv.alive()


@pytest.mark.parametrize("name", ["brk1", "cfg1"])
def test_mme_failed_load_keeps_the_endpoint_healthy(tmp_path, name):
    root = tmp_path / "root"
    _failing_archives(root)
    with sm_running(mme_args(example_repo(), root, "--load-model=simple"), "rampart[sagemaker mme failed load]", MME_ENV) as srv:
        assert mme_load(srv, name, root / name / "model").status_code == 400
        r = sm(srv, "GET", "/ping")
        assert r.status_code == 200, f"/ping {r.status_code} after a failed load; index {index_state(srv)}"


def test_mme_concurrent_loads_of_one_name(mme_server, mme_dirs):
    """Sixteen simultaneous loads of one name (connections opened first, requests sent together): exactly one
    wins, the others are refused with 409; one entry is listed. The model warms up 1000 times, so a load takes long
    enough for every request to arrive while the first is still loading."""
    root, _ = mme_dirs
    config = write_model(root / "conc1" / "model" / "conc1") / "config.pbtxt"
    if "model_warmup" not in config.read_text():
        config.write_text(
            config.read_text()
            + """model_warmup [ {
  name: "slow" batch_size: 1 count: 1000
  inputs { key: "INPUT0" value: { data_type: TYPE_INT32 dims: [ 16 ] zero_data: true } }
  inputs { key: "INPUT1" value: { data_type: TYPE_INT32 dims: [ 16 ] zero_data: true } }
} ]
"""
        )
    n = 16
    body = json.dumps({"model_name": "conc1", "url": str(root / "conc1" / "model")}).encode()
    head = (
        f"POST /models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    # Everything but the last body byte goes out first; the last bytes are sent together.
    socks = [socket.create_connection(("127.0.0.1", mme_server.extra_port), timeout=HTTP_TIMEOUT) for _ in range(n)]
    for sock in socks:
        sock.sendall(head + body[:-1])
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        socks[i].sendall(body[-1:])
        resp = b""
        while chunk := socks[i].recv(65536):
            resp += chunk
        results[i] = int(resp.split(b" ", 2)[1]) if resp else None

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for sock in socks:
        sock.close()
    try:
        # Loads are serialised: one wins, every other sees the model loaded.
        assert sorted(results) == [200] + [409] * (n - 1), results
        assert mme_list(mme_server) == [{"modelName": "conc1", "modelUrl": str(root / "conc1" / "model")}]
        assert_simple_json(sm(mme_server, "POST", "/models/conc1/invoke", data=SIMPLE_BODY, headers=JSON_HDR), model="conc1")
    finally:
        assert sm(mme_server, "DELETE", "/models/conc1").status_code == 200
    assert mme_list(mme_server) == []


def test_mme_needs_explicit_mode(mme_dirs):
    """SAGEMAKER_MULTI_MODEL=true without --model-control-mode=explicit: refused at startup, naming the flag."""
    root, _ = mme_dirs
    out = startup_failure(
        sm_args(example_repo(), f"--sagemaker-multi-model-root={root}"),
        {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple", "SAGEMAKER_MULTI_MODEL": "true"},
    )
    assert "--model-control-mode=explicit" in out, out[-2000:]


# ===============================================================================================================
# --http-restricted-api on the SageMaker port (CVE-2026-24206/24207, CVE-2026-47481)
# ===============================================================================================================


hdr = partial(key_header, KEYS)  # hdr(cat): the header that opens `cat`
all_but = partial(other_key_headers, KEYS)  # all_but(cat): those of every other category


@pytest.fixture(scope="module")
def restricted(tmp_path_factory):
    root = tmp_path_factory.mktemp("sm_restricted_root")
    write_model(root / "rst1" / "model" / "rst1")
    write_model(root / "rst2" / "model" / "rst2")
    flags = [f"--http-restricted-api={c}:{k}={v}" for c, (k, v) in KEYS.items()]
    srv = start_sm(
        mme_args(example_repo(), root, "--load-model=simple", *flags),
        "rampart[sagemaker restricted]",
        {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple", "SAGEMAKER_MULTI_MODEL": "true"},
        health_headers=hdr("health"),
    )
    r = mme_load(srv, "rst1", root / "rst1" / "model", headers=hdr("model-repository"))
    assert r.status_code == 200, r.content[:500]
    srv.mme_root = root
    yield srv
    finish_server(srv)


def _load_body(srv) -> bytes:
    return json.dumps({"model_name": "rstx", "url": "/proc/self/root/etc"}).encode()


# (category, method, path, body, status with the right key)
RESTRICTED_ROUTES = [
    ("health", "GET", "/ping", None, 200),
    ("inference", "POST", "/invocations", SIMPLE_BODY, 200),
    ("inference", "POST", "/models/rst1/invoke", SIMPLE_BODY, 200),
    ("inference", "POST", "/models/nosuch/invoke", SIMPLE_BODY, 404),
    ("model-repository", "GET", "/models", None, 200),
    ("model-repository", "GET", "/models/rst1", None, 200),
    ("model-repository", "GET", "/models/nosuch", None, 404),
    ("model-repository", "POST", "/models", b"load-hostile", 400),
    ("model-repository", "DELETE", "/models/nosuch", None, 404),
]


RESTRICTED_CASES = [
    pytest.param(
        *route,
        variant,
        id=f"{route[1]}-{route[2]}-{variant}",
    )
    for route in RESTRICTED_ROUTES
    for variant in ("none", "wrong-value", "other-keys", "right")
]


@pytest.mark.parametrize("cat,method,path,body,ok,variant", RESTRICTED_CASES)
def test_restricted_routes(restricted, cat, method, path, body, ok, variant):
    if body == b"load-hostile":
        body = _load_body(restricted)
    key, value = KEYS[cat]
    headers = {"none": {}, "wrong-value": {key: value + "x"}, "other-keys": all_but(cat), "right": hdr(cat)}[variant]
    before = snapshot(restricted, {**hdr("model-repository")})
    r = sm(restricted, method, path, data=body, headers={**JSON_HDR, **headers} if body else headers)
    if variant == "right":
        assert r.status_code == ok, (variant, method, path, r.status_code, r.content[:500])
        if path in ("/invocations", "/models/rst1/invoke"):
            assert outputs_of(r.json()) == {"OUTPUT0": SUM, "OUTPUT1": DIFF}
        if (method, path) == ("GET", "/models"):
            assert r.json() == {"models": [{"modelName": "rst1", "modelUrl": str(restricted.mme_root / "rst1" / "model")}]}
    else:
        assert_denied(r, key, f"{variant} {method} {path}")
    assert snapshot(restricted, hdr("model-repository")) == before


def test_restricted_load_and_unload_need_the_repository_key(restricted):
    root = restricted.mme_root
    repo = hdr("model-repository")
    for headers in ({}, hdr("inference"), hdr("health"), {KEYS["model-repository"][0]: "wrong"}):
        assert_denied(mme_load(restricted, "rst2", root / "rst2" / "model", headers=headers), KEYS["model-repository"][0], f"load {headers}")
    assert sm(restricted, "GET", "/models/rst2", headers=repo).status_code == 404
    assert mme_load(restricted, "rst2", root / "rst2" / "model", headers=repo).status_code == 200
    try:
        r = sm(restricted, "POST", "/models/rst2/invoke", data=SIMPLE_BODY, headers={**JSON_HDR, **hdr("inference")})
        assert_simple_json(r, model="rst2")
        # CVE-2026-47481: the MME invoke route is an inference route like /invocations.
        assert_denied(sm(restricted, "POST", "/models/rst2/invoke", data=SIMPLE_BODY, headers={**JSON_HDR, **repo}), KEYS["inference"][0])
        for headers in ({}, hdr("inference")):
            assert_denied(sm(restricted, "DELETE", "/models/rst2", headers=headers), KEYS["model-repository"][0])
        assert sm(restricted, "GET", "/models/rst2", headers=repo).status_code == 200
    finally:
        assert sm(restricted, "DELETE", "/models/rst2", headers=repo).status_code == 200
    assert sm(restricted, "GET", "/models/rst2", headers=repo).status_code == 404


def test_restricted_check_before_method(restricted):
    """Like the main port: a wrong method without the key is 403, not 405."""
    assert_denied(sm(restricted, "GET", "/invocations"), KEYS["inference"][0])
    assert_denied(sm(restricted, "POST", "/ping", data=b"{}"), KEYS["health"][0])


def test_restricted_unknown_paths_need_nothing(restricted):
    for method, path in (("GET", "/"), ("GET", "/v2/health/ready"), ("POST", "/models/rst1/other")):
        r = sm(restricted, method, path)
        assert r.status_code == 400, (method, path, r.status_code, r.content[:300])


def test_restricted_main_port_uses_the_same_keys(restricted):
    assert_denied(main(restricted, "POST", "/v2/models/simple/infer", data=SIMPLE_BODY), KEYS["inference"][0])
    r = main(restricted, "POST", "/v2/models/simple/infer", data=SIMPLE_BODY, headers=hdr("inference"))
    assert outputs_of(r.json()) == {"OUTPUT0": SUM, "OUTPUT1": DIFF}


def test_restricted_values_not_logged(restricted):
    out = restricted.stderr_text() + restricted.stdout_text()
    assert "Started Sagemaker HTTPService" in out
    for _, value in KEYS.values():
        assert value not in out and value + "x" not in out


# ===============================================================================================================
# --http-max-input-size and many-chunk bodies (CVE-2025-23310/23311, CVE-2026-47476)
# ===============================================================================================================

CAP = 4096


def too_big(n) -> str:
    """The --http-max-input-size refusal of a JSON body (Triton's text)."""
    return (
        f"request JSON size of {n} bytes exceeds the maximum allowed input size of {CAP} bytes. Use --http-max-input-size"
        " to increase the limit."
    )


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    root = tmp_path_factory.mktemp("sm_capped_root")
    write_model(root / "cap1" / "model" / "cap1")
    srv = start_sm(
        mme_args(example_repo(), root, "--load-model=simple", f"--http-max-input-size={CAP}"),
        "rampart[sagemaker cap]",
        {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple", "SAGEMAKER_MULTI_MODEL": "true"},
    )
    assert mme_load(srv, "cap1", root / "cap1" / "model").status_code == 200
    srv.mme_root = root
    yield srv
    finish_server(srv)


def test_body_limit_under_and_at_the_cap(capped):
    for size in (CAP - 1, CAP):
        assert_simple_json(sm(capped, "POST", "/invocations", data=padded(SIMPLE_BODY, size), headers=JSON_HDR))


@pytest.mark.parametrize("path", ["/invocations", "/models", "/models/cap1/invoke"])
def test_body_limit_over_the_cap(capped, path):
    r = sm(capped, "POST", path, data=padded(SIMPLE_BODY, CAP + 1), headers=JSON_HDR)
    assert_error(r, 400, exact=too_big(CAP + 1))
    assert [e["modelName"] for e in mme_list(capped)] == ["cap1"]
    assert_serving(capped)


def test_body_limit_mme_invoke_at_the_cap(capped):
    assert_simple_json(sm(capped, "POST", "/models/cap1/invoke", data=padded(SIMPLE_BODY, CAP), headers=JSON_HDR), model="cap1")


def test_body_limit_over_the_cap_chunked(capped):
    body = padded(SIMPLE_BODY, 64 * 1024)
    status, rbody, _ = chunked_post(capped, "/invocations", (body[i : i + 1024] for i in range(0, len(body), 1024)))
    assert status == 400, (status, rbody[:300])
    msg = json.loads(rbody)["error"]
    assert str(CAP) in msg and "--http-max-input-size" in msg, msg
    assert_serving(capped)


def test_body_limit_huge_content_length_is_refused_early(capped):
    """A Content-Length far above the cap is refused without reading the body; the server keeps serving."""
    head = (
        "POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {1 << 40}\r\n\r\n"
    ).encode()
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", capped.extra_port), timeout=HTTP_TIMEOUT) as s:
        s.sendall(head + b"{" * 1024)
        resp = b""
        while b"\r\n\r\n" not in resp or not resp.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            resp += chunk
    assert resp.startswith(b"HTTP/1.1 400"), resp[:300]
    assert b"--http-max-input-size" in resp, resp[:500]
    assert time.monotonic() - t0 < 10
    assert_serving(capped)


def test_body_limit_keep_alive_connection_survives_or_closes_cleanly(capped):
    conn = http.client.HTTPConnection("127.0.0.1", capped.extra_port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("POST", "/invocations", body=padded(SIMPLE_BODY, CAP + 100), headers=JSON_HDR)
        resp = conn.getresponse()
        assert resp.status == 400
        assert "--http-max-input-size" in json.loads(resp.read())["error"]
        # The refused body is left unread, so the refusal says `Connection: close` (http.client then sends the next
        # request on a new connection, which is served).
        assert resp.getheader("Connection") == "close", resp.getheaders()
        conn.request("POST", "/invocations", body=SIMPLE_BODY, headers=JSON_HDR)
        resp2 = conn.getresponse()
        status, body = resp2.status, resp2.read()
        assert status == 200 and outputs_of(json.loads(body)) == {"OUTPUT0": SUM, "OUTPUT1": DIFF}, (status, body[:300])
    finally:
        conn.close()
    assert_serving(capped)


def test_body_limit_binary_request_under_the_cap(capped):
    body, json_size = binary_request()
    assert len(body) < CAP
    assert_simple_binary(sm(capped, "POST", "/invocations", data=body, headers=binary_header(json_size)))


MANY = 100_000


def test_many_one_byte_chunks_valid_request(sm_server):
    body = padded(SIMPLE_BODY, MANY)
    status, rbody, secs = chunked_post(sm_server, "/invocations", (body[i : i + 1] for i in range(len(body))))
    assert status == 200, rbody[:300]
    assert outputs_of(json.loads(rbody)) == {"OUTPUT0": SUM, "OUTPUT1": DIFF}
    assert secs < 60, f"{secs:.1f}s"
    assert_serving(sm_server)


def test_many_A_chunks_invocations(sm_server):
    status, rbody, secs = chunked_post(sm_server, "/invocations", (b"A" for _ in range(MANY)))
    assert status == 400, rbody[:300]
    assert "failed to parse the request JSON buffer" in json.loads(rbody)["error"]
    assert secs < 60, f"{secs:.1f}s"
    assert_serving(sm_server)


@pytest.mark.parametrize(
    "path,status,message",
    [("/models", 400, "failed to parse the request JSON buffer"), ("/models/abc/invoke", 404, "Model 'abc' is not loaded")],
)
def test_many_A_chunks_mme(mme_server, path, status, message):
    before = snapshot(mme_server)
    got, rbody, secs = chunked_post(mme_server, path, (b"A" for _ in range(MANY)))
    assert got == status, (got, rbody[:300])
    assert message in json.loads(rbody)["error"], rbody[:300]
    assert secs < 60, f"{secs:.1f}s"
    assert snapshot(mme_server) == before
    assert_serving(mme_server)


def test_many_chunks_to_ping_and_unknown_path(sm_server):
    # /ping keeps the client's method (405 from the main router); other paths are SageMaker's 400.
    for path, status, message in (
        ("/ping", 405, "Method Not Allowed"),
        ("/nowhere", 400, "SageMaker: unsupported request POST /nowhere"),
    ):
        got, rbody, secs = chunked_post(sm_server, path, (b"A" for _ in range(MANY)))
        assert (got, json.loads(rbody)) == (status, {"error": message}), (path, got, rbody[:300])
        assert secs < 60
    assert_serving(sm_server)


def test_concurrent_invocations(sm_server):
    """Sixteen clients at once on the SageMaker port, each with its own request id."""
    results = concurrent_answers(lambda i: sm(sm_server, "POST", "/invocations", json={**SIMPLE_JSON, "id": f"c{i}"}))
    assert results == [(200, f"c{i}", {"OUTPUT0": SUM, "OUTPUT1": DIFF}) for i in range(16)], results


def test_sigterm_exits_cleanly_with_open_sagemaker_connection():
    env = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple"}
    srv = start_sm(sm_args(example_repo()), "rampart[sagemaker sigterm]", env)
    idle = socket.create_connection(("127.0.0.1", srv.extra_port), timeout=10)
    try:
        assert_simple_json(sm(srv, "POST", "/invocations", data=SIMPLE_BODY, headers=JSON_HDR))
    finally:
        try:
            finish_server(srv)
        finally:
            idle.close()
