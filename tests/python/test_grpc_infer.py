"""gRPC front end happy paths (docs/protocol.md, "gRPC service", "gRPC parameters"): health (incl. grpc.health.v1),
server/model metadata, model config, model readiness, inference on every example model and on every
identity_<dtype> of the generated test repository (raw_input_contents and typed InferTensorContents where the
datatype has a typed field), BYTES both ways, batches > 1, requested outputs, request ids, parameters, statistics
and the repository index.

Happy paths go through tritonclient.grpc (client wrapper from conftest: every call has a deadline); requests
that tritonclient cannot build (typed contents, uint64 / int64 parameter kinds) go through the raw generated
stubs `service_pb2_grpc`. Where HTTP and gRPC answer from the same core (metadata, index, statistics) the two
front ends are cross-checked on the same server process. Each test runs once per engine (onnxruntime, tract).
"""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor

import grpc
import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import InferenceServerException

from conftest import (
    GRPC_TIMEOUT,
    HEALTH_SERVING,
    finish_server,
    grpc_base_args,
    grpc_health_check,
    grpc_input,
    grpc_request,
    grpc_result,
    raw_bytes,
    simple_grpc_request,
    start_server,
    typed_input,
    wait_models_settled,
)

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)
MLP_EXPECTED_ROW0 = np.array([0.4454515, -0.69113296, 0.09195761, -0.7163936], dtype=np.float32)

EXAMPLE_MODELS = {
    # name: (max_batch_size, inputs, outputs); tensors are (name, datatype, dims without the batch dim)
    "simple": (
        8,
        [("INPUT0", "INT32", [16]), ("INPUT1", "INT32", [16])],
        [("OUTPUT0", "INT32", [16]), ("OUTPUT1", "INT32", [16])],
    ),
    "identity_fp32": (8, [("INPUT0", "FP32", [-1])], [("OUTPUT0", "FP32", [-1])]),
    "identity_bytes": (8, [("INPUT0", "BYTES", [-1])], [("OUTPUT0", "BYTES", [-1])]),
    "mlp": (32, [("input", "FP32", [784])], [("output", "FP32", [10])]),
}

# dtype suffix of identity_<dtype> in the test repository -> (protocol datatype, numpy dtype, 4 test values)
DTYPES = {
    "bool": ("BOOL", np.bool_, [True, False, True, True]),
    "uint8": ("UINT8", np.uint8, [0, 1, 127, 255]),
    "uint16": ("UINT16", np.uint16, [0, 1, 65535, 300]),
    "uint32": ("UINT32", np.uint32, [0, 1, 2**32 - 1, 70000]),
    "uint64": ("UINT64", np.uint64, [0, 1, 2**64 - 1, 2**40]),
    "int8": ("INT8", np.int8, [-128, -1, 0, 127]),
    "int16": ("INT16", np.int16, [-32768, -1, 0, 32767]),
    "int32": ("INT32", np.int32, [-(2**31), -1, 0, 2**31 - 1]),
    "int64": ("INT64", np.int64, [-(2**63), -1, 0, 2**63 - 1]),
    "fp16": ("FP16", np.float16, [0.5, -2.0, 65504.0, 0.0]),
    "fp32": ("FP32", np.float32, [0.5, -1.25, 3.0e38, 0.0]),
    "fp64": ("FP64", np.float64, [0.1, -1e300, 2.5, 0.0]),
    "bytes": ("BYTES", np.object_, [b"a", b"", "\u00e9".encode(), b"xyz"]),
    "bf16": ("BF16", ml_dtypes.bfloat16, [0.5, -2.0, 1.0e38, 0.0]),
}
RAW_ONLY = {"fp16", "bf16"}


def mlp_input(rows: int) -> np.ndarray:
    i = np.arange(rows).reshape(-1, 1)
    j = np.arange(784).reshape(1, -1)
    return (((i * 784 + j) % 97) / 97).astype(np.float32)


def simple_inputs(a: np.ndarray, b: np.ndarray) -> list:
    in0 = grpcclient.InferInput("INPUT0", list(a.shape), "INT32")
    in0.set_data_from_numpy(a)
    in1 = grpcclient.InferInput("INPUT1", list(b.shape), "INT32")
    in1.set_data_from_numpy(b)
    return [in0, in1]


