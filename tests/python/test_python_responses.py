"""When a Python model answers (crates/rampart-python/src/pending.rs, python/rampart_ipc.py): responses sent through
a request's response sender before `execute` returns, returned by it, or sent after it returned from a thread or an
asyncio task, for decoupled models and for the others, with Triton's rules (qa/L0_backend_python/response_sender):

- a decoupled model may send any number of responses, from any thread, until its final flag; returning anything
  but None is an error for the requests it has not ended;
- for a model that is not decoupled, the first response is the answer: a second one raises in the model, a final
  flag before any response is an error, and a response returned for a request already answered is dropped;
- the instance takes its next requests as soon as `execute` returns, so a decoupled model answering later (thread or
  `async def execute` on the worker's event loop) serves requests concurrently on one instance, and a decoupled
  model with dynamic batching gets several requests in one execute call;
- a worker that dies while requests wait for their answers fails them with UNAVAILABLE naming the model.

One fixture (python_models/response_sender) serves every variant; this module writes their configs.
"""

from __future__ import annotations

import queue
import time
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import GrpcClient, finish_server
from test_python_backend import (  # noqa: F401 - worker_python and module_public_dir are fixtures
    copy_repo,
    python_server,
    module_public_dir,
    worker_python,
)

CONFIG = """name: "{name}"
backend: "python"
max_batch_size: {max_batch}
{batching}
model_transaction_policy {{ decoupled: {decoupled} }}
parameters {{ key: "mode" value {{ string_value: "{mode}" }} }}
input [ {{ name: "INSTR" data_type: TYPE_INT32 dims: [ 6 ] }} ]
output [
  {{ name: "ID" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "COUNT" data_type: TYPE_INT32 dims: [ 1 ] }}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""

# name: (decoupled, async execute, dynamic batching)
VARIANTS = {
    "sender": (False, False, False),
    "sender_async": (False, True, False),
    "sender_decoupled": (True, False, False),
    "sender_decoupled_async": (True, True, False),
    "sender_decoupled_batching": (True, False, True),
    "sender_decoupled_async_batching": (True, True, True),
}

# The request's instructions: [responses before return, final flag before return, return a response,
# responses after return, final flag after return, kill the worker after return].
ZERO_PRE = [0, 1, 0, 0, 0, 0]
ZERO_POST = [0, 0, 0, 0, 1, 0]
ONE_PRE = [1, 1, 0, 0, 0, 0]
ONE_POST = [0, 0, 0, 1, 1, 0]
TWO_PRE = [2, 1, 0, 0, 0, 0]
TWO_POST = [0, 0, 0, 2, 1, 0]
PRE_AND_POST = [1, 0, 0, 3, 1, 0]
ON_RETURN = [0, 0, 1, 0, 0, 0]
PRE_AND_ON_RETURN = [1, 1, 1, 0, 0, 0]
ON_RETURN_AND_POST = [0, 0, 1, 1, 1, 0]
NOTHING = [0, 0, 0, 0, 0, 0]
KILL_AFTER_RETURN = [0, 0, 0, 0, 0, 1]
MUST_RETURN_NONE = "is using the decoupled mode and the execute function must return None"


@pytest.fixture(scope="module")
def srv(module_public_dir, worker_python):  # noqa: F811
    repo = copy_repo(module_public_dir / "repo", ["response_sender"])
    source = repo / "response_sender" / "1" / "model.py"
    for name, (decoupled, use_async, batching) in VARIANTS.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.py").write_bytes(source.read_bytes())
        (repo / name / "config.pbtxt").write_text(CONFIG.format(
            name=name,
            max_batch=8 if batching else 0,
            batching="dynamic_batching { max_queue_delay_microseconds: 300000 }" if batching else "",
            decoupled="true" if decoupled else "false",
            mode="async" if use_async else "sync",
        ))
    server = python_server(repo, worker_python, "rampart-python-responses")
    yield server
    finish_server(server)


def instr_input(instr: list[int], batched: bool):
    shape = [1, 6] if batched else [6]
    t = grpcclient.InferInput("INSTR", shape, "INT32")
    t.set_data_from_numpy(np.array(instr, dtype=np.int32).reshape(shape))
    return t


def infer_all(srv, model: str, instrs: list[list[int]], timeout: float = 15.0) -> list[list]:
    """Sends every request on one stream at once; for each, its outcome in order: ("OK", id, count) per
    response, ("ERR", message), and ("FINAL",) for a decoupled model's empty final response."""
    decoupled, _, batched = VARIANTS[model]
    results: queue.Queue = queue.Queue()
    ids = [f"r{i}-{uuid.uuid4().hex[:6]}" for i in range(len(instrs))]
    outcomes: dict[str, list] = {i: [] for i in ids}
    with GrpcClient(srv.grpc_url) as client:
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        try:
            for request_id, instr in zip(ids, instrs):
                client.async_stream_infer(model, [instr_input(instr, batched)], request_id=request_id,
                                          enable_empty_final_response=decoupled)
            open_ids = set(ids)
            deadline = time.monotonic() + timeout
            while open_ids:
                try:
                    result, error = results.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if error is not None:
                    # The stream's error carries no request ID; one request at a time makes it unambiguous.
                    assert len(open_ids) == 1, f"an error with several requests open: {error}"
                    request_id = next(iter(open_ids))
                    outcomes[request_id].append(("ERR", error.message()))
                    open_ids.discard(request_id)
                    continue
                response = result.get_response()
                request_id = response.id
                final = response.parameters["triton_final_response"].bool_param if decoupled else True
                if response.outputs:
                    out = (int(result.as_numpy("ID").reshape(-1)[0]), int(result.as_numpy("COUNT").reshape(-1)[0]))
                    outcomes[request_id].append(("OK", *out))
                elif final:
                    outcomes[request_id].append(("FINAL",))
                if final:
                    open_ids.discard(request_id)
        finally:
            client.stop_stream()
    return [outcomes[i] for i in ids]


