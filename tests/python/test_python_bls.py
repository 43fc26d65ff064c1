"""Business logic scripting (BLS): Python model code calling the server's models with
`pb_utils.InferenceRequest(...).exec()` (crates/rampart-python/src/bls.rs, crates/rampart-core/src/bls.rs).

A call is an ordinary request to the target (the same validation, scheduler and statistics). The fixtures in
tests/python/python_models:
- bls_simple: calls the ONNX model `simple` (examples/models/simple: INT32 [16] INPUT0/INPUT1 -> OUTPUT0 sum,
  OUTPUT1 difference, max_batch_size 8) and answers its outputs;
- bls_decoupled: `exec(decoupled=True)` on the decoupled Python model repeat_decoupled, counting its responses;
- bls_async: `async def execute` awaiting asyncio.gather of several `async_exec()` calls;
- bls_errors: answers `has_error()` and the message of a call instead of failing (unknown model, wrong input name,
  a model that --model-access protects);
- bls_iterate: what the iterator of `exec(decoupled=True)` yields (a model that is not decoupled answers one
  response; a final flag sent alone is an empty last response; iterating again replays the responses;
  `cancel()` cancels the callee, which decides: it ends with a CANCELLED error, or keeps sending);
- bls_ping / bls_pong: a chain of calls back and forth, bounded by MAX_CALL_DEPTH = 8 (a request of a client, then
  at most 8 calls in a row). Every link holds an instance while it waits, so they have 5 and 4 instances, and
  `rampart_execute_timeout_secs` is low so that a bug cannot hang the suite.

Servers: `srv` (HTTP and gRPC) with those models, repeat_decoupled and `simple`; `access_srv` with
`--model-access=simple:x-key=secret`: model code presents no credential, so it cannot call `simple`, while a client
with the header can.
"""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import (
    GrpcClient,
    assert_error,
    base_args,
    example_repo,
    finish_server,
    grpc_base_args,
    start_server,
    wait_models_settled,
)
from test_python_backend import (  # noqa: F401 - worker_python and module_public_dir are fixtures
    copy_repo,
    json_infer,
    module_public_dir,
    worker_python,
)

BLS_MODELS = ["bls_simple", "bls_decoupled", "bls_async", "bls_errors", "bls_ping", "bls_pong", "bls_iterate"]
MAX_CALL_DEPTH = 8  # crates/rampart-core/src/bls.rs
ACCESS_KEY, ACCESS_VALUE = "x-key", "secret"


def make_repo(root, names: list[str]):
    """The Python fixtures `names` and examples/models/simple, readable by the workers' user."""
    repo = copy_repo(root, names)
    shutil.copytree(example_repo() / "simple", repo / "simple")
    for path in repo.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return repo


def server_args(worker_python, extra=()):  # noqa: F811
    python, more = worker_python
    return ["--exit-on-error=false", f"--backend-config=python,interpreter={python}", *more, *extra]


@pytest.fixture(scope="module")
def srv(module_public_dir, worker_python):  # noqa: F811
    repo = make_repo(module_public_dir / "repo", [*BLS_MODELS, "repeat_decoupled", "repeat_thread"])
    server = start_server(grpc_base_args(repo, extra=server_args(worker_python)), "rampart-python-bls", wait="live")
    index = wait_models_settled(server)
    assert all(e["state"] == "READY" for e in index), index
    yield server
    finish_server(server)


@pytest.fixture(scope="module")
def access_srv(module_public_dir, worker_python):  # noqa: F811
    repo = make_repo(module_public_dir / "access_repo", ["bls_simple", "bls_errors"])
    rule = f"--model-access=simple:{ACCESS_KEY}={ACCESS_VALUE}"
    server = start_server(base_args(repo, extra=server_args(worker_python, [rule])), "rampart-bls-access", wait="live")
    index = wait_models_settled(server)
    assert all(e["state"] == "READY" for e in index), index
    yield server
    finish_server(server)


@pytest.fixture
def http(srv):
    c = srv.client()
    yield c
    c.close()


@pytest.fixture
def gclient(srv):
    with GrpcClient(srv.grpc_url) as c:
        yield c


def stats(srv, model: str) -> dict:
    r = srv.get(f"/v2/models/{model}/stats")
    assert r.status_code == 200, r.text
    return r.json()["model_stats"][0]


def outputs(r) -> dict:
    assert r.status_code == 200, r.text
    return {o["name"]: o["data"] for o in r.json()["outputs"]}


def simple_inputs(module, a: np.ndarray, b: np.ndarray, names=("INPUT0", "INPUT1")):
    ins = []
    for name, x in zip(names, (a, b)):
        t = module.InferInput(name, list(x.shape), "INT32")
        t.set_data_from_numpy(x)
        ins.append(t)
    return ins


def bls_errors(srv, action: str) -> tuple[bool, str, list]:
    out = outputs(srv.infer("bls_errors", json_infer("BYTES", [1], [action], name="ACTION")))
    return out["HAS_ERROR"][0], out["MESSAGE"][0], out["OUTPUT0"]


# ---------------------------------------------------------------------------------------
# Calling an ONNX model
# ---------------------------------------------------------------------------------------