def config_type(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def index_states(client) -> dict[tuple[str, str], tuple[str, str]]:
    """(name, version) -> (state, reason) from gRPC RepositoryIndex."""
    idx = client.get_model_repository_index()
    return {(m.name, m.version): (m.state, m.reason) for m in idx.models}


def require_ready(client, model: str) -> None:
    states = {k: v for k, v in index_states(client).items() if k[0] == model}
    assert states, f"{model} missing from the gRPC repository index"
    if not any(state == "READY" for state, _ in states.values()):
        (state, reason), *_ = states.values()
        assert state == "UNAVAILABLE" and reason, f"{model}: {state} {reason!r}"
        pytest.skip(f"{model} is not served by this engine: {reason}")


def stats_entry(client, model: str, version: str = ""):
    resp = client.get_inference_statistics(model, version)
    entries = [e for e in resp.model_stats if e.name == model]
    assert len(entries) == 1, resp
    return entries[0]


# --------------------------------------------------------------------------------------- health


def test_server_live_and_ready(gclient, gstub):
    assert gclient.is_server_live() is True
    assert gclient.is_server_ready() is True
    assert gstub.ServerLive(service_pb2.ServerLiveRequest()).live is True
    assert gstub.ServerReady(service_pb2.ServerReadyRequest()).ready is True


@pytest.mark.parametrize("service", ["", "inference.GRPCInferenceService"], ids=["overall", "named"])
def test_health_check_serving(grpc_server, service):
    assert grpc_health_check(grpc_server, service) == HEALTH_SERVING


@pytest.mark.parametrize("model", sorted(EXAMPLE_MODELS))
def test_model_ready(gclient, gstub, model):
    assert gclient.is_model_ready(model) is True
    assert gclient.is_model_ready(model, "1") is True
    assert gstub.ModelReady(service_pb2.ModelReadyRequest(name=model, version="1")).ready is True


@pytest.mark.parametrize(
    "model,version", [("no_such_model", ""), ("simple", "7")], ids=["unknown_model", "unknown_version"]
)
def test_model_ready_unknown(gstub, model, version):
    """Triton's ModelReady answers OK with ready=false for a model or version it cannot find; an explicit
    NOT_FOUND (the core's message) is accepted too. Never ready=true, never another error."""
    request = service_pb2.ModelReadyRequest(name=model, version=version)
    try:
        ready = gstub.ModelReady(request).ready
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, (e.code(), e.details())
        assert f"Request for unknown model: '{model}'" in e.details(), e.details()
    else:
        assert ready is False


# --------------------------------------------------------------------------------------- metadata


def test_server_metadata(gclient, grpc_server):
    md = gclient.get_server_metadata()
    assert md.name == "triton", "default --id is 'triton'"
    assert md.version, md
    ext = list(md.extensions)
    assert ext and len(ext) == len(set(ext)), ext
    for required in ("model_configuration", "statistics"):
        assert required in ext, f"extension {required!r} missing from {ext}"
    http = grpc_server.get("/v2").json()
    assert (md.name, md.version, sorted(ext)) == (http["name"], http["version"], sorted(http["extensions"])), (
        "gRPC ServerMetadata must match HTTP /v2 (one core)"
    )


def test_server_metadata_as_json(gclient):
    md = gclient.get_server_metadata(as_json=True)
    assert md["name"] == "triton"
    assert isinstance(md["extensions"], list)


@pytest.mark.parametrize("model", sorted(EXAMPLE_MODELS))
def test_model_metadata(gclient, grpc_server, model):
    mbs, inputs, outputs = EXAMPLE_MODELS[model]
    md = gclient.get_model_metadata(model)
    assert md.name == model
    assert list(md.versions) == ["1"]
    assert md.platform == "onnxruntime_onnx"
    batch = [-1] if mbs > 0 else []
    assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [(n, d, batch + s) for n, d, s in inputs]
    assert [(t.name, t.datatype, list(t.shape)) for t in md.outputs] == [(n, d, batch + s) for n, d, s in outputs]
    http = grpc_server.get(f"/v2/models/{model}").json()
    assert [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in md.inputs] == http["inputs"]
    assert [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in md.outputs] == http["outputs"]


def test_model_metadata_explicit_version(gclient):
    md = gclient.get_model_metadata("simple", "1")
    assert md.name == "simple"
    assert list(md.versions) == ["1"]


@pytest.mark.parametrize("model", sorted(EXAMPLE_MODELS))
def test_model_config(gclient, grpc_server, model):
    mbs, inputs, outputs = EXAMPLE_MODELS[model]
    cfg = gclient.get_model_config(model).config
    assert isinstance(cfg, model_config_pb2.ModelConfig)
    assert cfg.name == model
    assert cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == mbs
    got_in = [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input]
    got_out = [(o.name, model_config_pb2.DataType.Name(o.data_type), list(o.dims)) for o in cfg.output]
    assert got_in == [(n, config_type(d), s) for n, d, s in inputs]
    assert got_out == [(n, config_type(d), s) for n, d, s in outputs]
    assert cfg.instance_group, "Triton always fills in instance groups"
    assert all(g.count >= 1 for g in cfg.instance_group), cfg.instance_group
    http = grpc_server.get(f"/v2/models/{model}/config").json()
    assert (cfg.name, cfg.platform, cfg.max_batch_size) == (http["name"], http["platform"], http["max_batch_size"])
    assert got_in == [(i["name"], i["data_type"], i["dims"]) for i in http["input"]]


def test_model_config_versioned_and_raw_stub(gclient, gstub):
    assert gclient.get_model_config("simple", "1").config.name == "simple"
    cfg = gstub.ModelConfig(service_pb2.ModelConfigRequest(name="simple", version="1")).config
    assert cfg.max_batch_size == 8
    assert [i.name for i in cfg.input] == ["INPUT0", "INPUT1"]
    assert all(i.data_type == model_config_pb2.TYPE_INT32 for i in cfg.input)


def test_model_config_as_json(gclient):
    cfg = gclient.get_model_config("simple", as_json=True)["config"]
    assert cfg["name"] == "simple"
    assert [i["name"] for i in cfg["input"]] == ["INPUT0", "INPUT1"]


# --------------------------------------------------------------------------------------- simple


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_simple_add_sub(gclient, batch):
    rng = np.random.default_rng(batch)
    a = rng.integers(-1000, 1000, size=(batch, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, size=(batch, 16), dtype=np.int32)
    res = gclient.infer("simple", simple_inputs(a, b))
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)
    resp = res.get_response()
    assert resp.model_name == "simple"
    assert resp.model_version == "1"
    assert sorted(o.name for o in resp.outputs) == ["OUTPUT0", "OUTPUT1"], "without outputs, every output is returned"
    for o in resp.outputs:
        assert o.datatype == "INT32" and list(o.shape) == [batch, 16], o


def test_outputs_only_in_raw_output_contents(gstub):
    resp = gstub.ModelInfer(simple_grpc_request())
    assert len(resp.raw_output_contents) == len(resp.outputs) == 2, "raw_output_contents is index-aligned with outputs"
    expected = {"OUTPUT0": (A + B).astype("<i4").tobytes(), "OUTPUT1": (A - B).astype("<i4").tobytes()}
    for out, raw in zip(resp.outputs, resp.raw_output_contents):
        assert not out.HasField("contents"), f"{out.name}: outputs must not use typed contents"
        assert raw == expected[out.name], out.name
    assert resp.id == "", "no id was sent, none must be echoed"


@pytest.mark.parametrize("requested", [["OUTPUT0"], ["OUTPUT1"], ["OUTPUT1", "OUTPUT0"]], ids="+".join)
def test_requested_outputs(gclient, requested):
    outputs = [grpcclient.InferRequestedOutput(n) for n in requested]
    res = gclient.infer("simple", simple_inputs(A, B), outputs=outputs)
    resp = res.get_response()
    assert sorted(o.name for o in resp.outputs) == sorted(requested)
    assert len(resp.raw_output_contents) == len(requested)
    for name in requested:
        np.testing.assert_array_equal(res.as_numpy(name), A + B if name == "OUTPUT0" else A - B)
    for name in {"OUTPUT0", "OUTPUT1"} - set(requested):
        assert res.as_numpy(name) is None


def test_request_id_echo(gclient):
    res = gclient.infer("simple", simple_inputs(A, B), request_id="conformance-42")
    assert res.get_response().id == "conformance-42"


def test_versioned_infer(gclient):
    res = gclient.infer("simple", simple_inputs(A, B), model_version="1")
    assert res.get_response().model_version == "1"
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), A + B)


