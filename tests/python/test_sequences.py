"""Sequence batching (stateful models, `sequence_batching` in config.pbtxt), docs/compatibility.md "Sequence
batching": the real binary through tritonclient.http and tritonclient.grpc, compared with Triton's behaviour
(core `sequence_batch_scheduler.cc`, `infer_request.cc`; client examples `simple_*sequence*`; server
qa/L0_sequence_batcher).

Models come from scripts/gen_sequence_models.py (see its docstring), plus, written here:
- `sequence_accumulator_idle`: sequence_accumulator with `max_sequence_idle_microseconds: 200000`;
- `sequence_ensemble`: an ensemble with one step over sequence_accumulator (IN -> INPUT, OUTPUT -> OUT).

Servers (module-scoped): one per engine (HTTP, gRPC and metrics on) started on first use; one with
TRITONSERVER_DELAY_SCHEDULER=4 (statistics of a held batch). The implicit-state tests and the load-time check run on
every engine (RAMPART_ENGINES); the rest on onnxruntime (the string-CORRID model is onnxruntime only). Security
(owner binding, bounds): test_sequence_security.py, which reuses the helpers here.

Each test uses sequence IDs of its own (`next_id`) and ends its sequences, so the tests do not depend on order.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import (
    HTTP_TIMEOUT,
    REPO_ROOT,
    base_args,
    concurrently,
    finish_server,
    grpc_base_args,
    grpc_error,
    grpc_request,
    running,
    selected_engines,
    start_server,
    typed_input,
    wait_models_settled,
)
from test_metrics import metrics_args, metrics_port

PROTOCOLS = ("http", "grpc")
DEFAULT_ENGINE = "onnxruntime" if "onnxruntime" in selected_engines() else selected_engines()[0]
ACC = "sequence_accumulator"
IDLE_MODEL = "sequence_accumulator_idle"
IDLE_US = 200_000
ENSEMBLE = "sequence_ensemble"
GRPC_CODES = {400: "StatusCode.INVALID_ARGUMENT", 403: "StatusCode.PERMISSION_DENIED", 503: "StatusCode.UNAVAILABLE"}

# Triton's example clients (client repo src/python/examples/simple_*sequence*_client.py).
VALUES = [11, 7, 5, 3, 2, 0, 1]
NEGATED = [-v for v in VALUES]

_ids = itertools.count(20_000)


def next_id() -> int:
    """A sequence ID no other test uses."""
    return next(_ids)


def next_ids(n: int) -> list[int]:
    return [next_id() for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------------
# Repository
# ---------------------------------------------------------------------------------------------------------------

ENSEMBLE_CONFIG = f"""name: "{ENSEMBLE}"
platform: "ensemble"
max_batch_size: 4
input [ {{ name: "IN" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }} ]
ensemble_scheduling {{
  step [ {{
    model_name: "{ACC}"
    model_version: -1
    input_map {{ key: "INPUT" value: "IN" }}
    output_map {{ key: "OUTPUT" value: "OUT" }}
  }} ]
}}
"""


def make_repo(dest: Path) -> Path:
    """scripts/gen_sequence_models.py into `dest`, plus the idle variant and the ensemble."""
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen_sequence_models.py"), str(dest)],
        capture_output=True,
        timeout=300,
        cwd=str(REPO_ROOT),
    )
    if proc.returncode != 0:
        pytest.fail(f"gen_sequence_models.py failed:\n{proc.stdout.decode()}\n{proc.stderr.decode()}", pytrace=False)
    idle = dest / IDLE_MODEL
    shutil.copytree(dest / ACC, idle)
    text = (idle / "config.pbtxt").read_text()
    assert "max_sequence_idle_microseconds: 2000000" in text, text
    text = text.replace(f'name: "{ACC}"', f'name: "{IDLE_MODEL}"')
    (idle / "config.pbtxt").write_text(text.replace("2000000", str(IDLE_US)))
    (dest / ENSEMBLE / "1").mkdir(parents=True)
    (dest / ENSEMBLE / "config.pbtxt").write_text(ENSEMBLE_CONFIG)
    return dest


@pytest.fixture(scope="module")
def seq_repo(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("sequence_repo"))


def test_generated_models_have_every_control_and_state_input(seq_repo):
    """Each generated ONNX graph takes exactly the config's inputs, control tensors and state inputs (Triton's
    onnxruntime backend: "expected ONNX input count = config inputs + #controls + #states")."""
    import onnx

    wrong = {}
    for config in sorted(seq_repo.glob("*/config.pbtxt")):
        onnx_file = config.parent / "1" / "model.onnx"
        if not onnx_file.is_file():
            continue
        text = config.read_text()
        declared = set(re.findall(r'\{ name: "(\w+)" control', text)) | set(re.findall(r'input_name: "(\w+)"', text))
        declared |= set(re.findall(r'^input \[ \{ name: "(\w+)"', text, re.M))
        graph = onnx.load(str(onnx_file)).graph
        takes = {i.name for i in graph.input} - {t.name for t in graph.initializer}
        if takes != declared:
            wrong[config.parent.name] = {"config only": sorted(declared - takes),
                                         "graph only": sorted(takes - declared)}
    assert not wrong, f"scripts/gen_sequence_models.py: graph inputs differ from the configs: {wrong}"


# ---------------------------------------------------------------------------------------------------------------
# Client helpers
# ---------------------------------------------------------------------------------------------------------------


def lib(proto: str):
    return httpclient if proto == "http" else grpcclient


def connect(srv, proto: str):
    """A tritonclient client of `proto` (caller closes it)."""
    return srv.client() if proto == "http" else srv.grpc_client()


def seq_inputs(proto: str, values, batched: bool = True, name: str = "INPUT") -> list:
    data = np.asarray(values, dtype=np.int32).reshape((-1, 1) if batched else (-1,))
    inp = lib(proto).InferInput(name, list(data.shape), "INT32")
    inp.set_data_from_numpy(data)
    return [inp]


def infer(client, proto: str, model: str, value, seq_id=0, start=False, end=False, *, batched=True,
          request_id="", headers=None, input_name="INPUT", output="OUTPUT", inputs=None):
    """One request of a sequence (`value`: an int, or a list for several rows); the InferResult."""
    m = lib(proto)
    values = value if isinstance(value, list) else [value]
    return client.infer(
        model,
        inputs if inputs is not None else seq_inputs(proto, values, batched, input_name),
        outputs=[m.InferRequestedOutput(output)],
        request_id=request_id,
        sequence_id=seq_id,
        sequence_start=start,
        sequence_end=end,
        headers=headers,
    )


def step(client, proto, model, value, seq_id, start=False, end=False, **kw) -> int:
    """One request of a sequence; its single OUTPUT value."""
    out = infer(client, proto, model, value, seq_id, start, end, **kw).as_numpy(kw.get("output", "OUTPUT"))
    assert out.size == 1, out
    return int(out.reshape(-1)[0])


def run_sequence(client, proto, model, seq_id, values, **kw) -> list[int]:
    """A whole sequence: START on the first value, END on the last; the outputs in order."""
    n = len(values)
    return [step(client, proto, model, v, seq_id, start=i == 0, end=i == n - 1, **kw) for i, v in enumerate(values)]


def refused(proto: str, status: int, fn, exact: str | None = None, contains=()) -> str:
    """`fn()` must fail with HTTP `status` / its gRPC code; checks the message, returns it."""
    try:
        result = fn()
    except InferenceServerException as exc:
        e = exc
    else:
        raise AssertionError(f"expected HTTP {status} / {GRPC_CODES[status]}, the request succeeded: {result!r}")
    want = str(status) if proto == "http" else GRPC_CODES[status]
    assert e.status() == want, f"expected {want}, got {e.status()}: {e.message()!r}"
    msg = e.message() or ""
    if exact is not None:
        assert msg == exact, f"error message mismatch:\n  expected: {exact!r}\n  got:      {msg!r}"
    for part in contains:
        assert part in msg, f"{msg!r} does not contain {part!r}"
    return msg


def in_parallel(fn, n: int) -> list:
    """`concurrently(fn, n)`; an exception in a thread is raised here."""
    def guarded(i):
        try:
            return fn(i)
        except Exception as e:  # noqa: BLE001 - re-raised below, in the test's thread
            return e

    results = concurrently(guarded, n)
    for r in results:
        if isinstance(r, Exception):
            raise r
    return results


def no_start(seq_id, model: str = ACC) -> str:
    """Triton's error for a non-START request of a sequence that is not open."""
    return (f"inference request for sequence {seq_id} to model '{model}' must specify the START flag on the first "
            "request of the sequence")


