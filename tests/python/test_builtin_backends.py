"""The built-in backends `identity`, `repeat` and `square` (docs/models.md, "Built-in backends"), and decoupled
models over gRPC ModelStreamInfer (docs/protocol.md, "Decoupled models and streaming"), through tritonclient.

The repository is made only of `config.pbtxt` files (Triton's own configs for repeat_int32 and square_int32) and
empty version folders: no model file is read.
"""

from __future__ import annotations

import concurrent.futures
import json
import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import GrpcClient, grpc_base_args, running, start_server, finish_server, write_repo
from decoupled_configs import REPEAT_INT32, SQUARE_INT32

DECOUPLED_HTTP = "HTTP end point doesn't support models with decoupled transaction policy"
DECOUPLED_GRPC = "ModelInfer RPC doesn't support models with decoupled transaction policy"
QUIET = 1.5  # seconds to wait when asserting that nothing more arrives


def identity(name: str, dtype: str, batch: int, extra: str = "", dims: str = "-1") -> str:
    return f"""name: "{name}"
backend: "identity"
max_batch_size: {batch}
input [ {{ name: "INPUT0" data_type: {dtype} dims: [ {dims} ] }} ]
output [ {{ name: "OUTPUT0" data_type: {dtype} dims: [ {dims} ] }} ]
{extra}"""


MODELS = {
    "identity_fp32": identity("identity_fp32", "TYPE_FP32", 8),
    "identity_bytes": identity("identity_bytes", "TYPE_STRING", 0),
    "identity_one_string": identity("identity_one_string", "TYPE_STRING", 4, dims="1"),
    "identity_queue1": identity(
        "identity_queue1",
        "TYPE_FP32",
        8,
        "dynamic_batching { max_queue_delay_microseconds: 1000000 preferred_batch_size: [ 8 ] "
        "default_queue_policy { max_queue_size: 1 } }",
    ),
    "identity_delay": identity(
        "identity_delay", "TYPE_FP32", 0, 'parameters { key: "execute_delay_ms" value: { string_value: "400" } }'
    ),
    "repeat_int32": REPEAT_INT32,
    "square_int32": SQUARE_INT32,
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    repo = write_repo(tmp_path_factory.mktemp("builtin"), MODELS)
    server = start_server(grpc_base_args(repo), "rampart-builtin")
    yield server
    finish_server(server)


@pytest.fixture
def gclient(srv):
    with GrpcClient(srv.grpc_url) as c:
        yield c


class Stream:
    """A started tritonclient stream whose (result, error) pairs land in a queue."""

    def __init__(self, client):
        self.client = client
        self.items: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: self.items.put((result, error)))

    def next(self, timeout: float = 10.0):
        return self.items.get(timeout=timeout)

    def assert_quiet(self):
        with pytest.raises(queue.Empty):
            self.items.get(timeout=QUIET)


def repeat_inputs(values, delays, wait=0):
    ins = [
        grpcclient.InferInput("IN", [len(values)], "INT32"),
        grpcclient.InferInput("DELAY", [len(delays)], "UINT32"),
        grpcclient.InferInput("WAIT", [1], "UINT32"),
    ]
    ins[0].set_data_from_numpy(np.array(values, dtype=np.int32))
    ins[1].set_data_from_numpy(np.array(delays, dtype=np.uint32))
    ins[2].set_data_from_numpy(np.array([wait], dtype=np.uint32))
    return ins


def square_input(n: int):
    t = grpcclient.InferInput("IN", [1], "INT32")
    t.set_data_from_numpy(np.array([n], dtype=np.int32))
    return [t]


def final_flag(result) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


def test_identity_echoes_fp32_and_bytes_over_http_and_grpc(srv, gclient):
    x = np.array([[1.5, -2.0, 3.25]], dtype=np.float32)
    words = np.array([b"alpha", b"", b"\x00nul\x00"], dtype=np.object_)
    http = srv.client()
    h = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
    h.set_data_from_numpy(x)
    np.testing.assert_array_equal(http.infer("identity_fp32", [h]).as_numpy("OUTPUT0"), x)
    hb = httpclient.InferInput("INPUT0", [3], "BYTES")
    hb.set_data_from_numpy(words)
    assert list(http.infer("identity_bytes", [hb]).as_numpy("OUTPUT0")) == list(words)
    g = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    g.set_data_from_numpy(x)
    np.testing.assert_array_equal(gclient.infer("identity_fp32", [g]).as_numpy("OUTPUT0"), x)
    gb = grpcclient.InferInput("INPUT0", [3], "BYTES")
    gb.set_data_from_numpy(words)
    assert list(gclient.infer("identity_bytes", [gb]).as_numpy("OUTPUT0")) == list(words)