@pytest.mark.parametrize("batch", [1, 4])
def test_simple_typed_int_contents(gstub, batch):
    a = np.arange(16 * batch, dtype=np.int32).reshape(batch, 16) - 7
    b = np.full((batch, 16), -2, dtype=np.int32)
    resp = gstub.ModelInfer(simple_grpc_request(a, b, typed=True, id="typed"))
    res = grpc_result(resp)
    assert resp.id == "typed"
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)


def test_custom_parameters(gclient):
    res = gclient.infer(
        "simple", simple_inputs(A, B), parameters={"my_string": "x", "my_int": -7, "my_bool": True, "my_double": 1.5}
    )
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), A + B)


@pytest.mark.parametrize(
    "value,kind",
    [(True, "bool"), (-3, "int64"), ("s", "string"), (0.25, "double"), (2**64 - 1, "uint64")],
    ids=["bool", "int64", "string", "double", "uint64"],
)
def test_custom_parameter_every_kind(gstub, value, kind):
    resp = gstub.ModelInfer(simple_grpc_request(parameters={"custom": (value, kind)}))
    np.testing.assert_array_equal(grpc_result(resp).as_numpy("OUTPUT1"), A - B)


def test_priority_and_timeout_parameters(gclient):
    # tritonclient sends priority as uint64_param and timeout as int64_param.
    res = gclient.infer("simple", simple_inputs(A, B), priority=1, timeout=10_000_000)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), A - B)


