"""Vertex AI front end (docs/protocol.md, "Vertex AI", "Restricted APIs", "Security history (CVEs)":
CVE-2026-24206/24207, CVE-2025-23310 many chunks).

`--allow-vertex-ai` (default true iff AIP_MODE=PREDICTION, which also turns the main HTTP and gRPC listeners off
by default) starts a listener on `--http-address` at `--vertex-ai-port` (default $AIP_HTTP_PORT or 8080; 0
here), announced by "Started Vertex AI HTTPService at <addr>:<port>". AIP_PREDICT_ROUTE and AIP_HEALTH_ROUTE are
both required; AIP_STORAGE_URI is the repository when --model-repository is not given.

GET <health route> -> readiness (200 / 400). POST <predict route> -> infer on --vertex-ai-default-model, else on
the repository's only model (several and no default -> 400 naming the flag). Binary requests use the content
type `application/vnd.vertex-ai-triton.binary+json;json-header-size=<N>`. The header
`X-Vertex-Ai-Triton-Redirect: <path without leading />` on a POST to the predict route re-dispatches to a Triton
endpoint (health, server/model metadata, model ready/config/stats/infer, shm status, repository index, metrics);
shm register/unregister and repository load/unload are refused with 403 (CVE-2026-24206/24207); unknown targets
are 404; a non-POST is 405. `--http-restricted-api` applies to the predict route (inference) and to every
redirect target by its category; the redirected metrics page is not restricted. Other paths -> 404.

Servers run on the first selected engine. The main HTTP listener stays on (port 0) for cross-checks unless a
test turns it off; the Vertex listener is found from its log line.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
from functools import partial
from pathlib import Path

import pytest
import requests

from cloud_frontends import DIFF, JSON_HDR, SIMPLE_BODY, SIMPLE_JSON, SUM, FrontEnd
from cloud_frontends import binary_request, chunked_post, concurrent_answers, front_end as vx, main, padded
from cloud_frontends import assert_alive, assert_denied, assert_simple_binary_body, assert_simple_json, outputs_of
from cloud_frontends import key_header, other_key_headers
from conftest import (
    HTTP_TIMEOUT,
    RampartServer,
    assert_error,
    base_args,
    engine_args,
    error_message,
    example_repo,
    finish_server,
    ort_dir,
    selected_engines,
    wait_models_settled,
)

ENGINE = selected_engines()[0]
BINARY_MIME = "application/vnd.vertex-ai-triton.binary+json;json-header-size="
REDIRECT = "X-Vertex-Ai-Triton-Redirect"
FLAG = "--vertex-ai-default-model"

# Routes as Vertex AI sets them: the health route is a prefix of the predict route.
PREDICT = "/v1/endpoints/e1/deployedModels/d1:predict"
HEALTH = "/v1/endpoints/e1/deployedModels/d1"
ROUTES = {"AIP_PREDICT_ROUTE": PREDICT, "AIP_HEALTH_ROUTE": HEALTH}

NOT_FOUND = {"error": "Not Found"}
NOT_ALLOWED = {"error": "Method Not Allowed"}

# A server started without an environment gets ROUTES; readiness polls the AIP_HEALTH_ROUTE of its environment.
VERTEX = FrontEnd("Vertex AI HTTPService", health_route=HEALTH, health_route_var="AIP_HEALTH_ROUTE", default_env=ROUTES)
VX_RE = VERTEX.listener


# ---------------------------------------------------------------------------------------------------------------
# Server handling (cloud_frontends.CloudServer: `extra_port` is the Vertex listener, `port` the main HTTP port)
# ---------------------------------------------------------------------------------------------------------------

# start_vx(args, label, env=None, wait=True, **kw) -> started server; vx_running(...): the same for one test;
# startup_failure(args, env, timeout=60) -> the output of a refused start.
start_vx = VERTEX.start
vx_running = VERTEX.running
startup_failure = VERTEX.startup_failure


def vx_args(repo, *extra) -> list[str]:
    return base_args(repo, ENGINE, ["--allow-vertex-ai=true", "--vertex-ai-port=0", *extra])


def with_metrics(args: list[str]) -> list[str]:
    out = [a for a in args if a != "--allow-metrics=false"]
    assert len(out) == len(args) - 1
    return [*out, "--allow-metrics=true", "--metrics-address=127.0.0.1", "--metrics-port=0"]


def bare_args(*extra) -> list[str]:
    """No listener flags at all (for AIP_MODE defaults): only address, backend and engine."""
    return ["--http-address=127.0.0.1", "--allow-metrics=false", f"--backend-directory={ort_dir()}", *engine_args(ENGINE), *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# Request helpers (vx(): one request to the Vertex port, main(): to the main port)
# ---------------------------------------------------------------------------------------------------------------


def predict_route(srv) -> str:
    """The predict route in the server's environment."""
    return srv.env.get("AIP_PREDICT_ROUTE", PREDICT)


def predict(srv, body: bytes | None = SIMPLE_BODY, headers: dict | None = None, method: str = "POST") -> requests.Response:
    hdrs = {**JSON_HDR, **(headers or {})} if body is not None and "Content-Type" not in (headers or {}) else dict(headers or {})
    return vx(srv, method, predict_route(srv), data=body, headers=hdrs)


def redirect(srv, target: str, body: bytes | None = None, headers: dict | None = None, method: str = "POST") -> requests.Response:
    hdrs = {REDIRECT: target, **(headers or {})}
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
    return vx(srv, method, predict_route(srv), data=body, headers=hdrs)


