"""BYTES elements byte for byte through the example `identity_bytes` model (ONNX Identity over strings), on both
engines, over HTTP (binary and JSON) and gRPC (tritonclient; raw_input_contents and typed bytes_contents).

* NUL bytes: ONNX Runtime holds them (Rampart fills its string tensors through the length-aware C API,
  GetResizedStringTensorElementBuffer / GetStringTensorContent, not through C strings); tract's strings are Rust
  `String`s, for which NUL is ordinary UTF-8. Triton's onnxruntime backend truncates an element at its first NUL.
* Bytes that are not UTF-8: ONNX Runtime holds them too (as Triton passes them); tract refuses them with a 400 /
  INVALID_ARGUMENT naming the input. A JSON response can only carry text: such an element comes back with
  U+FFFD in place of the invalid bytes, so clients that need them exact ask for binary output.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import assert_grpc_live, grpc_error, grpc_request, grpc_result, typed_input

MODEL = "identity_bytes"
NUL = [b"a\x00b", b"\x00", b"tail\x00", b"", b"\x00\x00mid\x00dle\x00\x00", "\u00e9\x00\u2603".encode()]
NOT_UTF8 = [b"\xff\xfe", b"ok", b"\x80", b"nul\x00and\xc3(", b"\xed\xa0\x80"]  # last: an encoded surrogate


def shaped(elements: list[bytes], batch: int) -> np.ndarray:
    return np.array(elements, dtype=np.object_).reshape(batch, -1)


def http_identity(srv, x: np.ndarray, binary_in: bool, binary_out: bool) -> list[bytes]:
    inp = httpclient.InferInput("INPUT0", list(x.shape), "BYTES")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    with srv.client() as c:
        res = c.infer(MODEL, [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_out)])
    out = res.as_numpy("OUTPUT0")
    assert out.shape == x.shape
    return [v if isinstance(v, bytes) else str(v).encode() for v in out.reshape(-1)]


def grpc_identity(srv, x: np.ndarray) -> list[bytes]:
    with srv.grpc_client() as c:
        inp = grpcclient.InferInput("INPUT0", list(x.shape), "BYTES")
        inp.set_data_from_numpy(x)
        res = c.infer(MODEL, [inp])
    (meta,) = res.get_response().outputs
    assert meta.datatype == "BYTES" and list(meta.shape) == list(x.shape)
    return [bytes(v) for v in res.as_numpy("OUTPUT0").reshape(-1)]


def grpc_typed_identity(srv, x: np.ndarray) -> list[bytes]:
    resp = srv.grpc_stub().ModelInfer(grpc_request(MODEL, [typed_input("INPUT0", "BYTES", x)]))
    (meta,) = resp.outputs
    assert meta.datatype == "BYTES" and list(meta.shape) == list(x.shape)
    return [bytes(v) for v in grpc_result(resp).as_numpy("OUTPUT0").reshape(-1)]


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(
    "binary_in,binary_out",
    [(True, True), (False, False), (True, False), (False, True)],
    ids=["bin", "json", "bin-json", "json-bin"],
)
def test_nul_bytes_http(grpc_server, batch, binary_in, binary_out):
    x = shaped(NUL, batch)
    assert http_identity(grpc_server, x, binary_in, binary_out) == NUL


def test_nul_bytes_raw_json(grpc_server):
    """Without tritonclient: NUL travels in JSON as \\u0000, both ways."""
    text = [e.decode() for e in NUL]
    body = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, len(text)], "data": text}]}
    r = grpc_server.infer(MODEL, body)
    assert r.status_code == 200, r.text
    assert "\\u0000" in r.text
    (out,) = r.json()["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, len(text)] and out["data"] == text


@pytest.mark.parametrize("batch", [1, 2])
def test_nul_bytes_grpc(grpc_server, batch):
    x = shaped(NUL, batch)
    assert grpc_identity(grpc_server, x) == NUL
    assert grpc_typed_identity(grpc_server, x) == NUL


def test_not_utf8_http(grpc_server, engine):
    x = shaped(NOT_UTF8, 1)
    if engine == "tract":
        with pytest.raises(InferenceServerException) as exc:
            http_identity(grpc_server, x, True, True)
        msg = str(exc.value)
        assert "400" in msg and "INPUT0" in msg and "UTF-8" in msg, msg
        return
    assert http_identity(grpc_server, x, True, True) == NOT_UTF8
    # JSON output can carry only text: each invalid sequence becomes U+FFFD (binary output above is exact).
    assert http_identity(grpc_server, x, True, False) == [e.decode("utf-8", "replace").encode() for e in NOT_UTF8]


def test_not_utf8_grpc(grpc_server, engine):
    x = shaped(NOT_UTF8, 1)
    if engine == "tract":
        for send in (grpc_identity, grpc_typed_identity):
            msg = grpc_error(lambda: send(grpc_server, x), grpc.StatusCode.INVALID_ARGUMENT, "INPUT0", "UTF-8")
            assert "tract" in msg, msg
        assert_grpc_live(grpc_server)
        return
    assert grpc_identity(grpc_server, x) == NOT_UTF8
    assert grpc_typed_identity(grpc_server, x) == NOT_UTF8


def test_long_element_with_nuls(grpc_server):
    """One element of 1 MiB whose every other byte is NUL, next to short ones."""
    big = b"x\x00" * (512 * 1024)
    elems = [b"", big, b"\x00"]
    x = shaped(elems, 1)
    assert http_identity(grpc_server, x, True, True) == elems
    assert grpc_identity(grpc_server, x) == elems