@pytest.mark.parametrize(
    "params",
    [{"priority": (0, "int64")}, {"priority": (3, "int64")}, {"priority": (2, "uint64")}, {"timeout": (0, "int64")}],
    ids=["priority_int64_0", "priority_int64_3", "priority_uint64", "timeout_int64"],
)
def test_priority_and_timeout_parameter_kinds(gstub, params):
    resp = gstub.ModelInfer(simple_grpc_request(parameters=params))
    np.testing.assert_array_equal(grpc_result(resp).as_numpy("OUTPUT0"), A + B)


def test_enable_empty_final_response_allowed(gstub):
    """gRPC accepts the one reserved 'triton_' key it defines (meaningful for decoupled models only)."""
    resp = gstub.ModelInfer(simple_grpc_request(parameters={"triton_enable_empty_final_response": True}))
    np.testing.assert_array_equal(grpc_result(resp).as_numpy("OUTPUT0"), A + B)


def test_async_infer(gclient):
    results: queue.Queue = queue.Queue()
    cases = [np.full((1, 16), i, dtype=np.int32) for i in range(8)]
    for i, a in enumerate(cases):
        gclient.async_infer(
            "simple", simple_inputs(a, B), lambda result, error, i=i: results.put((i, result, error)), request_id=str(i)
        )
    seen = set()
    for _ in cases:
        i, result, error = results.get(timeout=GRPC_TIMEOUT)
        assert error is None, error
        assert result.get_response().id == str(i)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), cases[i] + B)
        seen.add(i)
    assert seen == set(range(len(cases)))


def test_concurrent_infers(grpc_server):
    rng = np.random.default_rng(11)
    cases = [rng.integers(-100, 100, size=(1 + i % 8, 16), dtype=np.int32) for i in range(32)]
    with grpc_server.grpc_client() as c:

        def one(a):
            res = c.infer("simple", simple_inputs(a, a))
            return res.as_numpy("OUTPUT0"), res.as_numpy("OUTPUT1")

        with ThreadPoolExecutor(max_workers=8) as pool:
            outs = list(pool.map(one, cases))
    for a, (s, d) in zip(cases, outs):
        np.testing.assert_array_equal(s, a + a)
        np.testing.assert_array_equal(d, np.zeros_like(a))


