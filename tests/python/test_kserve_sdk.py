"""The KServe Python SDK (`kserve` 0.21: InferenceRESTClient, InferenceGRPCClient, InferRequest / InferInput /
RequestedOutput) against Rampart serving examples/models, over REST (KServe v2) and gRPC: health, model
readiness, inference with JSON / binary (REST) and typed / raw (gRPC) tensors, requested outputs, and the
errors the SDK raises with the server's message.

Why the SDK runs in a child interpreter: kserve's generated `grpc_predict_v2_pb2` and tritonclient's
`service_pb2` both define the proto package `inference` (inference.ServerLiveRequest, ...), and protobuf refuses
the second file in one process's default descriptor pool ("duplicate symbol 'inference.ServerLiveRequest'"),
whichever is imported first and with either protobuf backend. conftest and the other suites import
tritonclient.grpc, so kserve is never imported by pytest: the `sdk` fixture runs this file as a script
(`_child_main`), which makes every SDK call once and hands back plain values and numpy arrays (pickled); each
test then asserts on its scenario's outcome.

REST health: the SDK reads `{"live": true}` / `{"ready": true}` from GET /v2/health/live and /v2/health/ready, so
those two tests need the server to answer with that JSON body (an empty body makes the SDK raise JSONDecodeError).
"""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import (
    GRPC_TIMEOUT,
    HTTP_TIMEOUT,
    REPO_ROOT,
    example_repo,
    finish_server,
    grpc_base_args,
    selected_engines,
    start_server,
)

MODELS = ("simple", "identity_fp32", "identity_bytes", "mlp")
UNKNOWN = "no_such_model"

