"""Ensemble execution (docs/compatibility.md, "Ensembles"; Triton's behaviour as in its qa/L0_simple_ensemble and
qa/L0_decoupled), against the real binary through tritonclient over HTTP and gRPC.

One server serves one repository for the whole module:
- `simple` (the ONNX example model, INT32 [16] INPUT0/INPUT1 -> OUTPUT0 = sum, OUTPUT1 = difference) with
  `version_policy: { all {} }` and versions 1 and 2, under Triton's `ensemble_add_sub_int32_int32_int32` (six steps
  alternating simple v-1 (= 2) and v1; net result OUTPUT0 = IN0 + IN1, OUTPUT1 = IN0 - IN1);
- two branches over built-in `identity` models that sleep 300 ms (they must run in parallel);
- an ensemble whose inputs accept any shape, so that `simple` (a step) rejects what the ensemble accepted;
- Triton's L0_decoupled ensembles over the built-in decoupled `repeat` and `square` backends (`simple_repeat`,
  `sequence_repeat`, `repeat_square`, `nested_square`) and `max_inflight_requests` over a slow identity step.
It has client shared memory and metrics on. Loading, unloading, tracing: test_ensemble_lifecycle.py.

Statistics and metrics are compared before / after each test's own requests, so the tests do not depend on order.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from conftest import (
    GrpcClient,
    assert_error,
    assert_live,
    example_repo,
    finish_server,
    grpc_base_args,
    grpc_error,
    start_server,
    write_repo,
)
from decoupled_configs import REPEAT_INT32, SQUARE_INT32

ADD_SUB = "ensemble_add_sub_int32_int32_int32"
DECOUPLED_HTTP = "HTTP end point doesn't support models with decoupled transaction policy"
DECOUPLED_GRPC = "ModelInfer RPC doesn't support models with decoupled transaction policy"
METRICS_RE = re.compile(r"Started Metrics Service at (\S+):(\d+)")
DELAY_MS = 300  # each branch of the parallel ensemble
SLOW_MS = 50  # each execution of the identity step under max_inflight_requests

# ---------------------------------------------------------------------------------------------------------------
# Model configs
# ---------------------------------------------------------------------------------------------------------------


def identity(name: str, dtype: str, extra: str = "") -> str:
    """A built-in identity model, max_batch_size 0, INPUT0 -> OUTPUT0 of any length."""
    return f"""name: "{name}"
backend: "identity"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: {dtype} dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: {dtype} dims: [ -1 ] }} ]
{extra}"""


def delay(ms: int) -> str:
    return f'parameters {{ key: "execute_delay_ms" value: {{ string_value: "{ms}" }} }}'


def step(model: str, inputs: dict[str, str], outputs: dict[str, str], version: int = -1) -> str:
    """One `step` entry: `inputs` / `outputs` map the model's tensor names to ensemble tensors."""
    maps = [f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items()]
    maps += [f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items()]
    body = "\n      ".join(maps)
    return f'    {{\n      model_name: "{model}"\n      model_version: {version}\n      {body}\n    }}'


def tensors(kind: str, specs: list[tuple[str, str, str]]) -> str:
    entries = ",\n".join(f'  {{ name: "{n}" data_type: {t} dims: [ {d} ] }}' for n, t, d in specs)
    return f"{kind} [\n{entries}\n]"


def ensemble(name: str, max_batch: int, inputs, outputs, steps: list[str], scheduling: str = "") -> str:
    return (
        f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n'
        f"{tensors('input', inputs)}\n{tensors('output', outputs)}\n"
        f"ensemble_scheduling {{\n  {scheduling}\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
    )


ADD_SUB_IO = [("INPUT0", "TYPE_INT32", "16"), ("INPUT1", "TYPE_INT32", "16")]
ADD_SUB_OUT = [("OUTPUT0", "TYPE_INT32", "16"), ("OUTPUT1", "TYPE_INT32", "16")]
# Triton's qa/L0_simple_ensemble/models/ensemble_add_sub_int32_int32_int32.
ADD_SUB_CONFIG = ensemble(
    ADD_SUB,
    8,
    ADD_SUB_IO,
    ADD_SUB_OUT,
    [
        step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT0"}, {"OUTPUT0": "double_input0"}),
        step("simple", {"INPUT0": "INPUT1", "INPUT1": "INPUT1"}, {"OUTPUT0": "double_input1"}, version=1),
        step("simple", {"INPUT0": "double_input0", "INPUT1": "INPUT0"}, {"OUTPUT1": "input0_val"}),
        step("simple", {"INPUT0": "double_input1", "INPUT1": "INPUT1"}, {"OUTPUT1": "input1_val"}, version=1),
        step("simple", {"INPUT0": "input0_val", "INPUT1": "INPUT1"}, {"OUTPUT0": "OUTPUT0"}),
        step("simple", {"INPUT0": "INPUT0", "INPUT1": "input1_val"}, {"OUTPUT1": "OUTPUT1"}, version=1),
    ],
)