def running_sums(values, start: int = 0) -> list[int]:
    return list(itertools.accumulate(values, initial=start))[1:]


def model_stats(srv, model: str) -> dict:
    r = srv.get(f"/v2/models/{model}/versions/1/stats")
    assert r.status_code == 200, r.text
    (entry,) = r.json()["model_stats"]
    return entry


def batch_counts(stats: dict) -> dict[int, int]:
    """{batch size: executions} from a model's batch_stats."""
    return {b["batch_size"]: b["compute_infer"]["count"] for b in stats.get("batch_stats", [])}


def scrape(srv) -> str:
    r = requests.get(srv.metrics_url + "/metrics", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text[:500]
    return r.text


def metric(text: str, family: str, model: str) -> float:
    """The sample of `family` for version 1 of `model` (labels in either order)."""
    for line in text.splitlines():
        m = re.match(rf"{family}\{{([^}}]*)\}} (\S+)$", line)
        if m and f'model="{model}"' in m.group(1) and 'version="1"' in m.group(1):
            return float(m.group(2))
    raise AssertionError(f"no {family} sample for {model} version 1 in:\n" + text[-3000:])


# ---------------------------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(seq_repo):
    """`get(engine)`: the server of that engine over the sequence repository (started on first use)."""
    started: dict = {}

    def get(engine: str):
        if engine not in started:
            srv = start_server(metrics_args(grpc_base_args(seq_repo, engine)), f"rampart[{engine}, sequences]")
            srv.metrics_url = f"http://127.0.0.1:{metrics_port(srv)}"
            started[engine] = srv
        return started[engine]

    yield get
    for srv in started.values():
        finish_server(srv)


@pytest.fixture
def srv(servers, engine):
    return servers(engine)


@pytest.fixture
def ort(servers):
    """The default engine's server (onnxruntime when selected)."""
    return servers(DEFAULT_ENGINE)


@pytest.fixture(params=PROTOCOLS)
def proto(request):
    return request.param


@pytest.fixture
def ort_client(ort, proto):
    c = connect(ort, proto)
    yield c
    c.close()


# ---------------------------------------------------------------------------------------------------------------
# 1. Triton's example clients: simple_{http,grpc}_sequence_sync_infer_client.py, simple_grpc_sequence_stream_...
# ---------------------------------------------------------------------------------------------------------------


def example_plan(dyna: bool) -> list[tuple]:
    """(model, sequence id, values, expected outputs) of the example clients' three sequences."""
    int_model = "simple_dyna_sequence" if dyna else "simple_sequence"
    string_model = "simple_string_dyna_sequence" if dyna else "simple_sequence"
    string_id = "1002" if dyna else str(uuid.uuid4())
    if dyna:
        expected = ([1, 11, 7, 5, 3, 2, 0, 1001], [101, -11, -7, -5, -3, -2, 0, 1000], [20, 9, 2, -3, -6, -8, -8, 993])
    else:
        expected = ([1, *VALUES], [101, *NEGATED], [21, *NEGATED])
    return [
        (int_model, 1000, [0, *VALUES], expected[0]),
        (int_model, 1001, [100, *NEGATED], expected[1]),
        (string_model, string_id, [20, *NEGATED], expected[2]),
    ]


@pytest.mark.parametrize("dyna", [False, True], ids=["simple", "dyna"])
def test_example_sync_client(ort_client, proto, dyna):
    """The sync example clients: the three sequences' requests alternate, one at a time."""
    plan = example_plan(dyna)
    results: list[list[int]] = [[] for _ in plan]
    for n in range(len(VALUES) + 1):
        for k, (model, seq_id, values, _) in enumerate(plan):
            results[k].append(step(ort_client, proto, model, values[n], seq_id, start=n == 0, end=n == len(VALUES)))
    assert results == [p[3] for p in plan]


@pytest.mark.parametrize("dyna", [False, True], ids=["simple", "dyna"])
def test_example_stream_client(ort, dyna):
    """The stream example client: 24 requests of three sequences interleaved on ONE stream, request ids
    "<seqid>_<n>"; each sequence's responses come back in order with the right values."""
    plan = example_plan(dyna)
    responses: queue.Queue = queue.Queue()
    with ort.grpc_client() as client:
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        for n in range(len(VALUES) + 1):
            for model, seq_id, values, _ in plan:
                client.async_stream_infer(
                    model,
                    seq_inputs("grpc", [values[n]]),
                    outputs=[grpcclient.InferRequestedOutput("OUTPUT")],
                    request_id=f"{seq_id}_{n}",
                    sequence_id=seq_id,
                    sequence_start=n == 0,
                    sequence_end=n == len(VALUES),
                )
        got: dict[str, list[tuple[int, int]]] = {str(p[1]): [] for p in plan}
        for _ in range(len(plan) * (len(VALUES) + 1)):
            result, error = responses.get(timeout=30)
            assert error is None, f"stream error: {error}"
            seq, n = result.get_response().id.rsplit("_", 1)
            got[seq].append((int(n), int(result.as_numpy("OUTPUT")[0][0])))
        client.stop_stream()
    for model, seq_id, _, expected in plan:
        order = [n for n, _ in got[str(seq_id)]]
        assert order == list(range(len(VALUES) + 1)), f"sequence {seq_id}: responses out of order {order}"
        assert [v for _, v in got[str(seq_id)]] == expected, f"sequence {seq_id} of {model}"


def test_stream_reuses_an_id_right_after_its_end(ort):
    """Pipelined on one stream, twenty sequences one after the other on the same ID (START v, END w each). In
    Triton the END request closes the ID when it is enqueued, so the next START opens a new sequence: every
    request is answered, each pair gives [v, v + w]."""
    seq_id = next_id()
    pairs = [(10 * k + 1, 10 * k + 2) for k in range(20)]
    responses: queue.Queue = queue.Queue()
    with ort.grpc_client() as client:
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        for k, (first, last) in enumerate(pairs):
            for n, (value, start) in enumerate([(first, True), (last, False)]):
                client.async_stream_infer(ACC, seq_inputs("grpc", [value]), request_id=f"{k}_{n}", sequence_id=seq_id,
                                          sequence_start=start, sequence_end=not start)
        got, errors = {}, []
        for _ in range(2 * len(pairs)):
            result, error = responses.get(timeout=30)
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = int(result.as_numpy("OUTPUT")[0][0])
        client.stop_stream()
    assert not errors, f"{len(errors)} of {2 * len(pairs)} requests failed: {sorted(set(errors))}"
    assert got == {f"{k}_{n}": v for k, (a, b) in enumerate(pairs) for n, v in enumerate([a, a + b])}


# ---------------------------------------------------------------------------------------------------------------
# 2. Implicit state: a real running sum, on every engine
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [ACC, "sequence_accumulator_oldest"])
def test_running_sum_and_restart(srv, proto, model):
    """Triton's test_simple_sequence: 1..9 gives the running sums (45 last); after END a new START with the same
    ID starts from zero."""
    seq_id = next_id()
    client = connect(srv, proto)
    try:
        assert run_sequence(client, proto, model, seq_id, list(range(1, 10))) == running_sums(range(1, 10))
        assert run_sequence(client, proto, model, seq_id, [5, 6, 7]) == [5, 11, 18]
        assert step(client, proto, model, 4, seq_id, start=True, end=True) == 4, "a length-1 sequence"
    finally:
        client.close()