def binary_header(json_size: int) -> dict:
    return {"Content-Type": f"{BINARY_MIME}{json_size}"}


def assert_simple_binary(r: requests.Response, model: str = "simple") -> None:
    """Binary response, parsed as tritonclient does on a Vertex endpoint (Inference-Header-Content-Length)."""
    assert r.status_code == 200, f"{r.status_code}: {r.content[:1000]!r}"
    assert "Inference-Header-Content-Length" in r.headers, dict(r.headers)
    assert_simple_binary_body(r.content, int(r.headers["Inference-Header-Content-Length"]), model)


def assert_serving(srv, headers: dict | None = None) -> None:
    """The process runs and answers a normal predict and the health route on fresh connections."""
    assert_alive(srv)
    hdrs = dict(headers or {})
    assert_simple_json(predict(srv, headers=hdrs))
    assert vx(srv, "GET", srv.health_route, headers=hdrs).status_code == 200


def single_model_repo(dest: Path, model: str = "simple") -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(example_repo() / model, dest / model)
    return dest


# ===============================================================================================================
# Fixtures
# ===============================================================================================================


@pytest.fixture(scope="module")
def shm_object():
    """A 64-byte /dev/shm object a register would accept (so a refused register is refused for the route)."""
    name = f"rampart_vx_{os.getpid()}"
    path = Path("/dev/shm") / name
    path.write_bytes(bytes(64))
    yield f"/{name}"
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def vx_server():
    """examples/models in explicit mode with every model loaded (so load/unload would work on the main port),
    client shm on (so register would work there), metrics on, default model `simple`."""
    args = with_metrics(
        vx_args(
            example_repo(),
            f"{FLAG}=simple",
            "--model-control-mode=explicit",
            "--load-model=*",
            "--allow-client-shm=true",
        )
    )
    srv = start_vx(args, "rampart[vertex]")
    yield srv
    finish_server(srv)


# ===============================================================================================================
# Startup, health, predict
# ===============================================================================================================


def test_started_line_and_both_listeners_serve(vx_server):
    m = VX_RE.search(vx_server.stderr_text() + vx_server.stdout_text())
    assert m and m.group(1) == "127.0.0.1", vx_server.output()
    assert vx_server.extra_port not in (0, vx_server.port, 8080)
    assert main(vx_server, "GET", "/v2/health/ready").status_code == 200
    # The Vertex port serves only its two routes; the main port does not serve them.
    assert vx(vx_server, "GET", "/v2/health/ready").status_code == 404
    assert main(vx_server, "GET", HEALTH).status_code == 404


def test_health_route_ready(vx_server):
    r = vx(vx_server, "GET", HEALTH)
    assert (r.status_code, r.content) == (200, b""), (r.status_code, r.content)


def test_health_route_wrong_method(vx_server):
    r = vx(vx_server, "POST", HEALTH, data=b"{}")
    assert (r.status_code, r.json()) == (405, NOT_ALLOWED)


def test_predict_json_equals_main_infer(vx_server):
    r = predict(vx_server)
    body = assert_simple_json(r)
    reference = main(vx_server, "POST", "/v2/models/simple/infer", data=SIMPLE_BODY, headers=JSON_HDR)
    assert reference.status_code == 200 and body == reference.json(), (body, reference.content)


def test_predict_with_id_and_requested_output(vx_server):
    r = predict(vx_server, json.dumps({**SIMPLE_JSON, "id": "vx-1", "outputs": [{"name": "OUTPUT0"}]}).encode())
    assert r.status_code == 200, r.content[:500]
    assert r.json()["id"] == "vx-1" and outputs_of(r.json()) == {"OUTPUT0": SUM}


def test_predict_binary_content_type(vx_server):
    body, json_size = binary_request()
    assert json_size is not None and json_size < len(body)
    r = predict(vx_server, body, binary_header(json_size))
    assert_simple_binary(r)


def test_predict_binary_json_inputs(vx_server):
    body, json_size = binary_request(binary_inputs=False)
    assert json_size is None
    assert_simple_binary(predict(vx_server, body, binary_header(len(body))))


def test_predict_binary_header_size_out_of_range(vx_server):
    body, json_size = binary_request()
    r = predict(vx_server, body, binary_header(len(body) + 1))
    assert_error(r, 400, f"inference header size should be in range (0, {len(body)}), got: {len(body) + 1}")
    assert_serving(vx_server)


@pytest.mark.parametrize("suffix", ["abc", "-5", "99999999999999999999", ""])
def test_predict_binary_header_size_malformed(vx_server, suffix):
    body, _ = binary_request()
    r = predict(vx_server, body, {"Content-Type": BINARY_MIME + suffix})
    assert_error(r, 400, "json-header-size")
    assert_serving(vx_server)


def test_predict_sagemaker_content_type_is_not_binary_here(vx_server):
    """The SageMaker vendor type means nothing on Vertex: the body is taken as JSON, which it is not."""
    body, json_size = binary_request()
    r = predict(vx_server, body, {"Content-Type": f"application/vnd.sagemaker-triton.binary+json;json-header-size={json_size}"})
    assert_error(r, 400, "failed to parse the request JSON buffer")


