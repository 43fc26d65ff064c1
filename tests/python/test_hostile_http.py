"""Hostile and malformed HTTP input. Every case must get a precise 4xx (never 5xx, never a hang), and
afterwards the server must still answer /v2/health/live with 200 (checked by the autouse fixture
`_server_still_serving` in conftest.py) and still be running at teardown.

Deliberate deviations from Triton asserted here (Rampart's behaviour):
  * malformed JSON, wrong JSON types, negative dims, data/shape mismatch -> 400 (Triton: 500);
  * integer JSON values out of range for the datatype -> 400 (Triton truncates silently);
  * --http-max-input-size caps the whole request body while reading -> 400 naming the flag (as Triton answers an
    over-sized input; a declared Content-Length over the cap is refused before the body is read).
"""

from __future__ import annotations

import json
import re
import select
import socket
import struct
import time

import pytest

from conftest import (
    assert_error,
    assert_live,
    base_args,
    binary_body,
    example_repo,
    finish_server,
    parse_raw_response,
    raw_exchange,
    serialize_bytes,
    start_server,
)

A16 = list(range(16))
JSON_PARSE_PREFIX = "failed to parse the request JSON buffer"
ONLY_ONE = (
    "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', "
    "'shared_memory_region' in 'parameters'. But"
)


def too_big(limit: int, size: int | None = None, binary: bool = False) -> str:
    """The --http-max-input-size refusal (Triton's text): `size` is the declared Content-Length, None for a body that
    grew past the cap while it was read; `binary` for a body of the binary extension (Inference-Header-Content-Length)."""
    n = str(size) if size is not None else f"more than {limit}"
    kind = "request size" if binary else "request JSON size"
    return f"{kind} of {n} bytes exceeds the maximum allowed input size of {limit} bytes. Use --http-max-input-size to increase the limit."


DEFAULT_CAP = 64 << 20
CAP = 4096  # cap_server


def simple_input(name="INPUT0", shape=(1, 16), data=A16, datatype="INT32", **kw) -> dict:
    t = {"name": name, "datatype": datatype, "shape": list(shape), "data": data}
    t.update(kw)
    return t


def simple_req(**overrides) -> dict:
    req = {"inputs": [simple_input("INPUT0"), simple_input("INPUT1")]}
    req.update(overrides)
    return req


def fp32_binary_header(nbytes: int, shape=(1, 4)) -> dict:
    return {
        "inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": list(shape), "parameters": {"binary_data_size": nbytes}}
        ]
    }


# --------------------------------------------------------------------------------------- malformed JSON


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"inputs": [}', b"not json at all", b'{"inputs": [{"name": "INPUT0",}]}', b"{}}", b"\x00\x01\x02"],
    ids=["open_brace", "bad_array", "text", "trailing_comma", "trailing_garbage", "binary_junk"],
)
def test_malformed_json_is_400(server, body):
    r = server.infer("simple", body)
    assert_error(r, 400, JSON_PARSE_PREFIX)


def test_empty_body_is_400(server):
    r = server.infer("simple", b"")
    assert_error(r, 400)


def test_invalid_utf8_in_json_is_400(server):
    body = b'{"id": "\xff\xfe", "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "data": ["\xc3\x28"]}]}'
    r = server.infer("identity_bytes", body)
    assert_error(r, 400)


@pytest.mark.parametrize("body", [b"[]", b'"inputs"', b"42", b"null", b'{"inputs": {}}', b'{"outputs": []}'])
def test_non_object_or_missing_inputs_is_400(server, body):
    r = server.infer("simple", body)
    assert_error(r, 400)


def test_deeply_nested_json_body_is_400(server):
    depth = 100_000
    body = b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"
    r = server.infer("simple", body)
    assert_error(r, 400)


def test_deeply_nested_data_is_400(server):
    depth = 200
    data = "[" * depth + "1" + "]" * depth
    body = ('{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,1],"data":%s}]}' % data).encode()
    r = server.infer("identity_fp32", body)
    assert_error(r, 400)


# --------------------------------------------------------------------------------------- wrong JSON types