# Triton's qa/L0_decoupled ensembles: IN / DELAY / WAIT into repeat_int32, then on.
REPEAT_IN = [("IN", "TYPE_INT32", "-1"), ("DELAY", "TYPE_UINT32", "-1"), ("WAIT", "TYPE_UINT32", "1")]
REPEAT_FEED = {"IN": "IN", "DELAY": "DELAY", "WAIT": "WAIT"}
OUT = ("OUT", "TYPE_INT32", "1")
IDX = ("IDX", "TYPE_UINT32", "1")


def repeat_then_identity(name: str, model: str, scheduling: str = "") -> str:
    """sequence_repeat's shape: repeat -> repeat_out, IDX; `model`(repeat_out) -> OUT."""
    return ensemble(
        name,
        0,
        REPEAT_IN,
        [OUT, IDX],
        [
            step("repeat_int32", REPEAT_FEED, {"OUT": "repeat_out", "IDX": "IDX"}),
            step(model, {"INPUT0": "repeat_out"}, {"OUTPUT0": "OUT"}),
        ],
        scheduling,
    )


def then_square(name: str, first: str) -> str:
    """repeat_square / nested_square: `first` -> repeat_out -> square_int32 -> OUT."""
    return ensemble(
        name,
        0,
        REPEAT_IN,
        [OUT],
        [step(first, REPEAT_FEED, {"OUT": "repeat_out"}), step("square_int32", {"IN": "repeat_out"}, {"OUT": "OUT"})],
    )