def test_predict_malformed_json(vx_server):
    assert_error(predict(vx_server, b'{"inputs": ['), 400, "failed to parse the request JSON buffer")
    assert_serving(vx_server)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_predict_wrong_method(vx_server, method):
    r = vx(vx_server, method, PREDICT)
    assert (r.status_code, r.json()) == (405, NOT_ALLOWED)


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/"),
        ("GET", "/v2"),
        ("POST", "/v2/models/simple/infer"),
        ("GET", "/v2/health/live"),
        ("GET", "/metrics"),
        ("POST", PREDICT + "x"),
        ("POST", PREDICT + "/"),
        ("GET", HEALTH + "/"),
        ("GET", HEALTH + "x"),
        ("POST", "/v1/endpoints/e1/deployedModels/d1:PREDICT"),
        ("POST", "/predict"),
        ("GET", "/health"),
        ("GET", "/ping"),
        ("POST", "/invocations"),
    ],
)
def test_other_paths_are_404(vx_server, method, path):
    r = vx(vx_server, method, path, data=SIMPLE_BODY if method == "POST" else None)
    assert (r.status_code, r.json()) == (404, NOT_FOUND), (method, path, r.status_code, r.content[:300])


def test_concurrent_predicts(vx_server):
    results = concurrent_answers(lambda i: predict(vx_server, json.dumps({**SIMPLE_JSON, "id": f"v{i}"}).encode()))
    assert results == [(200, f"v{i}", {"OUTPUT0": SUM, "OUTPUT1": DIFF}) for i in range(16)], results


# ===============================================================================================================
# X-Vertex-Ai-Triton-Redirect
# ===============================================================================================================

# Redirect target -> the equivalent main-port request (method, path); the answers must be identical.
SAME_AS_MAIN = [
    ("v2/health/live", "GET", "/v2/health/live"),
    ("v2/health/ready", "GET", "/v2/health/ready"),
    ("v2", "GET", "/v2"),
    ("v2/models/simple", "GET", "/v2/models/simple"),
    ("v2/models/simple/versions/1", "GET", "/v2/models/simple/versions/1"),
    ("v2/models/identity_fp32", "GET", "/v2/models/identity_fp32"),
    ("v2/models/simple/ready", "GET", "/v2/models/simple/ready"),
    ("v2/models/simple/versions/1/ready", "GET", "/v2/models/simple/versions/1/ready"),
    ("v2/models/simple/config", "GET", "/v2/models/simple/config"),
    ("v2/models/simple/versions/1/config", "GET", "/v2/models/simple/versions/1/config"),
    ("v2/models/simple/stats", "GET", "/v2/models/simple/stats"),
    ("v2/models/stats", "GET", "/v2/models/stats"),
    ("v2/systemsharedmemory/status", "GET", "/v2/systemsharedmemory/status"),
    ("v2/systemsharedmemory/region/nosuch/status", "GET", "/v2/systemsharedmemory/region/nosuch/status"),
    ("v2/cudasharedmemory/status", "GET", "/v2/cudasharedmemory/status"),
    ("v2/repository/index", "POST", "/v2/repository/index"),
    ("v2/models/nosuch", "GET", "/v2/models/nosuch"),
    ("v2/models/nosuch/ready", "GET", "/v2/models/nosuch/ready"),
    ("v2/models/simple/versions/7/config", "GET", "/v2/models/simple/versions/7/config"),
]


@pytest.mark.parametrize("target,method,path", SAME_AS_MAIN, ids=[t for t, _, _ in SAME_AS_MAIN])
def test_redirect_same_answer_as_main(vx_server, target, method, path):
    r = redirect(vx_server, target)
    ref = main(vx_server, method, path)
    assert (r.status_code, r.content) == (ref.status_code, ref.content), (target, r.status_code, r.content[:500], ref.content[:500])


def test_redirect_answers_have_real_values(vx_server):
    """Spot checks of the redirected answers (the comparison above would pass if both ports were broken alike)."""
    r = redirect(vx_server, "v2/health/live")
    assert (r.status_code, r.json()) == (200, {"live": True}), "the KServe route answers as on the main port"
    md = redirect(vx_server, "v2").json()
    assert md["name"] and "binary_tensor_data" in md["extensions"], md
    mmd = redirect(vx_server, "v2/models/simple").json()
    assert mmd["name"] == "simple" and [i["name"] for i in mmd["inputs"]] == ["INPUT0", "INPUT1"], mmd
    cfg = redirect(vx_server, "v2/models/simple/config").json()
    assert cfg["name"] == "simple" and cfg["max_batch_size"] == 8, cfg
    stats = redirect(vx_server, "v2/models/simple/stats").json()
    assert [s["name"] for s in stats["model_stats"]] == ["simple"], stats
    idx = {e["name"]: e["state"] for e in redirect(vx_server, "v2/repository/index").json()}
    assert idx == {"simple": "READY", "identity_fp32": "READY", "identity_bytes": "READY", "mlp": "READY"}, idx
    assert redirect(vx_server, "v2/systemsharedmemory/status").json() == []
    assert_error(redirect(vx_server, "v2/models/nosuch"), 404, "nosuch")


@pytest.mark.parametrize("target", ["v2/models/simple/infer", "v2/models/simple/versions/1/infer", "/v2/models/simple/infer"])
def test_redirect_infer(vx_server, target):
    r = redirect(vx_server, target, SIMPLE_BODY)
    body = assert_simple_json(r)
    ref = main(vx_server, "POST", "/v2/models/simple/infer", data=SIMPLE_BODY, headers=JSON_HDR)
    assert body == ref.json()