WRONG_TYPES = {
    "inputs_object": {"inputs": {"name": "INPUT0"}},
    "input_name_number": {"inputs": [simple_input(name=5), simple_input("INPUT1")]},
    "datatype_number": {"inputs": [simple_input(datatype=8), simple_input("INPUT1")]},
    "data_string": {"inputs": [simple_input(data="0123"), simple_input("INPUT1")]},
    "data_null": {"inputs": [simple_input(data=None), simple_input("INPUT1")]},
    "data_element_string": {"inputs": [simple_input(data=["1"] * 16), simple_input("INPUT1")]},
    "data_element_float": {"inputs": [simple_input(data=[1.5] * 16), simple_input("INPUT1")]},
    "data_element_bool": {"inputs": [simple_input(data=[True] * 16), simple_input("INPUT1")]},
    "data_element_object": {"inputs": [simple_input(data=[{}] * 16), simple_input("INPUT1")]},
    "id_number": simple_req(id=12),
    "parameters_array": simple_req(parameters=[1, 2]),
    "binary_data_output_string": simple_req(parameters={"binary_data_output": "yes"}),
    "outputs_object": simple_req(outputs={"name": "OUTPUT0"}),
    "output_name_missing": simple_req(outputs=[{"parameters": {"binary_data": True}}]),
    "output_binary_data_string": simple_req(outputs=[{"name": "OUTPUT0", "parameters": {"binary_data": "true"}}]),
    "input_parameters_array": {"inputs": [simple_input(parameters=[]), simple_input("INPUT1")]},
}


@pytest.mark.parametrize("case", sorted(WRONG_TYPES))
def test_wrong_json_types_are_400(server, case):
    r = server.infer("simple", WRONG_TYPES[case])
    assert_error(r, 400)


@pytest.mark.parametrize(
    "shape",
    [[-1, 16], [1, -16], ["1", 16], [1.5, 16], "1,16", [[1], 16], [None, 16], [True, 16]],
    ids=["neg_batch", "neg_dim", "string_dim", "float_dim", "string_shape", "nested_dim", "null_dim", "bool_dim"],
)
def test_bad_shape_types_are_400(server, shape):
    r = server.infer("simple", {"inputs": [simple_input(shape=shape), simple_input("INPUT1")]})
    assert_error(r, 400, "shape")


def test_missing_shape_is_400(server):
    t = simple_input()
    del t["shape"]
    r = server.infer("simple", {"inputs": [t, simple_input("INPUT1")]})
    assert_error(r, 400, "shape")


def test_missing_datatype_is_400(server):
    t = simple_input()
    del t["datatype"]
    r = server.infer("simple", {"inputs": [t, simple_input("INPUT1")]})
    assert_error(r, 400, "datatype")


def test_missing_name_is_400(server):
    t = simple_input()
    del t["name"]
    r = server.infer("simple", {"inputs": [t, simple_input("INPUT1")]})
    assert_error(r, 400, "name")


@pytest.mark.parametrize("size", [-8, "8", 8.5, None, [8]])
def test_bad_binary_data_size_type_is_400(server, size):
    head = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": size}}]}
    body, headers = binary_body(head, [b"\x00" * 8])
    r = server.infer("identity_fp32", body, headers=headers)
    assert_error(r, 400, "binary_data_size")


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}])
def test_request_parameter_of_invalid_type_is_400(server, value):
    r = server.infer("simple", simple_req(parameters={"k": value}))
    assert_error(r, 400, "'k'", "invalid type")


# --------------------------------------------------------------------------------------- values out of range


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**63, 2**64, -(2**70)])
def test_int32_out_of_range_is_400(server, value):
    data = [0] * 15 + [value]
    r = server.infer("simple", {"inputs": [simple_input(data=data), simple_input("INPUT1")]})
    assert_error(r, 400)


def test_int32_extremes_are_accepted(server):
    data = [-(2**31), 2**31 - 1] + [0] * 14
    zeros = [0] * 16
    r = server.infer("simple", {"inputs": [simple_input(data=data), simple_input("INPUT1", data=zeros)]})
    assert r.status_code == 200, r.text
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs["OUTPUT0"][:2] == [-(2**31), 2**31 - 1]


def test_fp32_non_number_is_400(server):
    r = server.infer("identity_fp32", {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": ["x"]}]})
    assert_error(r, 400)


def test_bytes_json_non_string_is_400(server):
    r = server.infer("identity_bytes", {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2], "data": ["a", 7]}]})
    assert_error(r, 400)


# --------------------------------------------------------------------------------------- data / shape mismatch