MODELS = {
    ADD_SUB: ADD_SUB_CONFIG,
    # Any shape passes the ensemble; its step `simple` wants [batch, 16].
    "simple_any_shape": ensemble(
        "simple_any_shape",
        0,
        [("INPUT0", "TYPE_INT32", "-1, -1"), ("INPUT1", "TYPE_INT32", "-1, -1")],
        [("OUTPUT0", "TYPE_INT32", "-1, -1")],
        [step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT0": "OUTPUT0"})],
    ),
    "identity_slow_a": identity("identity_slow_a", "TYPE_FP32", delay(DELAY_MS)),
    "identity_slow_b": identity("identity_slow_b", "TYPE_FP32", delay(DELAY_MS)),
    "two_branches": ensemble(
        "two_branches",
        0,
        [("IN", "TYPE_FP32", "-1")],
        [("A", "TYPE_FP32", "-1"), ("B", "TYPE_FP32", "-1")],
        [
            step("identity_slow_a", {"INPUT0": "IN"}, {"OUTPUT0": "A"}),
            step("identity_slow_b", {"INPUT0": "IN"}, {"OUTPUT0": "B"}),
        ],
    ),
    "repeat_int32": REPEAT_INT32,
    "square_int32": SQUARE_INT32,
    "identity_int32": identity("identity_int32", "TYPE_INT32", "instance_group [ { count: 1 kind: KIND_CPU } ]"),
    "identity_int32_slow": identity(
        "identity_int32_slow", "TYPE_INT32", delay(SLOW_MS) + "\ninstance_group [ { count: 4 kind: KIND_CPU } ]"
    ),
    "simple_repeat": ensemble(
        "simple_repeat", 0, REPEAT_IN, [OUT, IDX], [step("repeat_int32", REPEAT_FEED, {"OUT": "OUT", "IDX": "IDX"})]
    ),
    "sequence_repeat": repeat_then_identity("sequence_repeat", "identity_int32"),
    "repeat_square": then_square("repeat_square", "repeat_int32"),
    "nested_square": then_square("nested_square", "simple_repeat"),
    "slow_limited": repeat_then_identity("slow_limited", "identity_int32_slow", "max_inflight_requests: 1"),
    "slow_unlimited": repeat_then_identity("slow_unlimited", "identity_int32_slow"),
}


def write_simple_repo(root: Path, models: dict[str, str]) -> Path:
    """`simple` (versions 1 and 2, version_policy all) plus the config-only `models`."""
    simple = root / "simple"
    shutil.copytree(example_repo() / "simple", simple)
    config = (simple / "config.pbtxt").read_text()
    config = config.replace("max_batch_size: 8", "max_batch_size: 8\nversion_policy: { all {} }")
    (simple / "config.pbtxt").write_text(config)
    shutil.copytree(simple / "1", simple / "2")
    return write_repo(root, models)


def metrics_on(args: list[str]) -> list[str]:
    return [a for a in args if a != "--allow-metrics=false"] + ["--metrics-address=127.0.0.1", "--metrics-port=0"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    repo = write_simple_repo(tmp_path_factory.mktemp("ensembles"), MODELS)
    server = start_server(metrics_on(grpc_base_args(repo, extra=["--allow-client-shm=true"])), "rampart[ensembles]")
    yield server
    finish_server(server)


@pytest.fixture(autouse=True)
def _server_alive(srv):
    yield
    assert_live(srv)


@pytest.fixture
def http(srv):
    """tritonclient.http client."""
    c = srv.client()
    yield c
    c.close()


@pytest.fixture
def gclient(srv):
    """tritonclient.grpc client (with default deadlines)."""
    with GrpcClient(srv.grpc_url) as c:
        yield c


@pytest.fixture(params=["http", "grpc"])
def any_client(request, http, gclient):
    """(client, tritonclient module) for each protocol."""
    return (http, httpclient) if request.param == "http" else (gclient, grpcclient)


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def tensor(module, name: str, array: np.ndarray, datatype: str):
    t = module.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array)
    return t


def add_sub_operands(batch: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(batch)
    return (rng.integers(-100, 100, (batch, 16), dtype=np.int32), rng.integers(-100, 100, (batch, 16), dtype=np.int32))


def infer_add_sub(client, module, a, b, outputs=("OUTPUT0", "OUTPUT1")):
    inputs = [tensor(module, "INPUT0", a, "INT32"), tensor(module, "INPUT1", b, "INT32")]
    return client.infer(ADD_SUB, inputs, outputs=[module.InferRequestedOutput(o) for o in outputs])


def success_counts(http, model: str) -> dict[str, int]:
    """version -> inference_stats.success.count (HTTP statistics)."""
    stats = http.get_inference_statistics(model)["model_stats"]
    return {s["version"]: s["inference_stats"]["success"]["count"] for s in stats}


def delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after}


def repeat_inputs(values, delays=None, wait: int = 0):
    delays = [0] * len(values) if delays is None else delays
    return [
        tensor(grpcclient, "IN", np.array(values, dtype=np.int32), "INT32"),
        tensor(grpcclient, "DELAY", np.array(delays, dtype=np.uint32), "UINT32"),
        tensor(grpcclient, "WAIT", np.array([wait], dtype=np.uint32), "UINT32"),
    ]


def final_flag(result) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


def param(result, key: str):
    """The value of response parameter `key` (whatever its kind)."""
    parameters = result.get_response().parameters
    assert key in parameters, f"response parameter {key!r} missing; parameters: {dict(parameters)}"
    p = parameters[key]
    return getattr(p, p.WhichOneof("parameter_choice"))


class Stream:
    """A gRPC bidirectional stream (tritonclient start_stream) whose (result, error) pairs land in a queue."""

    def __init__(self, srv):
        self.client = GrpcClient(srv.grpc_url)
        self.items: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.items.put((result, error)))

    def send(self, model: str, inputs, **kw) -> None:
        self.client.async_stream_infer(model, inputs, **kw)

    def next(self, timeout: float = 10.0):
        result, error = self.items.get(timeout=timeout)
        assert error is None, f"stream error: {error}"
        return result

    def until_final(self, timeout: float = 10.0) -> list:
        """Every response up to and including the one flagged final (needs enable_empty_final_response)."""
        got = [self.next(timeout)]
        while not final_flag(got[-1]):
            got.append(self.next(timeout))
        return got

    def assert_quiet(self, seconds: float = 0.3) -> None:
        with pytest.raises(queue.Empty):
            item = self.items.get(timeout=seconds)
            pytest.fail(f"unexpected stream item after the final response: {item}")

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.client.stop_stream()
        self.client.close()


