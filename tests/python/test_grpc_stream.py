"""gRPC ModelStreamInfer (docs/protocol.md, "gRPC service", "Decoupled models and streaming"): results and
per-request errors on one stream, request ids, the `triton_grpc_error: true` stream metadata (first error ends the
stream with a real status), half-close, cancellation and deadlines. After each test the server must still be live
(autouse fixture) and keep serving.

Uses tritonclient.grpc's start_stream / async_stream_infer / stop_stream (conftest's client wrapper gives every
stream a deadline) and the raw stub's ModelStreamInfer with request iterators (explicit `timeout`).
"""

from __future__ import annotations

import queue
import threading

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import (
    GRPC_TIMEOUT,
    assert_grpc_live,
    assert_live,
    grpc_input,
    grpc_request,
    grpc_result,
    simple_grpc_request,
)

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)
UNKNOWN_MODEL = "Request for unknown model: 'no_such_model' is not found"
BOGUS_INPUT = "unexpected inference input 'BOGUS' for model 'simple'"
GRPC_ERROR_HEADER = {"triton_grpc_error": "true"}
QUIET = 2.0  # seconds to wait when asserting that nothing more arrives


class Collector:
    """Stream callback that queues (result, error) pairs."""

    def __init__(self):
        self.q: queue.Queue = queue.Queue()

    def __call__(self, result, error):
        self.q.put((result, error))

    def next(self, timeout: float = GRPC_TIMEOUT):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no stream callback within {timeout}s")

    def result(self):
        result, error = self.next()
        assert error is None, f"expected a result, got error {error}"
        return result

    def error(self) -> InferenceServerException:
        result, error = self.next()
        assert error is not None, f"expected an error, got a result {result.get_response() if result else None}"
        return error

    def nothing_more(self, seconds: float = QUIET) -> None:
        try:
            item = self.q.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected stream callback: {item}")


def simple_inputs(a: np.ndarray, b: np.ndarray) -> list:
    in0 = grpcclient.InferInput("INPUT0", list(a.shape), "INT32")
    in0.set_data_from_numpy(a)
    in1 = grpcclient.InferInput("INPUT1", list(b.shape), "INT32")
    in1.set_data_from_numpy(b)
    return [in0, in1]


def bogus_inputs() -> list:
    in0 = grpcclient.InferInput("INPUT0", [1, 16], "INT32")
    in0.set_data_from_numpy(A)
    bogus = grpcclient.InferInput("BOGUS", [1, 16], "INT32")
    bogus.set_data_from_numpy(A)
    return [in0, bogus]


def bogus_request(**kw):
    req = simple_grpc_request(**kw)
    req.inputs[1].name = "BOGUS"
    return req


def assert_simple(result, a=A, b=B, request_id: str | None = None) -> None:
    resp = result.get_response()
    assert resp.model_name == "simple" and resp.model_version == "1"
    if request_id is not None:
        assert resp.id == request_id
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def assert_still_serving(srv) -> None:
    assert_live(srv)
    assert_grpc_live(srv)
    res = grpc_result(srv.grpc_stub().ModelInfer(simple_grpc_request()))
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), A + B)


# --------------------------------------------------------------------------------------- results


def test_stream_results_and_request_ids(gclient):
    cb = Collector()
    gclient.start_stream(cb)
    cases = {f"req-{i}": np.full((1 + i % 3, 16), i, dtype=np.int32) for i in range(6)}
    for rid, a in cases.items():
        gclient.async_stream_infer("simple", simple_inputs(a, np.ones_like(a)), request_id=rid)
    got = {}
    for _ in cases:
        r = cb.result()
        got[r.get_response().id] = r
    gclient.stop_stream()
    assert set(got) == set(cases), "every request id must be echoed once"
    for rid, a in cases.items():
        assert_simple(got[rid], a, np.ones_like(a))
    cb.nothing_more(0.2)