@pytest.mark.parametrize(
    "shape,data",
    [([1, 16], A16[:15]), ([1, 16], A16 + [16]), ([1, 16], []), ([2, 16], A16), ([1, 16], [A16[:8], A16[8:15]])],
    ids=["too_few", "too_many", "empty", "half", "nested_short"],
)
def test_data_shape_mismatch_is_400(server, shape, data):
    r = server.infer("simple", {"inputs": [simple_input(shape=shape, data=data), simple_input("INPUT1", shape=shape)]})
    msg = assert_error(r, 400)
    if shape == [1, 16] and not isinstance(data[0] if data else 0, list):
        assert "shape does not match true shape" in msg.lower(), msg


def test_bytes_json_count_mismatch_is_400(server):
    r = server.infer(
        "identity_bytes", {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 3], "data": ["a", "b"]}]}
    )
    assert_error(r, 400)


# --------------------------------------------------------------------------------------- overflow / huge shapes


def test_element_count_overflow_is_400(server):
    # 8 * 2**61 = 2**64 elements: the product of the dims does not fit in int64 (batch 8 is allowed).
    req = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [8, 2**61], "data": [1.0]}]}
    msg = assert_error(server.infer("identity_fp32", req), 400)
    assert "element count" in msg.lower(), msg


def test_byte_size_overflow_binary_is_400(server):
    # 2**62 elements fit in int64, but 2**62 * 4 bytes does not fit in 64 bits (batch 1, so no batch error).
    head = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2**62], "parameters": {"binary_data_size": 16}}]}
    body, headers = binary_body(head, [b"\x00" * 16])
    msg = assert_error(server.infer("identity_fp32", body, headers=headers), 400)
    assert "overflow" in msg.lower() or "byte size" in msg.lower(), msg


def test_byte_size_overflow_json_is_400(server):
    req = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2**62], "data": [1.0]}]}
    assert_error(server.infer("identity_fp32", req), 400)


@pytest.mark.parametrize(
    "shape,message",
    [
        ([8, 2**40], "shape does not match true shape of 'data' field"),
        ([1, 2**33], "shape does not match true shape of 'data' field"),
        (
            [2**63 - 1, 1],
            "byte size overflow for input 'INPUT0': element count (9223372036854775807) * data type size (4)"
            " exceeds maximum allowed size (9223372036854775807) (FP32)",
        ),
    ],
)
def test_huge_shape_with_tiny_data_is_rejected_without_allocating(server, shape, message):
    req = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": shape, "data": [1.0]}]}
    t0 = time.monotonic()
    r = server.infer("identity_fp32", req)
    assert_error(r, 400, message)
    assert time.monotonic() - t0 < 10, "rejection must not wait for a huge allocation"


def test_huge_shape_binary_is_rejected(server):
    head = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2**32, 2**32], "parameters": {"binary_data_size": 4}}]}
    body, headers = binary_body(head, [b"\x00" * 4])
    assert_error(
        server.infer("identity_fp32", body, headers=headers),
        400,
        exact="invalid shape for input 'INPUT0': shape [4294967296,4294967296] causes total element count to exceed maximum size"
        " of 9223372036854775807 (model 'identity_fp32')",
    )


def test_many_inputs_is_400(server):
    req = {"inputs": [simple_input(f"IN{i}") for i in range(5000)]}
    assert_error(server.infer("simple", req), 400)


# --------------------------------------------------------------------------------------- model-level validation


def test_invalid_datatype_string(server):
    r = server.infer("simple", {"inputs": [simple_input(datatype="FLOAT32"), simple_input("INPUT1")]})
    assert_error(r, 400, "invalid datatype for input INPUT0")


def test_wrong_datatype_for_model(server):
    data = [float(v) for v in A16]
    r = server.infer("simple", {"inputs": [simple_input(datatype="FP32", data=data), simple_input("INPUT1")]})
    assert_error(r, 400, "INPUT0", "INT32")


def test_unknown_input(server):
    r = server.infer("simple", {"inputs": [simple_input("INPUT0"), simple_input("BOGUS")]})
    assert_error(r, 400, "unexpected inference input 'BOGUS' for model 'simple'")