def stream_decoupled(srv, model: str, inputs, request_id: str = "req") -> list:
    """One request to a decoupled model over a stream with empty final responses on: every response, final last."""
    with Stream(srv) as s:
        s.send(model, inputs, request_id=request_id, enable_empty_final_response=True)
        responses = s.until_final()
        s.assert_quiet()
    assert [final_flag(r) for r in responses] == [False] * (len(responses) - 1) + [True]
    assert all(r.get_response().id == request_id for r in responses), "every response carries the request id"
    return responses


def data(responses) -> list:
    return [r for r in responses if r.get_response().outputs]


def values(responses, name: str) -> list[int]:
    return [int(r.as_numpy(name).reshape(-1)[0]) for r in data(responses)]


# ---------------------------------------------------------------------------------------------------------------
# 1. Triton's ensemble_add_sub over ONNX `simple` (two versions)
# ---------------------------------------------------------------------------------------------------------------


def test_add_sub_computes_sum_and_difference(any_client):
    client, module = any_client
    for batch in (1, 8):
        a, b = add_sub_operands(batch)
        result = infer_add_sub(client, module, a, b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_add_sub_runs_both_versions_equally_and_counts_itself(http, gclient):
    """Triton's test_ensemble_add_sub: `simple` v1 and v2 each run 3 steps per request; the ensemble counts one
    successful request and one execution per request, and its batch sizes as inferences."""
    simple_before, ens_before = success_counts(http, "simple"), http.get_inference_statistics(ADD_SUB)["model_stats"][0]
    for client, module in ((http, httpclient), (gclient, grpcclient)):
        for batch in (1, 8):
            infer_add_sub(client, module, *add_sub_operands(batch))
    simple_after, ens_after = success_counts(http, "simple"), http.get_inference_statistics(ADD_SUB)["model_stats"][0]
    assert sorted(simple_after) == ["1", "2"], simple_after
    assert delta(simple_after, simple_before) == {"1": 12, "2": 12}
    assert ens_after["inference_stats"]["success"]["count"] - ens_before["inference_stats"]["success"]["count"] == 4
    assert ens_after["inference_stats"]["fail"]["count"] == ens_before["inference_stats"]["fail"]["count"]
    assert ens_after["execution_count"] - ens_before["execution_count"] == 4, ens_after
    assert ens_after["inference_count"] - ens_before["inference_count"] == 18, ens_after
    assert ens_after["last_inference"] > 0, ens_after


def test_only_the_steps_feeding_a_requested_output_run(any_client, http):
    """Triton's test_ensemble_add_sub_one_output: asking for OUTPUT0 alone runs only the v-1 (= v2) chain."""
    client, module = any_client
    before = success_counts(http, "simple")
    for batch in (1, 8):
        a, b = add_sub_operands(batch)
        result = infer_add_sub(client, module, a, b, outputs=("OUTPUT0",))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        assert result.as_numpy("OUTPUT1") is None, "OUTPUT1 was not asked for"
    assert delta(success_counts(http, "simple"), before) == {"1": 0, "2": 6}


def test_sequence_flags_are_echoed_in_the_responses(srv):
    """Triton's test_ensemble_sequence_flags: three streamed requests of one sequence (neither the ensemble nor
    `simple` has sequence batching); each response carries sequence_start / sequence_end of its request."""
    a, b = add_sub_operands(1)
    inputs = [tensor(grpcclient, "INPUT0", a, "INT32"), tensor(grpcclient, "INPUT1", b, "INT32")]
    flags = [(True, False), (False, False), (False, True)]
    with Stream(srv) as s:
        for i, (start, end) in enumerate(flags):
            s.send(ADD_SUB, inputs, outputs=[grpcclient.InferRequestedOutput("OUTPUT0")], request_id=f"seq_{i}",
                   sequence_id=42, sequence_start=start, sequence_end=end)
        responses = [s.next() for _ in flags]
    assert [r.get_response().id for r in responses] == ["seq_0", "seq_1", "seq_2"]
    assert [(param(r, "sequence_start"), param(r, "sequence_end")) for r in responses] == flags
    assert [param(r, "sequence_id") for r in responses] == [42] * 3
    for r in responses:
        np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), a + b)


# ---------------------------------------------------------------------------------------------------------------
# 2. Independent branches run in parallel
# ---------------------------------------------------------------------------------------------------------------