# simple: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (INT32, [1, 16]).
A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)
SUM = [[3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]]
DIFF = [[-3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
# identity_fp32: values exact in float32 (JSON carries them as the shortest decimal of the float32's double).
FP32 = np.array([[0.0, -1.5, 0.1, 3.4028235e38, 1e-07, 123456.79, -0.0, 2.0**-126]], dtype=np.float32)
# identity_bytes: JSON carries strings; binary / gRPC carry length-prefixed bytes (control bytes, multi-byte characters,
# an empty element). Valid UTF-8, which both engines take (tract refuses anything else; test_bytes_elements.py).
TEXT = ["hello", "", "ñandú"]
BLOBS = [b"\x01 raw\x7f\n", b"", "ñandú".encode(), "\u20ac".encode()]

CHILD_TIMEOUT = 180.0


# ---------------------------------------------------------------------------------------
# Child side: the SDK calls (kserve is imported here only)
# ---------------------------------------------------------------------------------------


def _child_main(argv: list[str]) -> int:
    import asyncio

    http_base, grpc_url, out = argv
    results = asyncio.run(_run_scenarios(http_base, grpc_url))
    Path(out).write_bytes(pickle.dumps(results))
    return 0


def _requests():
    """InferRequest builders shared by both protocols: scenario name -> builder(protocol)."""
    from kserve import InferInput, InferRequest
    from kserve.protocol.infer_type import RequestedOutput

    def listed(name, datatype, array):
        """InferInput whose data is a flat Python list: JSON `data` over REST, typed contents over gRPC."""
        return InferInput(name, list(array.shape), datatype, array.reshape(-1).tolist())

    def numpy(name, datatype, array):
        """InferInput set from numpy with binary_data=True: binary extension over REST, raw contents over gRPC."""
        i = InferInput(name, list(array.shape), datatype)
        i.set_data_from_numpy(array, binary_data=True)
        return i

    def binary_outputs(protocol, *names):
        """REST: ask for binary outputs (the response then carries Inference-Header-Content-Length); gRPC: None
        (Triton's gRPC always answers raw)."""
        return [RequestedOutput(n, {"binary_data": True}) for n in names] if protocol == "rest" else None

    def json_bytes(array):
        i = InferInput("INPUT0", list(array.shape), "BYTES")
        i.set_data_from_numpy(array, binary_data=False)
        return i

    text = np.array([TEXT], dtype=object)
    blobs = np.array([BLOBS], dtype=object)
    return {
        "simple_listed": lambda p: InferRequest(
            "simple", [listed("INPUT0", "INT32", A), listed("INPUT1", "INT32", B)], request_id=f"{p}-listed"
        ),
        "simple_numpy": lambda p: InferRequest(
            "simple",
            [numpy("INPUT0", "INT32", A), numpy("INPUT1", "INT32", B)],
            request_id=f"{p}-numpy",
            request_outputs=binary_outputs(p, "OUTPUT0", "OUTPUT1"),
        ),
        "simple_only_output1": lambda p: InferRequest(
            "simple",
            [listed("INPUT0", "INT32", A), listed("INPUT1", "INT32", B)],
            request_id=f"{p}-only1",
            request_outputs=[RequestedOutput("OUTPUT1")],
        ),
        "fp32_listed": lambda p: InferRequest("identity_fp32", [listed("INPUT0", "FP32", FP32)], request_id=f"{p}-f"),
        "fp32_numpy": lambda p: InferRequest(
            "identity_fp32", [numpy("INPUT0", "FP32", FP32)], request_outputs=binary_outputs(p, "OUTPUT0")
        ),
        # REST: JSON strings; gRPC: bytes_contents (the SDK encodes str as UTF-8).
        "bytes_listed": lambda p: InferRequest(
            "identity_bytes", [json_bytes(text) if p == "rest" else listed("INPUT0", "BYTES", text)]
        ),
        "bytes_numpy": lambda p: InferRequest(
            "identity_bytes", [numpy("INPUT0", "BYTES", blobs)], request_outputs=binary_outputs(p, "OUTPUT0")
        ),
        "bad_input_name": lambda p: InferRequest(
            "simple", [listed("INPUTX", "INT32", A), listed("INPUT1", "INT32", B)]
        ),
        "wrong_datatype": lambda p: InferRequest(
            "simple", [listed("INPUT0", "FP32", A.astype(np.float32)), listed("INPUT1", "INT32", B)]
        ),
        "unknown_model_infer": lambda p: InferRequest(UNKNOWN, [listed("INPUT0", "INT32", A)]),
    }


def _response(r, headers: dict | None = None) -> dict:
    """An InferResponse as plain values (outputs decoded with the SDK's own as_numpy)."""
    out = {
        "id": r.id,
        "model_name": r.model_name,
        "model_version": r.model_version,
        "outputs": [
            {"name": o.name, "datatype": o.datatype, "shape": list(o.shape), "data": o.as_numpy()} for o in r.outputs
        ],
    }
    if headers is not None:
        out["headers"] = {k.lower(): v for k, v in headers.items()}
    return out


async def _outcome(call, convert=lambda v: v) -> tuple:
    """("value", plain value) or ("raised", details of the exception the SDK raised)."""
    import grpc
    import httpx

    try:
        return ("value", convert(await call))
    except httpx.HTTPStatusError as e:
        return ("raised", {"type": "httpx.HTTPStatusError", "status": e.response.status_code, "message": str(e)})
    except grpc.aio.AioRpcError as e:
        return ("raised", {"type": "grpc.aio.AioRpcError", "code": e.code().name, "details": e.details()})
    except Exception as e:  # anything else is reported, not hidden: the test shows type and message
        return ("raised", {"type": f"{type(e).__module__}.{type(e).__name__}", "message": str(e)})


async def _run_scenarios(http_base: str, grpc_url: str) -> dict:
    import logging

    from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig

    # The SDK logs every RpcError with a traceback before re-raising it; the outcome records it instead.
    logging.getLogger("kserve.trace").setLevel(logging.CRITICAL)
    builders = _requests()
    results: dict = {"rest": {}, "grpc": {}}

    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=HTTP_TIMEOUT))
    try:
        r = results["rest"]
        r["server_live"] = await _outcome(rest.is_server_live(http_base))
        r["server_ready"] = await _outcome(rest.is_server_ready(http_base))
        for m in (*MODELS, UNKNOWN):
            r[f"model_ready:{m}"] = await _outcome(rest.is_model_ready(http_base, m))
        for name, build in builders.items():
            request = build("rest")
            headers: dict = {}
            r[name] = await _outcome(
                rest.infer(http_base, request, model_name=request.model_name, response_headers=headers),
                lambda resp: _response(resp, headers),
            )
    finally:
        await rest.close()

    grpc_client = InferenceGRPCClient(grpc_url, timeout=GRPC_TIMEOUT, retries=0)
    try:
        g = results["grpc"]
        g["server_live"] = await _outcome(grpc_client.is_server_live())
        g["server_ready"] = await _outcome(grpc_client.is_server_ready())
        for m in (*MODELS, UNKNOWN):
            g[f"model_ready:{m}"] = await _outcome(grpc_client.is_model_ready(m))
        for name, build in builders.items():
            g[name] = await _outcome(grpc_client.infer(build("grpc")), _response)
    finally:
        await grpc_client.close()
    return results


# ---------------------------------------------------------------------------------------
# Parent side: server, one child run, assertions
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kserve_server():
    """Rampart serving examples/models with HTTP and gRPC (the first selected engine: the SDK tests are about the
    protocols, not the engines)."""
    engine = selected_engines()[0]
    srv = start_server(grpc_base_args(example_repo(), engine), f"rampart[{engine}, examples, kserve sdk]")
    yield srv
    finish_server(srv)


