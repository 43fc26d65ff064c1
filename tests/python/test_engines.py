"""Engine coverage on the generated test repository (scripts/gen_models.py --test-repo), for both engines:
every datatype through an identity model, batching/no-batching, config auto-complete, version policies,
reshape, multiple instances; and a repository with broken models served with --exit-on-error=false.

The semantics of the generic models (simple_*, reshape_model, two_instances) are taken from the ONNX
files themselves: outputs are cross-checked against Python onnxruntime running the same model file.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from onnx import TensorProto

from conftest import (
    HTTP_TIMEOUT,
    assert_error,
    base_args,
    example_repo,
    finish_server,
    start_server,
    wait_models_settled,
)

# dtype suffix -> (protocol datatype, numpy dtype, test values, ONNX element type, words a reason may use)
DTYPES = {
    "bool": ("BOOL", np.bool_, [True, False, True, True], TensorProto.BOOL, ["bool"]),
    "uint8": ("UINT8", np.uint8, [0, 1, 127, 255], TensorProto.UINT8, ["uint8", "u8"]),
    "uint16": ("UINT16", np.uint16, [0, 1, 65535, 300], TensorProto.UINT16, ["uint16", "u16"]),
    "uint32": ("UINT32", np.uint32, [0, 1, 2**32 - 1, 70000], TensorProto.UINT32, ["uint32", "u32"]),
    "uint64": ("UINT64", np.uint64, [0, 1, 2**64 - 1, 2**40], TensorProto.UINT64, ["uint64", "u64"]),
    "int8": ("INT8", np.int8, [-128, -1, 0, 127], TensorProto.INT8, ["int8", "i8"]),
    "int16": ("INT16", np.int16, [-32768, -1, 0, 32767], TensorProto.INT16, ["int16", "i16"]),
    "int32": ("INT32", np.int32, [-(2**31), -1, 0, 2**31 - 1], TensorProto.INT32, ["int32", "i32"]),
    "int64": ("INT64", np.int64, [-(2**63), -1, 0, 2**63 - 1], TensorProto.INT64, ["int64", "i64"]),
    "fp16": ("FP16", np.float16, [0.5, -2.0, 65504.0, 0.0], TensorProto.FLOAT16, ["fp16", "float16", "f16", "half"]),
    "fp32": ("FP32", np.float32, [0.5, -1.25, 3.0e38, 0.0], TensorProto.FLOAT, ["fp32", "float32", "f32", "float"]),
    "fp64": ("FP64", np.float64, [0.1, -1e300, 2.5, 0.0], TensorProto.DOUBLE, ["fp64", "float64", "f64", "double"]),
    # Valid UTF-8 for both engines (ONNX Runtime holds any bytes, tract UTF-8: test_identity_bytes_not_utf8 below).
    "bytes": ("BYTES", np.object_, [b"a", b"", "\u00e9".encode(), b"xyz"], TensorProto.STRING, ["bytes", "string", "str"]),
    "bf16": ("BF16", ml_dtypes.bfloat16, [0.5, -2.0, 1.0e38, 0.0], TensorProto.BFLOAT16, ["bf16", "bfloat16"]),
}
NO_JSON = {"fp16", "bf16"}

# Out-of-range / wrong-typed JSON values per datatype (Rampart rejects with 400; Triton truncates).
OUT_OF_RANGE = {
    "uint8": [300, -1],
    "uint16": [65536, -1],
    "uint32": [2**32, -1],
    "uint64": [2**64, -1],
    "int8": [128, -129],
    "int16": [32768, -32769],
    "int32": [2**31, -(2**31) - 1],
    "int64": [2**63, -(2**63) - 1],
    "bool": [1, "true"],
    "fp32": ["1.0"],
    "fp64": [None],
}

ORT_NP = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
}
ONNX_TO_CONFIG = {
    TensorProto.BOOL: "TYPE_BOOL",
    TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.UINT16: "TYPE_UINT16",
    TensorProto.UINT32: "TYPE_UINT32",
    TensorProto.UINT64: "TYPE_UINT64",
    TensorProto.INT8: "TYPE_INT8",
    TensorProto.INT16: "TYPE_INT16",
    TensorProto.INT32: "TYPE_INT32",
    TensorProto.INT64: "TYPE_INT64",
    TensorProto.FLOAT16: "TYPE_FP16",
    TensorProto.FLOAT: "TYPE_FP32",
    TensorProto.DOUBLE: "TYPE_FP64",
    TensorProto.STRING: "TYPE_STRING",
    TensorProto.BFLOAT16: "TYPE_BF16",
}


# --------------------------------------------------------------------------------------- helpers


def index_entries(srv) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in srv.index():
        out.setdefault(e["name"], []).append(e)
    return out


def model_state(srv, model: str) -> tuple[str, str]:
    entries = index_entries(srv).get(model)
    assert entries, f"{model} missing from the repository index"
    states = {e["state"] for e in entries}
    if "READY" in states:
        return "READY", ""
    return entries[0]["state"], entries[0].get("reason", "")


def require_ready(srv, model: str) -> None:
    state, reason = model_state(srv, model)
    assert state == "READY", f"{model} is {state}: {reason}"


def model_file(repo, model: str, version: int = 1):
    return repo / model / str(version) / "model.onnx"


def python_ort_runs_identity(path, dtype: str) -> tuple[bool, str]:
    """Can Python onnxruntime load and run this identity model? (BF16 goes through OrtValue.)"""
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (inp,) = sess.get_inputs()
        shape = [d if isinstance(d, int) and d > 0 else 2 for d in inp.shape]
        if dtype == "bf16":
            x = np.ones(shape, dtype=ml_dtypes.bfloat16)
            v = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(x.view(np.uint16), TensorProto.BFLOAT16)
            sess.run_with_ort_values(None, {inp.name: v})
        elif dtype == "bytes":
            sess.run(None, {inp.name: np.full(shape, "s", dtype=object)})
        else:
            sess.run(None, {inp.name: np.ones(shape).astype(DTYPES[dtype][1])})
        return True, ""
    except Exception as e:  # noqa: BLE001 - any failure means "Python ORT cannot run it"
        return False, f"{type(e).__name__}: {e}"


def metadata(srv, model: str, version: str | None = None) -> dict:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
    r = srv.get(path)
    assert r.status_code == 200, r.text
    return r.json()


def config(srv, model: str) -> dict:
    r = srv.get(f"/v2/models/{model}/config")
    assert r.status_code == 200, r.text
    return r.json()


def make_inputs(md: dict, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Deterministic input arrays from model metadata (-1 dims: batch for the first, 4 elsewhere)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, t in enumerate(md["inputs"]):
        shape = [(batch if j == 0 else 4) if d == -1 else d for j, d in enumerate(t["shape"])]
        dt = t["datatype"]
        if dt == "BOOL":
            arr = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif dt.startswith(("INT", "UINT")):
            arr = rng.integers(0, 50, size=shape).astype(ORT_NP[dt])
        elif dt in ("FP16", "FP32", "FP64"):
            arr = (rng.integers(-100, 100, size=shape) / 8).astype(ORT_NP[dt])
        else:
            pytest.fail(f"unsupported input datatype {dt} for a generic model")
        out[t["name"]] = arr
    return out


def infer_json(srv, model: str, arrays: dict[str, np.ndarray], version: str | None = None) -> dict[str, np.ndarray]:
    md = metadata(srv, model)
    dtypes = {t["name"]: t["datatype"] for t in md["inputs"]}
    req = {
        "inputs": [
            {"name": n, "datatype": dtypes[n], "shape": list(a.shape), "data": a.reshape(-1).tolist()}
            for n, a in arrays.items()
        ]
    }
    r = srv.infer(model, req, version=version)
    assert r.status_code == 200, f"{model}: {r.status_code} {r.text}"
    body = r.json()
    assert body["model_name"] == model
    res = {}
    for o in body["outputs"]:
        res[o["name"]] = np.array(o["data"], dtype=ORT_NP.get(o["datatype"], None)).reshape(o["shape"])
    return res


def ort_reference(path, cfg: dict, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reshape = {i["name"]: i.get("reshape", {}).get("shape") for i in cfg["input"]}
    batching = cfg.get("max_batch_size", 0) > 0
    feeds = {}
    for name, a in arrays.items():
        target = reshape.get(name)
        if target:
            a = a.reshape(([a.shape[0]] if batching else []) + [int(d) for d in target])
        feeds[name] = a
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def assert_matches_reference(got: dict, ref: dict, md: dict) -> None:
    for t in md["outputs"]:
        name = t["name"]
        assert name in got, f"output {name} missing"
        g = got[name]
        assert len(g.shape) == len(t["shape"]) and all(d == -1 or d == s for d, s in zip(t["shape"], g.shape)), (
            f"{name}: response shape {list(g.shape)} does not fit metadata shape {t['shape']}"
        )
        np.testing.assert_allclose(g.reshape(-1), ref[name].reshape(-1), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------- identity per datatype


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_identity_datatype(test_repo_server, test_repo, engine, dtype):
    srv = test_repo_server
    model = f"identity_{dtype}"
    proto, np_dtype, values, _, words = DTYPES[dtype]
    state, reason = model_state(srv, model)

    if engine == "onnxruntime":
        ok, why = python_ort_runs_identity(model_file(test_repo, model), dtype)
        if ok:
            assert state == "READY", f"Python onnxruntime runs {model} but Rampart/onnxruntime has it {state}: {reason}"
        else:
            print(f"Python onnxruntime cannot run {model}: {why}")
    if state != "READY":
        assert state == "UNAVAILABLE", (state, reason)
        assert any(w in reason.lower() for w in words), (
            f"{model} is UNAVAILABLE but the reason does not mention the datatype ({words}): {reason!r}"
        )
        return

    md = metadata(srv, model)
    assert md["inputs"][0]["datatype"] == proto and md["outputs"][0]["datatype"] == proto, md
    assert md["inputs"][0]["shape"] == [-1, -1], md
    in_name, out_name = md["inputs"][0]["name"], md["outputs"][0]["name"]

    x = np.array(values, dtype=np_dtype).reshape(2, 2)
    modes = [True] if dtype in NO_JSON else [True, False]
    with srv.client() as c:
        for binary in modes:
            data = x
            if dtype == "bytes" and not binary:
                data = np.array([b"a", b"", "é".encode(), b"xyz"], dtype=np.object_).reshape(2, 2)
            inp = httpclient.InferInput(in_name, [2, 2], proto)
            inp.set_data_from_numpy(data, binary_data=binary)
            res = c.infer(model, [inp], outputs=[httpclient.InferRequestedOutput(out_name, binary_data=binary)])
            out = res.as_numpy(out_name)
            assert out.shape == (2, 2), out.shape
            if dtype == "bytes":
                got = [v if isinstance(v, bytes) else str(v).encode() for v in out.reshape(-1)]
                assert got == list(data.reshape(-1)), (binary, got)
            else:
                assert out.dtype == np.dtype(np_dtype), out.dtype
                assert out.tobytes() == data.tobytes(), f"binary={binary}: {out!r} != {data!r}"

    if dtype in NO_JSON:
        return
    # Raw JSON with nested (row-major) data; the response data is flat.
    if dtype == "bytes":
        nested = [["a", ""], ["é", "xyz"]]
    else:
        nested = x.tolist()
    req = {"inputs": [{"name": in_name, "datatype": proto, "shape": [2, 2], "data": nested}]}
    r = srv.infer(model, req)
    assert r.status_code == 200, r.text
    (o,) = r.json()["outputs"]
    assert o["datatype"] == proto and o["shape"] == [2, 2], o
    flat = [v for row in nested for v in row]
    if dtype.startswith("fp"):
        np.testing.assert_array_equal(np.array(o["data"], dtype=np_dtype), np.array(flat, dtype=np_dtype))
    else:
        assert o["data"] == flat, (o["data"], flat)


def test_identity_bytes_not_utf8(test_repo_server, engine):
    """ONNX Runtime string elements hold any bytes (NUL and invalid UTF-8 included: Rampart fills them through the
    length-aware C API); tract's are Rust `String`s, so tract refuses bytes that are not UTF-8 with a clear 400
    naming the input and the reason, and holds NUL. (Triton's onnxruntime backend truncates at NUL instead.)
    More cases, over HTTP and gRPC: test_bytes_elements.py."""
    srv = test_repo_server
    for elems in ([b"ok", b"\xff\xfe"], [b"a\x00b", b"\x00"]):
        data = np.array(elems, dtype=np.object_).reshape(1, 2)
        inp = httpclient.InferInput("INPUT0", [1, 2], "BYTES")
        inp.set_data_from_numpy(data, binary_data=True)
        with srv.client() as c:
            if engine == "tract" and elems[1] == b"\xff\xfe":
                with pytest.raises(InferenceServerException) as exc:
                    c.infer("identity_bytes", [inp])
                msg = str(exc.value)
                assert "400" in msg and "INPUT0" in msg and "UTF-8" in msg, msg
                continue
            res = c.infer("identity_bytes", [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)])
        assert [bytes(v) for v in res.as_numpy("OUTPUT0").reshape(-1)] == elems
    assert srv.get("/v2/health/live").status_code == 200


@pytest.mark.parametrize("dtype", sorted(NO_JSON))
def test_half_precision_json_refused(test_repo_server, dtype):
    srv = test_repo_server
    model = f"identity_{dtype}"
    if model_state(srv, model)[0] != "READY":
        pytest.skip(f"{model} is not served by this engine")
    proto = DTYPES[dtype][0]
    in_name = metadata(srv, model)["inputs"][0]["name"]
    req = {"inputs": [{"name": in_name, "datatype": proto, "shape": [1, 2], "data": [1.0, 2.0]}]}
    assert_error(
        srv.infer(model, req),
        400,
        f"receiving {proto} data via JSON is not supported. Please use the binary data format for input {in_name}",
    )


@pytest.mark.parametrize("dtype", sorted(NO_JSON))
def test_half_precision_json_output_refused(test_repo_server, dtype):
    srv = test_repo_server
    model = f"identity_{dtype}"
    if model_state(srv, model)[0] != "READY":
        pytest.skip(f"{model} is not served by this engine")
    proto, np_dtype = DTYPES[dtype][0], DTYPES[dtype][1]
    md = metadata(srv, model)
    in_name, out_name = md["inputs"][0]["name"], md["outputs"][0]["name"]
    inp = httpclient.InferInput(in_name, [1, 2], proto)
    inp.set_data_from_numpy(np.array([[1.0, 2.0]], dtype=np_dtype), binary_data=True)
    body, hlen = httpclient.InferenceServerClient.generate_request_body(
        [inp], outputs=[httpclient.InferRequestedOutput(out_name, binary_data=False)]
    )
    r = srv.infer(model, body, headers={"Inference-Header-Content-Length": str(hlen)})
    assert_error(r, 400, "JSON")


@pytest.mark.parametrize(
    "dtype,value", [(d, v) for d, vs in sorted(OUT_OF_RANGE.items()) for v in vs], ids=lambda x: str(x)
)
def test_json_value_out_of_range_or_wrong_type(test_repo_server, dtype, value):
    srv = test_repo_server
    model = f"identity_{dtype}"
    if model_state(srv, model)[0] != "READY":
        pytest.skip(f"{model} is not served by this engine")
    proto = DTYPES[dtype][0]
    in_name = metadata(srv, model)["inputs"][0]["name"]
    first = False if dtype == "bool" else 0
    req = {"inputs": [{"name": in_name, "datatype": proto, "shape": [1, 2], "data": [first, value]}]}
    assert_error(srv.infer(model, req), 400)


# --------------------------------------------------------------------------------------- batching and configs


def test_simple_nobatch(test_repo_server, test_repo):
    srv = test_repo_server
    require_ready(srv, "simple_nobatch")
    cfg = config(srv, "simple_nobatch")
    assert cfg.get("max_batch_size", 0) == 0
    md = metadata(srv, "simple_nobatch")
    for t in md["inputs"] + md["outputs"]:
        assert t["shape"] == [16], f"no batch dim expected when max_batch_size is 0: {t}"
    arrays = make_inputs(md, batch=1, seed=1)
    got = infer_json(srv, "simple_nobatch", arrays)
    assert_matches_reference(got, ort_reference(model_file(test_repo, "simple_nobatch"), cfg, arrays), md)
    # A batch dimension is not accepted (only the first input gets one, so the message is deterministic).
    first = md["inputs"][0]
    req = {
        "inputs": [
            {"name": t["name"], "datatype": t["datatype"], "shape": [1, 16] if i == 0 else [16], "data": [1] * 16}
            for i, t in enumerate(md["inputs"])
        ]
    }
    assert_error(
        srv.infer("simple_nobatch", req),
        400,
        f"unexpected shape for input '{first['name']}' for model 'simple_nobatch'. Expected [16], got [1,16]",
    )


def _onnx_io(path):
    m = onnx.load(str(path))
    inits = {i.name for i in m.graph.initializer}
    ins = [(v.name, v.type.tensor_type.elem_type, v.type.tensor_type.shape) for v in m.graph.input if v.name not in inits]
    outs = [(v.name, v.type.tensor_type.elem_type, v.type.tensor_type.shape) for v in m.graph.output]
    return ins, outs


def _assert_io_from_onnx(cfg: dict, path) -> None:
    ins, outs = _onnx_io(path)
    assert sorted((i["name"], i["data_type"]) for i in cfg.get("input", [])) == sorted(
        (n, ONNX_TO_CONFIG[t]) for n, t, _ in ins
    ), f"config inputs {cfg.get('input')} do not match the ONNX model"
    assert sorted((o["name"], o["data_type"]) for o in cfg.get("output", [])) == sorted(
        (n, ONNX_TO_CONFIG[t]) for n, t, _ in outs
    ), f"config outputs {cfg.get('output')} do not match the ONNX model"


def test_simple_autocomplete(test_repo_server, test_repo):
    srv = test_repo_server
    assert not (test_repo / "simple_autocomplete" / "config.pbtxt").exists()
    require_ready(srv, "simple_autocomplete")
    cfg = config(srv, "simple_autocomplete")
    assert cfg["name"] == "simple_autocomplete"
    assert cfg.get("platform") == "onnxruntime_onnx" or cfg.get("backend") == "onnxruntime", cfg
    _assert_io_from_onnx(cfg, model_file(test_repo, "simple_autocomplete"))
    md = metadata(srv, "simple_autocomplete")
    arrays = make_inputs(md, batch=1, seed=2)
    got = infer_json(srv, "simple_autocomplete", arrays)
    assert_matches_reference(got, ort_reference(model_file(test_repo, "simple_autocomplete"), cfg, arrays), md)


def test_simple_partial(test_repo_server, test_repo):
    srv = test_repo_server
    require_ready(srv, "simple_partial")
    cfg = config(srv, "simple_partial")
    assert cfg["name"] == "simple_partial"
    assert cfg["max_batch_size"] == 8
    assert cfg.get("platform") == "onnxruntime_onnx"
    _assert_io_from_onnx(cfg, model_file(test_repo, "simple_partial"))
    ins, outs = _onnx_io(model_file(test_repo, "simple_partial"))
    onnx_dims = {n: [d.dim_value if d.HasField("dim_value") else -1 for d in s.dim] for n, _, s in ins + outs}
    for t in cfg["input"] + cfg["output"]:
        assert t["dims"] == onnx_dims[t["name"]][1:], f"{t['name']}: dims {t['dims']} vs ONNX {onnx_dims[t['name']]}"
    md = metadata(srv, "simple_partial")
    assert all(t["shape"][0] == -1 for t in md["inputs"]), md
    arrays = make_inputs(md, batch=3, seed=3)
    got = infer_json(srv, "simple_partial", arrays)
    assert_matches_reference(got, ort_reference(model_file(test_repo, "simple_partial"), cfg, arrays), md)


def test_reshape_model(test_repo_server, test_repo):
    srv = test_repo_server
    require_ready(srv, "reshape_model")
    cfg = config(srv, "reshape_model")
    (inp,) = cfg["input"]
    assert inp["dims"] == [4]
    assert inp["reshape"]["shape"] == [2, 2]
    md = metadata(srv, "reshape_model")
    assert md["inputs"][0]["shape"][-1] == 4, "metadata shows config dims, not the reshape"
    batching = cfg.get("max_batch_size", 0) > 0
    arrays = make_inputs(md, batch=2, seed=4)
    assert list(arrays.values())[0].shape == ((2, 4) if batching else (4,))
    got = infer_json(srv, "reshape_model", arrays)
    assert_matches_reference(got, ort_reference(model_file(test_repo, "reshape_model"), cfg, arrays), md)


def test_two_instances_concurrent(test_repo_server, test_repo):
    srv = test_repo_server
    require_ready(srv, "two_instances")
    cfg = config(srv, "two_instances")
    assert sum(int(g.get("count", 1)) for g in cfg["instance_group"]) == 2, cfg["instance_group"]
    md = metadata(srv, "two_instances")
    path = model_file(test_repo, "two_instances")
    cases = [make_inputs(md, batch=1, seed=100 + i) for i in range(16)]
    refs = [ort_reference(path, cfg, a) for a in cases]
    dtypes = {t["name"]: t["datatype"] for t in md["inputs"]}

    def one(arrays):
        req = {
            "inputs": [
                {"name": n, "datatype": dtypes[n], "shape": list(a.shape), "data": a.reshape(-1).tolist()}
                for n, a in arrays.items()
            ]
        }
        with requests.Session() as s:
            r = s.post(f"{srv.base}/v2/models/two_instances/infer", json=req, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in r.json()["outputs"]}

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, cases))
    for got, ref in zip(results, refs):
        assert_matches_reference(got, ref, md)


# --------------------------------------------------------------------------------------- version policies


def _scale_check(srv, model: str, version: str | None, factor: int) -> None:
    md = metadata(srv, model, version)
    assert len(md["inputs"]) == 1 and len(md["outputs"]) == 1, md
    arrays = make_inputs(md, batch=1, seed=5)
    got = infer_json(srv, model, arrays, version=version)
    (out_name,) = [o["name"] for o in md["outputs"]]
    (x,) = arrays.values()
    np.testing.assert_allclose(got[out_name].reshape(-1), (x * factor).reshape(-1), rtol=1e-6)


def test_multi_version_all(test_repo_server):
    srv = test_repo_server
    entries = index_entries(srv)["multi_version"]
    assert sorted((e["version"], e["state"]) for e in entries) == [("1", "READY"), ("2", "READY"), ("3", "READY")]
    assert sorted(metadata(srv, "multi_version")["versions"]) == ["1", "2", "3"]
    for v in (1, 2, 3):
        assert metadata(srv, "multi_version", str(v))["versions"] == [str(v)]
        assert srv.get(f"/v2/models/multi_version/versions/{v}/ready").status_code == 200
        _scale_check(srv, "multi_version", str(v), v)
    _scale_check(srv, "multi_version", None, 3)  # no version = latest
    r = srv.get("/v2/models/multi_version/stats")
    assert r.status_code == 200, r.text
    versions = {e["version"] for e in r.json()["model_stats"] if e["name"] == "multi_version"}
    assert versions == {"1", "2", "3"}


def test_multi_version_latest(test_repo_server):
    srv = test_repo_server
    served = [e for e in index_entries(srv)["multi_version_latest"] if e["state"] == "READY"]
    assert [e["version"] for e in served] == ["3"]
    assert metadata(srv, "multi_version_latest")["versions"] == ["3"]
    _scale_check(srv, "multi_version_latest", None, 3)
    t = metadata(srv, "multi_version_latest")["inputs"][0]
    shape = [1 if d == -1 else d for d in t["shape"]]
    body = {"inputs": [{"name": t["name"], "datatype": t["datatype"], "shape": shape, "data": [1] * int(np.prod(shape))}]}
    for v in ("1", "2"):
        assert_error(srv.get(f"/v2/models/multi_version_latest/versions/{v}"), 404, f"version {v} is not found")
        assert_error(srv.infer("multi_version_latest", body, version=v), 404, f"version {v} is not found")


def test_multi_version_specific(test_repo_server):
    srv = test_repo_server
    served = sorted(e["version"] for e in index_entries(srv)["multi_version_specific"] if e["state"] == "READY")
    assert served == ["1", "3"]
    assert sorted(metadata(srv, "multi_version_specific")["versions"]) == ["1", "3"]
    _scale_check(srv, "multi_version_specific", "1", 1)
    _scale_check(srv, "multi_version_specific", "3", 3)
    assert_error(srv.get("/v2/models/multi_version_specific/versions/2"), 404, "version 2 is not found")


# --------------------------------------------------------------------------------------- broken models


@pytest.fixture(scope="session")
def mixed_repo(bad_repo, tmp_path_factory):
    """The generated bad repository plus a known-good `simple` copied from examples/models."""
    repo = tmp_path_factory.mktemp("mixed_repo")
    for child in bad_repo.iterdir():
        if child.is_dir():
            shutil.copytree(child, repo / child.name)
    if not (repo / "simple").exists():
        shutil.copytree(example_repo() / "simple", repo / "simple")
    return repo


@pytest.fixture(scope="session")
def mixed_server(engine, mixed_repo):
    srv = start_server(
        base_args(mixed_repo, engine, ["--exit-on-error=false"]), f"rampart[{engine}, mixed repo]", wait="live"
    )
    wait_models_settled(srv)
    yield srv
    finish_server(srv)


BROKEN = {
    # model: reason must contain one of these (case-insensitive) - the model, the file or the field at fault
    "broken_config": ["broken_config", "config"],
    "broken_model": ["broken_model", "model.onnx"],
    "name_mismatch": ["name"],
}


@pytest.mark.parametrize("model", sorted(BROKEN))
def test_broken_model_unavailable_with_reason(mixed_server, model):
    entries = index_entries(mixed_server).get(model)
    assert entries, f"{model} missing from the index"
    for e in entries:
        assert e["state"] == "UNAVAILABLE", e
        reason = e.get("reason", "")
        assert reason, f"{model}: UNAVAILABLE without a reason"
        assert any(w in reason.lower() for w in BROKEN[model]), f"{model}: reason {reason!r} names none of {BROKEN[model]}"
    assert mixed_server.get("/v2/health/live").status_code == 200


@pytest.mark.parametrize("model", sorted(BROKEN))
def test_broken_model_requests(mixed_server, model):
    assert_error(mixed_server.get(f"/v2/models/{model}/ready"), 400, exact="Model version not ready")
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
    msg = assert_error(mixed_server.infer(model, body), (404, 503))
    assert model in msg, msg


def test_good_model_serves_next_to_broken_ones(mixed_server):
    assert mixed_server.get("/v2/models/simple/ready").status_code == 200
    a = list(range(16))
    req = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": a},
        ]
    }
    r = mixed_server.infer("simple", req)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs["OUTPUT0"] == [2 * v for v in a]


def test_strict_readiness_with_broken_models(mixed_server):
    r = mixed_server.get("/v2/health/ready")
    assert r.status_code == 400, "strict readiness (default) must fail while a model is UNAVAILABLE"
    assert r.json() == {"ready": False}


# --------------------------------------------------------------------------------------- optional inputs


def test_optional_input(test_repo_server, engine):
    """`optional: true` on an input whose default lives in the ONNX file (an overridable initializer)."""
    srv = test_repo_server
    a = [1.0, 2.0, 3.0, 4.0]
    only_a = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [4], "data": a}]}
    r = srv.infer("optional_input", only_a)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [x + 1.0 for x in a]

    both = {"inputs": only_a["inputs"] + [{"name": "INPUT1", "datatype": "FP32", "shape": [4], "data": [10.0] * 4}]}
    r = srv.infer("optional_input", both)
    if engine == "onnxruntime":
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [x + 10.0 for x in a]
    else:
        # tract folds initializer-backed inputs into constants: supplying one is refused, not ignored.
        assert_error(r, 400, "optional input 'INPUT1'", "cannot be supplied")