def test_independent_branches_run_in_parallel(any_client):
    client, module = any_client
    x = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    start = time.monotonic()
    result = client.infer("two_branches", [tensor(module, "IN", x, "FP32")])
    took = time.monotonic() - start
    np.testing.assert_array_equal(result.as_numpy("A"), x)
    np.testing.assert_array_equal(result.as_numpy("B"), x)
    assert DELAY_MS / 1000 <= took < 0.55, f"two {DELAY_MS} ms branches took {took:.3f} s (sequential: 0.6+)"


# ---------------------------------------------------------------------------------------------------------------
# 3. A step's error is the request's error
# ---------------------------------------------------------------------------------------------------------------


def test_a_step_error_fails_the_request_naming_the_ensemble_and_the_step_over_http(srv):
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 3], "data": [4, 5, 6]},
        ]
    }
    msg = assert_error(srv.infer("simple_any_shape", body), 400, "'simple'")
    assert msg.startswith("in ensemble 'simple_any_shape', "), msg


def test_a_step_error_fails_the_request_naming_the_ensemble_and_the_step_over_grpc(gclient):
    bad = np.arange(3, dtype=np.int32).reshape(1, 3)
    inputs = [tensor(grpcclient, "INPUT0", bad, "INT32"), tensor(grpcclient, "INPUT1", bad, "INT32")]
    msg = grpc_error(lambda: gclient.infer("simple_any_shape", inputs), grpc.StatusCode.INVALID_ARGUMENT, "'simple'")
    assert msg.startswith("in ensemble 'simple_any_shape', "), msg


def test_a_valid_request_through_the_same_ensemble_succeeds(http):
    """The ensemble of the error tests works when `simple` accepts the shape."""
    a, b = add_sub_operands(2)
    inputs = [tensor(httpclient, "INPUT0", a, "INT32"), tensor(httpclient, "INPUT1", b, "INT32")]
    np.testing.assert_array_equal(http.infer("simple_any_shape", inputs).as_numpy("OUTPUT0"), a + b)


# ---------------------------------------------------------------------------------------------------------------
# 4. Decoupled steps (Triton's qa/L0_decoupled ensembles), through gRPC streaming
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["simple_repeat", "sequence_repeat"])
def test_repeat_ensembles_send_one_response_per_element(srv, model):
    ins = [10, 11, 12, 13]
    responses = stream_decoupled(srv, model, repeat_inputs(ins, [5] * 4), request_id=f"{model}_r")
    assert values(responses, "OUT") == ins
    assert values(responses, "IDX") == [0, 1, 2, 3]


@pytest.mark.parametrize("model", ["repeat_square", "nested_square"])
def test_square_after_repeat_sends_n_responses_per_value(srv, model):
    """Triton's _nested_validate: n responses of value n, in runs (repeat's responses are 50 ms apart, as Triton's
    test spaces them, so that each run is over before the next starts)."""
    responses = stream_decoupled(srv, model, repeat_inputs([1, 2, 3], [50] * 3), request_id=f"{model}_r")
    assert values(responses, "OUT") == [1, 2, 2, 3, 3, 3]


@pytest.mark.parametrize("model", ["simple_repeat", "sequence_repeat", "repeat_square", "nested_square"])
def test_repeat_count_zero_sends_only_the_empty_final_response(srv, model):
    responses = stream_decoupled(srv, model, repeat_inputs([]), request_id=f"{model}_0")
    assert len(responses) == 1 and not data(responses), [r.get_response() for r in responses]


def test_decoupled_ensembles_are_refused_on_unary_endpoints(srv, http, gclient):
    """An ensemble with a decoupled step is decoupled (Triton computes the flag): refused as repeat_int32 is."""
    body = {
        "inputs": [
            {"name": "IN", "datatype": "INT32", "shape": [1], "data": [1]},
            {"name": "DELAY", "datatype": "UINT32", "shape": [1], "data": [0]},
            {"name": "WAIT", "datatype": "UINT32", "shape": [1], "data": [0]},
        ]
    }
    bare = srv.infer("repeat_int32", body)
    for model in ("simple_repeat", "nested_square"):
        r = srv.infer(model, body)
        assert (r.status_code, r.json()) == (bare.status_code, {"error": DECOUPLED_HTTP})
        with pytest.raises(InferenceServerException) as e:
            gclient.infer(model, repeat_inputs([1]))
        assert (e.value.status(), e.value.message()) == ("StatusCode.UNIMPLEMENTED", DECOUPLED_GRPC)
    assert http.get_model_config("simple_repeat")["model_transaction_policy"] == {"decoupled": True}


# ---------------------------------------------------------------------------------------------------------------
# 5. max_inflight_requests
# ---------------------------------------------------------------------------------------------------------------


