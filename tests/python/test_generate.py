"""Triton's generate extension (crates/rampart-http/src/generate.rs): `POST /v2/models/<m>[/versions/<v>]/generate`
answers one JSON object, `.../generate_stream` answers Server-Sent Events (`data: <json>\n\n`), for any model.

The first part ports Triton's qa/L0_http/generate_endpoint_test.py (its 18 tests, same payloads) against the fixture
model python_models/mock_llm (decoupled; PROMPT -> TEXT; request parameters REPETITION, DELAY, FAIL_LAST,
OUTPUT_0_DIM). Where Rampart deliberately differs, the test asserts Rampart's answer and a comment says what
Triton does. The rest covers an ordinary (ONNX, non-decoupled) model, the version route, id and `parameters`
rules (request_info echoes the request's id and parameters), FP16 outputs, client disconnects, the restricted
API, --model-access, --http-max-input-size and SageMaker's SAGEMAKER_TRITON_INFERENCE_TYPE=generate|generate_stream.

Python models run as uid 65534 when the server runs as root: the repository is a world-readable temporary directory
and the interpreter is test_python_backend's `worker_python`.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import requests

from cloud_frontends import FrontEnd
from conftest import (
    HTTP_TIMEOUT,
    assert_error,
    assert_live,
    base_args,
    concurrently,
    example_repo,
    finish_server,
    running,
    start_server,
)
from test_python_backend import copy_repo, worker_python  # noqa: F401  (worker_python is a fixture)

MODEL = "mock_llm"
SSE = "text/event-stream; charset=utf-8"
JSON = "application/json"
EXPECTS_ONE = (
    "generate expects model to produce exactly 1 response, use generate stream for model that generates various "
    "number of responses"
)
TOO_BIG = " bytes exceeds the maximum allowed input size of "
HALF_CONFIG = """backend: "python"
input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "Y" data_type: TYPE_FP16 dims: [ 1 ] } ]
"""
HALF_MODEL = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy().astype(np.float16))]
            )
            for r in requests
        ]
"""
SIMPLE_BODY = {"INPUT0": list(range(16)), "INPUT1": [1] * 16}
SIMPLE_OUT = {"OUTPUT0": [x + 1 for x in range(16)], "OUTPUT1": [x - 1 for x in range(16)]}


# ---------------------------------------------------------------------------------------------------------------
# Servers and helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gen_repo():
    """mock_llm, request_info (python fixtures), `half` (python, FP16 output) and a copy of examples' simple."""
    root = Path(tempfile.mkdtemp(prefix="rampart-generate-test-"))
    root.chmod(0o755)
    repo = root / "repo"
    repo.mkdir()
    shutil.copytree(example_repo() / "simple", repo / "simple")
    (repo / "half" / "1").mkdir(parents=True)
    (repo / "half" / "config.pbtxt").write_text(HALF_CONFIG)
    (repo / "half" / "1" / "model.py").write_text(HALF_MODEL)
    copy_repo(repo, [MODEL, "request_info"])  # also makes everything under repo world-readable
    yield repo
    shutil.rmtree(root, ignore_errors=True)


def python_args(worker_python) -> list[str]:
    python, extra = worker_python
    return [f"--backend-config=python,interpreter={python}", *extra]


@pytest.fixture(scope="module")
def gsrv(gen_repo, worker_python):
    srv = start_server(base_args(gen_repo, extra=python_args(worker_python)), "rampart-generate")
    yield srv
    finish_server(srv)


@pytest.fixture(autouse=True)
def _still_live(request):
    yield
    if "gsrv" in request.fixturenames:
        assert_live(request.getfixturevalue("gsrv"))


def post(srv, route: str, body, model: str = MODEL, **kw) -> requests.Response:
    """POST a generate body (a dict is sent as JSON; str, bytes or an iterable of bytes as is) to
    `/v2/models/<model>/<route>`."""
    data = json.dumps(body) if isinstance(body, dict) else body
    kw.setdefault("timeout", HTTP_TIMEOUT)
    return requests.post(f"{srv.base}/v2/models/{model}/{route}", data=data, **kw)


def generate(srv, body, model: str = MODEL, **kw) -> requests.Response:
    return post(srv, "generate", body, model, **kw)


def generate_stream(srv, body, model: str = MODEL, stream: bool = False, **kw) -> requests.Response:
    headers = {"Accept": "text/event-stream", **kw.pop("headers", {})}
    return post(srv, "generate_stream", body, model, headers=headers, stream=stream, **kw)