@pytest.mark.parametrize("model", [ACC, "sequence_accumulator_oldest"])
def test_concurrent_sequences_keep_their_own_state(srv, model):
    """Six sequences at once (more than the 4 slots of sequence_accumulator: two wait in the backlog), half over
    HTTP and half over gRPC, each with its own values: each gets its own running sums."""
    ids = next_ids(6)

    def one(i):
        proto = PROTOCOLS[i % 2]
        values = [100 * (i + 1) + k for k in range(6)]
        client = connect(srv, proto)
        try:
            return values, run_sequence(client, proto, model, ids[i], values)
        finally:
            client.close()

    for values, outputs in in_parallel(one, 6):
        assert outputs == running_sums(values)


def test_nobatch_state_starts_from_initial_state_file(srv, proto):
    """sequence_nobatch (max_batch_size 0): the state starts from initial_state/input_state_data (100) at every
    START, and is a running sum in between."""
    client = connect(srv, proto)
    try:
        seq_id = next_id()
        kw = dict(batched=False)
        assert run_sequence(client, proto, "sequence_nobatch", seq_id, [1, 2, 3], **kw) == [101, 103, 106]
        assert run_sequence(client, proto, "sequence_nobatch", seq_id, [5, -5], **kw) == [105, 100]
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------------------------
# 3. Triton's errors
# ---------------------------------------------------------------------------------------------------------------