# --------------------------------------------------------------------------------------- identity_fp32, identity_bytes, mlp


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (3, 7), (8, 2)])
def test_identity_fp32_raw(gclient, shape):
    x = (np.arange(np.prod(shape), dtype=np.float32).reshape(shape) - 3.5) * 0.25
    inp = grpcclient.InferInput("INPUT0", list(shape), "FP32")
    inp.set_data_from_numpy(x)
    res = gclient.infer("identity_fp32", [inp], outputs=[grpcclient.InferRequestedOutput("OUTPUT0")])
    out = res.as_numpy("OUTPUT0")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (8, 2)])
def test_identity_fp32_typed(gstub, shape):
    x = (np.arange(np.prod(shape), dtype=np.float32).reshape(shape) - 1.5) * -0.5
    resp = gstub.ModelInfer(grpc_request("identity_fp32", [typed_input("INPUT0", "FP32", x)]))
    (out,) = resp.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("OUTPUT0", "FP32", list(shape))
    np.testing.assert_array_equal(grpc_result(resp).as_numpy("OUTPUT0"), x)


def test_zero_element_tensor(gclient):
    inp = grpcclient.InferInput("INPUT0", [1, 0], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 0), dtype=np.float32))
    res = gclient.infer("identity_fp32", [inp])
    (out,) = res.get_response().outputs
    assert list(out.shape) == [1, 0]
    assert res.as_numpy("OUTPUT0").size == 0


BYTES_ELEMS = [b"hello", b"", "\u2603 binary \x01\x7f".encode(), "ünïcödé".encode(), b"x" * 1000]


@pytest.mark.parametrize("batch", [1, 2])
def test_identity_bytes_raw(gclient, batch):
    elems = BYTES_ELEMS[: 4 if batch == 2 else 5]
    x = np.array(elems, dtype=np.object_).reshape(batch, -1)
    inp = grpcclient.InferInput("INPUT0", list(x.shape), "BYTES")
    inp.set_data_from_numpy(x)
    res = gclient.infer("identity_bytes", [inp])
    (out_meta,) = res.get_response().outputs
    assert out_meta.datatype == "BYTES" and list(out_meta.shape) == list(x.shape)
    out = res.as_numpy("OUTPUT0")
    assert out.shape == x.shape
    assert [bytes(v) for v in out.reshape(-1)] == elems


@pytest.mark.parametrize("batch", [1, 2])
def test_identity_bytes_typed(gstub, batch):
    elems = BYTES_ELEMS[: 4 if batch == 2 else 5]
    x = np.array(elems, dtype=np.object_).reshape(batch, -1)
    resp = gstub.ModelInfer(grpc_request("identity_bytes", [typed_input("INPUT0", "BYTES", x)]))
    (out,) = resp.outputs
    assert out.datatype == "BYTES" and list(out.shape) == list(x.shape)
    assert len(resp.raw_output_contents) == 1, "BYTES outputs come back serialized in raw_output_contents too"
    assert [bytes(v) for v in grpc_result(resp).as_numpy("OUTPUT0").reshape(-1)] == elems