def test_stream_good_bad_good_in_order(grpc_server, gclient):
    cb = Collector()
    gclient.start_stream(cb)
    gclient.async_stream_infer("simple", simple_inputs(A, B), request_id="good-1")
    gclient.async_stream_infer("simple", bogus_inputs(), request_id="bad-1")
    gclient.async_stream_infer("simple", simple_inputs(A, A), request_id="good-2")
    assert_simple(cb.result(), request_id="good-1")
    err = cb.error()
    assert BOGUS_INPUT in err.message(), err
    assert_simple(cb.result(), A, A, request_id="good-2")
    # The stream is still open after an in-band error.
    gclient.async_stream_infer("simple", simple_inputs(B, B), request_id="good-3")
    assert_simple(cb.result(), B, B, request_id="good-3")
    gclient.stop_stream()
    cb.nothing_more(0.2)
    assert_grpc_live(grpc_server)


@pytest.mark.parametrize("case", ["unknown_model", "over_batch", "unknown_output"])
def test_stream_error_messages_are_the_cores(gclient, case):
    cb = Collector()
    gclient.start_stream(cb)
    if case == "unknown_model":
        gclient.async_stream_infer("no_such_model", simple_inputs(A, B))
        expected = UNKNOWN_MODEL
    elif case == "over_batch":
        big = np.zeros((9, 16), dtype=np.int32)
        gclient.async_stream_infer("simple", simple_inputs(big, big))
        expected = "inference request batch-size must be <= 8 for 'simple'"
    else:
        gclient.async_stream_infer("simple", simple_inputs(A, B), outputs=[grpcclient.InferRequestedOutput("BOGUS")])
        expected = "unexpected inference output 'BOGUS' for model 'simple'"
    err = cb.error()
    assert expected in err.message(), err
    gclient.async_stream_infer("simple", simple_inputs(A, B))
    assert_simple(cb.result())
    gclient.stop_stream()


def test_stream_mixed_models(gclient):
    cb = Collector()
    gclient.start_stream(cb)
    x = np.array([[1.5, -2.0, 3.25]], dtype=np.float32)
    fp = grpcclient.InferInput("INPUT0", [1, 3], "FP32")
    fp.set_data_from_numpy(x)
    words = np.array([[b"a", b"", "\u00e9".encode()]], dtype=np.object_)
    by = grpcclient.InferInput("INPUT0", [1, 3], "BYTES")
    by.set_data_from_numpy(words)
    m = grpcclient.InferInput("input", [2, 784], "FP32")
    m.set_data_from_numpy(np.zeros((2, 784), dtype=np.float32))
    gclient.async_stream_infer("simple", simple_inputs(A, B), request_id="s")
    gclient.async_stream_infer("identity_fp32", [fp], request_id="f")
    gclient.async_stream_infer("identity_bytes", [by], request_id="b")
    gclient.async_stream_infer("mlp", [m], request_id="m")
    got = {}
    for _ in range(4):
        r = cb.result()
        got[r.get_response().id] = r
    gclient.stop_stream()
    assert_simple(got["s"])
    assert got["f"].get_response().model_name == "identity_fp32"
    np.testing.assert_array_equal(got["f"].as_numpy("OUTPUT0"), x)
    assert [bytes(v) for v in got["b"].as_numpy("OUTPUT0").reshape(-1)] == list(words.reshape(-1))
    assert got["m"].as_numpy("output").shape == (2, 10)


def test_stream_many_requests(gclient):
    cb = Collector()
    gclient.start_stream(cb)
    n = 100
    for i in range(n):
        a = np.full((1, 16), i, dtype=np.int32)
        gclient.async_stream_infer("simple", simple_inputs(a, B), request_id=str(i))
    ids = set()
    for _ in range(n):
        r = cb.result()
        i = int(r.get_response().id)
        assert_simple(r, np.full((1, 16), i, dtype=np.int32), B)
        ids.add(i)
    gclient.stop_stream()
    assert ids == set(range(n))


def test_stop_stream_waits_for_pending_responses(gclient):
    """A graceful half-close (stop_stream without cancel): every request sent is still answered."""
    cb = Collector()
    gclient.start_stream(cb)
    m = grpcclient.InferInput("input", [32, 784], "FP32")
    m.set_data_from_numpy(np.ones((32, 784), dtype=np.float32))
    for i in range(10):
        gclient.async_stream_infer("mlp", [m], request_id=str(i))
    gclient.stop_stream(cancel_requests=False)
    ids = {cb.result().get_response().id for _ in range(10)}
    assert ids == {str(i) for i in range(10)}
    cb.nothing_more(0.2)