def test_missing_correlation_id(ort_client, proto):
    for model in (ACC, "simple_sequence", "simple_dyna_sequence"):
        refused(proto, 400, lambda: step(ort_client, proto, model, 1, 0, start=True),
                exact=f"inference request to model '{model}' must specify a non-zero or non-empty correlation ID")


def test_batch_size_must_be_one(ort_client, proto):
    refused(proto, 400, lambda: infer(ort_client, proto, ACC, [1, 2], next_id(), start=True, end=True),
            exact=f"inference request to model '{ACC}' must specify batch-size 1 due to requirements of sequence "
            "batcher")


def test_first_request_must_have_start(ort_client, proto):
    """Triton's test_no_sequence_start (ID 37469245) and test_no_sequence_start2 (after END, no START)."""
    refused(proto, 400, lambda: step(ort_client, proto, ACC, 1, 37469245), exact=no_start(37469245))
    refused(proto, 400, lambda: step(ort_client, proto, ACC, 1, 37469245, end=True), exact=no_start(37469245))
    seq_id = next_id()
    assert run_sequence(ort_client, proto, ACC, seq_id, [1, 2, 3]) == [1, 3, 6]
    refused(proto, 400, lambda: step(ort_client, proto, ACC, 4, seq_id), exact=no_start(seq_id))
    refused(proto, 400, lambda: step(ort_client, proto, ACC, 4, seq_id, end=True), exact=no_start(seq_id))
    text_id = f"text-{seq_id}"
    refused(proto, 400, lambda: step(ort_client, proto, ACC, 4, text_id), exact=no_start(text_id))