@pytest.fixture(scope="module")
def sdk(kserve_server, tmp_path_factory) -> dict:
    """Every SDK call's outcome: {"rest"|"grpc": {scenario: ("value", v) | ("raised", details)}}."""
    # See the module docstring: loaded here, kserve would break every later tritonclient.grpc import (or vice versa).
    assert "kserve" not in sys.modules, "kserve must not be imported by the pytest process"
    if importlib.util.find_spec("kserve") is None:
        pytest.fail("the kserve package is not installed (tests/python/requirements.txt; run scripts/setup.sh)")
    out = tmp_path_factory.mktemp("kserve_sdk") / "results.pickle"
    args = [sys.executable, str(Path(__file__).resolve()), kserve_server.base, kserve_server.grpc_url, str(out)]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=CHILD_TIMEOUT, cwd=str(REPO_ROOT))
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the SDK child did not finish within {CHILD_TIMEOUT}s\n{(e.stderr or b'').decode()[-4000:]}")
    if proc.returncode != 0 or not out.is_file():
        pytest.fail(
            f"the SDK child failed ({proc.returncode}):\n{proc.stdout.decode()[-4000:]}\n{proc.stderr.decode()[-4000:]}"
        )
    return pickle.loads(out.read_bytes())


def value(outcome: tuple):
    kind, v = outcome
    assert kind == "value", f"the SDK raised instead of returning: {v}"
    return v


def raised(outcome: tuple) -> dict:
    kind, v = outcome
    assert kind == "raised", f"the SDK returned instead of raising: {v!r}"
    return v


def outputs(response: dict) -> dict:
    return {o["name"]: o for o in response["outputs"]}


def assert_output(out: dict, name: str, datatype: str, shape: list, expected) -> None:
    assert (out["name"], out["datatype"], out["shape"]) == (name, datatype, shape), out
    data = out["data"]
    assert isinstance(data, np.ndarray), type(data)
    if datatype == "BYTES":
        assert data.dtype == np.object_, data.dtype
        assert data.tolist() == expected, data.tolist()
    elif datatype == "FP32":
        assert data.dtype == np.float32, data.dtype
        # Bit for bit (distinguishes -0.0 from 0.0).
        assert data.view(np.uint32).tolist() == np.asarray(expected, np.float32).view(np.uint32).tolist(), data
    else:
        assert data.dtype == np.int32, data.dtype
        assert data.tolist() == expected, data.tolist()