def test_stream_statistics(gclient):
    before = gclient.get_inference_statistics("identity_fp32").model_stats[0]
    cb = Collector()
    gclient.start_stream(cb)
    x = grpcclient.InferInput("INPUT0", [2, 2], "FP32")
    x.set_data_from_numpy(np.ones((2, 2), dtype=np.float32))
    for _ in range(5):
        gclient.async_stream_infer("identity_fp32", [x])
    for _ in range(5):
        cb.result()
    gclient.stop_stream()
    after = gclient.get_inference_statistics("identity_fp32").model_stats[0]
    assert after.inference_stats.success.count - before.inference_stats.success.count == 5
    assert after.inference_count - before.inference_count == 10


# --------------------------------------------------------------------------------------- raw stub streams


def test_raw_stream_errors_in_band(gstub):
    requests = [simple_grpc_request(id="g1"), bogus_request(id="b1"), simple_grpc_request(id="g2")]
    responses = list(gstub.ModelStreamInfer(iter(requests)))
    assert len(responses) == 3, responses
    assert responses[0].error_message == "" and responses[0].infer_response.id == "g1"
    assert BOGUS_INPUT in responses[1].error_message, responses[1]
    assert responses[2].error_message == "" and responses[2].infer_response.id == "g2"
    for r in (responses[0], responses[2]):
        res = grpc_result(r.infer_response)
        np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), A + B)


def test_raw_stream_reserved_parameter_in_band(gstub):
    requests = [simple_grpc_request(id="r1", parameters={"triton_x": True}), simple_grpc_request(id="g1")]
    responses = list(gstub.ModelStreamInfer(iter(requests)))
    assert len(responses) == 2, responses
    assert (
        "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified."
        in responses[0].error_message
    ), responses[0]
    assert responses[1].error_message == "" and responses[1].infer_response.id == "g1"


def test_raw_stream_wrong_parameter_type_in_band(gstub):
    requests = [simple_grpc_request(id="p1", parameters={"priority": ("1", "string")}), simple_grpc_request(id="g1")]
    responses = list(gstub.ModelStreamInfer(iter(requests)))
    assert len(responses) == 2, responses
    assert "invalid value type for 'priority'" in responses[0].error_message, responses[0]
    assert responses[1].error_message == "" and responses[1].infer_response.id == "g1"


def test_raw_stream_empty(gstub):
    assert list(gstub.ModelStreamInfer(iter([]))) == []


@pytest.mark.parametrize("value", ["false", "0"])
def test_raw_stream_grpc_error_header_not_true(gstub, value):
    """Only `triton_grpc_error: true` switches the error mode; anything else keeps errors in-band."""
    requests = [bogus_request(id="b1"), simple_grpc_request(id="g1")]
    responses = list(gstub.ModelStreamInfer(iter(requests), metadata=(("triton_grpc_error", value),)))
    assert [bool(r.error_message) for r in responses] == [True, False], responses


def test_raw_stream_grpc_error_header_closes_stream(grpc_server, gstub):
    requests = [simple_grpc_request(id="g1"), bogus_request(id="b1"), simple_grpc_request(id="g2")]
    call = gstub.ModelStreamInfer(iter(requests), metadata=(("triton_grpc_error", "true"),))
    got = []
    with pytest.raises(grpc.RpcError) as exc:
        for r in call:
            got.append(r)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.value.code(), exc.value.details())
    assert BOGUS_INPUT in exc.value.details()
    assert len(got) == 1 and got[0].error_message == "" and got[0].infer_response.id == "g1", got
    assert_grpc_live(grpc_server)


def test_raw_stream_grpc_error_header_unknown_model(gstub):
    call = gstub.ModelStreamInfer(iter([grpc_request("no_such_model")]), metadata=(("triton_grpc_error", "true"),))
    with pytest.raises(grpc.RpcError) as exc:
        list(call)
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    assert exc.value.details() == UNKNOWN_MODEL