def test_control_tensor_from_the_client_is_refused(ort_client, proto):
    """START is the server's input, not a config input: alone it is an unexpected input (Triton's
    Model::GetInput); next to INPUT, too many inputs (Triton's count message) or the same unexpected input."""
    seq_id = next_id()
    start_only = seq_inputs(proto, [1], name="START")
    refused(proto, 400, lambda: infer(ort_client, proto, ACC, 1, seq_id, start=True, inputs=start_only),
            exact=f"unexpected inference input 'START' for model '{ACC}'")
    both = seq_inputs(proto, [1]) + seq_inputs(proto, [1], name="START")
    msg = refused(proto, 400, lambda: infer(ort_client, proto, ACC, 1, seq_id, start=True, inputs=both))
    assert msg == f"unexpected inference input 'START' for model '{ACC}'" or (
        f"expected 1 inputs but got 2 inputs for model '{ACC}'" in msg
    ), msg
    assert run_sequence(ort_client, proto, ACC, seq_id, [2, 3]) == [2, 5], "the refused requests opened nothing"


def test_correlation_id_type_must_match_corrid(ort_client, proto):
    """A string ID on a UINT64 CORRID (and the reverse) is refused with Triton's LogRequest() prefix; a request
    without ID counts as UINT64 0 on a TYPE_STRING CORRID."""
    def mismatch(rid, model, got, want):
        return (f"[request id: {rid}] sequence batching control 'CORRID' data-type is '{got}', but model "
                f"'{model}' expects '{want}'")

    dyna, text = "simple_dyna_sequence", "simple_string_dyna_sequence"
    refused(proto, 400, lambda: step(ort_client, proto, dyna, 1, "1002", start=True, request_id="rq-1"),
            exact=mismatch("rq-1", dyna, "BYTES", "UINT64"))
    refused(proto, 400, lambda: step(ort_client, proto, dyna, 1, "1002", start=True),
            exact=mismatch("<id_unknown>", dyna, "BYTES", "UINT64"))
    refused(proto, 400, lambda: step(ort_client, proto, text, 1, next_id(), start=True, request_id="rq-2"),
            exact=mismatch("rq-2", text, "UINT64", "BYTES"))
    refused(proto, 400, lambda: step(ort_client, proto, text, 1, 0, start=True),
            exact=mismatch("<id_unknown>", text, "UINT64", "BYTES"))


