"""The classification extension (docs/protocol.md, "Classification", "gRPC parameters", "Security history (CVEs)":
CVE-2025-23321, CVE-2026-24146, CVE-2026-24147), over HTTP (`"classification": k` on a requested output,
tritonclient's `class_count`) and gRPC (`classification` int64_param).

An output requested with classification k comes back as BYTES, shape [batch, min(k, n)] for a batching model
and [min(k, n)] for a non-batching one, each element "<value>:<index>[:<label>]" in descending value order:
floats as C++ std::to_string prints them ("%f": 6 decimals), integers as integers, labels from the output's
`label_filename` (a line per index; no label part when the file has no line for the index). BYTES / BOOL /
FP16 outputs are refused (Triton divided by zero there before 2025-07), as are outputs above 1,000,000
elements. A label file must stay inside the model directory (`..`, absolute paths and symlinks pointing out
are load errors), including in a `config` override given to the load API.

The test repository is built in tmp: examples/models' ONNX files with edited configs and label files, and
tiny Identity models made with the onnx helper API for the other data types. The servers run on the first
selected engine (classification happens after the engine).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from onnx import TensorProto, helper
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from conftest import (
    assert_error,
    assert_live,
    deserialize_bytes,
    finish_server,
    grpc_base_args,
    grpc_error,
    grpc_input,
    grpc_request,
    grpc_result,
    parse_infer_response,
    raw_bytes,
    running,
    selected_engines,
    set_grpc_param,
    start_server,
    wait_models_settled,
)

ENGINE = selected_engines()[0]
PID = os.getpid()
LABELS = ["cat", "dog", "bird"]  # fewer lines than elements: indices >= 3 have no label
X2 = np.array([[0.1, 0.7, 0.2, 5.0, -1.0], [2.5, -0.5, 0.25, 1.0, 3.0]], dtype=np.float32)
ROW0_SORTED = ["5.000000:3", "0.700000:1:dog", "0.200000:2:bird", "0.100000:0:cat", "-1.000000:4"]
ROW1_SORTED = ["3.000000:4", "2.500000:0:cat", "1.000000:3", "0.250000:2:bird", "-0.500000:1:dog"]
UNSUPPORTED = "class result not available for output due to unsupported type '{}'"
# Whole lines of /etc/passwd and its first fields (as they would appear in "<value>:<index>:<label>").
PASSWD_LINES = [l for l in Path("/etc/passwd").read_text().splitlines() if l.count(":") >= 6]
PASSWD_MARKERS = tuple({"root:x:0:0", ":0:root:", *(l for l in PASSWD_LINES)})


# --------------------------------------------------------------------------------------------------------------
# Model repository
# --------------------------------------------------------------------------------------------------------------


def fp32_config(name: str, max_batch_size: int = 8, dims: str = "[ -1 ]", label: str | None = "labels.txt") -> str:
    lab = f' label_filename: "{label}"' if label is not None else ""
    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
        f'input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: {dims} }} ]\n'
        f'output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: {dims}{lab} }} ]\n'
    )


def fp32_config_json(name: str, label: str) -> str:
    return json.dumps(
        {
            "name": name,
            "platform": "onnxruntime_onnx",
            "max_batch_size": 8,
            "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}],
            "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1], "label_filename": label}],
        }
    )


def fp32_model(repo: Path, examples: Path, name: str, config: str, labels: list[str] | None = LABELS) -> Path:
    d = repo / name
    (d / "1").mkdir(parents=True)
    shutil.copy(examples / "identity_fp32" / "1" / "model.onnx", d / "1" / "model.onnx")
    (d / "config.pbtxt").write_text(config)
    if labels is not None:
        (d / "labels.txt").write_text("".join(f"{l}\n" for l in labels))
    return d


ONNX_TYPES = {
    "FP64": (TensorProto.DOUBLE, "TYPE_FP64", np.float64),
    "INT64": (TensorProto.INT64, "TYPE_INT64", np.int64),
    "UINT8": (TensorProto.UINT8, "TYPE_UINT8", np.uint8),
    "UINT64": (TensorProto.UINT64, "TYPE_UINT64", np.uint64),
    "INT8": (TensorProto.INT8, "TYPE_INT8", np.int8),
    "BOOL": (TensorProto.BOOL, "TYPE_BOOL", np.bool_),
    "FP16": (TensorProto.FLOAT16, "TYPE_FP16", np.float16),
}


def identity_model(repo: Path, dtype: str) -> str:
    """ident_<dtype>: Y = Identity(X), [batch, n], max_batch_size 8, labels on Y."""
    onnx_t, cfg_t, _ = ONNX_TYPES[dtype]
    name = f"ident_{dtype.lower()}"
    g = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"])],
        name,
        [helper.make_tensor_value_info("X", onnx_t, ["batch", "n"])],
        [helper.make_tensor_value_info("Y", onnx_t, ["batch", "n"])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="rampart-test_classification")
    m.ir_version = 8
    onnx.checker.check_model(m)
    d = repo / name
    (d / "1").mkdir(parents=True)
    (d / "1" / "model.onnx").write_bytes(m.SerializeToString())
    (d / "config.pbtxt").write_text(
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        f'input [ {{ name: "X" data_type: {cfg_t} dims: [ -1 ] }} ]\n'
        f'output [ {{ name: "Y" data_type: {cfg_t} dims: [ -1 ] label_filename: "labels.txt" }} ]\n'
    )
    (d / "labels.txt").write_text("zero\none\ntwo\n")
    return name


@pytest.fixture(scope="module")
def cls_repo(examples_dir, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("cls_repo")
    fp32_model(repo, examples_dir, "cls_fp32", fp32_config("cls_fp32"))
    fp32_model(repo, examples_dir, "cls_fp32_nobatch", fp32_config("cls_fp32_nobatch", 0, "[ 1, -1 ]"))
    # labels.txt is a symlink to a file inside the model directory: allowed.
    d = fp32_model(repo, examples_dir, "cls_symlink_inside", fp32_config("cls_symlink_inside"), labels=None)
    (d / "real").mkdir()
    (d / "real" / "names.txt").write_text("north\neast\nsouth\nwest\n")
    (d / "labels.txt").symlink_to(Path("real") / "names.txt")
    # simple with labels c0..c15 on OUTPUT0 (sum), none on OUTPUT1 (difference).
    shutil.copytree(examples_dir / "simple", repo / "simple")
    cfg = (repo / "simple" / "config.pbtxt").read_text()
    marker = 'name: "OUTPUT0"\n    data_type: TYPE_INT32\n    dims: [ 16 ]'
    assert marker in cfg, cfg
    (repo / "simple" / "config.pbtxt").write_text(cfg.replace(marker, marker + '\n    label_filename: "labels.txt"'))
    (repo / "simple" / "labels.txt").write_text("".join(f"c{i}\n" for i in range(16)))
    shutil.copytree(examples_dir / "identity_bytes", repo / "identity_bytes")
    for dtype in ONNX_TYPES:
        identity_model(repo, dtype)
    return repo


@pytest.fixture(scope="module")
def cls_server(cls_repo):
    """The classification repository, HTTP + gRPC, client shared memory on (for the shm + classification case)."""
    srv = start_server(grpc_base_args(cls_repo, ENGINE, ["--allow-client-shm=true"]), f"rampart[{ENGINE}, classification]")
    yield srv
    finish_server(srv)


@pytest.fixture(autouse=True)
def _module_servers_alive(request):
    yield
    if "cls_server" in request.fixturenames:
        assert_live(request.getfixturevalue("cls_server"))


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def as_strings(arr) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in np.asarray(arr).reshape(-1)]


def http_classify(srv, model: str, inputs: list[dict], outputs: list[dict]):
    return srv.infer(model, {"inputs": inputs, "outputs": outputs})


def fp32_input(x: np.ndarray, name: str = "INPUT0") -> dict:
    return {"name": name, "datatype": "FP32", "shape": list(x.shape), "data": x.flatten().tolist()}


def http_fp32_classes(srv, model: str, x: np.ndarray, k, binary: bool = False) -> tuple[dict, list[str]]:
    """(output header, class strings) of OUTPUT0 with classification k (JSON or binary output)."""
    out = {"name": "OUTPUT0", "parameters": {"classification": k, "binary_data": binary}}
    r = http_classify(srv, model, [fp32_input(x)], [out])
    assert r.status_code == 200, r.text
    header, blobs = parse_infer_response(r)
    (o,) = header["outputs"]
    if binary:
        assert "data" not in o, o
        values = [b.decode() for b in deserialize_bytes(blobs["OUTPUT0"])]
    else:
        values = o["data"]
        assert all(isinstance(v, str) for v in values), o
    return o, values


def grpc_classes(srv, model: str, inputs, raw, outputs: dict[str, int]):
    """gRPC ModelInfer with `classification` on the given outputs; returns the InferResult."""
    req = grpc_request(model, inputs, raw)
    for name, k in outputs.items():
        o = req.outputs.add(name=name)
        if k is not None:
            set_grpc_param(o.parameters, "classification", k, "int64")
    return grpc_result(srv.grpc_stub().ModelInfer(req))


def grpc_fp32(srv, model: str, x: np.ndarray, k: int):
    return grpc_classes(srv, model, [grpc_input("INPUT0", "FP32", x.shape)], [raw_bytes(x, "FP32")], {"OUTPUT0": k})


# ==============================================================================================================
# Results
# ==============================================================================================================


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_http_top_k_with_labels_batched(cls_server, binary):
    o, values = http_fp32_classes(cls_server, "cls_fp32", X2, 2, binary)
    assert o["datatype"] == "BYTES" and o["shape"] == [2, 2], o
    assert values == ["5.000000:3", "0.700000:1:dog", "3.000000:4", "2.500000:0:cat"]


def test_http_raw_json_answer(cls_server):
    x = X2[:1]
    r = http_classify(cls_server, "cls_fp32", [fp32_input(x)], [{"name": "OUTPUT0", "parameters": {"classification": 3}}])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["outputs"] == [
        {"name": "OUTPUT0", "datatype": "BYTES", "shape": [1, 3], "data": ["5.000000:3", "0.700000:1:dog", "0.200000:2:bird"]}
    ], body


def test_http_tritonclient_class_count(cls_server):
    client = cls_server.client()
    try:
        inp = httpclient.InferInput("INPUT0", list(X2.shape), "FP32")
        inp.set_data_from_numpy(X2)
        for binary in (True, False):
            out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary, class_count=3)
            res = client.infer("cls_fp32", [inp], outputs=[out])
            arr = res.as_numpy("OUTPUT0")
            assert arr.shape == (2, 3) and res.get_output("OUTPUT0")["datatype"] == "BYTES"
            assert as_strings(arr) == ROW0_SORTED[:3] + ROW1_SORTED[:3]
    finally:
        client.close()


def test_grpc_top_k_with_labels_batched(cls_server):
    res = grpc_fp32(cls_server, "cls_fp32", X2, 2)
    o = res.get_output("OUTPUT0")
    assert o.datatype == "BYTES" and list(o.shape) == [2, 2], o
    assert as_strings(res.as_numpy("OUTPUT0")) == ["5.000000:3", "0.700000:1:dog", "3.000000:4", "2.500000:0:cat"]


def test_grpc_tritonclient_class_count(cls_server):
    with cls_server.grpc_client() as client:
        inp = grpcclient.InferInput("INPUT0", list(X2.shape), "FP32")
        inp.set_data_from_numpy(X2)
        res = client.infer("cls_fp32", [inp], outputs=[grpcclient.InferRequestedOutput("OUTPUT0", class_count=4)])
        arr = res.as_numpy("OUTPUT0")
        assert arr.shape == (2, 4)
        assert as_strings(arr) == ROW0_SORTED[:4] + ROW1_SORTED[:4]


@pytest.mark.parametrize("proto", ["http", "grpc"])
@pytest.mark.parametrize("k", [5, 6, 1000, 2**40])
def test_k_larger_than_elements_gives_all(cls_server, proto, k):
    if proto == "http":
        o, values = http_fp32_classes(cls_server, "cls_fp32", X2, k)
        shape = o["shape"]
    else:
        res = grpc_fp32(cls_server, "cls_fp32", X2, k)
        shape, values = list(res.get_output("OUTPUT0").shape), as_strings(res.as_numpy("OUTPUT0"))
    assert shape == [2, 5]
    assert values == ROW0_SORTED + ROW1_SORTED


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_non_batching_model_shape_is_k(cls_server, proto):
    x = X2[:1]  # the full [1, 5] tensor of a max_batch_size 0 model
    if proto == "http":
        o, values = http_fp32_classes(cls_server, "cls_fp32_nobatch", x, 2)
        assert o["shape"] == [2] and o["datatype"] == "BYTES", o
    else:
        res = grpc_fp32(cls_server, "cls_fp32_nobatch", x, 2)
        o = res.get_output("OUTPUT0")
        assert list(o.shape) == [2] and o.datatype == "BYTES", o
        values = as_strings(res.as_numpy("OUTPUT0"))
    assert values == ["5.000000:3", "0.700000:1:dog"]
    # k above the element count: every element, shape [5].
    o, values = http_fp32_classes(cls_server, "cls_fp32_nobatch", x, 50)
    assert o["shape"] == [5] and values == ROW0_SORTED


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_float_values_print_like_std_to_string(cls_server, proto):
    """std::to_string(float) is printf("%f"): 6 decimals, rounded, no exponent, "-0.000000" for tiny negatives."""
    vals = np.array([[1.2345678, 123456.7890625, 1e20, -1e-7, 2.0000005, 1e-7, -3.5]], dtype=np.float32)
    expected_text = {i: "%f" % float(v) for i, v in enumerate(vals[0])}  # C's %f on the exact FP32 value
    order = sorted(range(vals.shape[1]), key=lambda i: -float(vals[0, i]))
    labels = {0: "cat", 1: "dog", 2: "bird"}
    expected = [expected_text[i] + f":{i}" + (f":{labels[i]}" if i in labels else "") for i in order]
    assert expected[0] == "100000002004087734272.000000:2:bird"  # sanity of the expectation itself
    assert "-0.000000:3" in expected and "1.234568:0:cat" in expected and "123456.789062:1:dog" in expected
    if proto == "http":
        _, values = http_fp32_classes(cls_server, "cls_fp32", vals, 7)
    else:
        values = as_strings(grpc_fp32(cls_server, "cls_fp32", vals, 7).as_numpy("OUTPUT0"))
    assert values == expected


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_int32_values_and_labels_on_one_output_only(cls_server, proto):
    """`simple`: OUTPUT0 (labels c0..c15) classified, OUTPUT1 (no labels) classified, integers printed as such."""
    a = np.array([[3, -7, 100, 0, 42, 1, 2, 8, 9, 10, 11, 12, 13, 14, 15, 16]], dtype=np.int32)
    b = np.zeros((1, 16), dtype=np.int32)
    b[0, 1] = 50  # OUTPUT0[1] = -7 + 50 = 43 > 42; OUTPUT1[1] = -57
    if proto == "http":
        ins = [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a.flatten().tolist()},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b.flatten().tolist()},
        ]
        outs = [{"name": "OUTPUT0", "parameters": {"classification": 3}}, {"name": "OUTPUT1", "parameters": {"classification": 16}}]
        r = http_classify(cls_server, "simple", ins, outs)
        assert r.status_code == 200, r.text
        got = {o["name"]: o for o in r.json()["outputs"]}
        o0, o1 = got["OUTPUT0"]["data"], got["OUTPUT1"]["data"]
        assert got["OUTPUT0"]["shape"] == [1, 3] and got["OUTPUT1"]["shape"] == [1, 16], got
    else:
        res = grpc_classes(
            cls_server,
            "simple",
            [grpc_input("INPUT0", "INT32", [1, 16]), grpc_input("INPUT1", "INT32", [1, 16])],
            [raw_bytes(a, "INT32"), raw_bytes(b, "INT32")],
            {"OUTPUT0": 3, "OUTPUT1": 16},
        )
        o0, o1 = as_strings(res.as_numpy("OUTPUT0")), as_strings(res.as_numpy("OUTPUT1"))
        assert list(res.get_output("OUTPUT1").shape) == [1, 16]
    assert o0 == ["100:2:c2", "43:1:c1", "42:4:c4"]
    assert o1[:3] == ["100:2", "42:4", "16:15"] and o1[-2:] == ["0:3", "-57:1"], o1
    assert len(o1) == 16 and all(s.count(":") == 1 for s in o1), o1


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_one_output_classified_the_other_plain(cls_server, proto):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    if proto == "http":
        ins = [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a.flatten().tolist()},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b.flatten().tolist()},
        ]
        r = http_classify(cls_server, "simple", ins, [{"name": "OUTPUT0", "parameters": {"classification": 1}}, {"name": "OUTPUT1"}])
        assert r.status_code == 200, r.text
        got = {o["name"]: o for o in r.json()["outputs"]}
        assert got["OUTPUT0"]["data"] == ["18:15:c15"] and got["OUTPUT0"]["datatype"] == "BYTES", got
        assert got["OUTPUT1"]["datatype"] == "INT32" and got["OUTPUT1"]["data"] == (a - b).flatten().tolist(), got
    else:
        res = grpc_classes(
            cls_server,
            "simple",
            [grpc_input("INPUT0", "INT32", [1, 16]), grpc_input("INPUT1", "INT32", [1, 16])],
            [raw_bytes(a, "INT32"), raw_bytes(b, "INT32")],
            {"OUTPUT0": 1, "OUTPUT1": None},
        )
        assert as_strings(res.as_numpy("OUTPUT0")) == ["18:15:c15"]
        assert res.get_output("OUTPUT1").datatype == "INT32"
        np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)


def test_classification_zero_is_a_plain_output(cls_server):
    r = http_classify(cls_server, "cls_fp32", [fp32_input(X2)], [{"name": "OUTPUT0", "parameters": {"classification": 0}}])
    assert r.status_code == 200, r.text
    (o,) = r.json()["outputs"]
    assert o["datatype"] == "FP32" and o["shape"] == [2, 5], o
    np.testing.assert_allclose(o["data"], X2.flatten())


@pytest.mark.parametrize("proto", ["http", "grpc"])
@pytest.mark.parametrize("dtype", ["FP64", "INT64", "UINT8", "UINT64", "INT8"])
def test_other_data_types(cls_server, proto, dtype):
    np_t = ONNX_TYPES[dtype][2]
    if dtype == "FP64":
        x = np.array([[0.5, -2.25, 1e-9, 7.0]], dtype=np_t)
        expected = ["7.000000:3", "0.500000:0:zero", "0.000000:2:two", "-2.250000:1:one"]
    elif dtype == "INT64":
        x = np.array([[-(2**63), 2**63 - 1, 0, 5]], dtype=np_t)
        expected = [f"{2**63 - 1}:1:one", "5:3", "0:2:two", f"{-(2**63)}:0:zero"]
    elif dtype == "UINT64":
        x = np.array([[2**64 - 1, 1, 0, 2**40]], dtype=np_t)
        expected = [f"{2**64 - 1}:0:zero", f"{2**40}:3", "1:1:one", "0:2:two"]
    elif dtype == "UINT8":
        x = np.array([[255, 1, 0, 128]], dtype=np_t)
        expected = ["255:0:zero", "128:3", "1:1:one", "0:2:two"]
    else:
        x = np.array([[-128, 127, 0, -1]], dtype=np_t)
        expected = ["127:1:one", "0:2:two", "-1:3", "-128:0:zero"]
    model = f"ident_{dtype.lower()}"
    if proto == "http":
        client = cls_server.client()
        try:
            inp = httpclient.InferInput("X", list(x.shape), dtype)
            inp.set_data_from_numpy(x, binary_data=True)
            res = client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput("Y", class_count=4)])
            assert res.get_output("Y")["datatype"] == "BYTES" and res.get_output("Y")["shape"] == [1, 4]
            values = as_strings(res.as_numpy("Y"))
        finally:
            client.close()
    else:
        res = grpc_classes(cls_server, model, [grpc_input("X", dtype, x.shape)], [raw_bytes(x, dtype)], {"Y": 4})
        assert res.get_output("Y").datatype == "BYTES"
        values = as_strings(res.as_numpy("Y"))
    assert values == expected


@pytest.mark.parametrize("proto", ["http", "grpc"])
@pytest.mark.parametrize("dtype", ["BYTES", "BOOL", "FP16"])
def test_unsupported_output_types_refused(cls_server, proto, dtype):
    """CVE-2025-23321: classification of a BYTES output divided by zero in Triton before 2025-07."""
    if dtype == "BYTES":
        model, iname, oname = "identity_bytes", "INPUT0", "OUTPUT0"
        x = np.array([[b"a", b"bb", b"ccc"]], dtype=np.object_)
    else:
        model, iname, oname = f"ident_{dtype.lower()}", "X", "Y"
        x = np.array([[True, False, True]]) if dtype == "BOOL" else np.array([[1.5, -2.0, 0.25]], dtype=np.float16)
    msg = UNSUPPORTED.format(dtype)
    if proto == "http":
        client = cls_server.client()
        try:
            inp = httpclient.InferInput(iname, list(x.shape), dtype)
            inp.set_data_from_numpy(x, binary_data=True)
            with pytest.raises(InferenceServerException) as e:
                client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput(oname, class_count=2)])
            assert e.value.status() == "400" and e.value.message() == msg, (e.value.status(), e.value.message())
            # The model still serves normally.
            res = client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput(oname)])
            np.testing.assert_array_equal(res.as_numpy(oname), x)
        finally:
            client.close()
    else:
        grpc_error(
            lambda: grpc_classes(cls_server, model, [grpc_input(iname, dtype, x.shape)], [raw_bytes(x, dtype)], {oname: 2}),
            grpc.StatusCode.INVALID_ARGUMENT,
            exact=msg,
        )
        res = grpc_classes(cls_server, model, [grpc_input(iname, dtype, x.shape)], [raw_bytes(x, dtype)], {oname: None})
        np.testing.assert_array_equal(res.as_numpy(oname), x)


def test_unsupported_type_raw_http_error_body(cls_server):
    body = {
        "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2], "data": ["x", "y"]}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 1}}],
    }
    assert_error(cls_server.infer("identity_bytes", body), 400, exact=UNSUPPORTED.format("BYTES"))


@pytest.mark.parametrize("value", [-1, "2", 1.5, True, [2]], ids=["negative", "string", "float", "bool", "list"])
def test_http_classification_must_be_unsigned(cls_server, value):
    out = [{"name": "OUTPUT0", "parameters": {"classification": value}}]
    assert_error(http_classify(cls_server, "cls_fp32", [fp32_input(X2)], out), (400, 500), "classification")


@pytest.mark.parametrize("value,kind", [(-1, "int64"), ("2", "string"), (2, "uint64"), (True, "bool")])
def test_grpc_classification_must_be_positive_int64(cls_server, value, kind):
    req = grpc_request("cls_fp32", [grpc_input("INPUT0", "FP32", X2.shape)], [raw_bytes(X2, "FP32")])
    o = req.outputs.add(name="OUTPUT0")
    set_grpc_param(o.parameters, "classification", value, kind)
    grpc_error(lambda: cls_server.grpc_stub().ModelInfer(req), grpc.StatusCode.INVALID_ARGUMENT, "classification")


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_classification_with_shared_memory_output_refused(cls_server, proto):
    """An output cannot be both classified and written to a region (docs/protocol.md, "System shared memory"); the
    region stays untouched."""
    key = f"/rampart_t_{PID}_cls_{proto}"
    region = f"cls_{PID}_{proto}"
    h = shm.create_shared_memory_region(region, key, 256)
    try:
        shm.set_shared_memory_region(h, [np.full(256, 0x5A, dtype=np.uint8)])
        r = cls_server.post(f"/v2/systemsharedmemory/region/{region}/register", data=json.dumps({"key": key, "byte_size": 256}))
        assert r.status_code == 200, r.text
        if proto == "http":
            params = {"classification": 2, "shared_memory_region": region, "shared_memory_byte_size": 256}
            r = http_classify(cls_server, "cls_fp32", [fp32_input(X2)], [{"name": "OUTPUT0", "parameters": params}])
            assert_error(r, 400, "classification", "shared_memory_region")
        else:
            req = grpc_request("cls_fp32", [grpc_input("INPUT0", "FP32", X2.shape)], [raw_bytes(X2, "FP32")])
            o = req.outputs.add(name="OUTPUT0")
            set_grpc_param(o.parameters, "classification", 2, "int64")
            set_grpc_param(o.parameters, "shared_memory_region", region)
            set_grpc_param(o.parameters, "shared_memory_byte_size", 256, "int64")
            grpc_error(lambda: cls_server.grpc_stub().ModelInfer(req), grpc.StatusCode.INVALID_ARGUMENT,
                       "classification", "shared_memory_region")
        assert (shm.get_contents_as_numpy(h, np.uint8, [256]) == 0x5A).all()
    finally:
        cls_server.post(f"/v2/systemsharedmemory/region/{region}/unregister")
        shm.destroy_shared_memory_region(h)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_output_above_one_million_elements_refused(cls_server, proto):
    """CVE-2026-24146: at most 1,000,000 elements are classified (4 MB FP32 requests, under the 64 MiB cap)."""
    big = np.zeros((1, 1_000_001), dtype=np.float32)
    big[0, 777_777] = 9.5
    edge = big[:, :1_000_000].copy()
    if proto == "http":
        client = cls_server.client()
        try:
            for x, ok in ((big, False), (edge, True)):
                inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=True)
                out = httpclient.InferRequestedOutput("OUTPUT0", class_count=2)
                if ok:
                    res = client.infer("cls_fp32", [inp], outputs=[out])
                    assert as_strings(res.as_numpy("OUTPUT0")) == ["9.500000:777777", "0.000000:0:cat"]
                else:
                    with pytest.raises(InferenceServerException) as e:
                        client.infer("cls_fp32", [inp], outputs=[out])
                    assert e.value.status() == "400", e.value
                    assert "classification output tensor too large" in e.value.message(), e.value.message()
        finally:
            client.close()
    else:
        grpc_error(lambda: grpc_fp32(cls_server, "cls_fp32", big, 2), grpc.StatusCode.INVALID_ARGUMENT,
                   "classification output tensor too large")
        res = grpc_fp32(cls_server, "cls_fp32", edge, 2)
        assert as_strings(res.as_numpy("OUTPUT0")) == ["9.500000:777777", "0.000000:0:cat"]


def test_symlink_inside_the_model_directory_is_followed(cls_server):
    _, values = http_fp32_classes(cls_server, "cls_symlink_inside", X2[:1], 5)
    assert values == ["5.000000:3:west", "0.700000:1:east", "0.200000:2:south", "0.100000:0:north", "-1.000000:4"]


# ==============================================================================================================
# Label files outside the model directory (CVE-2026-24147)
# ==============================================================================================================


def assert_no_passwd(text: str) -> None:
    for m in PASSWD_MARKERS:
        assert m not in text, f"{m!r} from /etc/passwd leaked: {text[:2000]!r}"


ESCAPES = {
    "esc_dotdot": "../../etc/passwd",
    "esc_dotdot_deep": "../../../../../../../../../../etc/passwd",
    "esc_dot_dotdot": "./sub/../../../../../../../../etc/passwd",
    "esc_absolute": "/etc/passwd",
    "esc_sibling": "../cls_ok/labels.txt",
    "esc_symlink_file": "labels.txt",  # labels.txt -> /etc/passwd
    "esc_symlink_dir": "etc/passwd",  # etc -> /etc
    "esc_symlink_up": "up/cls_ok/labels.txt",  # up -> .. (the repository)
}


@pytest.fixture(scope="module")
def escape_repo(examples_dir, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("cls_escape")
    fp32_model(repo, examples_dir, "cls_ok", fp32_config("cls_ok"))
    for name, label in ESCAPES.items():
        d = fp32_model(repo, examples_dir, name, fp32_config(name, label=label), labels=None)
        if name == "esc_symlink_file":
            (d / "labels.txt").symlink_to("/etc/passwd")
        elif name == "esc_symlink_dir":
            (d / "etc").symlink_to("/etc")
        elif name == "esc_symlink_up":
            (d / "up").symlink_to("..")
        elif name == "esc_dot_dotdot":
            (d / "sub").mkdir()
    return repo


def test_label_file_outside_the_model_directory_fails_the_load(escape_repo):
    assert Path("/etc/passwd").is_file()
    args = grpc_base_args(escape_repo, ENGINE, ["--exit-on-error=false"])
    with running(args, f"rampart[{ENGINE}, label escapes]", wait="live") as srv:
        index = {e["name"]: e for e in wait_models_settled(srv)}
        assert index["cls_ok"]["state"] == "READY", index
        for name, label in ESCAPES.items():
            e = index[name]
            assert e["state"] == "UNAVAILABLE", e
            assert "label_filename" in e.get("reason", ""), e
            assert_no_passwd(json.dumps(e))
            # A known model without a ready version: not ready (400), and inference finds no version (404 /
            # NOT_FOUND, Triton's "has no available versions").
            assert_error(srv.get(f"/v2/models/{name}/ready"), 400, exact="Model version not ready")
            # Nothing of the file comes back through inference.
            no_version = f"Request for unknown model: '{name}' has no available versions"
            r = http_classify(srv, name, [fp32_input(X2)], [{"name": "OUTPUT0", "parameters": {"classification": 5}}])
            assert_error(r, 404, exact=no_version)
            assert_no_passwd(r.text)
            gmsg = grpc_error(lambda: grpc_fp32(srv, name, X2, 5), grpc.StatusCode.NOT_FOUND, exact=no_version)
            assert_no_passwd(gmsg)
        # The good model next to them works, with its own labels.
        _, values = http_fp32_classes(srv, "cls_ok", X2[:1], 2)
        assert values == ["5.000000:3", "0.700000:1:dog"]
        assert_no_passwd(srv.output(tail=5000))


@pytest.fixture
def explicit_repo(examples_dir, tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    fp32_model(repo, examples_dir, "cls_live", fp32_config("cls_live"))
    fp32_model(repo, examples_dir, "cls_fresh", fp32_config("cls_fresh"))
    return repo


HOSTILE_LABELS = ["../../../../etc/passwd", "/etc/passwd", "../../../../../../../../../../../../etc/passwd"]


def test_config_override_with_escaping_label_file_refused(explicit_repo):
    """Explicit model control: a `config` override whose label_filename leaves the model directory fails the
    load (HTTP and gRPC); the loaded version keeps serving with its own labels; a model loaded for the first
    time this way does not become ready."""
    args = grpc_base_args(explicit_repo, ENGINE, ["--model-control-mode=explicit", "--load-model=cls_live"])
    with running(args, f"rampart[{ENGINE}, explicit label override]") as srv:
        _, before = http_fp32_classes(srv, "cls_live", X2[:1], 3)
        assert before == ["5.000000:3", "0.700000:1:dog", "0.200000:2:bird"]
        stub = srv.grpc_stub()
        for label in HOSTILE_LABELS:
            for model in ("cls_live", "cls_fresh"):
                cfg = fp32_config_json(model, label)
                r = srv.post(f"/v2/repository/models/{model}/load", data=json.dumps({"parameters": {"config": cfg}}))
                msg = assert_error(r, 400, f"failed to load '{model}'", "label_filename")
                assert_no_passwd(msg)
                req = service_pb2.RepositoryModelLoadRequest(model_name=model)
                req.parameters["config"].string_param = cfg
                gmsg = grpc_error(lambda: stub.RepositoryModelLoad(req), grpc.StatusCode.INVALID_ARGUMENT, "label_filename")
                assert_no_passwd(gmsg)
            # The old version is untouched, labels included; the fresh model is not ready.
            _, after = http_fp32_classes(srv, "cls_live", X2[:1], 3)
            assert after == before
            res = grpc_fp32(srv, "cls_live", X2[:1], 5)
            assert as_strings(res.as_numpy("OUTPUT0")) == ROW0_SORTED
            assert_error(srv.get("/v2/models/cls_fresh/ready"), 400, exact="Model version not ready")
            r = http_classify(srv, "cls_fresh", [fp32_input(X2)], [{"name": "OUTPUT0", "parameters": {"classification": 5}}])
            assert_error(r, 404, "Request for unknown model: 'cls_fresh'")
            assert_no_passwd(r.text)
        # A legitimate override (a label file inside the directory) still loads.
        (explicit_repo / "cls_fresh" / "other.txt").write_text("a\nb\n")
        r = srv.post(
            "/v2/repository/models/cls_fresh/load",
            data=json.dumps({"parameters": {"config": fp32_config_json("cls_fresh", "other.txt")}}),
        )
        assert r.status_code == 200, r.text
        _, values = http_fp32_classes(srv, "cls_fresh", X2[:1], 2)
        assert values == ["5.000000:3", "0.700000:1:b"]
        assert_no_passwd(srv.output(tail=5000))


def test_tritonclient_load_with_escaping_label_file(explicit_repo):
    args = grpc_base_args(explicit_repo, ENGINE, ["--model-control-mode=explicit"])
    with running(args, f"rampart[{ENGINE}, explicit label override, tritonclient]") as srv:
        http = srv.client()
        try:
            with pytest.raises(InferenceServerException) as e:
                http.load_model("cls_fresh", config=fp32_config_json("cls_fresh", "../../../../etc/passwd"))
            assert "label_filename" in e.value.message(), e.value.message()
            assert_no_passwd(e.value.message())
            assert not http.is_model_ready("cls_fresh")
        finally:
            http.close()
        with srv.grpc_client() as g:
            with pytest.raises(InferenceServerException) as e:
                g.load_model("cls_fresh", config=fp32_config_json("cls_fresh", "/etc/passwd"))
            assert "label_filename" in e.value.message(), e.value.message()
            assert not g.is_model_ready("cls_fresh")
            # The same model from disk (labels.txt inside) loads fine.
            g.load_model("cls_fresh")
            assert g.is_model_ready("cls_fresh")
