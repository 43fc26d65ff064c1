"""Hostile and malformed gRPC input (docs/protocol.md, "Status codes", "gRPC parameters", "Model control"). Every
case asserts the gRPC status code and the message (or a substring of it), then that the server still answers gRPC
ServerLive (and, through the autouse fixture `_server_still_serving`, HTTP live too); every server must still be
running at teardown and exit 0 on SIGTERM.

Status mapping (Triton): INVALID_ARG -> INVALID_ARGUMENT, NOT_FOUND -> NOT_FOUND, UNAVAILABLE -> UNAVAILABLE,
UNSUPPORTED -> UNIMPLEMENTED, INTERNAL -> INTERNAL. Messages are the HTTP front end's for the same mistake
(one core). Requests that tritonclient refuses to build are hand-built with service_pb2 and sent through the
raw stubs; undecodable messages are sent as raw bytes.

Rampart-specific (not Triton): --grpc-max-message-size caps request messages (default 64 MiB; Triton sets no
practical cap); a larger request is refused with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import os
import struct
import time

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from conftest import (
    assert_grpc_live,
    example_repo,
    finish_server,
    grpc_base_args,
    grpc_error,
    grpc_input,
    grpc_request,
    grpc_result,
    raw_bytes,
    serialize_bytes,
    simple_grpc_request,
    start_server,
    typed_input,
)

SC = grpc.StatusCode
UNKNOWN_MODEL = "Request for unknown model: 'no_such_model' is not found"
RESERVED = "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified."
NO_LOAD = "explicit model load / unload is not allowed if polling is enabled"
SHM_DISABLED = "Client shared memory is disabled"
CONTENTS_AND_RAW = "contents field must not be specified when using raw_input_contents for 'INPUT0' for model '{}'"
NO_DATA = "unable to find data for input tensor '{}' for model '{}' in request. Give it typed contents or a raw_input_contents entry."
# What gRPC C++ (Triton's stack, and what clients expect) answers for a message over the limit. NB: tonic's own
# decode limit answers OUT_OF_RANGE ("Error, decoded message length too large: ..."), so the server must map it.
OVERSIZE = SC.RESOURCE_EXHAUSTED

A = np.arange(16, dtype=np.int32).reshape(1, 16)


def rejected(srv, fn, code, *contains: str, exact: str | None = None) -> str:
    """`fn()` fails with `code` and a message containing `contains` (or equal to `exact`); the server lives on."""
    msg = grpc_error(fn, code, *contains, exact=exact)
    assert_grpc_live(srv)
    return msg


def fp32_request(model: str = "identity_fp32", shape=(1, 2), version: str = "", **kw):
    x = np.ones(shape, dtype=np.float32)
    return grpc_request(model, [grpc_input("INPUT0", "FP32", shape)], [raw_bytes(x, "FP32")], version=version, **kw)


def i32(n: int) -> bytes:
    return np.arange(n, dtype="<i4").tobytes()


def call_model_rpc(stub, rpc: str, model: str, version: str = ""):
    if rpc == "ModelInfer":
        return stub.ModelInfer(fp32_request(model, version=version))
    if rpc == "ModelMetadata":
        return stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=model, version=version))
    if rpc == "ModelConfig":
        return stub.ModelConfig(service_pb2.ModelConfigRequest(name=model, version=version))
    if rpc == "ModelStatistics":
        return stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name=model, version=version))
    if rpc == "ModelReady":
        return stub.ModelReady(service_pb2.ModelReadyRequest(name=model, version=version))
    raise ValueError(rpc)


# --------------------------------------------------------------------------------------- unknown model / version


@pytest.mark.parametrize("rpc", ["ModelInfer", "ModelMetadata", "ModelConfig", "ModelStatistics"])
def test_unknown_model_is_not_found(grpc_server, gstub, rpc):
    rejected(grpc_server, lambda: call_model_rpc(gstub, rpc, "no_such_model"), SC.NOT_FOUND, exact=UNKNOWN_MODEL)


def test_unknown_model_via_tritonclient(grpc_server, gclient):
    rejected(grpc_server, lambda: gclient.get_model_metadata("no_such_model"), SC.NOT_FOUND, exact=UNKNOWN_MODEL)
    rejected(grpc_server, lambda: gclient.get_model_config("no_such_model"), SC.NOT_FOUND, exact=UNKNOWN_MODEL)


@pytest.mark.parametrize("rpc", ["ModelInfer", "ModelMetadata", "ModelConfig", "ModelStatistics"])
def test_unknown_numeric_version_is_not_found(grpc_server, gstub, rpc):
    rejected(
        grpc_server,
        lambda: call_model_rpc(gstub, rpc, "identity_fp32", "42"),
        SC.NOT_FOUND,
        "'identity_fp32'",
        "version 42 is not found",
    )


@pytest.mark.parametrize("version", ["abc", "-1"])
@pytest.mark.parametrize("rpc", ["ModelInfer", "ModelMetadata", "ModelConfig", "ModelStatistics", "ModelReady"])
def test_bad_version_string_is_invalid_argument(grpc_server, gstub, rpc, version):
    rule = "version should be an integral value > 0 (expected a non-negative 64-bit integer)"
    exact = (
        f"invalid model version specified '{version}' , {rule}"
        if version.startswith("-")
        else f"failed to get model version from specified version string '{version}', {rule}"
    )
    rejected(grpc_server, lambda: call_model_rpc(gstub, rpc, "identity_fp32", version), SC.INVALID_ARGUMENT, exact=exact)


def test_empty_model_name(grpc_server, gstub):
    # The model-name check every model-named API runs first (the project's rule; HTTP 400).
    rejected(
        grpc_server,
        lambda: gstub.ModelInfer(fp32_request("")),
        SC.INVALID_ARGUMENT,
        exact="Model name cannot be empty. Please enter a valid name to deploy.",
    )


# --------------------------------------------------------------------------------------- core validation (HTTP texts)


def _simple_raw(shapes_and_data: list[tuple[str, str, list, bytes]], **kw):
    inputs = [grpc_input(n, dt, shape) for n, dt, shape, _ in shapes_and_data]
    return grpc_request("simple", inputs, [d for *_, d in shapes_and_data], **kw)


CORE_ERRORS = {
    "over_batch": (
        _simple_raw([("INPUT0", "INT32", [9, 16], i32(144)), ("INPUT1", "INT32", [9, 16], i32(144))]),
        ["inference request batch-size must be <= 8 for 'simple'"],
    ),
    "unknown_input": (
        _simple_raw([("INPUT0", "INT32", [1, 16], i32(16)), ("BOGUS", "INT32", [1, 16], i32(16))]),
        ["unexpected inference input 'BOGUS' for model 'simple'"],
    ),
    "wrong_shape": (
        _simple_raw([("INPUT0", "INT32", [1, 15], i32(15)), ("INPUT1", "INT32", [1, 16], i32(16))]),
        ["unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], got [1,15]"],
    ),
    "scalar_shape": (
        _simple_raw([("INPUT0", "INT32", [], i32(1)), ("INPUT1", "INT32", [1, 16], i32(16))]),
        ["unexpected shape for input 'INPUT0' for model 'simple'"],
    ),
    "byte_size_short": (
        _simple_raw([("INPUT0", "INT32", [1, 16], i32(15)), ("INPUT1", "INT32", [1, 16], i32(16))]),
        ["input byte size mismatch for input 'INPUT0' for model 'simple'. Expected 64, got 60"],
    ),
    "byte_size_long": (
        _simple_raw([("INPUT0", "INT32", [1, 16], i32(17)), ("INPUT1", "INT32", [1, 16], i32(16))]),
        ["input byte size mismatch for input 'INPUT0' for model 'simple'. Expected 64, got 68"],
    ),
    "missing_input": (
        _simple_raw([("INPUT0", "INT32", [1, 16], i32(16))]),
        ["expected 2 inputs but got 1 inputs for model 'simple'", "'INPUT1'"],
    ),
    "no_inputs": (grpc_request("simple"), ["expected 2 inputs but got 0 inputs for model 'simple'"]),
    "unknown_output": (simple_grpc_request(outputs=["BOGUS"]), ["unexpected inference output 'BOGUS' for model 'simple'"]),
    "duplicate_output": (
        simple_grpc_request(outputs=["OUTPUT0", "OUTPUT0"]),
        ["output 'OUTPUT0' already exists in request"],
    ),
    "duplicate_input": (
        _simple_raw(
            [
                ("INPUT0", "INT32", [1, 16], i32(16)),
                ("INPUT0", "INT32", [1, 16], i32(16)),
                ("INPUT1", "INT32", [1, 16], i32(16)),
            ]
        ),
        ["input 'INPUT0' already exists in request"],
    ),
    "batch_mismatch": (
        _simple_raw([("INPUT0", "INT32", [1, 16], i32(16)), ("INPUT1", "INT32", [2, 16], i32(32))]),
        ["batch size does not match other inputs for 'simple'"],
    ),
    "datatype_not_the_models": (
        _simple_raw([("INPUT0", "FP32", [1, 16], i32(16)), ("INPUT1", "INT32", [1, 16], i32(16))]),
        ["INPUT0", "INT32"],
    ),
    "invalid_datatype": (
        _simple_raw([("INPUT0", "FLOAT32", [1, 16], i32(16)), ("INPUT1", "INT32", [1, 16], i32(16))]),
        ["invalid datatype for input INPUT0"],
    ),
    "lowercase_datatype": (
        _simple_raw([("INPUT0", "int32", [1, 16], i32(16)), ("INPUT1", "INT32", [1, 16], i32(16))]),
        ["invalid datatype for input INPUT0"],
    ),
    "empty_datatype": (
        _simple_raw([("INPUT0", "", [1, 16], i32(16)), ("INPUT1", "INT32", [1, 16], i32(16))]),
        ["invalid datatype for input INPUT0"],
    ),
}


@pytest.mark.parametrize("case", list(CORE_ERRORS))
def test_core_validation_error(grpc_server, gstub, case):
    request, parts = CORE_ERRORS[case]
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT, *parts)


def test_core_validation_error_via_tritonclient(grpc_server, gclient):
    import tritonclient.grpc as grpcclient

    x = np.arange(9 * 16, dtype=np.int32).reshape(9, 16)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        inp = grpcclient.InferInput(name, [9, 16], "INT32")
        inp.set_data_from_numpy(x)
        inputs.append(inp)
    rejected(
        grpc_server,
        lambda: gclient.infer("simple", inputs),
        SC.INVALID_ARGUMENT,
        "inference request batch-size must be <= 8 for 'simple'",
    )


# --------------------------------------------------------------------------------------- request parameters


@pytest.mark.parametrize("key", ["triton_anything", "triton_", "triton_final_response"])
@pytest.mark.parametrize("value", [True, 1, "x"], ids=["bool", "int64", "string"])
def test_triton_prefixed_parameter(grpc_server, gstub, key, value):
    request = simple_grpc_request(parameters={key: value})
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT, RESERVED)


WRONG_PARAM_TYPES = [
    ("priority", "x", "string"),
    ("priority", True, "bool"),
    ("priority", 1.0, "double"),
    ("timeout", "10", "string"),
    ("timeout", True, "bool"),
    ("timeout", 1.5, "double"),
    ("timeout", 10, "uint64"),
    ("sequence_id", True, "bool"),
    ("sequence_id", 1.0, "double"),
    ("sequence_id", 7, "uint64"),
    ("sequence_start", 1, "int64"),
    ("sequence_start", "true", "string"),
    ("sequence_end", 1, "int64"),
    ("sequence_end", "true", "string"),
]


@pytest.mark.parametrize("key,value,kind", WRONG_PARAM_TYPES, ids=[f"{k}-{t}" for k, _, t in WRONG_PARAM_TYPES])
def test_reserved_parameter_of_wrong_type(grpc_server, gstub, key, value, kind):
    request = simple_grpc_request(parameters={key: (value, kind)})
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT, f"invalid value type for '{key}'")


def test_negative_priority(grpc_server, gstub):
    request = simple_grpc_request(parameters={"priority": (-1, "int64")})
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT, "priority")


# --------------------------------------------------------------------------------------- where the data comes from


def test_contents_and_raw_together(grpc_server, gstub):
    request = grpc_request(
        "simple", [typed_input("INPUT0", "INT32", A), grpc_input("INPUT1", "INT32", [1, 16])], [i32(16)]
    )
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT, exact=CONTENTS_AND_RAW.format("simple"))


def test_contents_and_raw_for_the_same_input(grpc_server, gstub):
    request = grpc_request("identity_fp32", [typed_input("INPUT0", "FP32", np.ones((1, 2), np.float32))], [b"\x00" * 8])
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT, exact=CONTENTS_AND_RAW.format("identity_fp32"))


def test_no_data_for_second_input(grpc_server, gstub):
    inputs = [grpc_input("INPUT0", "INT32", [1, 16]), grpc_input("INPUT1", "INT32", [1, 16])]
    request = grpc_request("simple", inputs, [i32(16)])
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT, exact=NO_DATA.format("INPUT1", "simple"))


def test_no_data_at_all(grpc_server, gstub):
    request = grpc_request("identity_fp32", [grpc_input("INPUT0", "FP32", [1, 2])])
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT, exact=NO_DATA.format("INPUT0", "identity_fp32"))


@pytest.mark.parametrize("model,extra", [("simple", 1), ("identity_fp32", 2)])
def test_more_raw_contents_than_inputs(grpc_server, gstub, model, extra):
    if model == "simple":
        request = simple_grpc_request()
    else:
        request = fp32_request()
    request.raw_input_contents.extend([b"\x00" * 8] * extra)
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT)


@pytest.mark.parametrize(
    "model,datatype,shape,field,values",
    [
        ("simple", "INT32", [1, 16], "int_contents", list(range(15))),
        ("simple", "INT32", [1, 16], "int_contents", list(range(17))),
        ("identity_fp32", "FP32", [1, 2], "fp32_contents", [1.0, 2.0, 3.0]),
        ("identity_fp32", "FP32", [2, 2], "fp32_contents", [1.0]),
        ("identity_bytes", "BYTES", [1, 4], "bytes_contents", [b"a", b"b", b"c"]),
        ("identity_bytes", "BYTES", [1, 1], "bytes_contents", [b"a", b"b"]),
    ],
    ids=["int32_short", "int32_long", "fp32_long", "fp32_short", "bytes_short", "bytes_long"],
)
def test_typed_contents_count_mismatch(grpc_server, gstub, model, datatype, shape, field, values):
    inputs = [grpc_input("INPUT0", datatype, shape, {field: values})]
    if model == "simple":
        inputs.append(typed_input("INPUT1", "INT32", A))
    request = grpc_request(model, inputs)
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT, "INPUT0")


WRONG_FIELD = [
    ("simple", "INT32", "fp32_contents", [1.0] * 16),
    ("simple", "INT32", "int64_contents", [1] * 16),
    ("simple", "INT32", "uint_contents", [1] * 16),
    ("simple", "INT32", "bool_contents", [True] * 16),
    ("simple", "INT32", "bytes_contents", [b"1234"] * 16),
    ("identity_fp32", "FP32", "int_contents", [1] * 16),
    ("identity_fp32", "FP32", "fp64_contents", [1.0] * 16),
    ("identity_fp32", "FP32", "bytes_contents", [b"abcd"] * 16),
    ("identity_bytes", "BYTES", "fp32_contents", [1.0] * 16),
    ("identity_bytes", "BYTES", "int_contents", [1] * 16),
]


@pytest.mark.parametrize(
    "model,datatype,field,values", WRONG_FIELD, ids=[f"{d}-{f}" for _, d, f, _ in WRONG_FIELD]
)
def test_typed_contents_in_wrong_field(grpc_server, gstub, model, datatype, field, values):
    inputs = [grpc_input("INPUT0", datatype, [1, 16], {field: values})]
    if model == "simple":
        inputs.append(typed_input("INPUT1", "INT32", A))
    request = grpc_request(model, inputs)
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("field", ["fp32_contents", "uint_contents"])
def test_half_precision_typed_contents_refused(grpc_test_repo_server, dtype, field):
    """FP16 / BF16 have no typed contents field: raw_input_contents only."""
    srv = grpc_test_repo_server
    stub = srv.grpc_stub()
    model = f"identity_{dtype}"
    if not stub.ModelReady(service_pb2.ModelReadyRequest(name=model)).ready:
        pytest.skip(f"{model} is not served by this engine")
    request = grpc_request(model, [grpc_input("INPUT0", dtype.upper(), [1, 2], {field: [1, 2]})])
    rejected(srv, lambda: stub.ModelInfer(request), SC.INVALID_ARGUMENT)
    # The same tensor as raw bytes is fine.
    x = np.array([[1.0, 2.0]], dtype=np.float16) if dtype == "fp16" else np.array([[0x3F80, 0x4000]], dtype="<u2")
    ok = stub.ModelInfer(grpc_request(model, [grpc_input("INPUT0", dtype.upper(), [1, 2])], [x.tobytes()]))
    assert ok.raw_output_contents[0] == x.tobytes()


# --------------------------------------------------------------------------------------- BYTES


@pytest.mark.parametrize(
    "payload,n",
    [
        (struct.pack("<I", 100) + b"abcde", 1),
        (struct.pack("<I", 0xFFFFFFFF) + b"x", 1),
        (b"\x01\x00", 1),
        (serialize_bytes([b"ab"]), 2),
        (serialize_bytes([b"ab", b"cd"]), 1),
        (serialize_bytes([b"ab"]) + b"zz", 1),
        (b"", 1),
    ],
    ids=["past_end", "max_prefix", "truncated_prefix", "too_few", "too_many", "trailing", "empty"],
)
def test_bad_bytes_raw_length_prefixes(grpc_server, gstub, payload, n):
    request = grpc_request("identity_bytes", [grpc_input("INPUT0", "BYTES", [1, n])], [payload])
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT, "INPUT0")


@pytest.mark.parametrize("typed", [False, True], ids=["raw", "typed"])
def test_bytes_not_utf8(grpc_server, gstub, engine, typed):
    """tract's string tensors need UTF-8; ONNX Runtime's hold any bytes (test_bytes_elements.py)."""
    elems = [b"ok", b"\xff\xfe"]
    if typed:
        request = grpc_request("identity_bytes", [grpc_input("INPUT0", "BYTES", [1, 2], {"bytes_contents": elems})])
    else:
        request = grpc_request("identity_bytes", [grpc_input("INPUT0", "BYTES", [1, 2])], [serialize_bytes(elems)])
    if engine == "tract":
        rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT, "INPUT0", "UTF-8")
    else:
        out = grpc_result(gstub.ModelInfer(request)).as_numpy("OUTPUT0")
        assert [bytes(v) for v in out.reshape(-1)] == elems


# --------------------------------------------------------------------------------------- shapes and sizes


@pytest.mark.parametrize(
    "shape", [[1, 2**62], [8, 2**61], [2**32, 2**32], [2**63 - 1, 1], [-1, 2], [1, -2], [0, 2]],
    ids=["byte_overflow", "count_overflow", "huge", "huge_batch", "neg_batch", "neg_dim", "zero_batch"],
)
def test_hostile_shapes(grpc_server, gstub, shape):
    request = grpc_request("identity_fp32", [grpc_input("INPUT0", "FP32", shape)], [b"\x00" * 16])
    t0 = time.monotonic()
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT)
    assert time.monotonic() - t0 < 10, "rejection must not wait for a huge allocation"


def test_many_inputs(grpc_server, gstub):
    request = grpc_request(
        "simple", [grpc_input(f"IN{i}", "INT32", [1, 16]) for i in range(5000)], [i32(16)] * 5000
    )
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.INVALID_ARGUMENT)


# --------------------------------------------------------------------------------------- model repository, shm, trace, log


def test_load_unload_not_allowed(grpc_server, gclient, gstub):
    rejected(grpc_server, lambda: gclient.load_model("simple"), SC.UNAVAILABLE, NO_LOAD)
    rejected(grpc_server, lambda: gclient.unload_model("simple"), SC.UNAVAILABLE, NO_LOAD)
    rejected(
        grpc_server,
        lambda: gstub.RepositoryModelLoad(service_pb2.RepositoryModelLoadRequest(model_name="no_such_model")),
        SC.UNAVAILABLE,
        NO_LOAD,
    )
    rejected(
        grpc_server,
        lambda: gstub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name="mlp")),
        SC.UNAVAILABLE,
        NO_LOAD,
    )
    assert gclient.is_model_ready("simple") is True and gclient.is_model_ready("mlp") is True


def test_system_shared_memory_disabled(grpc_server, gclient):
    rejected(
        grpc_server, lambda: gclient.register_system_shared_memory("r", "/rampart_test", 64), SC.UNIMPLEMENTED, SHM_DISABLED
    )
    rejected(grpc_server, lambda: gclient.unregister_system_shared_memory("r"), SC.UNIMPLEMENTED, SHM_DISABLED)
    rejected(grpc_server, lambda: gclient.unregister_system_shared_memory(), SC.UNIMPLEMENTED, SHM_DISABLED)
    status = gclient.get_system_shared_memory_status()
    assert len(status.regions) == 0, status
    # A named region that is not registered (none can be): NOT_FOUND, as Triton.
    rejected(grpc_server, lambda: gclient.get_system_shared_memory_status("r"), SC.NOT_FOUND, "'r'")


def test_shared_memory_input_refused(grpc_server, gstub):
    t = grpc_input("INPUT0", "INT32", [1, 16], shared_memory_region="r", shared_memory_byte_size=64)
    request = grpc_request("simple", [t, typed_input("INPUT1", "INT32", A)])
    # Client shared memory is off by default (as in Triton): UNSUPPORTED -> UNIMPLEMENTED.
    rejected(grpc_server, lambda: gstub.ModelInfer(request), SC.UNIMPLEMENTED, SHM_DISABLED)


def test_cuda_shared_memory_not_supported(grpc_server, gstub):
    request = service_pb2.CudaSharedMemoryRegisterRequest(name="r", raw_handle=b"\x00" * 64, device_id=0, byte_size=64)
    # INVALID_ARG (HTTP 400), as documented in docs/compatibility.md.
    rejected(
        grpc_server,
        lambda: gstub.CudaSharedMemoryRegister(request),
        SC.INVALID_ARGUMENT,
        exact="CUDA shared memory is not supported: this server was built without GPU support",
    )


TRACE_DEFAULTS = {
    "trace_level": ["OFF"],
    "trace_rate": ["1000"],
    "trace_count": ["-1"],
    "log_frequency": ["0"],
    "trace_file": [""],
    "trace_mode": ["triton"],
}
TRACE_FILE_REFUSED = "trace file location can not be updated through network protocol"


def trace_settings_of(response) -> dict:
    """TraceSettingResponse -> {key: [values]}."""
    return {k: list(v.value) for k, v in response.settings.items()}


def trace_request(model: str = "", **settings):
    """A TraceSettingRequest; a setting given as [] is sent as an empty value (the gRPC way to clear it)."""
    req = service_pb2.TraceSettingRequest(model_name=model)
    for key, values in settings.items():
        req.settings[key].SetInParent()
        req.settings[key].value.extend(values)
    return req


def test_trace_setting_hostile_updates_change_nothing(grpc_server, gclient, gstub):
    """The shared server (no trace file) keeps its trace settings: every hostile update, global or per model, is
    refused as a whole (a valid field next to the bad one is not applied either), and the settings read afterwards
    are still the defaults. The trace file can never be chosen by a client."""
    assert trace_settings_of(gclient.get_trace_settings()) == TRACE_DEFAULTS
    assert trace_settings_of(gclient.get_trace_settings(model_name="simple")) == TRACE_DEFAULTS
    for model in ("", "simple"):
        for settings in (
            {"trace_file": "/tmp/rampart-grpc-hostile.trace"},
            {"trace_rate": "1", "trace_file": "/tmp/rampart-grpc-hostile.trace"},
            {"trace_file": ""},
        ):
            update = lambda: gclient.update_trace_settings(model_name=model, settings=settings)  # noqa: E731
            rejected(grpc_server, update, SC.UNIMPLEMENTED, exact=TRACE_FILE_REFUSED)
        # An empty value (clear) for trace_file is refused too.
        rejected(grpc_server, lambda: gstub.TraceSetting(trace_request(model, trace_file=[])), SC.UNIMPLEMENTED, exact=TRACE_FILE_REFUSED)
        # Tracing needs a file chosen at startup; this server has none.
        rejected(
            grpc_server,
            lambda: gstub.TraceSetting(trace_request(model, trace_level=["TIMESTAMPS"], trace_rate=["1"])),
            SC.UNIMPLEMENTED,
            "tracing needs a trace file",
        )
        for settings, message in (
            ({"trace_rate": ["x"]}, "Unable to parse 'trace_rate', got: x"),
            ({"trace_rate": ["99999999999"]}, "Unable to parse 'trace_rate', got: 99999999999"),
            ({"trace_count": ["x"], "trace_rate": ["1"]}, "Unable to parse 'trace_count', got: x"),
            ({"log_frequency": ["-1"]}, "Unable to parse 'log_frequency', got: -1"),
            ({"trace_level": ["OFF", "TIMESTAMPS"]}, "Expect only one trace level 'OFF' is specified"),
            ({"trace_rate": ["1"], "no_such_setting": ["1"]}, "unexpected trace setting 'no_such_setting'"),
        ):
            rejected(grpc_server, lambda: gstub.TraceSetting(trace_request(model, **settings)), SC.INVALID_ARGUMENT, exact=message)
        for settings in ({"trace_rate": ["0"]}, {"trace_count": ["-2"]}, {"trace_rate": ["1", "2"]}):
            rejected(grpc_server, lambda: gstub.TraceSetting(trace_request(model, **settings)), SC.INVALID_ARGUMENT)
    # Global settings cannot be cleared (only a per-model override falls back to them).
    rejected(grpc_server, lambda: gstub.TraceSetting(trace_request(trace_rate=[])), SC.INVALID_ARGUMENT, "cannot be cleared")
    # Unknown and malformed model names.
    rejected(grpc_server, lambda: gclient.get_trace_settings(model_name="no_such_model"), SC.NOT_FOUND, exact=UNKNOWN_MODEL)
    update = lambda: gclient.update_trace_settings(model_name="no_such_model", settings={"trace_rate": "1"})  # noqa: E731
    rejected(grpc_server, update, SC.NOT_FOUND, exact=UNKNOWN_MODEL)
    for name in ("../simple", "..", "a\\b", "x" * 256, "a\nb"):
        rejected(grpc_server, lambda: gclient.get_trace_settings(model_name=name), SC.INVALID_ARGUMENT, "invalid model name")
    assert trace_settings_of(gclient.get_trace_settings()) == TRACE_DEFAULTS
    assert trace_settings_of(gclient.get_trace_settings(model_name="simple")) == TRACE_DEFAULTS


LOG_DEFAULTS = {
    "log_file": ("string_param", ""),
    "log_info": ("bool_param", True),
    "log_warning": ("bool_param", True),
    "log_error": ("bool_param", True),
    "log_verbose_level": ("uint32_param", 0),
    "log_format": ("string_param", "default"),
}


def log_settings_of(response) -> dict:
    """LogSettingsResponse -> {key: (oneof field, value)}."""
    return {k: (v.WhichOneof("parameter_choice"), getattr(v, v.WhichOneof("parameter_choice") or "bool_param")) for k, v in response.settings.items()}


def test_log_settings_hostile_updates_change_nothing(grpc_server, gclient, gstub):
    """The shared server keeps its settings (other tests read its log): every hostile update is refused as a whole,
    and the settings read afterwards are still the defaults. Type errors are sent through the raw stub (tritonclient
    picks the oneof field from the key name)."""
    assert log_settings_of(gclient.get_log_settings()) == LOG_DEFAULTS
    file_refused = "log file location can not be updated through network protocol"
    rejected(grpc_server, lambda: gclient.update_log_settings({"log_file": "/tmp/rampart-grpc-hostile.log"}), SC.UNIMPLEMENTED, exact=file_refused)
    rejected(grpc_server, lambda: gclient.update_log_settings({"log_info": False, "log_file": ""}), SC.UNIMPLEMENTED, exact=file_refused)
    rejected(grpc_server, lambda: gclient.update_log_settings({"log_error": False, "log_format": "xml"}), SC.INVALID_ARGUMENT, "invalid argument for --log_format, got: xml")
    for key, kind, value in (
        ("log_info", "string_param", "false"),
        ("log_warning", "uint32_param", 0),
        ("log_verbose_level", "bool_param", True),
        ("log_verbose_level", "string_param", "2"),
        ("log_format", "bool_param", True),
    ):
        req = service_pb2.LogSettingsRequest()
        setattr(req.settings[key], kind, value)
        req.settings["log_error"].bool_param = False  # a valid field next to the bad one: not applied either
        rejected(grpc_server, lambda: gstub.LogSettings(req), SC.INVALID_ARGUMENT, key)
    req = service_pb2.LogSettingsRequest()
    req.settings["no_such_setting"].bool_param = True
    rejected(grpc_server, lambda: gstub.LogSettings(req), SC.INVALID_ARGUMENT, "unexpected log setting")
    assert log_settings_of(gclient.get_log_settings()) == LOG_DEFAULTS
    # An update that sets what is already set answers the (unchanged) settings.
    assert log_settings_of(gclient.update_log_settings({"log_warning": True})) == LOG_DEFAULTS
    assert not os.path.exists("/tmp/rampart-grpc-hostile.log")


# --------------------------------------------------------------------------------------- wire-level garbage


@pytest.mark.parametrize(
    "method", ["/inference.GRPCInferenceService/NoSuchRpc", "/no.such.Service/ModelInfer", "/grpc.health.v1.Health/Watch2"]
)
def test_unknown_method(grpc_server, method):
    with grpc_server.grpc_channel() as channel:
        call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        rejected(grpc_server, lambda: call(b"", timeout=10), SC.UNIMPLEMENTED)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",  # a varint key that never ends
        b"\x0a\x02\xff\xfe",  # model_name (string, field 1) that is not UTF-8
        b"\x0a\x64simple",  # model_name claims 100 bytes, has 6
        b"\x2a\x07\x0a\x03abc",  # inputs[0] claims 7 bytes, has 5
        b"\x3a\xff\xff\xff\xff\x0f",  # raw_input_contents claims 4 GiB
    ],
    ids=["endless_varint", "name_not_utf8", "name_truncated", "input_truncated", "raw_claims_4gib"],
)
def test_undecodable_request(grpc_server, payload):
    with grpc_server.grpc_channel() as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        # A message that does not decode is the client's mistake: INVALID_ARGUMENT naming the RPC (tonic and
        # gRPC's C++ servers say INTERNAL).
        rejected(
            grpc_server,
            lambda: call(payload, timeout=10),
            SC.INVALID_ARGUMENT,
            "ModelInfer: the request is not a valid protobuf message: failed to decode Protobuf message",
        )


def test_undecodable_stream_message_ends_the_stream_naming_the_rpc(grpc_server):
    with grpc_server.grpc_channel() as channel:
        call = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as exc:
            list(call(iter([b"\x0a\xff"]), timeout=10))
        assert exc.value.code() == SC.INVALID_ARGUMENT, exc.value
        assert exc.value.details().startswith(
            "ModelStreamInfer: the request is not a valid protobuf message: failed to decode Protobuf message"
        ), exc.value.details()


def test_burst_of_bad_requests_then_good_one(grpc_server, gstub):
    bad = [
        (grpc_request("no_such_model"), SC.NOT_FOUND, UNKNOWN_MODEL),
        (simple_grpc_request(outputs=["X"]), SC.INVALID_ARGUMENT, "unexpected inference output 'X' for model 'simple'"),
        (
            grpc_request("simple", [grpc_input("INPUT0", "INT32", [1, 16])]),
            SC.INVALID_ARGUMENT,
            NO_DATA.format("INPUT0", "simple"),
        ),
    ]
    for i in range(60):
        request, code, message = bad[i % len(bad)]
        with pytest.raises(grpc.RpcError) as exc:
            gstub.ModelInfer(request)
        assert exc.value.code() == code, (i, exc.value.code(), exc.value.details())
        assert message in exc.value.details(), (i, exc.value.details())
    res = grpc_result(gstub.ModelInfer(simple_grpc_request()))
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), A + 3)


# --------------------------------------------------------------------------------------- message size limit


def _fp32_of_bytes(nbytes: int):
    n = nbytes // 4
    return fp32_request(shape=(1, n))


def test_default_limit_allows_8_mib(grpc_server, gstub):
    """Above gRPC's usual 4 MiB default, below Rampart's 64 MiB default."""
    n = (8 << 20) // 4
    x = np.arange(n, dtype=np.float32)
    request = grpc_request("identity_fp32", [grpc_input("INPUT0", "FP32", [1, n])], [x.tobytes()])
    resp = gstub.ModelInfer(request)
    assert resp.raw_output_contents[0] == x.tobytes()


def test_default_limit_refuses_over_64_mib(grpc_server, gstub):
    request = _fp32_of_bytes((64 << 20) + (1 << 20))
    rejected(grpc_server, lambda: gstub.ModelInfer(request), OVERSIZE)


@pytest.fixture(scope="module")
def grpc_cap_server():
    """A server with a 64 KiB gRPC message cap and a custom --id (default engine)."""
    srv = start_server(
        grpc_base_args(example_repo(), None, ["--grpc-max-message-size=65536", "--id=rampart-grpc-cap"]),
        "rampart[grpc cap 65536]",
    )
    yield srv
    finish_server(srv)


def test_cap_server_metadata_name_is_id(grpc_cap_server):
    with grpc_cap_server.grpc_client() as c:
        assert c.get_server_metadata().name == "rampart-grpc-cap"


def test_cap_allows_small_messages(grpc_cap_server):
    stub = grpc_cap_server.grpc_stub()
    x = np.arange(8000, dtype=np.float32)  # 32 KB
    resp = stub.ModelInfer(grpc_request("identity_fp32", [grpc_input("INPUT0", "FP32", [1, 8000])], [x.tobytes()]))
    assert resp.raw_output_contents[0] == x.tobytes()


def test_cap_refuses_100kb_request(grpc_cap_server):
    stub = grpc_cap_server.grpc_stub()
    request = _fp32_of_bytes(100_000)
    assert request.ByteSize() > 65536
    rejected(grpc_cap_server, lambda: stub.ModelInfer(request), OVERSIZE)


def test_cap_refuses_100kb_request_tritonclient(grpc_cap_server):
    import tritonclient.grpc as grpcclient

    inp = grpcclient.InferInput("INPUT0", [1, 25_000], "FP32")
    inp.set_data_from_numpy(np.ones((1, 25_000), dtype=np.float32))
    with grpc_cap_server.grpc_client() as c:
        rejected(grpc_cap_server, lambda: c.infer("identity_fp32", [inp]), OVERSIZE)


def test_cap_refuses_oversized_stream_message(grpc_cap_server):
    stub = grpc_cap_server.grpc_stub()
    small = fp32_request(id="small")

    def run():
        return [r for r in stub.ModelStreamInfer(iter([small, _fp32_of_bytes(100_000)]))]

    rejected(grpc_cap_server, run, OVERSIZE)


def test_cap_server_still_serves_after_rejections(grpc_cap_server):
    stub = grpc_cap_server.grpc_stub()
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelInfer(_fp32_of_bytes(200_000))
        assert exc.value.code() == OVERSIZE
    x = np.array([[3.0]], dtype=np.float32)
    resp = stub.ModelInfer(grpc_request("identity_fp32", [grpc_input("INPUT0", "FP32", [1, 1])], [x.tobytes()]))
    assert resp.raw_output_contents[0] == x.tobytes()
    assert grpc_cap_server.get("/v2/health/live").status_code == 200