def test_unknown_input_single_input_model(server):
    req = {"inputs": [{"name": "NOPE", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
    assert_error(server.infer("identity_fp32", req), 400, "unexpected inference input 'NOPE' for model 'identity_fp32'")


def test_missing_input(server):
    r = server.infer("simple", {"inputs": [simple_input("INPUT0")]})
    assert_error(r, 400, "expected 2 inputs but got 1 inputs for model 'simple'", "'INPUT1'")


def test_no_inputs(server):
    r = server.infer("simple", {"inputs": []})
    assert_error(r, 400, "expected 2 inputs but got 0 inputs for model 'simple'")


def test_unknown_requested_output(server):
    r = server.infer("simple", simple_req(outputs=[{"name": "BOGUS"}]))
    assert_error(r, 400, "unexpected inference output 'BOGUS' for model 'simple'")


def test_duplicate_output_names(server):
    r = server.infer("simple", simple_req(outputs=[{"name": "OUTPUT0"}, {"name": "OUTPUT0"}]))
    assert_error(r, 400, "output 'OUTPUT0' already exists in request")


def test_duplicate_input_names(server):
    r = server.infer("simple", {"inputs": [simple_input("INPUT0"), simple_input("INPUT0"), simple_input("INPUT1")]})
    assert_error(r, 400, "input 'INPUT0' already exists in request")


@pytest.mark.parametrize("key", ["triton_enable_empty_final_response", "triton_anything", "triton_"])
def test_triton_prefixed_parameter(server, key):
    r = server.infer("simple", simple_req(parameters={key: True}))
    assert_error(r, 400, "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified.")


def test_input_with_data_and_binary_data_size(server):
    head = {"inputs": [simple_input(parameters={"binary_data_size": 64}), simple_input("INPUT1")]}
    body, headers = binary_body(head, [b"\x00" * 64])
    r = server.infer("simple", body, headers=headers)
    assert_error(r, 400, ONLY_ONE + " set 'data' 'binary_data_size'")


def test_input_with_neither_data_nor_binary(server):
    t = simple_input()
    del t["data"]
    r = server.infer("simple", {"inputs": [t, simple_input("INPUT1")]})
    assert_error(r, 400, ONLY_ONE + " no field is set")


def test_shared_memory_input_refused(server):
    t = simple_input(parameters={"shared_memory_region": "r", "shared_memory_byte_size": 64})
    del t["data"]
    r = server.infer("simple", {"inputs": [t, simple_input("INPUT1")]})
    # Client shared memory is off by default (as in Triton): UNSUPPORTED -> 501.
    assert_error(r, 501, "Client shared memory is disabled")


def test_over_batch(server):
    data = list(range(9 * 16))
    req = {"inputs": [simple_input(shape=[9, 16], data=data), simple_input("INPUT1", shape=[9, 16], data=data)]}
    assert_error(server.infer("simple", req), 400, "inference request batch-size must be <= 8 for 'simple'")


def test_wrong_shape_for_model(server):
    req = {"inputs": [simple_input(shape=[1, 15], data=A16[:15]), simple_input("INPUT1")]}
    assert_error(
        server.infer("simple", req),
        400,
        "unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], got [1,15]",
    )


def test_batch_size_mismatch_between_inputs(server):
    req = {"inputs": [simple_input(), simple_input("INPUT1", shape=[2, 16], data=A16 * 2)]}
    assert_error(server.infer("simple", req), 400, "batch size does not match other inputs for 'simple'")


def test_scalar_shape_on_batching_model(server):
    req = {"inputs": [simple_input(shape=[], data=[1]), simple_input("INPUT1")]}
    assert_error(server.infer("simple", req), 400)


# --------------------------------------------------------------------------------------- binary extension errors


def _two_binary_inputs(tail: bytes) -> tuple[bytes, dict]:
    head = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
        ]
    }
    return binary_body(head, [tail])


def test_too_few_binary_bytes(server):
    body, headers = _two_binary_inputs(b"\x01" * 100)  # INPUT1 gets 36 of its 64 bytes
    r = server.infer("simple", body, headers=headers)
    assert_error(r, 400, exact="unexpected size for input 'INPUT1', expecting 28 additional bytes for model 'simple'")


def test_no_binary_bytes_at_all(server):
    body, headers = _two_binary_inputs(b"")
    r = server.infer("simple", body, headers=headers)
    assert_error(r, 400, exact="unexpected size for input 'INPUT0', expecting 64 additional bytes for model 'simple'")


def test_too_many_binary_bytes(server):
    body, headers = _two_binary_inputs(b"\x01" * 138)
    r = server.infer("simple", body, headers=headers)
    assert_error(r, 400, exact="unexpected additional input data for model 'simple'")


def test_huge_binary_data_size(server):
    head = fp32_binary_header(2**62)
    body, headers = binary_body(head, [b"\x00" * 16])
    r = server.infer("identity_fp32", body, headers=headers)
    assert_error(r, 400, "INPUT0")


def test_binary_size_not_matching_shape(server):
    body, headers = binary_body(fp32_binary_header(12, shape=(1, 4)), [b"\x00" * 12])
    assert_error(server.infer("identity_fp32", body, headers=headers), 400, "INPUT0")


def test_binary_input_without_header_length_is_json_error(server):
    head = json.dumps(fp32_binary_header(16)).encode()
    r = server.infer("identity_fp32", head + b"\x00" * 16)  # no Inference-Header-Content-Length
    assert_error(r, 400)


def test_header_length_not_numeric(server):
    body, _ = binary_body(fp32_binary_header(16), [b"\x00" * 16])
    r = server.infer("identity_fp32", body, headers={"Inference-Header-Content-Length": "abc"})
    assert_error(r, 400, exact="Unable to parse Inference-Header-Content-Length, got: abc")


def test_header_length_negative(server):
    body, _ = binary_body(fp32_binary_header(16), [b"\x00" * 16])
    r = server.infer("identity_fp32", body, headers={"Inference-Header-Content-Length": "-1"})
    assert_error(r, 400, exact=f"inference header size should be in range (0, {len(body)}), got: -1")


def test_header_length_larger_than_body(server):
    body, _ = binary_body(fp32_binary_header(16), [b"\x00" * 16])
    value = str(len(body) + 10)
    r = server.infer("identity_fp32", body, headers={"Inference-Header-Content-Length": value})
    assert_error(r, 400, exact=f"inference header size should be in range (0, {len(body)}), got: {value}")


@pytest.mark.parametrize("value", ["2147483648", "99999999999999999999999", "-99999999999999999999"])
def test_header_length_out_of_int_range(server, value):
    body, _ = binary_body(fp32_binary_header(16), [b"\x00" * 16])
    r = server.infer("identity_fp32", body, headers={"Inference-Header-Content-Length": value})
    assert_error(
        r, 400, exact=f"Unable to parse Inference-Header-Content-Length, value is out of range [ -2147483648, 2147483647 ], got: {value}"
    )


def test_header_length_cuts_json(server):
    body, headers = binary_body(fp32_binary_header(16), [b"\x00" * 16])
    cut = str(int(headers["Inference-Header-Content-Length"]) - 5)
    r = server.infer("identity_fp32", body, headers={"Inference-Header-Content-Length": cut})
    assert_error(r, 400)


# --------------------------------------------------------------------------------------- BYTES length prefixes


def _bytes_request(payload: bytes, n_elements: int) -> tuple[bytes, dict]:
    head = {
        "inputs": [
            {
                "name": "INPUT0",
                "datatype": "BYTES",
                "shape": [1, n_elements],
                "parameters": {"binary_data_size": len(payload)},
            }
        ]
    }
    return binary_body(head, [payload])


@pytest.mark.parametrize(
    "payload,n",
    [
        (struct.pack("<I", 100) + b"abcde", 1),  # length prefix points past the end
        (struct.pack("<I", 0xFFFFFFFF) + b"x", 1),  # maximal length prefix
        (b"\x01\x00", 1),  # truncated length prefix
        (serialize_bytes([b"ab"]) + b"\x05\x00", 2),  # second prefix truncated
        (serialize_bytes([b"ab"]), 2),  # fewer elements than the shape says
        (serialize_bytes([b"ab", b"cd"]), 1),  # more elements than the shape says
        (serialize_bytes([b"ab"]) + b"zz", 1),  # trailing bytes after the last element
        (b"", 1),  # nothing at all for one element
    ],
    ids=["past_end", "max_prefix", "truncated_prefix", "second_prefix_truncated", "too_few", "too_many", "trailing", "empty"],
)
def test_bad_bytes_length_prefixes(server, payload, n):
    body, headers = _bytes_request(payload, n)
    r = server.infer("identity_bytes", body, headers=headers)
    msg = assert_error(r, 400)
    assert "INPUT0" in msg, msg


def test_good_bytes_prefixes_still_work(server):
    body, headers = _bytes_request(serialize_bytes([b"ok", b""]), 2)
    r = server.infer("identity_bytes", body, headers=headers)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------------------- paths and headers


HUGE_VERSION = "99999999999999999999999999"
HUGE_VERSION_MESSAGE = (
    f"failed to get model version from specified version string '{HUGE_VERSION}', version should be an integral value > 0"
    " (expected a non-negative 64-bit integer)"
)


@pytest.mark.parametrize(
    "path,status,message",
    [
        ("/v2/models/" + "a" * 8000, 400, "invalid model name: 8000 bytes long, at most 255 are allowed"),
        # requests sends %2e as '.', the server decodes %2f: the model name is "../../etc".
        (
            "/v2/models/%2e%2e%2f%2e%2e%2fetc/config",
            400,
            "invalid model name '../../etc', model name must not contain path traversal characters",
        ),
        # urllib3 removes the dot segments before sending (GET /etc/passwd); raw `..` paths are in test_hostile_cves.
        ("/v2/models/../../etc/passwd", 404, "Not Found"),
        ("/v2/models/simple%00/config", 400, 'invalid model name "simple\\0": control characters are not allowed'),
        (f"/v2/models/simple/versions/{HUGE_VERSION}", 400, HUGE_VERSION_MESSAGE),
        (f"/v2/models/simple/versions/{HUGE_VERSION}/infer", 400, HUGE_VERSION_MESSAGE),
    ],
    ids=["long_name", "encoded_traversal", "dot_segments", "nul_in_name", "huge_version", "huge_version_infer"],
)
def test_hostile_paths(server, path, status, message):
    method = "POST" if path.endswith("/infer") else "GET"
    r = server.request(method, path, data=b"{}" if method == "POST" else None)
    assert_error(r, status, exact=message)


def test_content_length_longer_than_body_then_eof(server):
    req = (
        b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{\"inputs\":"
    )
    raw = raw_exchange(server.host, server.port, req, timeout=5, shutdown_write=True)
    status, _, body = parse_raw_response(raw)
    assert status == 400, raw[:500]
    assert json.loads(body)["error"].startswith("failed to read the request body: "), body[:300]
    assert_live(server)


def test_content_length_shorter_than_body(server):
    body = json.dumps(simple_req()).encode()
    req = (
        b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"Content-Length: 10\r\nConnection: close\r\n\r\n"
        + body
    )
    raw = raw_exchange(server.host, server.port, req, timeout=10)
    status, _, body = parse_raw_response(raw)
    # The body is the first 10 bytes, `{"inputs":`: a truncated JSON document.
    assert status == 400, raw[:500]
    assert json.loads(body)["error"].startswith(JSON_PARSE_PREFIX), body[:300]


@pytest.mark.parametrize("value", ["abc", "-5", "1e3", "99999999999999999999999"])
def test_bad_content_length_header(server, value):
    req = (
        b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
        + value.encode()
        + b"\r\n\r\n{}"
    )
    raw = raw_exchange(server.host, server.port, req, timeout=10)
    # hyper refuses an invalid Content-Length while parsing the head: 400 (with an empty body), then closes.
    status, _, _ = parse_raw_response(raw)
    assert status == 400, raw[:500]


def test_garbage_request_line(server):
    # hyper refuses a request line it cannot parse (a TLS ClientHello, an unknown HTTP version) with a bare 400.
    for data in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 200, b"GET / HTTP/9.9\r\n\r\n"):
        raw = raw_exchange(server.host, server.port, data, timeout=5)
        status, _, _ = parse_raw_response(raw)
        assert status == 400, (data[:20], raw[:300])
    assert_live(server)


def test_huge_header(server):
    req = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\nConnection: close\r\n\r\n"
    raw = raw_exchange(server.host, server.port, req, timeout=10)
    # 200 KB of headers against the default --http-max-header-size of 64 KiB: hyper answers 431.
    status, _, _ = parse_raw_response(raw)
    assert status == 431, raw[:300]


# --------------------------------------------------------------------------------------- request body size cap


def _streaming_upload(host: str, port: int, head: bytes, chunk: bytes, limit: int, chunked: bool) -> tuple[int, bytes]:
    """Send `head`, then `chunk` repeatedly up to `limit` body bytes, stopping as soon as the server
    answers or closes. Returns (body bytes sent, response bytes)."""
    sent, resp = 0, b""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(head)
        frame = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") if chunked else chunk
        deadline = time.monotonic() + 60
        closed = False
        while sent < limit and time.monotonic() < deadline:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                break
            try:
                s.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            sent += len(chunk)
        if chunked and sent >= limit and not closed:
            try:
                s.sendall(b"0\r\n\r\n")
            except OSError:
                pass
        s.settimeout(10)
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                resp += data
                if b"\r\n\r\n" in resp:
                    hdr = resp.split(b"\r\n\r\n", 1)[0].lower()
                    m = re.search(rb"content-length:\s*(\d+)", hdr)
                    if m and len(resp.split(b"\r\n\r\n", 1)[1]) >= int(m.group(1)):
                        break
        except (socket.timeout, ConnectionResetError):
            pass
    return sent, resp


def _assert_size_rejection(raw: bytes, message: str) -> None:
    status, _, body = parse_raw_response(raw)
    assert status == 400, f"expected 400 for an oversized body, got {status}: {raw[:500]!r}"
    try:
        msg = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"oversized-body rejection must carry a JSON {{'error': ...}} body, got {body[:300]!r}")
    assert msg == message, f"expected {message!r}, got {msg!r}"