def test_start_on_an_active_sequence_restarts_it(ort_client, proto):
    """Triton's test_no_sequence_end: START 1, 2, START 42, END 9 on one ID -> the second START resets: 51."""
    seq_id = next_id()
    outs = [step(ort_client, proto, ACC, v, seq_id, start=s, end=e)
            for v, s, e in [(1, True, False), (2, False, False), (42, True, False), (9, False, True)]]
    assert outs == [1, 3, 42, 51]


@pytest.mark.parametrize("param, value, kind, expected", [
    ("sequence_id", 1.5, "double",
     "invalid value type for 'sequence_id' parameter, expected int64_param or string_param."),
    ("sequence_start", 1, "int64", "invalid value type for 'sequence_start' parameter, expected bool_param."),
    ("sequence_end", "yes", "string", "invalid value type for 'sequence_end' parameter, expected bool_param."),
])
def test_grpc_sequence_parameter_types(ort, param, value, kind, expected):
    """Triton's gRPC frontend (infer_handler.cc) refuses sequence parameters of the wrong kind."""
    params = {"sequence_id": next_id(), "sequence_start": True, param: (value, kind)}
    request = grpc_request(ACC, [typed_input("INPUT", "INT32", np.array([[1]], dtype=np.int32))], parameters=params)
    grpc_error(lambda: ort.grpc_stub().ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT, exact=expected)


def test_control_the_model_lacks_is_refused_at_load(seq_repo, tmp_path, engine):
    """Triton's onnxruntime backend refuses to load a model whose config names a control tensor the ONNX graph
    does not have (sequence_nobatch has no START input)."""
    shutil.copytree(seq_repo / "sequence_nobatch", tmp_path / "missing_control")
    config = tmp_path / "missing_control" / "config.pbtxt"
    text = config.read_text().replace('name: "sequence_nobatch"', 'name: "missing_control"')
    start = '{ name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },'
    config.write_text(text.replace("control_input [", "control_input [\n    " + start, 1))
    with running(base_args(tmp_path, engine, ["--exit-on-error=false"]), f"rampart[{engine}, missing control]",
                 wait="live") as bad:
        (entry,) = wait_models_settled(bad)
    assert entry["state"] == "UNAVAILABLE", entry
    assert "configuration specified sequence control 'START', but model does not provide that input" in entry.get(
        "reason", ""), entry


# ---------------------------------------------------------------------------------------------------------------
# 4. Idle sequences
# ---------------------------------------------------------------------------------------------------------------


def test_idle_sequence_is_released(ort, proto):
    """max_sequence_idle_microseconds (200 ms here): requests closer together than that keep the sequence; after
    a longer pause it is gone (Triton: no error until the next non-START request, which gets the START-flag
    error). The release shows in rampart_sequences_idle_released_total and rampart_sequences_open."""
    client = connect(ort, proto)
    try:
        before = metric(scrape(ort), "rampart_sequences_idle_released_total", IDLE_MODEL)
        kept = next_id()
        outs = [step(client, proto, IDLE_MODEL, 1, kept, start=True)]
        for v in range(2, 7):
            time.sleep(IDLE_US / 1e6 / 4)
            outs.append(step(client, proto, IDLE_MODEL, v, kept))
        assert outs == running_sums(range(1, 7)), "requests 50 ms apart kept the sequence for 250 ms"
        assert metric(scrape(ort), "rampart_sequences_open", IDLE_MODEL) == 1
        time.sleep(IDLE_US / 1e6 * 3)
        refused(proto, 400, lambda: step(client, proto, IDLE_MODEL, 7, kept, end=True),
                exact=no_start(kept, IDLE_MODEL))
        text = scrape(ort)
        assert metric(text, "rampart_sequences_idle_released_total", IDLE_MODEL) >= before + 1
        assert metric(text, "rampart_sequences_open", IDLE_MODEL) == 0
        assert run_sequence(client, proto, IDLE_MODEL, kept, [7, 8]) == [7, 15], "START again: a fresh state"
    finally:
        client.close()