def test_a_raw_body_is_the_one_bytes_element_without_a_length_prefix(srv):
    """Triton: a raw binary body (`Inference-Header-Content-Length: 0`) to a model whose single input is one
    BYTES element is that element's bytes."""
    raw = {"Inference-Header-Content-Length": "0"}
    for body in (b"427", b"", b"\x00nul\xffbytes"):
        r = srv.post("/v2/models/identity_one_string/infer", data=body, headers=raw)
        assert r.status_code == 200, r.text
        n = int(r.headers["Inference-Header-Content-Length"])
        header = json.loads(r.content[:n])
        assert header["outputs"][0]["shape"] == [1, 1], header
        assert r.content[n:] == len(body).to_bytes(4, "little") + body, "one element, length-prefixed on the wire"
    r = srv.post("/v2/models/identity_bytes/infer", data=b"427", headers=raw)
    assert (r.status_code, r.json()) == (
        400,
        {"error": "For BYTE datatype raw input 'INPUT0', the model must have input shape [1]"},
    ), "an element count that is not 1 stays a 400"


def test_max_queue_size_counts_the_request_a_forming_batch_holds(srv, gclient):
    """Triton counts every request not yet scheduled, including one the batcher holds while it waits up to
    max_queue_delay_microseconds for a fuller batch: with max_queue_size 1 a second request is refused."""
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(srv.post, "/v2/models/identity_queue1/infer", json=body)
        time.sleep(0.3)
        r = srv.post("/v2/models/identity_queue1/infer", json=body)
        assert (r.status_code, r.json()) == (503, {"error": "Exceeds maximum queue size"})
        t = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
        t.set_data_from_numpy(np.ones([1, 1], dtype=np.float32))
        with pytest.raises(InferenceServerException) as e:
            gclient.infer("identity_queue1", [t])
        assert (e.value.status(), e.value.message()) == ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size")
        assert first.result(timeout=10).status_code == 200, "the held request runs after its delay"
    r = srv.post("/v2/models/identity_queue1/infer", json=body)
    assert r.status_code == 200, r.text


def test_identity_honours_execute_delay_ms(srv):
    http = srv.client()
    x = np.ones([2], dtype=np.float32)
    t = httpclient.InferInput("INPUT0", [2], "FP32")
    t.set_data_from_numpy(x)
    start = time.monotonic()
    np.testing.assert_array_equal(http.infer("identity_delay", [t]).as_numpy("OUTPUT0"), x)
    delayed = time.monotonic() - start
    u = httpclient.InferInput("INPUT0", [1, 2], "FP32")
    u.set_data_from_numpy(x.reshape(1, 2))
    start = time.monotonic()
    http.infer("identity_fp32", [u])
    plain = time.monotonic() - start
    assert delayed >= 0.4, delayed
    assert plain < 0.3, plain


def test_repeat_streams_one_response_per_element_then_an_empty_final_response(gclient):
    s = Stream(gclient)
    values = [10, -20, 30, 40]
    gclient.async_stream_infer(
        "repeat_int32", repeat_inputs(values, [5] * 4), request_id="r1", enable_empty_final_response=True
    )
    for i, v in enumerate(values):
        result, error = s.next()
        assert error is None, error
        assert result.get_response().id == "r1"
        assert result.as_numpy("OUT").tolist() == [v]
        assert result.as_numpy("IDX").tolist() == [i]
        assert final_flag(result) is False
    result, error = s.next()
    assert error is None, error
    response = result.get_response()
    assert (response.id, response.model_name, len(response.outputs)) == ("r1", "repeat_int32", 0)
    assert final_flag(result) is True
    s.assert_quiet()
    gclient.stop_stream()


def test_without_the_empty_final_response_only_data_responses_arrive(gclient):
    s = Stream(gclient)
    gclient.async_stream_infer("repeat_int32", repeat_inputs([7, 8], [0, 0]), request_id="r2")
    got = [s.next() for _ in range(2)]
    assert [r.as_numpy("IDX").tolist() for r, _ in got] == [[0], [1]]
    assert all(e is None and final_flag(r) is False for r, e in got)
    s.assert_quiet()
    gclient.stop_stream()


def test_square_sends_in_responses_and_zero_sends_only_the_final_flag(gclient):
    s = Stream(gclient)
    gclient.async_stream_infer("square_int32", square_input(3), request_id="s3")
    got = [s.next() for _ in range(3)]
    assert [(e, r.as_numpy("OUT").tolist()) for r, e in got] == [(None, [3])] * 3
    s.assert_quiet()
    gclient.async_stream_infer("square_int32", square_input(0), request_id="s0", enable_empty_final_response=True)
    result, error = s.next()
    assert error is None and final_flag(result) is True and result.get_response().id == "s0"
    s.assert_quiet()
    gclient.stop_stream()