def test_mlp_expected_values_and_python_ort(gclient, examples_dir):
    x = mlp_input(4)
    inp = grpcclient.InferInput("input", [4, 784], "FP32")
    inp.set_data_from_numpy(x)
    res = gclient.infer("mlp", [inp])
    y = res.as_numpy("output")
    assert y.shape == (4, 10) and y.dtype == np.float32
    np.testing.assert_allclose(y[0, :4], MLP_EXPECTED_ROW0, rtol=0, atol=1e-4)

    import onnxruntime as ort

    sess = ort.InferenceSession(str(examples_dir / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (ref,) = sess.run(None, {sess.get_inputs()[0].name: x})
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_mlp_typed_fp32_full_batch(gstub):
    x = mlp_input(32)
    resp = gstub.ModelInfer(grpc_request("mlp", [typed_input("input", "FP32", x)], outputs=["output"]))
    y = grpc_result(resp).as_numpy("output")
    assert y.shape == (32, 10)
    np.testing.assert_allclose(y[0, :4], MLP_EXPECTED_ROW0, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------- statistics and index


def test_statistics_move_after_infer(gclient):
    before = stats_entry(gclient, "identity_fp32")
    for batch in (1, 2, 3):
        inp = grpcclient.InferInput("INPUT0", [batch, 3], "FP32")
        inp.set_data_from_numpy(np.ones((batch, 3), dtype=np.float32))
        gclient.infer("identity_fp32", [inp])
    after = stats_entry(gclient, "identity_fp32", "1")
    assert after.version == "1"
    assert after.inference_count - before.inference_count == 6, "inference_count counts batch items"
    assert 1 <= after.execution_count - before.execution_count <= 3
    s0, s1 = before.inference_stats, after.inference_stats
    assert s1.success.count - s0.success.count == 3, "success counts requests"
    assert s1.fail.count == s0.fail.count
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert getattr(s1, key).count > getattr(s0, key).count, f"inference_stats.{key}.count did not increase"
    assert s1.success.ns > s0.success.ns
    assert after.last_inference >= before.last_inference and after.last_inference > 0
    assert after.batch_stats, "batch_stats must record executed batch sizes"


def test_statistics_count_failures(gclient):
    before = stats_entry(gclient, "identity_fp32")
    inp = grpcclient.InferInput("INPUT0", [9, 1], "FP32")  # max_batch_size is 8
    inp.set_data_from_numpy(np.ones((9, 1), dtype=np.float32))
    with pytest.raises(InferenceServerException):
        gclient.infer("identity_fp32", [inp])
    after = stats_entry(gclient, "identity_fp32")
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert after.inference_stats.success.count == before.inference_stats.success.count
    assert after.inference_count == before.inference_count


def test_statistics_all_models_and_http_agree(gclient, grpc_server):
    resp = gclient.get_inference_statistics()
    names = {(e.name, e.version) for e in resp.model_stats}
    for m in EXAMPLE_MODELS:
        assert (m, "1") in names, f"{m} missing from ModelStatistics: {names}"
    g = stats_entry(gclient, "simple")
    (h,) = [e for e in grpc_server.get("/v2/models/simple/stats").json()["model_stats"] if e["name"] == "simple"]
    assert (g.inference_count, g.execution_count, g.inference_stats.success.count) == (
        int(h["inference_count"]),
        int(h["execution_count"]),
        int(h["inference_stats"]["success"]["count"]),
    ), "gRPC and HTTP statistics come from one core"


def test_statistics_as_json(gclient):
    stats = gclient.get_inference_statistics("simple", as_json=True)
    (entry,) = stats["model_stats"]
    assert entry["name"] == "simple" and entry["version"] == "1"


def test_repository_index(gclient, grpc_server):
    states = index_states(gclient)
    for m in EXAMPLE_MODELS:
        assert states.get((m, "1")) == ("READY", ""), f"{m}: {states.get((m, '1'))}"
    http = {(e["name"], e.get("version", "")): (e["state"], e.get("reason", "")) for e in grpc_server.index()}
    assert states == http, "gRPC RepositoryIndex must list what HTTP /v2/repository/index lists"


def test_repository_index_ready_filter(gstub):
    resp = gstub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True))
    assert {m.name for m in resp.models} >= set(EXAMPLE_MODELS)
    assert all(m.state == "READY" for m in resp.models), resp


# --------------------------------------------------------------------------------------- test repository: every datatype


def _identity_io(client, model: str, proto: str) -> None:
    md = client.get_model_metadata(model)
    assert [(t.name, t.datatype, list(t.shape)) for t in md.inputs] == [("INPUT0", proto, [-1, -1])], md
    assert [(t.name, t.datatype, list(t.shape)) for t in md.outputs] == [("OUTPUT0", proto, [-1, -1])], md


def _assert_same(out: np.ndarray, x: np.ndarray, dtype: str) -> None:
    assert out.shape == x.shape, (out.shape, x.shape)
    if dtype == "bytes":
        assert [bytes(v) for v in out.reshape(-1)] == list(x.reshape(-1))
    else:
        assert out.dtype == x.dtype, (out.dtype, x.dtype)
        assert out.tobytes() == x.tobytes(), f"{out!r} != {x!r}"


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_identity_datatype_tritonclient(grpc_test_repo_server, dtype):
    proto, np_dtype, values = DTYPES[dtype]
    model = f"identity_{dtype}"
    with grpc_test_repo_server.grpc_client() as c:
        require_ready(c, model)
        _identity_io(c, model, proto)
        for shape in ((2, 2), (1, 4)):
            x = np.array(values, dtype=np_dtype).reshape(shape)
            inp = grpcclient.InferInput("INPUT0", list(shape), proto)
            inp.set_data_from_numpy(x)
            res = c.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("OUTPUT0")])
            (out,) = res.get_response().outputs
            assert (out.datatype, list(out.shape)) == (proto, list(shape))
            _assert_same(res.as_numpy("OUTPUT0"), x, dtype)


