"""Inference over HTTP on examples/models (docs/protocol.md, "JSON and binary tensor data"): JSON tensors (flat and
nested), the binary tensor data extension in both directions, raw requests, requested outputs, request id,
parameters, and numerical checks of `mlp` against the expected values and Python onnxruntime. Each test runs once
per engine (onnxruntime, tract)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import assert_error, binary_body, deserialize_bytes, parse_infer_response, serialize_bytes

A = np.arange(16, dtype=np.int32)
B = np.full(16, 3, dtype=np.int32)

MLP_EXPECTED_ROW0 = np.array([0.4454515, -0.69113296, 0.09195761, -0.7163936], dtype=np.float32)


def mlp_input(rows: int) -> np.ndarray:
    i = np.arange(rows).reshape(-1, 1)
    j = np.arange(784).reshape(1, -1)
    return (((i * 784 + j) % 97) / 97).astype(np.float32)


def simple_inputs(a: np.ndarray, b: np.ndarray, binary: bool) -> list:
    in0 = httpclient.InferInput("INPUT0", list(a.shape), "INT32")
    in0.set_data_from_numpy(a, binary_data=binary)
    in1 = httpclient.InferInput("INPUT1", list(b.shape), "INT32")
    in1.set_data_from_numpy(b, binary_data=binary)
    return [in0, in1]


# --------------------------------------------------------------------------------------- tritonclient happy paths


@pytest.mark.parametrize("in_binary", [False, True], ids=["json_in", "binary_in"])
@pytest.mark.parametrize("out_binary", [False, True], ids=["json_out", "binary_out"])
def test_simple_add_sub(client, in_binary, out_binary):
    a, b = A.reshape(1, 16), B.reshape(1, 16)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=out_binary),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=out_binary),
    ]
    res = client.infer("simple", simple_inputs(a, b, in_binary), outputs=outputs)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)
    resp = res.get_response()
    assert resp["model_name"] == "simple"
    assert resp["model_version"] == "1"
    for out in resp["outputs"]:
        assert out["datatype"] == "INT32"
        assert out["shape"] == [1, 16]
        if out_binary:
            assert out["parameters"]["binary_data_size"] == 64
            assert "data" not in out
        else:
            assert "data" in out


def test_simple_full_batch(client):
    rng = np.random.default_rng(7)
    a = rng.integers(-1000, 1000, size=(8, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, size=(8, 16), dtype=np.int32)
    res = client.infer("simple", simple_inputs(a, b, True))
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)


def test_requested_output_subset(client):
    a, b = A.reshape(1, 16), B.reshape(1, 16)
    res = client.infer(
        "simple", simple_inputs(a, b, False), outputs=[httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)]
    )
    names = [o["name"] for o in res.get_response()["outputs"]]
    assert names == ["OUTPUT1"]
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)
    assert res.as_numpy("OUTPUT0") is None


def test_request_id_echo(client):
    a, b = A.reshape(1, 16), B.reshape(1, 16)
    res = client.infer("simple", simple_inputs(a, b, True), request_id="conformance-42")
    assert res.get_response()["id"] == "conformance-42"


def test_custom_parameters_accepted(client):
    a, b = A.reshape(1, 16), B.reshape(1, 16)
    res = client.infer(
        "simple",
        simple_inputs(a, b, True),
        parameters={"my_string": "x", "my_int": 7, "my_bool": True, "my_double": 1.5},
    )
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)


def test_priority_and_timeout_parameters_accepted(client):
    a, b = A.reshape(1, 16), B.reshape(1, 16)
    res = client.infer("simple", simple_inputs(a, b, True), priority=1, timeout=10_000_000)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (3, 7), (8, 2)])
def test_identity_fp32(client, binary, shape):
    x = (np.arange(np.prod(shape), dtype=np.float32).reshape(shape) - 3.5) * 0.25
    inp = httpclient.InferInput("INPUT0", list(shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    res = client.infer("identity_fp32", [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)])
    out = res.as_numpy("OUTPUT0")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_identity_bytes(client, binary):
    if binary:
        # Any bytes on ONNX Runtime (NUL and non-UTF-8: test_bytes_elements.py); tract needs UTF-8.
        elems = [b"hello", b"", "\u2603 binary \x01\x7f".encode(), "ünïcödé".encode()]
    else:
        elems = [b"hello", b"", b"with space", "ünïcödé".encode()]
    x = np.array(elems, dtype=np.object_).reshape(1, len(elems))
    inp = httpclient.InferInput("INPUT0", [1, len(elems)], "BYTES")
    inp.set_data_from_numpy(x, binary_data=binary)
    res = client.infer("identity_bytes", [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)])
    out = res.as_numpy("OUTPUT0")
    assert out.shape == (1, len(elems))
    got = [v if isinstance(v, bytes) else str(v).encode() for v in out.reshape(-1)]
    assert got == elems


def test_mlp_expected_values_and_python_ort(client, examples_dir):
    x = mlp_input(4)
    md = client.get_model_metadata("mlp")
    inp = httpclient.InferInput(md["inputs"][0]["name"], [4, 784], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out_name = md["outputs"][0]["name"]
    res = client.infer("mlp", [inp])
    y = res.as_numpy(out_name)
    assert y.shape == (4, 10) and y.dtype == np.float32
    np.testing.assert_allclose(y[0, :4], MLP_EXPECTED_ROW0, rtol=0, atol=1e-4)

    import onnxruntime as ort

    sess = ort.InferenceSession(str(examples_dir / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (ref,) = sess.run(None, {sess.get_inputs()[0].name: x})
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_mlp_json_io(client):
    md = client.get_model_metadata("mlp")
    x = mlp_input(1)
    inp = httpclient.InferInput(md["inputs"][0]["name"], [1, 784], "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    out_name = md["outputs"][0]["name"]
    res = client.infer("mlp", [inp], outputs=[httpclient.InferRequestedOutput(out_name, binary_data=False)])
    np.testing.assert_allclose(res.as_numpy(out_name)[0, :4], MLP_EXPECTED_ROW0, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------- raw JSON requests


def _simple_json_request(**extra) -> dict:
    req = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": A.tolist()},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": B.tolist()},
        ]
    }
    req.update(extra)
    return req


def test_json_response_shape_and_default_outputs(server):
    r = server.infer("simple", _simple_json_request())
    assert r.status_code == 200, r.text
    assert r.headers.get("content-type", "").startswith("application/json")
    assert "inference-header-content-length" not in {k.lower() for k in r.headers}
    body = r.json()
    assert body["model_name"] == "simple"
    assert body["model_version"] == "1"
    assert body.get("id", "") == "", "no id was sent, none must be echoed"
    outs = {o["name"]: o for o in body["outputs"]}
    assert set(outs) == {"OUTPUT0", "OUTPUT1"}, "without 'outputs' every output is returned"
    assert outs["OUTPUT0"] == {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16], "data": (A + B).tolist()}
    assert outs["OUTPUT1"] == {"name": "OUTPUT1", "datatype": "INT32", "shape": [1, 16], "data": (A - B).tolist()}


def test_json_request_id_echo(server):
    r = server.infer("simple", _simple_json_request(id="abc-123"))
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "abc-123"


def test_versioned_infer_path(server):
    r = server.infer("simple", _simple_json_request(), version="1")
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == "1"


def test_nested_json_data(server):
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.ones((2, 16), dtype=np.int32)
    req = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [2, 16], "data": a.tolist()},  # nested
            {"name": "INPUT1", "datatype": "INT32", "shape": [2, 16], "data": b.reshape(-1).tolist()},  # flat
        ]
    }
    r = server.infer("simple", req)
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert outs["OUTPUT0"]["shape"] == [2, 16]
    assert outs["OUTPUT0"]["data"] == (a + b).reshape(-1).tolist(), "output data is flat, row-major"
    assert outs["OUTPUT1"]["data"] == (a - b).reshape(-1).tolist()


def test_requested_output_order_and_subset_json(server):
    r = server.infer("simple", _simple_json_request(outputs=[{"name": "OUTPUT1"}]))
    assert r.status_code == 200, r.text
    outs = r.json()["outputs"]
    assert [o["name"] for o in outs] == ["OUTPUT1"]
    assert outs[0]["data"] == (A - B).tolist()


def test_custom_parameters_json(server):
    r = server.infer("simple", _simple_json_request(parameters={"s": "v", "i": -3, "b": False, "d": 0.25}))
    assert r.status_code == 200, r.text


def test_zero_element_tensor(server):
    req = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 0], "data": []}]}
    r = server.infer("identity_fp32", req)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["shape"] == [1, 0]
    assert out.get("data", []) == []


def test_json_bytes_strings(server):
    req = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 3], "data": ["a", "", "ñ"]}]}
    r = server.infer("identity_bytes", req)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, 3]
    assert out["data"] == ["a", "", "ñ"]


# --------------------------------------------------------------------------------------- binary extension by hand


def test_binary_request_by_hand(server):
    """curl-style: JSON header + raw little-endian INT32 bytes, all outputs binary via binary_data_output."""
    header = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_body(header, [A.astype("<i4").tobytes(), B.astype("<i4").tobytes()])
    r = server.infer("simple", body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers.get("content-type", "").startswith("application/octet-stream")
    hdr, blobs = parse_infer_response(r)
    for out in hdr["outputs"]:
        assert out["parameters"]["binary_data_size"] == 64
        assert "data" not in out
    assert np.frombuffer(blobs["OUTPUT0"], "<i4").tolist() == (A + B).tolist()
    assert np.frombuffer(blobs["OUTPUT1"], "<i4").tolist() == (A - B).tolist()


def test_binary_output_override_per_output(server):
    """Per-output binary_data overrides the request-level binary_data_output default."""
    header = _simple_json_request(
        parameters={"binary_data_output": True},
        outputs=[
            {"name": "OUTPUT0", "parameters": {"binary_data": False}},
            {"name": "OUTPUT1", "parameters": {"binary_data": True}},
        ],
    )
    r = server.infer("simple", header)
    assert r.status_code == 200, r.text
    hdr, blobs = parse_infer_response(r)
    outs = {o["name"]: o for o in hdr["outputs"]}
    assert outs["OUTPUT0"]["data"] == (A + B).tolist()
    assert "OUTPUT0" not in blobs
    assert "data" not in outs["OUTPUT1"]
    assert np.frombuffer(blobs["OUTPUT1"], "<i4").tolist() == (A - B).tolist()


def test_binary_data_output_false_gives_json(server):
    r = server.infer("simple", _simple_json_request(parameters={"binary_data_output": False}))
    assert r.status_code == 200, r.text
    assert "inference-header-content-length" not in {k.lower() for k in r.headers}
    assert {o["name"]: o["data"] for o in r.json()["outputs"]} == {"OUTPUT0": (A + B).tolist(), "OUTPUT1": (A - B).tolist()}


def test_binary_output_requested_per_output(server):
    header = _simple_json_request(outputs=[{"name": "OUTPUT0", "parameters": {"binary_data": True}}])
    r = server.infer("simple", header)
    assert r.status_code == 200, r.text
    hdr, blobs = parse_infer_response(r)
    assert [o["name"] for o in hdr["outputs"]] == ["OUTPUT0"]
    assert np.frombuffer(blobs["OUTPUT0"], "<i4").tolist() == (A + B).tolist()


def test_mixed_json_and_binary_inputs(server):
    header = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": A.tolist()},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": False}}],
    }
    body, headers = binary_body(header, [B.astype("<i4").tobytes()])
    r = server.infer("simple", body, headers=headers)
    assert r.status_code == 200, r.text
    hdr, _ = parse_infer_response(r)
    assert hdr["outputs"][0]["data"] == (A + B).tolist()


def test_header_name_is_case_insensitive(server):
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}]}
    head = json.dumps(header).encode()
    body = head + struct.pack("<2f", 1.5, -2.0)
    r = server.infer("identity_fp32", body, headers={"inference-header-content-length": str(len(head))})
    assert r.status_code == 200, r.text
    hdr, _ = parse_infer_response(r)
    (out,) = hdr["outputs"]
    assert out["shape"] == [1, 2]
    assert out["data"] == [1.5, -2.0]


def test_bytes_binary_by_hand(server):
    elems = [b"", b"x", b"\x01\x02\x03\x04", "longer element \u00fe".encode()]
    payload = serialize_bytes(elems)
    header = {
        "inputs": [
            {"name": "INPUT0", "datatype": "BYTES", "shape": [1, 4], "parameters": {"binary_data_size": len(payload)}}
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
    }
    body, headers = binary_body(header, [payload])
    r = server.infer("identity_bytes", body, headers=headers)
    assert r.status_code == 200, r.text
    hdr, blobs = parse_infer_response(r)
    (out,) = hdr["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, 4]
    assert out["parameters"]["binary_data_size"] == len(payload)
    assert deserialize_bytes(blobs["OUTPUT0"]) == elems


def test_zero_size_binary_input(server):
    header = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 0], "parameters": {"binary_data_size": 0}}]}
    body, headers = binary_body(header)
    r = server.infer("identity_fp32", body, headers=headers)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------------------- raw binary request


def test_raw_request_identity_fp32(server):
    x = np.array([1.0, -2.5, 3.25, 0.0, 7.0], dtype="<f4")
    r = server.infer("identity_fp32", x.tobytes(), headers={"Inference-Header-Content-Length": "0"})
    assert r.status_code == 200, r.text
    hdr, blobs = parse_infer_response(r)
    (out,) = hdr["outputs"]
    assert out["name"] == "OUTPUT0"
    assert out["datatype"] == "FP32"
    assert out["shape"] == [1, 5], "raw input is treated as batch 1 with the variable dim deduced"
    assert out["parameters"]["binary_data_size"] == 20
    assert blobs["OUTPUT0"] == x.tobytes(), "raw requests return every output in binary"


def test_raw_request_mlp(server):
    x = mlp_input(1)
    r = server.infer("mlp", x.astype("<f4").tobytes(), headers={"Inference-Header-Content-Length": "0"})
    assert r.status_code == 200, r.text
    hdr, blobs = parse_infer_response(r)
    (out,) = hdr["outputs"]
    assert out["shape"] == [1, 10]
    y = np.frombuffer(blobs[out["name"]], "<f4")
    np.testing.assert_allclose(y[:4], MLP_EXPECTED_ROW0, rtol=0, atol=1e-4)


def test_raw_request_two_input_model_rejected(server):
    r = server.infer("simple", A.tobytes() * 2, headers={"Inference-Header-Content-Length": "0"})
    assert_error(
        r,
        400,
        "Raw request must only have 1 input (found 1) to be deduced but got 2 inputs in 'simple' model configuration",
    )


def test_raw_request_bytes_model_rejected(server):
    r = server.infer("identity_bytes", b"hello", headers={"Inference-Header-Content-Length": "0"})
    assert_error(r, 400, "For BYTE datatype raw input 'INPUT0', the model must have input shape [1]")


@pytest.mark.parametrize("nbytes", [6, 784 * 4 + 4, 784 * 4 - 4])
def test_raw_request_wrong_size_rejected(server, nbytes):
    model = "identity_fp32" if nbytes == 6 else "mlp"
    r = server.infer(model, b"\x00" * nbytes, headers={"Inference-Header-Content-Length": "0"})
    assert_error(r, 400)


# --------------------------------------------------------------------------------------- compressed requests


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies(client, algorithm):
    """tritonclient compresses the request body itself (`Content-Encoding: gzip|deflate`)."""
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    for binary in (True, False):
        res = client.infer("simple", simple_inputs(a, b, binary), request_compression_algorithm=algorithm)
        np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)