def ids_of(outcome: list) -> list:
    return [o[1] if o[0] == "OK" else o[0] for o in outcome]


DECOUPLED_CASES = [
    (ZERO_PRE, ["FINAL"]),
    (ZERO_POST, ["FINAL"]),
    (ONE_PRE, [1000, "FINAL"]),
    (ONE_POST, [2000, "FINAL"]),
    (TWO_PRE, [1000, 1001, "FINAL"]),
    (TWO_POST, [2000, 2001, "FINAL"]),
    (PRE_AND_POST, [1000, 2000, 2001, 2002, "FINAL"]),
    # The sender closed the request before execute returned: the returned response goes nowhere.
    (PRE_AND_ON_RETURN, [1000, "FINAL"]),
]


@pytest.mark.parametrize("model", ["sender_decoupled", "sender_decoupled_async"])
@pytest.mark.parametrize("instr,expected", DECOUPLED_CASES)
def test_decoupled_responses_before_and_after_return(srv, model, instr, expected):
    [outcome] = infer_all(srv, model, [instr])
    assert ids_of(outcome) == expected, outcome


@pytest.mark.parametrize("model", ["sender_decoupled", "sender_decoupled_async"])
@pytest.mark.parametrize("instr", [ON_RETURN, ON_RETURN_AND_POST])
def test_a_decoupled_execute_returning_a_response_is_an_error(srv, model, instr):
    [outcome] = infer_all(srv, model, [instr])
    assert len(outcome) == 1 and outcome[0][0] == "ERR", outcome
    assert MUST_RETURN_NONE in outcome[0][1]
    assert "response_sender" in outcome[0][1] or model in outcome[0][1]


NON_DECOUPLED_CASES = [
    (ON_RETURN, [0]),
    (ONE_PRE, [1000]),
    (ONE_POST, [2000]),
    # The second send raises in the model; the first response was the answer.
    (TWO_PRE, [1000]),
    (PRE_AND_ON_RETURN, [1000]),
    # Returned first: the send after return raises in the model's thread.
    (ON_RETURN_AND_POST, [0]),
]


@pytest.mark.parametrize("model", ["sender", "sender_async"])
@pytest.mark.parametrize("instr,expected", NON_DECOUPLED_CASES)
def test_non_decoupled_answer_is_the_first_response(srv, model, instr, expected):
    [outcome] = infer_all(srv, model, [instr])
    assert ids_of(outcome) == expected, outcome


@pytest.mark.parametrize("model", ["sender", "sender_async"])
def test_non_decoupled_final_flag_before_a_response_is_an_error(srv, model):
    [outcome] = infer_all(srv, model, [ZERO_PRE])
    assert ids_of(outcome) == ["ERR"], outcome
    assert "Non-decoupled model cannot send complete final before sending a response" in outcome[0][1]


@pytest.mark.parametrize("model", ["sender", "sender_async"])
def test_non_decoupled_request_without_answer_or_sender_fails_at_once(srv, model):
    t0 = time.monotonic()
    [outcome] = infer_all(srv, model, [NOTHING])
    assert time.monotonic() - t0 < 5
    assert ids_of(outcome) == ["ERR"], outcome
    assert f"model '{model}' returned no response for a request" in outcome[0][1]


@pytest.mark.parametrize("model", ["sender_decoupled", "sender_decoupled_async"])
def test_one_instance_serves_decoupled_requests_concurrently(srv, model):
    """Each request answers 0.5 s after execute returned; six of them on the one instance end together, not one
    after the other (3 s)."""
    t0 = time.monotonic()
    outcomes = infer_all(srv, model, [ONE_POST] * 6)
    elapsed = time.monotonic() - t0
    assert [ids_of(o) for o in outcomes] == [[2000, "FINAL"]] * 6, outcomes
    assert elapsed < 2.0, f"six requests took {elapsed:.2f} s: the instance waited for each one's responses"


@pytest.mark.parametrize("model", ["sender_decoupled_batching", "sender_decoupled_async_batching"])
def test_a_decoupled_model_with_dynamic_batching_gets_requests_together(srv, model):
    instrs = [ZERO_PRE, ZERO_POST, ONE_PRE, ONE_POST, TWO_PRE, TWO_POST, PRE_AND_POST]
    outcomes = infer_all(srv, model, instrs)
    expected = [["FINAL"], ["FINAL"], [1000, "FINAL"], [2000, "FINAL"], [1000, 1001, "FINAL"],
                [2000, 2001, "FINAL"], [1000, 2000, 2001, 2002, "FINAL"]]
    assert [ids_of(o) for o in outcomes] == expected, outcomes
    counts = [o[2] for outcome in outcomes for o in outcome if o[0] == "OK"]
    assert max(counts) > 1, f"every execute call held one request: {outcomes}"


def test_a_worker_dying_after_execute_returned_fails_the_waiting_request(srv):
    [outcome] = infer_all(srv, "sender_decoupled", [KILL_AFTER_RETURN])
    assert ids_of(outcome) == ["ERR"], outcome
    assert "python model 'sender_decoupled'" in outcome[0][1] and "SIGKILL" in outcome[0][1], outcome
    # The next request restarts the worker.
    [outcome] = infer_all(srv, "sender_decoupled", [ONE_PRE])
    assert ids_of(outcome) == [1000, "FINAL"], outcome