def test_redirect_infer_other_model(vx_server):
    data = [0.5, -1.25, 3.0]
    req = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 3], "data": data}]}
    r = redirect(vx_server, "v2/models/identity_fp32/infer", json.dumps(req).encode())
    assert r.status_code == 200, r.content[:500]
    body = r.json()
    assert body["model_name"] == "identity_fp32" and body["outputs"][0]["data"] == data, body


def test_redirect_infer_binary(vx_server):
    body, json_size = binary_request()
    r = redirect(vx_server, "v2/models/simple/infer", body, binary_header(json_size))
    assert_simple_binary(r)


def test_redirect_header_name_case_insensitive(vx_server):
    r = vx(vx_server, "POST", PREDICT, headers={"x-vertex-ai-triton-redirect": "v2/models/simple"})
    assert r.status_code == 200 and r.json()["name"] == "simple", r.content[:300]


def test_redirect_metrics(vx_server):
    assert_simple_json(redirect(vx_server, "v2/models/simple/infer", SIMPLE_BODY))
    r = redirect(vx_server, "metrics")
    assert r.status_code == 200, r.content[:300]
    assert r.headers["Content-Type"].startswith("text/plain"), r.headers
    m = re.search(r'^nv_inference_request_success\{model="simple",version="1"\} (\d+)', r.text, re.M)
    assert m and int(m.group(1)) >= 1, r.text[:2000]


def test_redirect_metrics_when_metrics_are_off():
    with vx_running(vx_args(example_repo(), f"{FLAG}=simple"), "rampart[vertex no metrics]") as srv:
        r = redirect(srv, "metrics")
        assert (r.status_code, r.json()) == (404, NOT_FOUND)


# CVE-2026-24206/24207: what a redirect must never reach, whatever the credentials.
REFUSED = [
    "v2/repository/models/simple/unload",
    "v2/repository/models/simple/load",
    "v2/repository/models/mlp/unload",
    "v2/repository/myrepo/models/simple/unload",
    "v2/systemsharedmemory/region/vxr/register",
    "v2/systemsharedmemory/region/vxr/unregister",
    "v2/systemsharedmemory/unregister",
    "v2/cudasharedmemory/region/vxr/register",
    "v2/cudasharedmemory/region/vxr/unregister",
    "v2/cudasharedmemory/unregister",
    "/v2/repository/models/simple/unload",
    "//v2/repository/models/simple/unload",
    "v2/repository/models/simple/unload?x=1",
    "v2/logging",
    "v2/trace/setting",
    "v2/models/simple/trace/setting",
    "v2/models/simple/generate",
    "v2/models/simple/generate_stream",
]


def _state(srv) -> tuple:
    idx = sorted((e["name"], e.get("state")) for e in main(srv, "POST", "/v2/repository/index").json())
    shm = main(srv, "GET", "/v2/systemsharedmemory/status").json()
    log = main(srv, "GET", "/v2/logging").json()
    trace = main(srv, "GET", "/v2/trace/setting").json()
    return idx, shm, log, trace


@pytest.mark.parametrize("target", REFUSED)
def test_cve_2026_24206_redirect_refused(vx_server, shm_object, target):
    before = _state(vx_server)
    body = {
        "register": {"key": shm_object, "offset": 0, "byte_size": 64},
        "logging": {"log_verbose_level": 3},
        "setting": {"trace_level": ["TIMESTAMPS"], "trace_rate": "1"},
        "load": {},
        "unload": {"parameters": {"unload_dependents": True}},
    }
    key = next((k for k in body if target.split("?")[0].endswith(k)), None)
    payload = json.dumps(body[key]).encode() if key else SIMPLE_BODY
    r = redirect(vx_server, target, payload)
    assert_error(r, 403, "is not available through the Vertex AI redirect")
    assert _state(vx_server) == before, f"{target} changed the server"
    assert main(vx_server, "GET", "/v2/models/simple/ready").status_code == 200
    assert_serving(vx_server)


def test_refused_targets_work_on_the_main_port(vx_server, shm_object):
    """Control for the refusals: the same operations are live on this server's main port."""
    r = main(vx_server, "POST", "/v2/systemsharedmemory/region/vxr/register", json={"key": shm_object, "offset": 0, "byte_size": 64})
    assert r.status_code == 200, r.content[:300]
    try:
        assert [s["name"] for s in main(vx_server, "GET", "/v2/systemsharedmemory/status").json()] == ["vxr"]
        # The redirected status sees the region; the redirected unregister is refused and leaves it.
        assert [s["name"] for s in redirect(vx_server, "v2/systemsharedmemory/status").json()] == ["vxr"]
        assert redirect(vx_server, "v2/systemsharedmemory/region/vxr/unregister", b"{}").status_code == 403
        assert [s["name"] for s in main(vx_server, "GET", "/v2/systemsharedmemory/status").json()] == ["vxr"]
    finally:
        assert main(vx_server, "POST", "/v2/systemsharedmemory/region/vxr/unregister").status_code == 200
    assert main(vx_server, "POST", "/v2/repository/models/mlp/unload").status_code == 200
    try:
        assert_error(main(vx_server, "GET", "/v2/models/mlp/ready"), 400, exact="Model version not ready")
        assert redirect(vx_server, "v2/repository/models/mlp/load", b"{}").status_code == 403
        assert_error(main(vx_server, "GET", "/v2/models/mlp/ready"), 400, exact="Model version not ready")
    finally:
        assert main(vx_server, "POST", "/v2/repository/models/mlp/load").status_code == 200
    assert main(vx_server, "GET", "/v2/models/mlp/ready").status_code == 200