def test_a_python_model_calls_the_onnx_model_over_http_and_grpc(srv, http, gclient):
    a = np.arange(16, dtype=np.int32) * 3 - 20
    b = np.full(16, 7, dtype=np.int32)
    before = stats(srv, "simple")
    for client, module in ((http, httpclient), (gclient, grpcclient)):
        result = client.infer("bls_simple", simple_inputs(module, a, b))
        assert result.as_numpy("OUTPUT0").dtype == np.int32
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    after = stats(srv, "simple")
    assert after["inference_count"] - before["inference_count"] == 2, "each call is one inference of simple"
    assert after["execution_count"] - before["execution_count"] == 2
    ok = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
    assert ok == 2, after["inference_stats"]


# ---------------------------------------------------------------------------------------
# exec(decoupled=True)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[7, -1, 30, 4], [5], []])
def test_exec_decoupled_iterates_the_responses_and_ends_with_an_empty_one(http, gclient, values):
    for client, module in ((http, httpclient), (gclient, grpcclient)):
        t = module.InferInput("IN", [len(values)], "INT32")
        t.set_data_from_numpy(np.array(values, dtype=np.int32))
        result = client.infer("bls_decoupled", [t])
        assert result.as_numpy("COUNT").tolist() == [len(values)], "one non-empty response per element"
        assert result.as_numpy("TOTAL").tolist() == [len(values) + 1], "and one more: the empty final response"
        assert result.as_numpy("LAST_EMPTY").tolist() == [True]
        assert result.as_numpy("VALUES").tolist() == values
        assert result.as_numpy("INDICES").tolist() == list(range(len(values)))


def test_plain_exec_on_a_decoupled_model_with_several_responses_is_an_error(srv):
    has_error, message, _ = bls_errors(srv, "decoupled_plain")
    assert has_error is True, message
    assert "model 'repeat_decoupled' sent 2 responses; use exec(decoupled=True)" in message, message


def iterate(srv, mode: int) -> list[int]:
    with GrpcClient(srv.grpc_url) as client:
        t = grpcclient.InferInput("MODE", [1], "INT32")
        t.set_data_from_numpy(np.array([mode], dtype=np.int32))
        return client.infer("bls_iterate", [t]).as_numpy("RESULT").tolist()


def test_decoupled_exec_of_a_model_that_is_not_decoupled_yields_its_one_response(srv):
    # One response with both outputs, no empty response after it; a second iteration replays it.
    assert iterate(srv, 0) == [1, 1, 2, 0]


def test_decoupled_exec_yields_each_response_then_the_final_flag_as_an_empty_one_and_replays(srv):
    assert iterate(srv, 1) == [4, 4, 0, 0]


def test_cancelling_a_decoupled_call_ends_it_with_a_cancelled_error(srv):
    # The callee sees is_cancelled() and ends with a CANCELLED error response, which the iteration delivers.
    received, cancelled, took_ms, _ = iterate(srv, 2)
    assert cancelled == 1, (received, took_ms)
    # Twenty responses 50 ms apart would take a second.
    assert received < 20 and took_ms < 900, (received, took_ms)


def test_a_callee_that_ignores_cancellation_keeps_delivering_until_it_ends(srv):
    # Triton's test_decoupled_bls_ignore_cancel: cancel() asks, the model decides; every response it still
    # sends reaches the caller, then its final flag (an empty last response).
    received, cancelled, took_ms, total = iterate(srv, 4)
    assert (received, cancelled, total) == (21, 0, sum(range(20))), (received, cancelled, took_ms, total)


def test_inference_request_checks_its_arguments_as_triton_s_binding(srv):
    assert iterate(srv, 3) == [4, 2, 1, 1]


# ---------------------------------------------------------------------------------------
# async def execute + async_exec
# ---------------------------------------------------------------------------------------


def test_async_execute_gathers_several_async_exec_calls(srv, http, gclient):
    base = np.arange(16, dtype=np.int32) * 10
    before = stats(srv, "simple")["inference_count"]
    for client, module in ((http, httpclient), (gclient, grpcclient)):
        t = module.InferInput("INPUT0", [16], "INT32")
        t.set_data_from_numpy(base)
        sums = client.infer("bls_async", [t]).as_numpy("SUMS")
        assert sums.shape == (4, 16)
        for k in range(4):
            np.testing.assert_array_equal(sums[k], base + 2 * k, err_msg=f"call {k}")
    assert stats(srv, "simple")["inference_count"] - before == 8, "four calls per request"


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


def test_calling_a_model_that_does_not_exist_is_an_error_response_naming_it(srv):
    has_error, message, out = bls_errors(srv, "missing")
    assert has_error is True, message
    assert "no_such_model" in message, message
    assert out == []
    # The same request from a client gets the same message; model code sees it after Triton's prefix for a
    # call refused before it was queued.
    direct = srv.infer("no_such_model", json_infer("INT32", [1, 16], [1] * 16, name="INPUT0"))
    prefix = "Model no_such_model - Error when running inference: "
    assert message == prefix + assert_error(direct, 404, "no_such_model")