def test_default_cap_declared_content_length(server):
    """A body declared larger than the default 64 MiB cap is refused from the headers, without waiting for it."""
    declared = (64 << 20) + 1
    head = (
        b"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"Content-Length: %d\r\n\r\n" % declared
    )
    raw = raw_exchange(server.host, server.port, head + b'{"inputs": [', timeout=15)
    assert raw, "no response: the server is waiting for a 64 MiB body instead of refusing it"
    _assert_size_rejection(raw, too_big(DEFAULT_CAP, declared))


def test_default_cap_streamed_chunked_body(server):
    head = (
        b"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    limit = 96 << 20
    sent, resp = _streaming_upload(server.host, server.port, head, b" " * (1 << 20), limit, chunked=True)
    assert sent < limit, "the server read the whole oversized chunked body before answering"
    _assert_size_rejection(resp, too_big(DEFAULT_CAP))


@pytest.fixture(scope="module")
def cap_server():
    """A server with a 4 KiB request cap (engine-agnostic frontend behaviour, default engine)."""
    srv = start_server(base_args(example_repo(), None, ["--http-max-input-size=4096"]), "rampart[cap 4096]")
    yield srv
    finish_server(srv)


def test_cap_allows_small_bodies(cap_server):
    r = cap_server.infer("identity_fp32", {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]})
    assert r.status_code == 200, r.text