UNKNOWN = [
    "",
    "v3",
    "v2/",
    "v2/health",
    "v2/health/dead",
    "v2/models",
    "v2/models/simple/bogus",
    "v2/models/simple/versions/x/ready",
    "v2/repository",
    "v2/repository/models/simple",
    "v2/repository/models/simple/load/",
    "v2/repository/models/simple/%6Coad",
    "v2/repository/models/simple/LOAD",
    "V2/repository/models/simple/unload",
    "v2/systemsharedmemory/region/vxr/regist%65r",
    "v2/systemsharedmemory/region/vxr/register/",
    "metrics/extra",
    "ping",
    "invocations",
    "v2/health/live/../../v2/repository/models/simple/unload",
    "v2/models/simple/../../repository/models/simple/unload",
    "v2/models/simple/versions/1/../../../../repository/models/simple/unload",
    "v2/health/live/../../v2/systemsharedmemory/region/vxr/register",
    "..%2Fv2%2Frepository%2Fmodels%2Fsimple%2Funload",
]


@pytest.mark.parametrize("target", UNKNOWN)
def test_redirect_unknown_target_is_404(vx_server, shm_object, target):
    before = _state(vx_server)
    body = json.dumps({"key": shm_object, "offset": 0, "byte_size": 64}).encode()
    r = redirect(vx_server, target, body)
    assert (r.status_code, r.json()) == (404, NOT_FOUND), (target, r.status_code, r.content[:300])
    assert _state(vx_server) == before
    assert_serving(vx_server)


def test_redirect_model_name_with_encoded_traversal(vx_server):
    """An encoded '/' in the model name is a (nonexistent) model name, not a path."""
    before = _state(vx_server)
    r = redirect(vx_server, "v2/models/simple%2F..%2F..%2Frepository%2Fmodels%2Fsimple%2Funload/infer", SIMPLE_BODY)
    assert_error(r, 400, "must not contain path traversal characters")
    assert _state(vx_server) == before


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("target", ["v2/health/live", "v2/repository/index", "v2/repository/models/simple/unload", "metrics"])
def test_redirect_needs_post(vx_server, method, target):
    before = _state(vx_server)
    r = redirect(vx_server, target, method=method)
    assert (r.status_code, r.json()) == (405, NOT_ALLOWED), (method, target, r.status_code, r.content[:300])
    assert _state(vx_server) == before


def test_redirect_header_not_text(vx_server):
    r = vx(vx_server, "POST", PREDICT, headers={REDIRECT: b"v2/\xff\xfe".decode("latin-1")})
    assert_error(r, 400, exact="the X-Vertex-Ai-Triton-Redirect header is not valid text")
    assert_serving(vx_server)


# ===============================================================================================================
# Default model, environment, startup
# ===============================================================================================================


def test_several_models_without_default(tmp_path):
    with vx_running(vx_args(example_repo()), "rampart[vertex no default]") as srv:
        r = predict(srv)
        msg = assert_error(r, 400, FLAG)
        assert "4 models" in msg, msg
        # Redirects still reach every model.
        assert_simple_json(redirect(srv, "v2/models/simple/infer", SIMPLE_BODY))
        assert vx(srv, "GET", HEALTH).status_code == 200


def test_single_model_is_the_default(tmp_path):
    repo = single_model_repo(tmp_path / "one")
    with vx_running(vx_args(repo), "rampart[vertex single model]") as srv:
        assert_simple_json(predict(srv))


