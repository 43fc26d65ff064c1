"""Health, server/model metadata, model readiness and model configuration over HTTP (docs/protocol.md,
"HTTP endpoints" rows 1-6, "Server and model metadata", "Status codes"). Runs against examples/models for each
engine."""

from __future__ import annotations

import pytest

from conftest import assert_error

EXAMPLE_MODELS = {
    # name: (platform, max_batch_size, inputs, outputs) ; tensors are (name, datatype, dims-without-batch)
    "simple": (
        "onnxruntime_onnx",
        8,
        [("INPUT0", "INT32", [16]), ("INPUT1", "INT32", [16])],
        [("OUTPUT0", "INT32", [16]), ("OUTPUT1", "INT32", [16])],
    ),
    "identity_fp32": ("onnxruntime_onnx", 8, [("INPUT0", "FP32", [-1])], [("OUTPUT0", "FP32", [-1])]),
    "identity_bytes": ("onnxruntime_onnx", 8, [("INPUT0", "BYTES", [-1])], [("OUTPUT0", "BYTES", [-1])]),
}

UNKNOWN = "Request for unknown model: 'no_such_model' is not found"


# --------------------------------------------------------------------------------------- health


def test_live_is_200_with_a_json_body(server):
    """The Open Inference Protocol SDKs (KServe's) read `{"live": true}`; tritonclient checks the status."""
    r = server.get("/v2/health/live")
    assert (r.status_code, r.headers["content-type"], r.json()) == (200, "application/json", {"live": True})


def test_ready_is_200_with_a_json_body(server):
    r = server.get("/v2/health/ready")
    assert (r.status_code, r.headers["content-type"], r.json()) == (200, "application/json", {"ready": True})


def test_tritonclient_server_live_and_ready(client):
    assert client.is_server_live() is True
    assert client.is_server_ready() is True


# --------------------------------------------------------------------------------------- server metadata


def test_server_metadata_shape(server):
    r = server.get("/v2")
    assert r.status_code == 200
    assert r.headers.get("content-type", "").startswith("application/json")
    md = r.json()
    assert set(md) >= {"name", "version", "extensions"}, md
    assert md["name"] == "triton", "default --id is 'triton'"
    assert isinstance(md["version"], str) and md["version"], md
    ext = md["extensions"]
    assert isinstance(ext, list) and all(isinstance(e, str) for e in ext), ext
    assert len(ext) == len(set(ext)), f"duplicate extensions: {ext}"
    for required in ("binary_tensor_data", "model_configuration", "statistics", "parameters"):
        assert required in ext, f"extension {required!r} missing from {ext}"


def test_tritonclient_server_metadata(client):
    md = client.get_server_metadata()
    assert md["name"] == "triton"
    assert "binary_tensor_data" in md["extensions"]


# --------------------------------------------------------------------------------------- model metadata


@pytest.mark.parametrize("model", sorted(EXAMPLE_MODELS))
def test_model_metadata(server, model):
    platform, mbs, inputs, outputs = EXAMPLE_MODELS[model]
    r = server.get(f"/v2/models/{model}")
    assert r.status_code == 200, r.text
    md = r.json()
    assert md["name"] == model
    assert md["versions"] == ["1"]
    assert md["platform"] == platform
    batch = [-1] if mbs >= 1 else []
    assert md["inputs"] == [{"name": n, "datatype": d, "shape": batch + s} for n, d, s in inputs]
    assert md["outputs"] == [{"name": n, "datatype": d, "shape": batch + s} for n, d, s in outputs]


def test_model_metadata_explicit_version(server):
    r = server.get("/v2/models/simple/versions/1")
    assert r.status_code == 200, r.text
    md = r.json()
    assert md["name"] == "simple"
    assert md["versions"] == ["1"]


def test_mlp_metadata(server):
    md = server.get("/v2/models/mlp").json()
    assert md["name"] == "mlp"
    assert md["platform"] == "onnxruntime_onnx"
    assert len(md["inputs"]) == 1 and len(md["outputs"]) == 1
    assert md["inputs"][0]["datatype"] == "FP32" and md["inputs"][0]["shape"] == [-1, 784]
    assert md["outputs"][0]["datatype"] == "FP32" and md["outputs"][0]["shape"] == [-1, 10]


def test_tritonclient_model_metadata(client):
    md = client.get_model_metadata("simple")
    assert md["name"] == "simple"
    assert [i["name"] for i in md["inputs"]] == ["INPUT0", "INPUT1"]


# --------------------------------------------------------------------------------------- model ready


@pytest.mark.parametrize("path", ["/v2/models/simple/ready", "/v2/models/simple/versions/1/ready"])
def test_model_ready(server, path):
    r = server.get(path)
    assert r.status_code == 200
    assert r.content == b""


def test_tritonclient_model_ready(client):
    assert client.is_model_ready("simple") is True
    assert client.is_model_ready("simple", "1") is True
    assert client.is_model_ready("no_such_model") is False
    assert client.is_model_ready("simple", "7") is False


def test_model_ready_unknown_model(server):
    # Triton's HandleModelReady answers a model it cannot find with 400 "Model version not ready"
    # (ServerModelIsReady reports ready=false without an error); the spec table and docs/compatibility.md say 404
    # with the unknown-model message, which is what Rampart answers (400 stays for a known model that is not ready).
    r = server.get("/v2/models/no_such_model/ready")
    assert_error(r, 404, exact="Request for unknown model: 'no_such_model' is not found")