def timed_stream(srv, model: str, n: int) -> tuple[list, float]:
    start = time.monotonic()
    responses = stream_decoupled(srv, model, repeat_inputs(list(range(100, 100 + n))), request_id=model)
    return responses, time.monotonic() - start


def test_max_inflight_requests_runs_one_step_request_at_a_time(srv):
    """repeat -> identity (4 instances, 50 ms per execution): with max_inflight_requests 1 the 16 identity requests
    run one after another (>= 800 ms) and answer in order; without the limit they spread over the instances."""
    limited, took = timed_stream(srv, "slow_limited", 16)
    assert values(limited, "OUT") == list(range(100, 116))
    assert values(limited, "IDX") == list(range(16))
    assert took >= 16 * SLOW_MS / 1000, f"16 x {SLOW_MS} ms under a limit of 1 took {took:.3f} s"
    log = srv.stderr_text() + srv.stdout_text()
    assert "Ensemble model 'slow_limited' configured with max_inflight_requests: 1" in log
    unlimited, took = timed_stream(srv, "slow_unlimited", 16)
    assert sorted(zip(values(unlimited, "IDX"), values(unlimited, "OUT"))) == [(i, 100 + i) for i in range(16)]
    assert took < 0.7, f"16 x {SLOW_MS} ms over 4 instances took {took:.3f} s"


# ---------------------------------------------------------------------------------------------------------------
# 6. Shared memory
# ---------------------------------------------------------------------------------------------------------------


def test_shared_memory_inputs_and_outputs_of_an_ensemble(http):
    a, b = add_sub_operands(2)
    n = a.nbytes
    tag = f"rampart_ens_{os.getpid()}"
    in_h = shm.create_shared_memory_region(f"{tag}_in", f"/{tag}_in", 2 * n)
    out_h = shm.create_shared_memory_region(f"{tag}_out", f"/{tag}_out", 2 * n)
    try:
        shm.set_shared_memory_region(in_h, [a, b])
        http.register_system_shared_memory(f"{tag}_in", f"/{tag}_in", 2 * n)
        http.register_system_shared_memory(f"{tag}_out", f"/{tag}_out", 2 * n)
        inputs = [httpclient.InferInput("INPUT0", [2, 16], "INT32"), httpclient.InferInput("INPUT1", [2, 16], "INT32")]
        outputs = [httpclient.InferRequestedOutput("OUTPUT0"), httpclient.InferRequestedOutput("OUTPUT1")]
        for i, (t, o) in enumerate(zip(inputs, outputs)):
            t.set_shared_memory(f"{tag}_in", n, offset=i * n)
            o.set_shared_memory(f"{tag}_out", n, offset=i * n)
        result = http.infer(ADD_SUB, inputs, outputs=outputs)
        assert result.get_output("OUTPUT0")["parameters"]["shared_memory_region"] == f"{tag}_out"
        np.testing.assert_array_equal(shm.get_contents_as_numpy(out_h, np.int32, [2, 16]), a + b)
        np.testing.assert_array_equal(shm.get_contents_as_numpy(out_h, np.int32, [2, 16], offset=n), a - b)
    finally:
        http.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(in_h)
        shm.destroy_shared_memory_region(out_h)


# ---------------------------------------------------------------------------------------------------------------
# 10. Metrics
# ---------------------------------------------------------------------------------------------------------------


def request_successes(srv) -> dict[tuple[str, str], float]:
    """(model, version) -> nv_inference_request_success, from /metrics."""
    m = METRICS_RE.search(srv.stderr_text() + srv.stdout_text())
    assert m, f"no 'Started Metrics Service at' line\n{srv.output()}"
    text = requests.get(f"http://127.0.0.1:{m.group(2)}/metrics", timeout=30).text
    out = {}
    for labels, value in re.findall(r"^nv_inference_request_success\{([^}]*)\} (\S+)$", text, re.M):
        d = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        out[(d["model"], d["version"])] = float(value)
    return out


def test_request_success_metric_counts_the_ensemble_and_each_composing_model(srv, http):
    before = request_successes(srv)
    infer_add_sub(http, httpclient, *add_sub_operands(1))
    after = request_successes(srv)
    keys = [(ADD_SUB, "1"), ("simple", "1"), ("simple", "2")]
    assert all(k in after for k in keys), sorted(after)
    assert [after[k] - before.get(k, 0) for k in keys] == [1, 3, 3]