def test_default_model_flag_picks_the_model():
    with vx_running(vx_args(example_repo(), f"{FLAG}=identity_fp32"), "rampart[vertex default identity]") as srv:
        data = [1.5, 2.5]
        r = predict(srv, json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": data}]}).encode())
        assert r.status_code == 200 and r.json()["model_name"] == "identity_fp32", r.content[:300]
        assert r.json()["outputs"][0]["data"] == data
        # simple's body does not fit identity_fp32.
        assert predict(srv).status_code == 400


def test_default_model_unknown():
    with vx_running(vx_args(example_repo(), f"{FLAG}=nosuch"), "rampart[vertex default unknown]") as srv:
        assert_error(predict(srv), 404, exact="Request for unknown model: 'nosuch' is not found")


@pytest.mark.parametrize(
    "env,names",
    [
        ({"AIP_HEALTH_ROUTE": HEALTH}, ["AIP_PREDICT_ROUTE"]),
        ({"AIP_PREDICT_ROUTE": PREDICT}, ["AIP_HEALTH_ROUTE"]),
        ({}, ["AIP_PREDICT_ROUTE", "AIP_HEALTH_ROUTE"]),
        ({"AIP_MODE": "PREDICTION"}, ["AIP_PREDICT_ROUTE", "AIP_HEALTH_ROUTE"]),
    ],
    ids=["no-predict", "no-health", "neither", "aip-mode-neither"],
)
def test_routes_required(env, names):
    out = startup_failure(vx_args(example_repo(), f"{FLAG}=simple"), env)
    for n in names:
        assert n in out, out[-2000:]


@pytest.mark.parametrize(
    "env,words",
    [
        ({"AIP_PREDICT_ROUTE": "predict", "AIP_HEALTH_ROUTE": HEALTH}, ["AIP_PREDICT_ROUTE", "predict"]),
        ({"AIP_PREDICT_ROUTE": PREDICT, "AIP_HEALTH_ROUTE": "/a/{x}"}, ["AIP_HEALTH_ROUTE"]),
        ({"AIP_PREDICT_ROUTE": "/same", "AIP_HEALTH_ROUTE": "/same"}, ["AIP_PREDICT_ROUTE", "AIP_HEALTH_ROUTE"]),
        ({"AIP_PREDICT_ROUTE": "", "AIP_HEALTH_ROUTE": HEALTH}, ["AIP_PREDICT_ROUTE"]),
        ({**ROUTES, "AIP_HTTP_PORT": "http"}, ["AIP_HTTP_PORT"]),
    ],
    ids=["relative", "capture", "same", "empty", "bad-port"],
)
def test_bad_environment_refused(env, words):
    args = [a for a in vx_args(example_repo(), f"{FLAG}=simple") if a != "--vertex-ai-port=0"] if "AIP_HTTP_PORT" in env else vx_args(example_repo(), f"{FLAG}=simple")
    out = startup_failure(args, env)
    for w in words:
        assert w in out, out[-2000:]


def test_aip_mode_prediction_defaults(tmp_path):
    """AIP_MODE=PREDICTION: Vertex on, main HTTP and gRPC off, repository from AIP_STORAGE_URI, port from
    AIP_HTTP_PORT, the only model is the default."""
    repo = single_model_repo(tmp_path / "storage")
    port = free_port()
    env = {**ROUTES, "AIP_MODE": "PREDICTION", "AIP_STORAGE_URI": str(repo), "AIP_HTTP_PORT": str(port)}
    with vx_running(bare_args(), "rampart[vertex aip mode]", env, main_http=False) as srv:
        assert srv.extra_port == port
        out = srv.stderr_text() + srv.stdout_text()
        assert "Started HTTPService" not in out and "Started GRPCInferenceService" not in out, out[-2000:]
        assert_simple_json(predict(srv))
        idx = redirect(srv, "v2/repository/index").json()
        assert [(e["name"], e["state"]) for e in idx] == [("simple", "READY")], idx


def test_aip_mode_with_main_http_turned_back_on(tmp_path):
    repo = single_model_repo(tmp_path / "storage")
    env = {**ROUTES, "AIP_MODE": "PREDICTION", "AIP_STORAGE_URI": str(repo)}
    with vx_running(bare_args("--vertex-ai-port=0", "--allow-http=true", "--http-port=0"), "rampart[vertex aip + http]", env) as srv:
        assert_simple_json(predict(srv))
        assert_simple_json(main(srv, "POST", "/v2/models/simple/infer", data=SIMPLE_BODY, headers=JSON_HDR))
        assert "Started GRPCInferenceService" not in srv.stderr_text() + srv.stdout_text()


def test_aip_mode_other_value_keeps_vertex_off(tmp_path):
    env = {**ROUTES, "AIP_MODE": "TRAINING"}
    args = base_args(example_repo(), ENGINE, ["--vertex-ai-port=0"])
    srv = RampartServer(args, "rampart[aip training]", grpc=False)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        srv.start()
    try:
        out = srv.stderr_text() + srv.stdout_text()
        assert "Started HTTPService" in out and "Started Vertex AI HTTPService" not in out, out[-2000:]
    finally:
        finish_server(srv)


def test_port_conflicts_refused():
    port = free_port()
    args = [a for a in vx_args(example_repo(), f"{FLAG}=simple") if a not in ("--http-port=0", "--vertex-ai-port=0")]
    out = startup_failure([*args, f"--http-port={port}", f"--vertex-ai-port={port}"], ROUTES)
    assert "--vertex-ai-port" in out and str(port) in out, out[-2000:]
    out = startup_failure(
        [*args, "--http-port=0", f"--vertex-ai-port={port}", "--allow-sagemaker=true", f"--sagemaker-port={port}"],
        {**ROUTES, "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "simple"},
    )
    assert "--sagemaker-port" in out and "--vertex-ai-port" in out, out[-2000:]


def test_sagemaker_and_vertex_together():
    env = {**ROUTES, "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "identity_fp32"}
    args = vx_args(example_repo(), f"{FLAG}=simple", "--allow-sagemaker=true", "--sagemaker-port=0")
    with vx_running(args, "rampart[vertex + sagemaker]", env) as srv:
        m = re.search(r"Started Sagemaker HTTPService at 127\.0\.0\.1:(\d+)", srv.stderr_text() + srv.stdout_text())
        assert m, srv.output()
        sm_port = int(m.group(1))
        assert len({sm_port, srv.extra_port, srv.port}) == 3
        assert_simple_json(predict(srv))
        data = [4.0, 5.0]
        req = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": data}]}
        r = requests.post(f"http://127.0.0.1:{sm_port}/invocations", json=req, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200 and r.json()["model_name"] == "identity_fp32" and r.json()["outputs"][0]["data"] == data
        # Each listener serves only its own routes.
        assert requests.get(f"http://127.0.0.1:{sm_port}{HEALTH}", timeout=HTTP_TIMEOUT).status_code == 400
        assert vx(srv, "GET", "/ping").status_code == 404


def test_storage_uri_ignored_with_model_repository(tmp_path):
    """Triton's L0_vertex_ai: AIP_STORAGE_URI is not used when --model-repository is given."""
    other = single_model_repo(tmp_path / "other", "identity_fp32")
    env = {**ROUTES, "AIP_STORAGE_URI": str(other)}
    with vx_running(vx_args(single_model_repo(tmp_path / "mine")), "rampart[vertex storage ignored]", env) as srv:
        assert_simple_json(predict(srv))
        assert redirect(srv, "v2/models/identity_fp32/ready").status_code == 404


def test_health_route_not_ready_with_a_failed_model(tmp_path):
    repo = single_model_repo(tmp_path / "repo")
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 0\n')
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not onnx")
    args = vx_args(repo, f"{FLAG}=simple", "--exit-on-error=false", "--strict-readiness=true")
    with vx_running(args, "rampart[vertex not ready]", wait=False) as srv:
        idx = {e["name"]: e["state"] for e in wait_models_settled(srv)}
        assert idx == {"simple": "READY", "broken": "UNAVAILABLE"}, idx
        r = vx(srv, "GET", HEALTH)
        assert (r.status_code, r.content) == (400, b""), (r.status_code, r.content)
        assert redirect(srv, "v2/health/live").status_code == 200
        assert redirect(srv, "v2/health/ready").status_code == 400
        assert_simple_json(predict(srv))


# ===============================================================================================================
# --http-restricted-api (CVE-2026-24206/24207)
# ===============================================================================================================

CATS = ("health", "metadata", "inference", "model-config", "statistics", "shared-memory", "model-repository")
KEYS = {c: (f"vx-{c}-key", f"vx-V4lue-{c}:x=y") for c in CATS}


hdr = partial(key_header, KEYS)  # hdr(cat): the header that opens `cat`
all_but = partial(other_key_headers, KEYS)  # all_but(cat): those of every other category


@pytest.fixture(scope="module")
def restricted():
    flags = [f"--http-restricted-api={c}:{k}={v}" for c, (k, v) in KEYS.items()]
    args = with_metrics(vx_args(example_repo(), f"{FLAG}=simple", "--model-control-mode=explicit", "--load-model=*", *flags))
    srv = start_vx(args, "rampart[vertex restricted]", health_headers=hdr("health"))
    yield srv
    finish_server(srv)


# (category, redirect target or None for the plain predict / "health" for the health route, body, status, check)
RESTRICTED = [
    ("health", "HEALTH", None, 200),
    ("inference", None, SIMPLE_BODY, 200),
    ("health", "v2/health/live", None, 200),
    ("health", "v2/health/ready", None, 200),
    ("health", "v2/models/simple/ready", None, 200),
    ("metadata", "v2", None, 200),
    ("metadata", "v2/models/simple", None, 200),
    ("metadata", "v2/models/simple/versions/1", None, 200),
    ("model-config", "v2/models/simple/config", None, 200),
    ("statistics", "v2/models/stats", None, 200),
    ("statistics", "v2/models/simple/stats", None, 200),
    ("inference", "v2/models/simple/infer", SIMPLE_BODY, 200),
    ("inference", "v2/models/simple/versions/1/infer", SIMPLE_BODY, 200),
    ("shared-memory", "v2/systemsharedmemory/status", None, 200),
    ("shared-memory", "v2/cudasharedmemory/status", None, 200),
    ("model-repository", "v2/repository/index", b"{}", 200),
]


def _call(srv, target, body, headers):
    if target == "HEALTH":
        return vx(srv, "GET", HEALTH, headers=headers)
    if target is None:
        return predict(srv, body, headers)
    return redirect(srv, target, body, headers)


@pytest.mark.parametrize("variant", ["none", "wrong-value", "other-keys", "right"])
@pytest.mark.parametrize("cat,target,body,ok", RESTRICTED, ids=[f"{c}:{t}" for c, t, _, _ in RESTRICTED])
def test_restricted_matrix(restricted, cat, target, body, ok, variant):
    key, value = KEYS[cat]
    headers = {"none": {}, "wrong-value": {key: value[:-1]}, "other-keys": all_but(cat), "right": hdr(cat)}[variant]
    r = _call(restricted, target, body, headers)
    if variant == "right":
        assert r.status_code == ok, (cat, target, r.status_code, r.content[:500])
        if body == SIMPLE_BODY:
            assert outputs_of(r.json()) == {"OUTPUT0": SUM, "OUTPUT1": DIFF}
    else:
        assert_denied(r, key, f"{variant} {cat} {target}")


def test_restricted_redirect_needs_only_the_target_category(restricted):
    """A redirect is authorized by its target: the inference key is not needed (nor enough) for metadata."""
    assert redirect(restricted, "v2", headers=hdr("metadata")).status_code == 200
    assert_denied(redirect(restricted, "v2", headers=hdr("inference")), KEYS["metadata"][0])


def test_restricted_metrics_redirect_is_open(restricted):
    r = redirect(restricted, "metrics")
    assert r.status_code == 200 and "nv_inference_request_success" in r.text, r.content[:300]


@pytest.mark.parametrize("target", ["v2/repository/models/simple/unload", "v2/repository/models/simple/load", "v2/systemsharedmemory/region/r/register"])
@pytest.mark.parametrize("creds", ["none", "repository-and-shm"])
def test_restricted_refusals_hold_with_credentials(restricted, target, creds):
    """CVE-2026-24206/24207: with or without the admin credentials, load/unload/register are refused."""
    headers = {} if creds == "none" else {**hdr("model-repository"), **hdr("shared-memory")}
    r = redirect(restricted, target, b"{}", headers)
    assert r.status_code == 403, (target, creds, r.status_code, r.content[:300])
    error_message(r)
    assert main(restricted, "GET", "/v2/models/simple/ready", headers=hdr("health")).status_code == 200


def test_restricted_unknown_paths_need_nothing(restricted):
    assert (vx(restricted, "GET", "/nowhere").status_code, vx(restricted, "GET", "/nowhere").json()) == (404, NOT_FOUND)
    assert redirect(restricted, "v2/bogus").status_code == 404


def test_restricted_check_before_method(restricted):
    """As on the main port (docs/protocol.md, "Status codes"): a wrong method without the credential is 403, not
    405."""
    assert_denied(vx(restricted, "GET", PREDICT), KEYS["inference"][0])


def test_restricted_values_not_logged(restricted):
    out = restricted.stderr_text() + restricted.stdout_text()
    assert "Started Vertex AI HTTPService" in out
    for _, value in KEYS.values():
        assert value not in out and value[:-1] not in out


# ===============================================================================================================
# --http-max-input-size and many-chunk bodies
# ===============================================================================================================

CAP = 4096


def too_big(n) -> str:
    """The --http-max-input-size refusal of a JSON body (Triton's text)."""
    return (
        f"request JSON size of {n} bytes exceeds the maximum allowed input size of {CAP} bytes. Use --http-max-input-size"
        " to increase the limit."
    )


@pytest.fixture(scope="module")
def capped():
    srv = start_vx(vx_args(example_repo(), f"{FLAG}=simple", f"--http-max-input-size={CAP}"), "rampart[vertex cap]")
    yield srv
    finish_server(srv)


def test_body_limit_at_the_cap(capped):
    assert_simple_json(predict(capped, padded(SIMPLE_BODY, CAP)))
    assert_simple_json(redirect(capped, "v2/models/simple/infer", padded(SIMPLE_BODY, CAP)))


@pytest.mark.parametrize("target", [None, "v2/models/simple/infer", "v2/repository/index"])
def test_body_limit_over_the_cap(capped, target):
    body = padded(SIMPLE_BODY, CAP + 1)
    r = predict(capped, body) if target is None else redirect(capped, target, body)
    assert_error(r, 400, exact=too_big(CAP + 1))
    assert_serving(capped)


def test_body_limit_over_the_cap_chunked(capped):
    body = padded(SIMPLE_BODY, 64 * 1024)
    status, rbody, _ = chunked_post(capped, PREDICT, (body[i : i + 1024] for i in range(0, len(body), 1024)))
    assert status == 400, (status, rbody[:300])
    msg = json.loads(rbody)["error"]
    assert msg == too_big(f"more than {CAP}"), msg
    assert_serving(capped)


def test_body_limit_keep_alive_connection_survives_or_closes_cleanly(capped):
    conn = http.client.HTTPConnection("127.0.0.1", capped.extra_port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("POST", PREDICT, body=padded(SIMPLE_BODY, CAP + 100), headers=JSON_HDR)
        resp = conn.getresponse()
        assert resp.status == 400 and "--http-max-input-size" in json.loads(resp.read())["error"]
        # The refused body is left unread, so the refusal says `Connection: close` (http.client then sends the next
        # request on a new connection, which is served).
        assert resp.getheader("Connection") == "close", resp.getheaders()
        conn.request("POST", PREDICT, body=SIMPLE_BODY, headers=JSON_HDR)
        resp2 = conn.getresponse()
        status, body = resp2.status, resp2.read()
        assert status == 200 and outputs_of(json.loads(body)) == {"OUTPUT0": SUM, "OUTPUT1": DIFF}, (status, body[:300])
    finally:
        conn.close()
    assert_serving(capped)


MANY = 100_000


def test_many_one_byte_chunks_valid_predict(vx_server):
    body = padded(SIMPLE_BODY, MANY)
    status, rbody, secs = chunked_post(vx_server, PREDICT, (body[i : i + 1] for i in range(len(body))))
    assert status == 200, rbody[:300]
    assert outputs_of(json.loads(rbody)) == {"OUTPUT0": SUM, "OUTPUT1": DIFF}
    assert secs < 60, f"{secs:.1f}s"
    assert_serving(vx_server)


@pytest.mark.parametrize("target", [None, "v2/models/simple/infer", "v2/repository/index", "v2/repository/models/simple/unload", "v2/nowhere"])
def test_many_A_chunks(vx_server, target):
    before = _state(vx_server)
    headers = {} if target is None else {REDIRECT: target}
    status, rbody, secs = chunked_post(vx_server, PREDICT, (b"A" for _ in range(MANY)), headers)
    expected = {None: 400, "v2/models/simple/infer": 400, "v2/repository/index": 400, "v2/repository/models/simple/unload": 403, "v2/nowhere": 404}[target]
    assert status == expected, (target, status, rbody[:300])
    assert list(json.loads(rbody)) == ["error"]
    assert secs < 60, f"{secs:.1f}s"
    assert _state(vx_server) == before
    assert_serving(vx_server)


def test_many_chunks_to_health_and_unknown_path(vx_server):
    for path, expected in ((HEALTH, 405), ("/nowhere", 404)):
        status, rbody, secs = chunked_post(vx_server, path, (b"A" for _ in range(MANY)))
        assert status == expected, (path, status, rbody[:300])
        assert secs < 60
    assert_serving(vx_server)


def test_sigterm_exits_cleanly_with_open_vertex_connection():
    srv = start_vx(vx_args(example_repo(), f"{FLAG}=simple"), "rampart[vertex sigterm]")
    idle = socket.create_connection(("127.0.0.1", srv.extra_port), timeout=10)
    try:
        assert_simple_json(predict(srv))
    finally:
        try:
            finish_server(srv)
        finally:
            idle.close()