@pytest.mark.parametrize(
    "mode,dtype", [(m, d) for m in ("raw", "typed") for d in DTYPES if not (m == "typed" and d in RAW_ONLY)]
)
def test_identity_datatype_stub(grpc_test_repo_server, dtype, mode):
    """Hand-built requests: raw_input_contents for every datatype, typed contents for every datatype that has a
    typed field (docs/protocol.md, "Data types": int_contents for INT8/16/32, uint_contents for UINT8/16/32, ...).
    FP16 and BF16 have none (raw only; the refusal is in test_grpc_hostile.py)."""
    proto, np_dtype, values = DTYPES[dtype]
    model = f"identity_{dtype}"
    with grpc_test_repo_server.grpc_client() as c:
        require_ready(c, model)
    stub = grpc_test_repo_server.grpc_stub()
    x = np.array(values, dtype=np_dtype).reshape(2, 2)
    if mode == "raw":
        req = grpc_request(model, [grpc_input("INPUT0", proto, [2, 2])], [raw_bytes(x, proto)], id=f"{dtype}-raw")
    else:
        req = grpc_request(model, [typed_input("INPUT0", proto, x)], id=f"{dtype}-typed")
    resp = stub.ModelInfer(req)
    assert (resp.model_name, resp.model_version, resp.id) == (model, "1", req.id)
    (out,) = resp.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("OUTPUT0", proto, [2, 2])
    assert resp.raw_output_contents[0] == raw_bytes(x, proto), "output bytes must equal the input bytes"


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_identity_datatype_metadata_config_ready_stats(grpc_test_repo_server, dtype):
    proto, np_dtype, values = DTYPES[dtype]
    model = f"identity_{dtype}"
    with grpc_test_repo_server.grpc_client() as c:
        require_ready(c, model)
        assert c.is_model_ready(model) is True
        assert c.is_model_ready(model, "1") is True
        _identity_io(c, model, proto)
        cfg = c.get_model_config(model).config
        assert cfg.name == model and cfg.max_batch_size == 8
        assert [(i.name, model_config_pb2.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [
            ("INPUT0", config_type(proto), [-1])
        ]
        assert [(o.name, model_config_pb2.DataType.Name(o.data_type)) for o in cfg.output] == [
            ("OUTPUT0", config_type(proto))
        ]
        before = stats_entry(c, model)
        x = np.array(values, dtype=np_dtype).reshape(2, 2)
        inp = grpcclient.InferInput("INPUT0", [2, 2], proto)
        inp.set_data_from_numpy(x)
        c.infer(model, [inp])
        after = stats_entry(c, model)
        assert after.inference_count - before.inference_count == 2
        assert after.inference_stats.success.count - before.inference_stats.success.count == 1


def test_test_repo_index_matches_http(grpc_test_repo_server):
    with grpc_test_repo_server.grpc_client() as c:
        states = index_states(c)
    http = {(e["name"], e.get("version", "")): (e["state"], e.get("reason", "")) for e in grpc_test_repo_server.index()}
    assert states == http
    for (name, version), (state, reason) in states.items():
        assert state in ("READY", "UNAVAILABLE"), (name, version, state)
        assert bool(reason) == (state == "UNAVAILABLE"), f"{name}/{version}: {state} with reason {reason!r}"
    for dtype in DTYPES:
        assert any(k[0] == f"identity_{dtype}" for k in states), f"identity_{dtype} missing from the index"


def test_multi_version_routing(grpc_test_repo_server):
    """multi_version serves versions 1-3; version v returns INPUT0 * v; no version = latest (3)."""
    x = np.array([[1.0, -2.0, 0.5]], dtype=np.float32)
    with grpc_test_repo_server.grpc_client() as c:
        md = c.get_model_metadata("multi_version")
        assert sorted(md.versions) == ["1", "2", "3"]
        (t,) = md.inputs
        (o,) = md.outputs
        for version, factor in (("1", 1), ("2", 2), ("3", 3), ("", 3)):
            assert c.is_model_ready("multi_version", version) is True
            inp = grpcclient.InferInput(t.name, [1, 3], t.datatype)
            inp.set_data_from_numpy(x.astype(np.float32))
            res = c.infer("multi_version", [inp], model_version=version)
            assert res.get_response().model_version == (version or "3")
            np.testing.assert_allclose(res.as_numpy(o.name), x * factor, rtol=1e-6)


def test_nobatch_model(grpc_test_repo_server):
    with grpc_test_repo_server.grpc_client() as c:
        require_ready(c, "simple_nobatch")
        assert c.get_model_config("simple_nobatch").config.max_batch_size == 0
        md = c.get_model_metadata("simple_nobatch")
        assert all(list(t.shape) == [16] for t in list(md.inputs) + list(md.outputs)), md
        a = np.arange(16, dtype=np.int32)
        b = np.full(16, 5, dtype=np.int32)
        res = c.infer("simple_nobatch", simple_inputs(a, b))
        np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)


# --------------------------------------------------------------------------------------- broken models (readiness)

BROKEN = ("broken_config", "broken_model", "name_mismatch")
HEALTH_NOT_SERVING = 2


@pytest.fixture(scope="module")
def grpc_mixed_server(bad_repo):
    """The generated bad repository (three broken models next to `simple`), --exit-on-error=false, default engine."""
    srv = start_server(
        grpc_base_args(bad_repo, None, ["--exit-on-error=false"]), "rampart[bad repo, grpc]", wait="live"
    )
    wait_models_settled(srv)
    yield srv
    finish_server(srv)


def test_broken_models_readiness(grpc_mixed_server):
    srv = grpc_mixed_server
    with srv.grpc_client() as c:
        assert c.is_server_live() is True
        assert c.is_server_ready() is False, "strict readiness (default) fails while a model is UNAVAILABLE"
        assert grpc_health_check(srv) == HEALTH_NOT_SERVING
        states = index_states(c)
        assert states.get(("simple", "1")) == ("READY", "")
        assert c.is_model_ready("simple") is True
        for model in BROKEN:
            entries = {k: v for k, v in states.items() if k[0] == model}
            assert entries, f"{model} missing from the gRPC repository index: {states}"
            for (_, version), (state, reason) in entries.items():
                assert state == "UNAVAILABLE" and reason, (model, version, state, reason)
            assert c.is_model_ready(model) is False


@pytest.mark.parametrize("model", BROKEN)
def test_broken_model_infer_refused(grpc_mixed_server, model):
    stub = grpc_mixed_server.grpc_stub()
    request = simple_grpc_request()
    request.model_name = model
    with pytest.raises(grpc.RpcError) as exc:
        stub.ModelInfer(request)
    # The model is known (UNAVAILABLE in the index) but has no READY version: Triton's NOT_FOUND "has no available
    # versions" (UNAVAILABLE is for a requested version that exists but is not ready).
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND, (exc.value.code(), exc.value.details())
    assert exc.value.details() == f"Request for unknown model: '{model}' has no available versions", exc.value.details()
    res = grpc_result(stub.ModelInfer(simple_grpc_request()))
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), A + B)


# --------------------------------------------------------------------------------------- compressed messages


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(gclient, gstub, algorithm):
    """tritonclient's `compression_algorithm` compresses the request (grpc-encoding); both of gRPC's algorithms
    are accepted, and the answer is the same as uncompressed."""
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = gclient.infer("simple", inputs, compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    compression = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}[algorithm]
    resp = gstub.ModelInfer(simple_grpc_request(), compression=compression)
    np.testing.assert_array_equal(grpc_result(resp).as_numpy("OUTPUT0"), a + b)