def test_stream_grpc_error_header_tritonclient(grpc_server, gclient):
    cb = Collector()
    gclient.start_stream(cb, headers=GRPC_ERROR_HEADER)
    gclient.async_stream_infer("simple", simple_inputs(A, B), request_id="g1")
    assert_simple(cb.result(), request_id="g1")
    gclient.async_stream_infer("simple", bogus_inputs(), request_id="b1")
    err = cb.error()
    assert err.status() == "StatusCode.INVALID_ARGUMENT", err
    assert BOGUS_INPUT in err.message(), err
    # The stream is over: later requests are refused by the client or never answered.
    try:
        gclient.async_stream_infer("simple", simple_inputs(A, B), request_id="g2")
    except InferenceServerException:
        pass
    cb.nothing_more()
    gclient.stop_stream()
    assert_still_serving(grpc_server)


def test_stream_grpc_error_header_later_requests_unanswered(gclient):
    cb = Collector()
    gclient.start_stream(cb, headers=GRPC_ERROR_HEADER)
    gclient.async_stream_infer("simple", bogus_inputs(), request_id="b1")
    for i in range(3):
        try:
            gclient.async_stream_infer("simple", simple_inputs(A, B), request_id=f"g{i}")
        except InferenceServerException:
            break
    err = cb.error()
    assert err.status() == "StatusCode.INVALID_ARGUMENT", err
    cb.nothing_more()
    gclient.stop_stream()


# --------------------------------------------------------------------------------------- cancellation and deadlines


def test_stop_stream_with_cancel_mid_stream(grpc_server):
    m = grpcclient.InferInput("input", [32, 784], "FP32")
    m.set_data_from_numpy(np.ones((32, 784), dtype=np.float32))
    for _ in range(3):
        cb = Collector()
        with grpc_server.grpc_client() as c:
            c.start_stream(cb)
            for i in range(30):
                c.async_stream_infer("mlp", [m], request_id=str(i))
            c.stop_stream(cancel_requests=True)
    assert_still_serving(grpc_server)
    # A new stream on a new client works.
    with grpc_server.grpc_client() as c:
        cb = Collector()
        c.start_stream(cb)
        c.async_stream_infer("simple", simple_inputs(A, B), request_id="after")
        assert_simple(cb.result(), request_id="after")
        c.stop_stream()


def test_raw_stream_cancel_after_first_responses(grpc_server, gstub):
    stop = threading.Event()

    def endless():
        for i in range(10_000):
            if stop.is_set():
                return
            yield simple_grpc_request(id=str(i))

    call = gstub.ModelStreamInfer(endless())
    seen = 0
    for r in call:
        assert r.error_message == ""
        seen += 1
        if seen == 3:
            call.cancel()
            break
    stop.set()
    with pytest.raises(grpc.RpcError) as exc:
        for _ in call:
            pass
    assert exc.value.code() == grpc.StatusCode.CANCELLED
    assert_still_serving(grpc_server)


def test_raw_stream_deadline_while_idle(grpc_server, gstub):
    release = threading.Event()

    def first_then_wait():
        yield simple_grpc_request(id="only")
        release.wait(GRPC_TIMEOUT)

    call = gstub.ModelStreamInfer(first_then_wait(), timeout=1.5)
    got = []
    try:
        with pytest.raises(grpc.RpcError) as exc:
            for r in call:
                got.append(r)
    finally:
        release.set()
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert [r.infer_response.id for r in got] == ["only"]
    assert_still_serving(grpc_server)


def test_client_disconnect_mid_stream(grpc_server):
    """Close the whole channel while requests are in flight."""
    channel = grpc_server.grpc_channel()
    from tritonclient.grpc import service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    big = grpc_request(
        "mlp", [grpc_input("input", "FP32", [32, 784])], [np.ones((32, 784), dtype=np.float32).tobytes()]
    )
    call = stub.ModelStreamInfer(iter([big] * 20), timeout=GRPC_TIMEOUT)
    next(call)
    channel.close()
    assert_still_serving(grpc_server)


def test_stream_and_unary_side_by_side(grpc_server, gclient):
    """An open stream (with an in-band error in it) does not disturb unary calls on the same channel."""
    cb = Collector()
    gclient.start_stream(cb)
    gclient.async_stream_infer("simple", bogus_inputs())
    assert BOGUS_INPUT in cb.error().message()
    res = gclient.infer("simple", simple_inputs(A, B))
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), A - B)
    assert gclient.is_server_ready() is True
    gclient.async_stream_infer("simple", simple_inputs(A, B), request_id="x")
    assert_simple(cb.result(), request_id="x")
    gclient.stop_stream()