def test_model_ready_unknown_version(server):
    r = server.get("/v2/models/simple/versions/7/ready")
    assert_error(r, 404, exact="Request for unknown model: 'simple' version 7 is not found")


# --------------------------------------------------------------------------------------- model config


def _assert_snake_case_keys(obj, path="config"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert k == k.lower() or k.isupper() or path.endswith(("parameters", "cc_model_filenames", "metric_tags")), (
                f"{path}.{k}: ModelConfig JSON must use proto (snake_case) field names"
            )
            _assert_snake_case_keys(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _assert_snake_case_keys(v, f"{path}[{i}]")


@pytest.mark.parametrize("model", sorted(EXAMPLE_MODELS))
def test_model_config_json(server, model):
    platform, mbs, inputs, outputs = EXAMPLE_MODELS[model]
    r = server.get(f"/v2/models/{model}/config")
    assert r.status_code == 200, r.text
    assert r.headers.get("content-type", "").startswith("application/json")
    cfg = r.json()
    _assert_snake_case_keys(cfg)
    assert cfg["name"] == model
    assert cfg["platform"] == platform
    assert cfg["max_batch_size"] == mbs
    for camel in ("maxBatchSize", "dataType", "instanceGroup", "versionPolicy"):
        assert camel not in r.text, f"camelCase field {camel} in config JSON"
    got_in = [(i["name"], i["data_type"], i["dims"]) for i in cfg["input"]]
    got_out = [(o["name"], o["data_type"], o["dims"]) for o in cfg["output"]]
    assert got_in == [(n, "TYPE_STRING" if d == "BYTES" else f"TYPE_{d}", s) for n, d, s in inputs]
    assert got_out == [(n, "TYPE_STRING" if d == "BYTES" else f"TYPE_{d}", s) for n, d, s in outputs]
    for t in cfg["input"] + cfg["output"]:
        assert all(isinstance(d, int) and not isinstance(d, bool) for d in t["dims"]), (
            f"dims must be JSON numbers, got {t['dims']!r}"
        )
    # Triton always fills in instance groups.
    groups = cfg.get("instance_group")
    assert isinstance(groups, list) and groups, f"instance_group missing: {cfg}"
    assert all(g.get("count", 0) >= 1 and str(g.get("kind", "")).startswith("KIND_") for g in groups), groups


def test_model_config_versioned_path(server):
    r = server.get("/v2/models/simple/versions/1/config")
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "simple"


def test_tritonclient_model_config(client):
    cfg = client.get_model_config("simple")
    assert cfg["name"] == "simple"
    assert cfg["max_batch_size"] == 8
    assert [i["name"] for i in cfg["input"]] == ["INPUT0", "INPUT1"]


# --------------------------------------------------------------------------------------- unknown model / version


@pytest.mark.parametrize(
    "method,suffix",
    [("GET", ""), ("GET", "/config"), ("GET", "/stats"), ("POST", "/infer")],
)
def test_unknown_model_is_404(server, method, suffix):
    body = b'{"inputs":[{"name":"INPUT0","datatype":"INT32","shape":[1],"data":[1]}]}' if method == "POST" else None
    r = server.request(method, f"/v2/models/no_such_model{suffix}", data=body)
    assert_error(r, 404, exact=UNKNOWN)


@pytest.mark.parametrize("suffix", ["", "/config", "/infer"])
def test_unknown_version_is_404(server, suffix):
    method = "POST" if suffix == "/infer" else "GET"
    body = (
        b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,1],"data":[1.0]}]}' if method == "POST" else None
    )
    r = server.request(method, f"/v2/models/identity_fp32/versions/42{suffix}", data=body)
    assert_error(r, 404, "identity_fp32", "version 42 is not found")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/simple/versions/abc",
        "/v2/models/simple/versions/1a/config",
        "/v2/models/simple/versions/-1/ready",
        "/v2/models/simple/versions//infer",
    ],
)
def test_non_digit_version_path_is_not_found(server, path):
    method = "POST" if path.endswith("/infer") else "GET"
    r = server.request(method, path, data=b"{}" if method == "POST" else None)
    assert_error(r, 404, exact="Not Found")


# --------------------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    "path",
    ["/", "/v1", "/v2/", "/v2/health", "/v2/health/alive", "/v2/nothing", "/v2/models", "/v2/models/simple/unknown_action", "/metrics"],
)
def test_unknown_url_is_404(server, path):
    r = server.get(path)
    assert_error(r, 404, exact="Not Found")


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/v2/health/live"),
        ("POST", "/v2/health/ready"),
        ("POST", "/v2"),
        ("DELETE", "/v2"),
        ("POST", "/v2/models/simple"),
        ("PUT", "/v2/models/simple/config"),
        ("POST", "/v2/models/simple/ready"),
        ("GET", "/v2/models/simple/infer"),
        ("PUT", "/v2/models/simple/versions/1/infer"),
        ("POST", "/v2/models/stats"),
        ("POST", "/v2/models/simple/stats"),
        ("GET", "/v2/repository/index"),
    ],
)
def test_wrong_method_is_405(server, method, path):
    r = server.request(method, path)
    assert_error(r, 405, exact="Method Not Allowed")


def test_query_string_is_ignored(server):
    r = server.get("/v2/models/simple?foo=bar")
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "simple"