def assert_simple_both(response: dict, request_id: str, protocol: str) -> None:
    assert response["id"] == request_id
    assert response["model_name"] == "simple"
    if protocol == "grpc":
        assert response["model_version"] == "1"
    assert [o["name"] for o in response["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    outs = outputs(response)
    assert_output(outs["OUTPUT0"], "OUTPUT0", "INT32", [1, 16], SUM)
    assert_output(outs["OUTPUT1"], "OUTPUT1", "INT32", [1, 16], DIFF)


PROTOCOLS = ("rest", "grpc")


# ---------------------------------------------------------------------------------------------------- health


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_live(sdk, protocol):
    """REST: is_server_live reads {"live": true} from GET /v2/health/live; gRPC: ServerLive.live."""
    assert value(sdk[protocol]["server_live"]) is True


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_ready(sdk, protocol):
    """REST: is_server_ready reads {"ready": true} from GET /v2/health/ready; gRPC: ServerReady.ready."""
    assert value(sdk[protocol]["server_ready"]) is True


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_ready(sdk, protocol, model):
    assert value(sdk[protocol][f"model_ready:{model}"]) is True


def test_model_ready_unknown_rest(sdk):
    """The SDK's v2 REST is_model_ready is `response.is_success`: the server's 404 for an unknown model comes back
    as False (the SDK does not raise there)."""
    assert value(sdk["rest"][f"model_ready:{UNKNOWN}"]) is False


def test_model_ready_unknown_grpc(sdk):
    """The SDK's gRPC is_model_ready re-raises the RpcError: NOT_FOUND with the server's message."""
    assert raised(sdk["grpc"][f"model_ready:{UNKNOWN}"]) == {
        "type": "grpc.aio.AioRpcError",
        "code": "NOT_FOUND",
        "details": f"Request for unknown model: '{UNKNOWN}' is not found",
    }


# ---------------------------------------------------------------------------------------------------- inference


def test_rest_json_tensors(sdk):
    """InferInput data lists travel as JSON `data`; the response is plain JSON (no binary header)."""
    r = value(sdk["rest"]["simple_listed"])
    assert_simple_both(r, "rest-listed", "rest")
    assert "inference-header-content-length" not in r["headers"], r["headers"]


def test_rest_binary_tensors(sdk):
    """set_data_from_numpy(binary_data=True) inputs go in the binary extension (the SDK sends
    Inference-Header-Content-Length); outputs requested with binary_data come back binary and the SDK decodes them."""
    r = value(sdk["rest"]["simple_numpy"])
    assert_simple_both(r, "rest-numpy", "rest")
    assert int(r["headers"]["inference-header-content-length"]) > 0, r["headers"]


def test_grpc_typed_contents(sdk):
    """InferInput data lists travel in InferTensorContents (int_contents); the answer's raw contents are decoded."""
    assert_simple_both(value(sdk["grpc"]["simple_listed"]), "grpc-listed", "grpc")


def test_grpc_raw_contents(sdk):
    """set_data_from_numpy inputs travel as raw_input_contents."""
    assert_simple_both(value(sdk["grpc"]["simple_numpy"]), "grpc-numpy", "grpc")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_requested_output_only(sdk, protocol):
    """RequestedOutput("OUTPUT1") alone: the response has OUTPUT1 (INPUT0 - INPUT1) and nothing else."""
    r = value(sdk[protocol]["simple_only_output1"])
    assert r["id"] == f"{protocol}-only1"
    assert [o["name"] for o in r["outputs"]] == ["OUTPUT1"]
    assert_output(r["outputs"][0], "OUTPUT1", "INT32", [1, 16], DIFF)


@pytest.mark.parametrize("variant", ["listed", "numpy"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_identity_fp32(sdk, protocol, variant):
    """identity_fp32 returns its input bit for bit (REST: JSON or binary; gRPC: fp32_contents or raw)."""
    r = value(sdk[protocol][f"fp32_{variant}"])
    assert r["model_name"] == "identity_fp32"
    assert len(r["outputs"]) == 1
    assert_output(r["outputs"][0], "OUTPUT0", "FP32", [1, FP32.shape[1]], FP32)
    if protocol == "rest":
        assert ("inference-header-content-length" in r["headers"]) == (variant == "numpy"), r["headers"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_identity_bytes_text(sdk, protocol):
    """BYTES from a list of strings (REST: JSON strings, decoded by the SDK as str; gRPC: bytes_contents, answered
    raw and decoded as bytes)."""
    r = value(sdk[protocol]["bytes_listed"])
    expected = TEXT if protocol == "rest" else [s.encode() for s in TEXT]
    assert_output(r["outputs"][0], "OUTPUT0", "BYTES", [1, 3], [expected])
    assert len(r["outputs"]) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_identity_bytes_binary(sdk, protocol):
    """BYTES from numpy, control bytes and an empty element included (REST binary extension; gRPC raw). gRPC gives
    the elements back as bytes; the REST client's InferResponse.from_bytes re-encodes every binary output with
    set_data_from_numpy(binary_data=False), which decodes BYTES elements as UTF-8 str."""
    r = value(sdk[protocol]["bytes_numpy"])
    assert len(r["outputs"]) == 1
    expected = [b.decode() for b in BLOBS] if protocol == "rest" else BLOBS
    assert_output(r["outputs"][0], "OUTPUT0", "BYTES", [1, len(BLOBS)], [expected])
    if protocol == "rest":
        assert int(r["headers"]["inference-header-content-length"]) > 0, r["headers"]


# ---------------------------------------------------------------------------------------------------- errors

ERRORS = {
    # scenario: (HTTP status, gRPC code, server message)
    "bad_input_name": (400, "INVALID_ARGUMENT", "unexpected inference input 'INPUTX' for model 'simple'"),
    "wrong_datatype": (
        400,
        "INVALID_ARGUMENT",
        "inference input 'INPUT0' data-type is 'FP32', but model 'simple' expects 'INT32'",
    ),
    "unknown_model_infer": (404, "NOT_FOUND", f"Request for unknown model: '{UNKNOWN}' is not found"),
}
REASONS = {400: "Bad Request", 404: "Not Found"}


@pytest.mark.parametrize("scenario", list(ERRORS))
def test_rest_error(sdk, kserve_server, scenario):
    """The REST client raises httpx.HTTPStatusError whose message starts with the server's {"error": ...} text
    (the SDK reads it only when Content-Type is exactly application/json)."""
    status, _, message = ERRORS[scenario]
    model = UNKNOWN if scenario == "unknown_model_infer" else "simple"
    url = f"{kserve_server.base}/v2/models/{model}/infer"
    assert raised(sdk["rest"][scenario]) == {
        "type": "httpx.HTTPStatusError",
        "status": status,
        "message": f"{message}, '{status} {REASONS[status]}' for url '{url}'",
    }


@pytest.mark.parametrize("scenario", list(ERRORS))
def test_grpc_error(sdk, scenario):
    """The gRPC client re-raises grpc.aio.AioRpcError with the server's status code and message."""
    _, code, message = ERRORS[scenario]
    assert raised(sdk["grpc"][scenario]) == {"type": "grpc.aio.AioRpcError", "code": code, "details": message}


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