def test_a_wrong_input_name_gives_the_targets_validation_error(srv):
    has_error, message, _ = bls_errors(srv, "bad_input")
    assert has_error is True, message
    assert "WRONG" in message and "simple" in message, message
    body = {
        "inputs": [
            {"name": "WRONG", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [2] * 16},
        ]
    }
    direct = assert_error(srv.infer("simple", body), 400, "WRONG")
    assert message == direct, "the call is validated as a client's request is"


def test_a_successful_call_has_no_error(srv):
    has_error, message, out = bls_errors(srv, "simple")
    assert (has_error, message, out) == (False, "", [3] * 16)


# ---------------------------------------------------------------------------------------
# The depth of a chain of calls
# ---------------------------------------------------------------------------------------


def chain(srv, stop: int):
    body = {
        "inputs": [
            {"name": "HOPS", "datatype": "INT32", "shape": [1], "data": [0]},
            {"name": "STOP", "datatype": "INT32", "shape": [1], "data": [stop]},
        ]
    }
    start = time.monotonic()
    r = srv.infer("bls_ping", body)
    return r, time.monotonic() - start


def test_a_chain_of_calls_is_bounded_at_8_deep(srv):
    for stop in (1, 2, MAX_CALL_DEPTH):
        r, elapsed = chain(srv, stop)
        assert outputs(r)["HOPS"] == [stop], f"a chain of {stop} calls"
        assert elapsed < 8, f"a chain of {stop} calls took {elapsed:.1f}s"

    r, elapsed = chain(srv, MAX_CALL_DEPTH + 1)
    assert elapsed < 8, f"the refused chain took {elapsed:.1f}s: the bound did not stop it, a timeout did"
    # Call 9 is made by bls_ping (depths 0, 2, 4, 6, 8 are bls_ping's) to bls_pong; its error reaches the client
    # (RESOURCE_EXHAUSTED reaches model code as pb_utils' UNAVAILABLE, which each link passes on: 503).
    assert_error(
        r, 503,
        f"model 'bls_ping': a chain of model calls (BLS) may be at most {MAX_CALL_DEPTH} deep",
        f"this call to 'bls_pong' would be {MAX_CALL_DEPTH + 1}",
    )
    # Every instance the refused chain held is free again.
    r, _ = chain(srv, MAX_CALL_DEPTH)
    assert outputs(r)["HOPS"] == [MAX_CALL_DEPTH]


# ---------------------------------------------------------------------------------------
# --model-access
# ---------------------------------------------------------------------------------------


def test_model_code_cannot_call_a_model_that_model_access_protects(access_srv):
    has_error, message, out = bls_errors(access_srv, "simple")
    assert has_error is True and out == [], message
    assert "--model-access protects it" in message, message
    assert "model 'bls_errors' cannot call model 'simple'" in message, message

    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [2] * 16},
        ]
    }
    assert outputs(access_srv.infer("simple", body, headers={ACCESS_KEY: ACCESS_VALUE}))["OUTPUT0"] == [3] * 16
    assert_error(access_srv.infer("simple", body), 403, f"expecting header '{ACCESS_KEY}'")
    # A client holding the key calls bls_simple (no rule names it); its call to simple is refused all the same.
    body = {"inputs": [dict(i, shape=[16]) for i in body["inputs"]]}
    r = access_srv.infer("bls_simple", body, headers={ACCESS_KEY: ACCESS_VALUE})
    assert_error(r, 500, "--model-access protects it")


# ---------------------------------------------------------------------------------------------------------------
# Model control from model code: pb_utils.load_model / unload_model / is_model_ready
# ---------------------------------------------------------------------------------------------------------------


def control(srv, action: str) -> str:
    r = srv.post("/v2/models/model_control/infer", json=json_infer("BYTES", [1], [action], name="ACTION"))
    assert r.status_code == 200, r.text
    return r.json()["outputs"][0]["data"][0]


@pytest.mark.parametrize("allowed", [False, True])
def test_model_code_loads_and_unloads_only_when_the_operator_allows_it(module_public_dir, worker_python, allowed):  # noqa: F811
    python, extra = worker_python
    repo = make_repo(module_public_dir / f"control-{allowed}", ["model_control"])
    args = base_args(repo, extra=[f"--backend-config=python,interpreter={python}", *extra,
                                  "--model-control-mode=explicit", "--load-model=model_control"])
    if allowed:
        args.append("--backend-config=python,allow-model-control=true")
    srv = start_server(args, f"rampart[model control allowed={allowed}]")
    try:
        # Readiness is always answered; `simple` is not loaded yet.
        assert control(srv, "ready") == "ok False"
        if not allowed:
            for action in ("load", "unload"):
                result = control(srv, action)
                assert result.startswith("error") and "allow-model-control=true" in result, result
            assert srv.get("/v2/models/simple/ready").status_code != 200
            return
        assert control(srv, "load") == "ok True"
        assert srv.get("/v2/models/simple/ready").status_code == 200
        assert control(srv, "unload") == "ok False"
        assert srv.get("/v2/models/simple/ready").status_code != 200
    finally:
        finish_server(srv)