def test_open_sequences_gauge(ort):
    """rampart_sequences_open counts a started sequence until its END has run."""
    with ort.grpc_client() as client:
        before = metric(scrape(ort), "rampart_sequences_open", "sequence_nobatch")
        seq_id = next_id()
        assert step(client, "grpc", "sequence_nobatch", 1, seq_id, start=True, batched=False) == 101
        assert metric(scrape(ort), "rampart_sequences_open", "sequence_nobatch") == before + 1
        assert step(client, "grpc", "sequence_nobatch", 1, seq_id, end=True, batched=False) == 102
        assert metric(scrape(ort), "rampart_sequences_open", "sequence_nobatch") == before


# ---------------------------------------------------------------------------------------------------------------
# 5. Server metadata
# ---------------------------------------------------------------------------------------------------------------


def test_server_metadata_lists_sequence_extension(ort_client, proto):
    meta = ort_client.get_server_metadata()
    extensions = meta["extensions"] if proto == "http" else list(meta.extensions)
    assert "sequence" in extensions, extensions


# ---------------------------------------------------------------------------------------------------------------
# 7. TRITONSERVER_DELAY_SCHEDULER: one held batch of four sequences
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def delay_server(seq_repo):
    env = {**os.environ, "TRITONSERVER_DELAY_SCHEDULER": "4"}
    srv = start_server(base_args(seq_repo, DEFAULT_ENGINE), "rampart[sequences, delay scheduler]", env=env)
    yield srv
    finish_server(srv)


def test_delay_scheduler_batches_four_starts(delay_server):
    """Triton's test_full_batch with TRITONSERVER_DELAY_SCHEDULER=4: the four STARTs (one instance, four slots)
    run as ONE execution of batch size 4. Then one request per sequence, one at a time: a direct batch spans
    slots 0..highest ready slot, so they run as batches of 1, 2, 3 and 4 rows (null rows pad the lower
    slots), and Triton's batch_stats count the padded size (qa check_status; inference_count counts real
    requests only)."""
    ids = next_ids(4)

    def start(i):
        with delay_server.client() as client:
            return step(client, "http", ACC, 10 * (i + 1), ids[i], start=True)

    assert in_parallel(start, 4) == [10, 20, 30, 40]
    held = model_stats(delay_server, ACC)
    assert batch_counts(held) == {4: 1}, held
    assert (held["inference_count"], held["execution_count"]) == (4, 1), held
    with delay_server.client() as client:
        assert [step(client, "http", ACC, 1, i, end=True) for i in ids] == [11, 21, 31, 41]
    after = model_stats(delay_server, ACC)
    assert (after["inference_count"], after["execution_count"]) == (8, 5), after
    assert batch_counts(after) == {1: 1, 2: 1, 3: 1, 4: 2}, after


# ---------------------------------------------------------------------------------------------------------------
# 8. Sequences inside an ensemble
# ---------------------------------------------------------------------------------------------------------------


def test_ensemble_passes_sequence_parameters(ort_client, proto):
    seq_id = next_id()
    outs, echoed = [], []
    for i, v in enumerate([1, 2, 3, 4]):
        result = infer(ort_client, proto, ENSEMBLE, v, seq_id, start=i == 0, end=i == 3, input_name="IN", output="OUT")
        outs.append(int(result.as_numpy("OUT")[0][0]))
        response = result.get_response()
        params = response.get("parameters", {}) if proto == "http" else {
            k: getattr(p, p.WhichOneof("parameter_choice")) for k, p in response.parameters.items()}
        echoed.append(params.get("sequence_id"))
    assert outs == [1, 3, 6, 10]
    assert echoed == [seq_id] * 4


def test_ensemble_sequence_errors(ort_client, proto):
    prefix = f"in ensemble '{ENSEMBLE}', "
    kw = dict(input_name="IN", output="OUT")
    refused(proto, 400, lambda: step(ort_client, proto, ENSEMBLE, 1, 0, start=True, **kw),
            exact=prefix + f"inference request to model '{ACC}' must specify a non-zero or non-empty correlation ID")
    seq_id = next_id()
    refused(proto, 400, lambda: step(ort_client, proto, ENSEMBLE, 1, seq_id, **kw),
            exact=prefix + no_start(seq_id))