def test_cap_body_just_over_limit(cap_server):
    req = {"id": "x" * 4200, "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
    r = cap_server.infer("identity_fp32", req)
    assert_error(r, 400, exact=too_big(CAP, len(json.dumps(req))))


def test_cap_binary_tail_counts(cap_server):
    body, headers = binary_body(fp32_binary_header(8000, shape=(1, 2000)), [b"\x00" * 8000])
    r = cap_server.infer("identity_fp32", body, headers=headers)
    assert_error(r, 400, exact=too_big(CAP, len(body), binary=True))


def test_cap_raw_request(cap_server):
    r = cap_server.infer("identity_fp32", b"\x00" * 8192, headers={"Inference-Header-Content-Length": "0"})
    assert_error(r, 400, exact=too_big(CAP, 8192, binary=True))


def test_cap_declared_huge_content_length(cap_server):
    head = (
        b"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1099511627776\r\n\r\n"
    )
    raw = raw_exchange(cap_server.host, cap_server.port, head + b"{" * 100, timeout=15)
    assert raw, "no response: the server is waiting for a 1 TiB body"
    _assert_size_rejection(raw, too_big(CAP, 1099511627776))


def test_cap_streamed_chunked_body(cap_server):
    head = (
        b"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    limit = 32 << 20
    sent, resp = _streaming_upload(cap_server.host, cap_server.port, head, b" " * 1024, limit, chunked=True)
    assert sent < limit, "the server read a 32 MiB chunked body although the cap is 4 KiB"
    _assert_size_rejection(resp, too_big(CAP))


def test_cap_streamed_content_length_body(cap_server):
    limit = 32 << 20
    head = (
        b"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + b"Content-Length: %d\r\n\r\n" % limit
    )
    sent, resp = _streaming_upload(cap_server.host, cap_server.port, head, b" " * 65536, limit, chunked=False)
    assert sent < limit, "the server read a 32 MiB body although the cap is 4 KiB"
    _assert_size_rejection(resp, too_big(CAP, limit))


def test_cap_server_still_serves_after_rejections(cap_server):
    for _ in range(3):
        r = cap_server.infer("identity_fp32", b"\x00" * 10000, headers={"Inference-Header-Content-Length": "0"})
        assert_error(r, 400, exact=too_big(CAP, 10000, binary=True))
    r = cap_server.infer("identity_fp32", {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [3.0]}]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [3.0]


# --------------------------------------------------------------------------------------- burst of bad requests


def test_burst_of_bad_requests_then_good_one(server):
    bad = [
        (b"{", JSON_PARSE_PREFIX),
        (b'{"inputs": 5}', "Unable to parse 'inputs': the request must contain an 'inputs' array"),
        (json.dumps(simple_req(outputs=[{"name": "X"}])).encode(), "unexpected inference output 'X' for model 'simple'"),
    ]
    for i in range(60):
        body, message = bad[i % len(bad)]
        assert_error(server.infer("simple", body), 400, message)
    r = server.infer("simple", simple_req())
    assert r.status_code == 200, r.text
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs == {"OUTPUT0": [2 * v for v in A16], "OUTPUT1": [0] * 16}


# --------------------------------------------------------------------------------------- compressed bodies


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def test_unsupported_content_encoding(server):
    r = server.post("/v2/models/simple/infer", data=b"{}", headers={"Content-Encoding": "br"}, timeout=10)
    assert_error(r, 501, "Unsupported compression type 'br'")
    assert r.headers.get("Accept-Encoding") == "gzip, deflate", r.headers


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_corrupt_compressed_body(server, encoding):
    r = server.post("/v2/models/simple/infer", data=b"this is not compressed", headers={"Content-Encoding": encoding}, timeout=10)
    assert_error(r, 400, f"failed to decompress the {encoding} request body")


def test_decompression_bomb_is_capped(cap_server):
    """4 KiB cap: a few hundred compressed bytes that inflate to 1 MiB are refused by their decompressed size."""
    bomb = _gzip(b" " * (1 << 20))
    assert len(bomb) < 4096
    r = cap_server.post("/v2/models/identity_fp32/infer", data=bomb, headers={"Content-Encoding": "gzip"}, timeout=10)
    assert_error(r, 400, exact="decompressed " + too_big(CAP))


def test_compressed_body_just_under_cap(cap_server):
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}).encode()
    r = cap_server.post("/v2/models/identity_fp32/infer", data=_gzip(body), headers={"Content-Encoding": "gzip"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [1.0, 2.0]


# --------------------------------------------------------------------------------------- slow and oversized clients


@pytest.fixture(scope="module")
def impatient_server():
    """A server with 1 s header and body read timeouts and an 8 KiB header limit."""
    extra = ["--http-header-read-timeout-secs=1", "--http-body-read-timeout-secs=1", "--http-max-header-size=8192"]
    srv = start_server(base_args(example_repo(), None, extra), "rampart[impatient]")
    yield srv
    finish_server(srv)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Reads until EOF or `seconds`; returns (closed, bytes read)."""
    sock.settimeout(0.25)
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def test_slowloris_headers_are_cut_off(impatient_server):
    srv = impatient_server
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        closed, _ = _closed_within(s, 6)
        assert closed, "a client that never finishes its headers kept its connection"
        assert time.monotonic() - start < 5
    assert srv.get("/v2/health/live").status_code == 200


def test_idle_connection_is_cut_off(impatient_server):
    srv = impatient_server
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        closed, _ = _closed_within(s, 6)
        assert closed, "a connection that never sends a request stayed open"


def test_slow_body_is_refused(impatient_server):
    srv = impatient_server
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(
            b"POST /v2/models/identity_fp32/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{\"inputs\":"
        )
        closed, got = _closed_within(s, 6)
    status, _, body = parse_raw_response(got)
    assert status == 400, got[:500]
    assert b"--http-body-read-timeout-secs" in body, body
    assert srv.get("/v2/health/live").status_code == 200


def test_oversized_headers_are_refused(impatient_server):
    srv = impatient_server
    raw = raw_exchange(srv.host, srv.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    status, _, _ = parse_raw_response(raw)
    assert status == 431, raw[:300]
    assert srv.get("/v2/health/live").status_code == 200