def parse_event(raw: bytes) -> dict:
    assert raw.startswith(b"data: ") and b"\n" not in raw, f"not a `data: <json>` event: {raw!r}"
    return json.loads(raw[len(b"data: ") :])


def iter_events(r: requests.Response):
    """The events of an SSE body, each yielded as soon as its terminating blank line has arrived."""
    buf = b""
    for chunk in r.iter_content(chunk_size=None):
        buf += chunk
        while b"\n\n" in buf:
            raw, buf = buf.split(b"\n\n", 1)
            yield parse_event(raw)
    assert buf == b"", f"bytes after the last event: {buf!r}"


def check_sse(r: requests.Response, expected: list[dict], status: int = 200) -> list[dict]:
    """Status, Content-Type, and exactly len(expected) events, each holding the expected key/values."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["Content-Type"] == SSE, r.headers
    events = list(iter_events(r))
    assert len(events) == len(expected), events
    for got, want in zip(events, expected):
        assert {k: got.get(k) for k in want} == want, got
    return events


def check_json(r: requests.Response, status: int = 200) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["Content-Type"] == JSON, r.headers
    return r.json()


def expect_failure(r: requests.Response, status: int, *parts: str, exact: str | None = None) -> str:
    """An error before streaming starts: JSON on both endpoints (never `data:` framing)."""
    assert r.headers["Content-Type"] == JSON, r.headers
    return assert_error(r, status, *parts, exact=exact)


def both(srv, body) -> list[requests.Response]:
    return [generate(srv, body), generate_stream(srv, body)]


# ---------------------------------------------------------------------------------------------------------------
# Triton's qa/L0_http/generate_endpoint_test.py
# ---------------------------------------------------------------------------------------------------------------


def test_generate(gsrv):
    r = generate(gsrv, {"PROMPT": "hello world", "STREAM": False})
    assert check_json(r)["TEXT"] == "hello world"
    # Compact JSON, keys in byte order, a one-element output as a bare value.
    assert r.text == '{"TEXT":"hello world","model_name":"mock_llm","model_version":"1"}'


def test_generate_with_all_inputs(gsrv):
    r = generate(gsrv, {"PROMPT": "hello world", "STREAM": False, "input_ids": [100, 200]})
    assert check_json(r)["TEXT"] == "hello world"


def test_request_id(gsrv):
    data = check_json(generate(gsrv, {"PROMPT": "hello world", "id": "42", "STREAM": False}))
    assert data["id"] == "42" and data["TEXT"] == "hello world", data
    data = check_json(generate(gsrv, {"PROMPT": "hello world", "STREAM": False}))
    assert "id" not in data and data["TEXT"] == "hello world", data
    data = check_json(generate(gsrv, {"PROMPT": "hello world", "id": "", "STREAM": False}))
    assert "id" not in data and data["TEXT"] == "hello world", data
    # Every event of a stream carries the id.
    r = generate_stream(gsrv, {"PROMPT": "hi", "id": "s-1", "STREAM": True, "REPETITION": 2})
    check_sse(r, [{"id": "s-1", "TEXT": "hi"}] * 2)
    # A non-string id is refused (Triton's message and code).
    for r in both(gsrv, {"PROMPT": "hi", "id": 42, "STREAM": False}):
        expect_failure(r, 500, "Unable to parse 'id': attempt to access JSON non-string as string")


def test_generate_stream(gsrv):
    r = generate_stream(gsrv, {"PROMPT": ["hello world"], "STREAM": True, "REPETITION": 3})
    check_sse(r, [{"TEXT": "hello world", "model_name": MODEL, "model_version": "1"}] * 3)


def test_streaming(gsrv):
    """Each response is flushed as its own event when the model sends it (DELAY 2 s before each)."""
    body = {"PROMPT": ["hello world"], "STREAM": True, "REPETITION": 3, "DELAY": 2}
    past = time.monotonic()
    gaps = []
    with generate_stream(gsrv, body, stream=True) as r:
        assert r.status_code == 200 and r.headers["Content-Type"] == SSE, r.headers
        for event in iter_events(r):
            now = time.monotonic()
            gaps.append(now - past)
            past = now
            assert event["TEXT"] == "hello world", event
    assert len(gaps) == 3 and all(1 < g < 3 for g in gaps), gaps


def test_missing_inputs(gsrv):
    # Triton: "expected number of inputs between 2 and 3 but got 0 inputs ..." (it counts the optional input).
    for body in ({}, {"abc": 123}):
        for r in both(gsrv, body):
            expect_failure(
                r, 400, "expected 2 inputs but got 0 inputs", "missing required input(s) ['PROMPT','STREAM']"
            )
    for body in ({"PROMPT": "hello"}, {"STREAM": False}, {"STREAM": False, "other": "param"}):
        for r in both(gsrv, body):
            expect_failure(r, 400, "expected 2 inputs but got 1 inputs")


def test_invalid_input_types(gsrv):
    # Triton: 500 "attempt to access JSON non-string as string" / "... non-boolean as boolean"; Rampart uses the
    # wording of /infer (the input's name, 400). Errors are reported in document order, as in Triton.
    cases = [
        ({"PROMPT": 123, "STREAM": False}, "PROMPT"),
        ({"PROMPT": "hello", "STREAM": "false"}, "STREAM"),
        ({"PROMPT": True, "STREAM": 123}, "PROMPT"),
        ({"STREAM": 123, "PROMPT": True}, "STREAM"),
    ]
    for body, name in cases:
        for r in both(gsrv, body):
            expect_failure(r, 400, f"input '{name}'")


def test_json_dtype_size_expansion_exceeds_limit_error(gsrv):
    text = base64.b64encode(bytes([1] * (64 * 1024 * 1024))).decode()
    for body in (
        {"PROMPT": text, "STREAM": False},
        {"INPUT0": text[: len(text) // 2], "INPUT1": text[len(text) // 2 :], "STREAM": False},
    ):
        msg = expect_failure(generate(gsrv, body, timeout=120), 400, "request JSON size of ", TOO_BIG)
        assert "67108864 bytes. Use --http-max-input-size to increase the limit." in msg, msg


def test_duplicate_inputs(gsrv):
    # As in Triton: keys are taken in document order and an input given twice is refused by name.
    cases = [
        ('{"PROMPT": "hello", "STREAM": false, "PROMPT": "duplicate"}', "PROMPT"),
        ('{"PROMPT": "hello", "STREAM": false, "STREAM": false}', "STREAM"),
        ('{"PROMPT": "hello", "STREAM": false, "PROMPT": "duplicate", "STREAM": true}', "PROMPT"),
        ('{"PROMPT": "hello", "STREAM": false, "STREAM": true, "PROMPT": "duplicate"}', "STREAM"),
    ]
    for body, name in cases:
        for r in both(gsrv, body):
            expect_failure(r, 400, f"input '{name}' already exists in request")
    # The same input at the top level and inside `parameters`: refused the same way.
    for r in both(gsrv, '{"PROMPT": "a", "STREAM": false, "parameters": {"PROMPT": "b"}}'):
        expect_failure(r, 400, "input 'PROMPT' already exists in request")


def test_generate_stream_response_error(gsrv):
    body = {"PROMPT": ["hello world"], "STREAM": True, "REPETITION": 0, "FAIL_LAST": True}
    # The error is the first response, so it sets the status (INTERNAL -> 500); the body is still one event.
    check_sse(generate_stream(gsrv, body), [{"error": "An Error Occurred"}], status=500)
    body["REPETITION"] = 1
    check_sse(generate_stream(gsrv, body), [{"TEXT": "hello world"}, {"error": "An Error Occurred"}])


def test_race_condition(gsrv):
    bodies = [
        {"PROMPT": "hello", "STREAM": False, "param": "segfault"},
        {"PROMPT": "hello", "STREAM": True, "REPETITION": 3, "param": "segfault"},
    ]

    def one(i):
        r = generate_stream(gsrv, bodies[i % 2])
        return r.status_code, [e.get("TEXT") for e in iter_events(r)]

    results = concurrently(one, 100)
    for i, result in enumerate(results):
        assert result == (200, ["hello"] * (1 if i % 2 == 0 else 3)), (i, result)


def test_one_response(gsrv):
    """STREAM true: one response, then a separate flag-only final (still one response for /generate);
    STREAM false: one response carrying the final flag."""
    for stream in (True, False):
        body = {"PROMPT": "hello world", "STREAM": stream}
        check_sse(generate_stream(gsrv, body), [{"TEXT": "hello world"}])
        assert check_json(generate(gsrv, body))["TEXT"] == "hello world"


def test_zero_response(gsrv):
    body = {"PROMPT": "hello world", "STREAM": True, "REPETITION": 0}
    r = generate_stream(gsrv, body)
    check_sse(r, [])
    assert r.content == b""
    # Triton: 200 with this error as the body (the status is committed by the first, flag-only, callback).
    expect_failure(generate(gsrv, body), 500, EXPECTS_ONE)


def test_many_response(gsrv):
    body = {"PROMPT": "hello world", "STREAM": True, "REPETITION": 2}
    check_sse(generate_stream(gsrv, body), [{"TEXT": "hello world"}] * 2)
    # Triton: 200 with this error as the body.
    msg = expect_failure(generate(gsrv, body), 500, EXPECTS_ONE)
    assert msg == EXPECTS_ONE, msg


def test_complex_schema(gsrv):
    body = {"PROMPT": "hello world", "STREAM": True, "PARAMS": {"PARAM_0": 0, "PARAM_1": True, "PARAM_2": 123.123}}
    msg = "parameter 'PARAMS' has invalid type. It should be either 'int', 'bool', or 'string'."
    expect_failure(generate(gsrv, body), 400, exact=msg)
    # Triton: 500 "attempt to access JSON non-string as string".
    body = {"PROMPT": {"USER": "hello world", "BOT": "world hello"}, "STREAM": True}
    expect_failure(generate(gsrv, body), 400, "input 'PROMPT'")


def test_close_connection_during_streaming(gsrv):
    body = {"PROMPT": ["hello world"], "STREAM": True, "REPETITION": 3, "DELAY": 2}
    r = generate_stream(gsrv, body, stream=True)
    r.close()
    assert requests.get(f"{gsrv.base}/v2/health/live", timeout=HTTP_TIMEOUT).status_code == 200


def test_disconnect_cancels_the_request(gsrv):
    """Closing the stream cancels the request: the model sees is_cancelled() and stops early (it logs how many of
    its responses it sent); the next request is served."""
    body = {"PROMPT": ["bye"], "STREAM": True, "REPETITION": 40, "DELAY": 0.25}
    with generate_stream(gsrv, body, stream=True) as r:
        assert next(iter_events(r))["TEXT"] == "bye"
    pattern = re.compile(r"mock_llm: request cancelled after (\d+) of 40 responses")
    deadline = time.monotonic() + 15
    while not (m := pattern.search(gsrv.stderr_text() + gsrv.stdout_text())):
        assert time.monotonic() < deadline, f"the model never saw the cancellation\n{gsrv.output()}"
        time.sleep(0.1)
    assert 1 <= int(m.group(1)) < 40, m.group(0)
    assert check_json(generate(gsrv, {"PROMPT": "after", "STREAM": False}))["TEXT"] == "after"


def test_parameters(gsrv):
    body = {"PROMPT": ["hello world"], "STREAM": True, "parameters": {"REPETITION": 3}}
    check_sse(generate_stream(gsrv, body), [{"TEXT": "hello world"}] * 3)
    body = {"PROMPT": ["hello world"], "STREAM": True, "parameters": 1}
    msg = "Expected JSON object for keyword: 'parameters': attempt to access JSON non-object as object"
    expect_failure(generate(gsrv, body), 500, exact=msg)
    body = {"PROMPT": ["hello world"], "STREAM": True, "parameters": {"nested": {"twice": 1}}}
    msg = "parameter 'nested' has invalid type. It should be either 'int', 'bool', or 'string'."
    expect_failure(generate(gsrv, body), 400, exact=f"Converting keyword: 'parameters': {msg}")


def test_0_dimension_output(gsrv):
    body = {"PROMPT": "hello world", "STREAM": False, "REPETITION": 0, "OUTPUT_0_DIM": True}
    assert check_json(generate(gsrv, body))["TEXT"] == []


# ---------------------------------------------------------------------------------------------------------------
# Beyond Triton's suite
# ---------------------------------------------------------------------------------------------------------------


def request_info(srv, body, **kw) -> tuple[dict, dict]:
    """(the response object, the request's parameters as the model saw them)."""
    data = check_json(generate(srv, body, model="request_info", **kw))
    return data, json.loads(data["PARAMETERS"])


def test_parameters_nesting_and_types(gsrv):
    """Keys that name no input are parameters (string, int, bool, double); the members of `parameters` follow the
    same rule, so an input may be given inside it; null, arrays and objects are refused."""
    data, params = request_info(gsrv, {"IN": 7, "s": "x", "n": 3, "b": True, "f": 1.5, "parameters": {"m": -2}})
    assert params == {"s": "x", "n": 3, "b": True, "f": 1.5, "m": -2}, params
    assert data["FLAGS"] == 0 and data["ID"] == "", data
    _, params = request_info(gsrv, {"parameters": {"IN": [7], "n": 3}, "top": "t"})
    assert params == {"n": 3, "top": "t"}, params
    data = check_json(generate(gsrv, {"STREAM": False, "parameters": {"PROMPT": "inside"}}))
    assert data["TEXT"] == "inside", data
    # Keys named like response fields are only parameters; the response keeps its own model_name.
    data, params = request_info(gsrv, {"IN": 7, "model_name": "zzz", "TEXT": "t"})
    assert params == {"model_name": "zzz", "TEXT": "t"} and data["model_name"] == "request_info", data
    for bad in (None, [1], {"a": 1}):
        r = generate(gsrv, {"IN": 7, "x": bad}, model="request_info")
        expect_failure(r, 400, exact="parameter 'x' has invalid type. It should be either 'int', 'bool', or 'string'.")
    r = generate(gsrv, {"IN": 7, "parameters": {"x": None}}, model="request_info")
    expect_failure(r, 400, "Converting keyword: 'parameters': parameter 'x' has invalid type.")


def test_id_echo_rules(gsrv):
    """The id is the request's id (echoed first in the response) and, as in Triton, also a parameter `id`."""
    data, params = request_info(gsrv, {"IN": 1, "id": "abc"})
    assert data["id"] == "abc" and data["ID"] == "abc" and params == {"id": "abc"}, data
    assert list(data) == sorted(data), "keys in byte order"
    data, params = request_info(gsrv, {"IN": 1})
    assert "id" not in data and data["ID"] == "" and params == {}, data


def test_reserved_parameter_names(gsrv):
    # Triton passes sequence_id, sequence_start, priority, triton_* ... to the model as plain parameters; Rampart's
    # core treats them as it does on /infer (correlation id, flags, checked types, triton_* refused).
    data, params = request_info(gsrv, {"IN": 1, "sequence_id": 42, "sequence_start": True})
    assert (data["CORRELATION_ID"], data["FLAGS"], params) == ("42", 1, {}), data
    expect_failure(generate(gsrv, {"IN": 1, "priority": "high"}, model="request_info"), 400, "'priority'")
    expect_failure(generate(gsrv, {"IN": 1, "triton_x": 1}, model="request_info"), 400, "'triton_x'")


def test_ordinary_model_and_version_route(gsrv):
    """A non-decoupled ONNX model (max_batch_size 8, dims [16]): INPUT0/INPUT1 as top-level keys, [-1,16] -> [1,16]."""
    for prefix in ("simple", "simple/versions/1"):
        data = check_json(post(gsrv, "generate", {**SIMPLE_BODY, "id": "s"}, model=prefix))
        assert data == {**SIMPLE_OUT, "id": "s", "model_name": "simple", "model_version": "1"}, data
        check_sse(post(gsrv, "generate_stream", SIMPLE_BODY, model=prefix), [SIMPLE_OUT])
    for route in ("generate", "generate_stream"):
        r = post(gsrv, route, SIMPLE_BODY, model="simple/versions/2")
        expect_failure(r, 404, exact="Request for unknown model: 'simple' version 2 is not found")
        r = post(gsrv, route, {"INPUT0": [1, 2, 3], "INPUT1": [1, 2, 3]}, model="simple")
        expect_failure(r, 400, exact="The schema can not convert input 'INPUT0' to tensor with proper shape")
        expect_failure(post(gsrv, route, {}, model="nosuch"), 404, "'nosuch'")


def test_request_errors_before_inference(gsrv):
    for r in both(gsrv, "not json"):
        expect_failure(r, 500, "failed to parse the request JSON buffer: ")
    for r in both(gsrv, "[1]"):
        expect_failure(r, 500, "attempt to get members for non-object")
    r = requests.get(f"{gsrv.base}/v2/models/{MODEL}/generate", timeout=HTTP_TIMEOUT)
    assert r.status_code == 405, r.text


def test_fp16_output_refused(gsrv):
    msg = "sending FP16 data via JSON is not supported. Please use the binary data format for output"
    expect_failure(generate(gsrv, {"X": 1.5}, model="half"), 400, msg)
    # On a stream the status is already sent: the refusal is an error event.
    check_sse(generate_stream(gsrv, {"X": 1.5}, model="half"), [{"error": msg}])


# ---------------------------------------------------------------------------------------------------------------
# Restricted API, --model-access, --http-max-input-size (examples/models, ONNX only)
# ---------------------------------------------------------------------------------------------------------------

KEY, TENANT = {"x-key": "secret"}, {"x-tenant": "t1"}


@pytest.fixture(scope="module")
def guarded():
    extra = [
        "--http-restricted-api=inference:x-key=secret",
        "--model-access=simple:x-tenant=t1",
        "--http-max-input-size=4096",
    ]
    srv = start_server(base_args(example_repo(), extra=extra), "rampart-generate-guarded")
    yield srv
    finish_server(srv)


@pytest.mark.parametrize("route", ["generate", "generate_stream"])
def test_restricted_api_and_model_access(guarded, route):
    for headers, msg in (
        ({}, "This API is restricted, expecting header 'x-key'"),
        ({"x-key": "wrong", **TENANT}, "This API is restricted, expecting header 'x-key'"),
        (KEY, "access to model 'simple' is restricted, expecting header 'x-tenant'"),
    ):
        infer = guarded.post("/v2/models/simple/infer", json={"inputs": []}, headers=headers, timeout=HTTP_TIMEOUT)
        r = post(guarded, route, SIMPLE_BODY, model="simple", headers=headers)
        assert r.status_code == infer.status_code == 403, (r.text, infer.text)
        assert_error(r, 403, exact=msg)
    r = post(guarded, route, SIMPLE_BODY, model="simple", headers={**KEY, **TENANT})
    if route == "generate":
        assert check_json(r) == {**SIMPLE_OUT, "model_name": "simple", "model_version": "1"}
    else:
        check_sse(r, [SIMPLE_OUT])


@pytest.mark.parametrize("route", ["generate", "generate_stream"])
def test_body_size_limit(guarded, route):
    body = json.dumps({"INPUT0": "x" * 5000})
    r = post(guarded, route, body, model="identity_bytes", headers=KEY)
    expect_failure(r, 400, f"request JSON size of {len(body)}{TOO_BIG}4096 bytes")
    # Chunked (no Content-Length): refused once the limit is passed.
    chunks = (body[i : i + 1000].encode() for i in range(0, len(body), 1000))
    r = post(guarded, route, chunks, model="identity_bytes", headers=KEY)
    expect_failure(r, 400, TOO_BIG)
    small = post(guarded, route, {"INPUT0": ["a", "b"]}, model="identity_bytes", headers=KEY)
    assert small.status_code == 200, small.text


# ---------------------------------------------------------------------------------------------------------------
# SageMaker: SAGEMAKER_TRITON_INFERENCE_TYPE=generate|generate_stream (Triton's qa/L0_sagemaker generate tests)
# ---------------------------------------------------------------------------------------------------------------

SAGEMAKER = FrontEnd("Sagemaker HTTPService", health_route="/ping")


@pytest.mark.parametrize("kind", ["generate", "generate_stream"])
def test_sagemaker_inference_type(gen_repo, worker_python, kind):
    env = {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": MODEL, "SAGEMAKER_TRITON_INFERENCE_TYPE": kind}
    args = base_args(gen_repo, extra=["--allow-sagemaker=true", "--sagemaker-port=0", *python_args(worker_python)])
    with SAGEMAKER.running(args, f"rampart[sagemaker {kind}]", env) as srv:
        url = srv.extra_base + "/invocations"
        if kind == "generate":
            r = requests.post(url, json={"PROMPT": "hello world", "STREAM": False}, timeout=HTTP_TIMEOUT)
            assert check_json(r)["TEXT"] == "hello world"
        else:
            body = {"PROMPT": ["hello world"], "STREAM": True, "REPETITION": 3}
            check_sse(requests.post(url, json=body, timeout=HTTP_TIMEOUT), [{"TEXT": "hello world"}] * 3)
        r = requests.post(url, json={"PROMPT": "x"}, timeout=HTTP_TIMEOUT)
        expect_failure(r, 400, "expected 2 inputs but got 1 inputs")