def test_a_model_with_one_response_flags_it_final_on_a_stream(gclient):
    s = Stream(gclient)
    t = grpcclient.InferInput("INPUT0", [1, 2], "FP32")
    t.set_data_from_numpy(np.array([[1, 2]], dtype=np.float32))
    gclient.async_stream_infer("identity_fp32", [t], request_id="i1")
    result, error = s.next()
    assert error is None and final_flag(result) is True
    assert result.as_numpy("OUTPUT0").tolist() == [[1.0, 2.0]]
    s.assert_quiet()
    gclient.stop_stream()


def test_repeat_errors_travel_in_the_stream_with_tritons_message(gclient):
    s = Stream(gclient)
    gclient.async_stream_infer("repeat_int32", repeat_inputs([1], [0, 0]), request_id="bad")
    result, error = s.next()
    assert result is None
    assert "expected IN and DELAY shape to match, got [1] and [2]" in str(error)
    gclient.async_stream_infer("square_int32", square_input(1), request_id="after")
    result, error = s.next()
    assert error is None and result.as_numpy("OUT").tolist() == [1], "the stream goes on"
    gclient.stop_stream()


def test_decoupled_models_are_refused_on_unary_endpoints(srv, gclient):
    r = srv.post(
        "/v2/models/square_int32/infer",
        json={"inputs": [{"name": "IN", "datatype": "INT32", "shape": [1], "data": [2]}]},
    )
    assert (r.status_code, r.json()) == (501, {"error": DECOUPLED_HTTP})
    with pytest.raises(InferenceServerException) as e:
        gclient.infer("repeat_int32", repeat_inputs([1], [0]))
    assert e.value.status() == "StatusCode.UNIMPLEMENTED"
    assert e.value.message() == DECOUPLED_GRPC


def test_response_statistics_count_each_response_index(srv, gclient):
    before = srv.get("/v2/models/square_int32/stats").json()["model_stats"][0]["response_stats"]
    s = Stream(gclient)
    gclient.async_stream_infer("square_int32", square_input(2), request_id="st")
    for _ in range(2):
        assert s.next()[1] is None
    gclient.stop_stream()
    after = srv.get("/v2/models/square_int32/stats").json()["model_stats"][0]["response_stats"]
    for key in ("0", "1"):
        was = before.get(key, {}).get("success", {}).get("count", 0)
        assert after[key]["success"]["count"] == was + 1, after
        assert after[key]["fail"]["count"] == before.get(key, {}).get("fail", {}).get("count", 0)
    grpc_stats = gclient.get_inference_statistics("square_int32", as_json=True)
    assert grpc_stats["model_stats"][0]["response_stats"]["1"]["success"]["count"] == str(
        after["1"]["success"]["count"]
    )


def test_a_client_that_goes_away_cancels_its_request(srv, gclient):
    s = Stream(gclient)
    # 50 responses 100 ms apart: 5 s of work unless the backend sees the cancellation.
    gclient.async_stream_infer("repeat_int32", repeat_inputs(list(range(50)), [100] * 50), request_id="long")
    result, error = s.next()
    assert error is None and result.as_numpy("IDX").tolist() == [0]
    gclient.stop_stream(cancel_requests=True)
    time.sleep(0.3)
    s2 = Stream(gclient)
    start = time.monotonic()
    gclient.async_stream_infer("repeat_int32", repeat_inputs([5], [0]), request_id="next")
    result, error = s2.next(timeout=10)
    assert error is None and result.as_numpy("OUT").tolist() == [5]
    assert time.monotonic() - start < 1.5, "the instance was still busy with the cancelled request"
    gclient.stop_stream()
    stats = srv.get("/v2/models/repeat_int32/stats").json()["model_stats"][0]
    assert stats["inference_stats"]["fail"]["count"] >= 1, stats


def test_unknown_backend_fails_the_load_naming_the_built_in_backends(tmp_path):
    repo = write_repo(tmp_path, {"mystery": 'name: "mystery"\nbackend: "nonesuch"\n'})
    with running(grpc_base_args(repo, extra=["--exit-on-error=false", "--strict-readiness=false"])) as srv:
        index = srv.index()
        reason = next(m["reason"] for m in index if m["name"] == "mystery")
        assert "backend 'nonesuch' is not supported" in reason, reason
        assert "identity, onnxruntime, python, repeat, square, tract" in reason, reason
