"""Tracing in Triton's `triton` mode (docs/protocol.md, "Tracing"): the command line (`--trace-config` and the
deprecated `--trace-*` flags), the trace-settings API over HTTP (`/v2/trace/setting`,
`/v2/models/{m}/trace/setting`) and gRPC (`TraceSetting`), sampling by rate and count (global and per model), and
the trace file.

The trace file is one JSON array written at shutdown (SIGTERM), or, with `log_frequency` N > 0, every N traces to
`<file>.0`, `<file>.1`, ... (the rest at shutdown to the next index); mode 0600. Per trace, two records:
`{"id": n, "model_name": ..., "model_version": v}` then `{"id": n, "timestamps": [{"name": ..., "ns": ...}, ...]}`
(wall-clock ns since the epoch, non-decreasing in the order written).

Sampling (Rampart's rule): with rate N the 1st, N+1th, 2N+1th ... request of the scope is traced; the scope is the
model when it has its own rate or count, else the server; count (-1 = unlimited) decreases per trace and stops
tracing at 0 (GET shows what remains).

OpenTelemetry mode is covered by test_opentelemetry.py. Every server here is started by the test that uses it (default engine: tracing does not depend on it), except the
module's `api` server (a trace file, tracing off), whose settings are reset after every test that uses it."""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from tritonclient.grpc import service_pb2

from conftest import (
    RampartServer,
    ServerStartError,
    example_repo,
    grpc_base_args,
    grpc_error,
    grpc_result,
    running,
    simple_grpc_request,
)

SC = grpc.StatusCode

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)
SIMPLE = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": A.reshape(-1).tolist()},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": B.reshape(-1).tolist()},
    ]
}
IDENTITY = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}

FILE_REFUSED = "trace file location can not be updated through network protocol"
OFF_ALONE = "Expect only one trace level 'OFF' is specified"

HTTP_STAMPS = [
    "HTTP_RECV_START",
    "HTTP_RECV_END",
    "REQUEST_START",
    "QUEUE_START",
    "COMPUTE_START",
    "COMPUTE_INPUT_END",
    "COMPUTE_OUTPUT_START",
    "COMPUTE_END",
    "REQUEST_END",
    "HTTP_SEND_START",
    "HTTP_SEND_END",
]
GRPC_STAMPS = ["GRPC_WAITREAD_START", "GRPC_WAITREAD_END", *HTTP_STAMPS[2:-2], "GRPC_SEND_START", "GRPC_SEND_END"]
COMPUTE = {"COMPUTE_START", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START", "COMPUTE_END"}


def settings(level="OFF", rate="1000", count="-1", log_frequency="0", file="") -> dict:
    """A complete settings answer (HTTP JSON form)."""
    return {
        "trace_level": [level],
        "trace_rate": rate,
        "trace_count": count,
        "log_frequency": log_frequency,
        "trace_file": str(file),
        "trace_mode": "triton",
    }


# ---------------------------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------------------------


def trace_args(trace_file: Path | None, *extra: str, repo: Path | None = None) -> list[str]:
    """Examples (or `repo`), HTTP and gRPC on port 0, with `--trace-config triton,file=<trace_file>` when given."""
    flags = ([f"--trace-config=triton,file={trace_file}"] if trace_file is not None else []) + list(extra)
    return grpc_base_args(repo or example_repo(), None, flags)


# A trace is recorded when the front end lets go of the request (after the response is sent), which can be a moment
# after the client has the response. The tests wait that long before SIGTERM so that each checks its own property;
# `test_sigterm_right_after_responses_keeps_every_trace` checks that no wait is needed.
SETTLE = 0.5


def settle() -> None:
    time.sleep(SETTLE)


def http_simple(srv: RampartServer) -> None:
    r = srv.infer("simple", SIMPLE)
    assert r.status_code == 200, r.text[:500]
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs["OUTPUT0"] == (A + B).reshape(-1).tolist(), outs


def http_identity(srv: RampartServer) -> None:
    r = srv.infer("identity_fp32", IDENTITY)
    assert r.status_code == 200, r.text[:500]


def grpc_simple(srv: RampartServer) -> None:
    res = grpc_result(srv.grpc_stub().ModelInfer(simple_grpc_request()))
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), A + B)


# ---------------------------------------------------------------------------------------------------------------
# The trace file
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Trace:
    id: int
    model_name: str
    model_version: int
    names: list[str]
    ns: list[int]


def parse_traces(path: Path) -> list[Trace]:
    """One trace file: a JSON array of record pairs, `{"id","model_name","model_version"}` then
    `{"id","timestamps"}` for the same id; ids distinct; timestamps `{"name","ns"}` with non-decreasing ns."""
    text = path.read_text()
    records = json.loads(text)
    assert isinstance(records, list) and records, f"{path}: not a non-empty JSON array: {text[:300]!r}"
    assert len(records) % 2 == 0, f"{path}: odd number of records: {records}"
    traces = []
    for head, body in zip(records[0::2], records[1::2]):
        assert set(head) == {"id", "model_name", "model_version"}, head
        assert set(body) == {"id", "timestamps"}, body
        assert head["id"] == body["id"] and isinstance(head["id"], int) and head["id"] > 0, (head, body)
        assert isinstance(head["model_name"], str) and isinstance(head["model_version"], int), head
        stamps = body["timestamps"]
        assert isinstance(stamps, list) and stamps, body
        for s in stamps:
            assert set(s) == {"name", "ns"} and isinstance(s["name"], str) and isinstance(s["ns"], int), s
        ns = [s["ns"] for s in stamps]
        assert ns == sorted(ns), f"trace {head['id']}: timestamps not in order: {stamps}"
        traces.append(Trace(head["id"], head["model_name"], head["model_version"], [s["name"] for s in stamps], ns))
    ids = [t.id for t in traces]
    assert len(set(ids)) == len(ids), f"{path}: duplicate trace ids {ids}"
    return traces


def private(path: Path) -> None:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600, f"{path}: mode {oct(mode)}, expected 0o600"


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra,expected",
    [
        ([], settings()),
        (["--trace-config=rate=7", "--trace-config=count=5", "--trace-config=triton,log-frequency=4"], settings(rate="7", count="5", log_frequency="4")),
        (["--trace-config=level=TIMESTAMPS", "--trace-config=mode=triton"], settings("TIMESTAMPS")),
        (["--trace-config=level=timestamps"], settings("TIMESTAMPS")),
        (["--trace-config=level=true"], settings("TIMESTAMPS")),
        (["--trace-config=level=on"], settings("TIMESTAMPS")),
        (["--trace-config=level=min"], settings("TIMESTAMPS")),
        (["--trace-config=level=false"], settings()),
        (["--trace-config=level=off"], settings()),
        (["--trace-config=level=TIMESTAMPS", "--trace-config=level=TIMESTAMPS"], settings("TIMESTAMPS")),
        (["--trace-config=count=-1", "--trace-config=rate=4294967295"], settings(rate="4294967295")),
    ],
    ids=["defaults", "rate-count-frequency", "timestamps", "lower", "true", "on", "min", "false", "off", "repeated", "limits"],
)
def test_cli_settings_reflected(tmp_path, extra, expected):
    trace_file = tmp_path / "t.json"
    expected = dict(expected, trace_file=str(trace_file))
    with running(trace_args(trace_file, *extra)) as srv:
        assert srv.get("/v2/trace/setting").json() == expected
        assert srv.get("/v2/models/simple/trace/setting").json() == expected
        settle()


def test_cli_defaults_without_file():
    with running(trace_args(None)) as srv:
        assert srv.get("/v2/trace/setting").json() == settings()
        settle()


def test_cli_deprecated_flags(tmp_path):
    trace_file = tmp_path / "dep.json"
    extra = [f"--trace-file={trace_file}", "--trace-level=TIMESTAMPS", "--trace-rate=3", "--trace-count=4", "--trace-log-frequency=2"]
    with running(trace_args(None, *extra)) as srv:
        assert srv.get("/v2/trace/setting").json() == settings("TIMESTAMPS", "3", "4", "2", trace_file)
        settle()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--trace-config=rate=0"], "rate must be in 1..=4294967295"),
        (["--trace-config=rate=x"], "rate: expected an integer, got 'x'"),
        (["--trace-config=rate=-1"], "rate must be in 1..=4294967295"),
        (["--trace-config=rate=4294967296"], "rate must be in 1..=4294967295"),
        (["--trace-config=count=-2"], "count must be in -1..=2147483647 (-1: unlimited)"),
        (["--trace-config=count=x"], "count: expected an integer, got 'x'"),
        (["--trace-config=triton,log-frequency=x"], "log-frequency: expected an integer, got 'x'"),
        (["--trace-config=triton,log-frequency=-1"], "log-frequency must be 0 or more"),
        (["--trace-config=level=TENSORS"], "trace level TENSORS is not supported yet"),
        (["--trace-config=level=tensors"], "trace level TENSORS is not supported yet"),
        (["--trace-config=level=max"], "trace level TENSORS is not supported yet"),
        (["--trace-config=level=bogus"], "unknown trace level 'BOGUS'"),
        (["--trace-config=level=OFF", "--trace-config=level=TIMESTAMPS", "--trace-config=triton,file={dir}/t.json"], OFF_ALONE),
        (["--trace-config=mode=bogus"], "mode must be triton or opentelemetry, got 'bogus'"),
        (["--trace-config=triton,bogus=1"], "unknown setting 'triton,bogus'"),
        (["--trace-config=bogus=1"], "unknown setting 'bogus'"),
        (["--trace-config=rate"], "--trace-config option format is '[<mode>,]<setting>=<value>'"),
        (["--trace-config=level=TIMESTAMPS"], "needs a trace file"),
        (["--trace-config=level=true", "--trace-config=rate=1"], "needs a trace file"),
        (["--trace-level=TIMESTAMPS"], "needs a trace file"),
        (["--trace-config=triton,file={dir}/missing/t.json"], "directory '{dir}/missing' does not exist"),
        (["--trace-config=triton,file={dir}/missing/t.json", "--trace-config=level=TIMESTAMPS"], "does not exist"),
        (["--trace-file={dir}/missing/t.json", "--trace-level=TIMESTAMPS"], "does not exist"),
        (["--trace-rate=0"], "rate must be in 1..=4294967295"),
        (["--trace-count=-5"], "count must be in -1..=2147483647 (-1: unlimited)"),
        (["--trace-log-frequency=x"], "log-frequency: expected an integer, got 'x'"),
    ],
)
def test_cli_refused(tmp_path, extra, message):
    extra = [e.replace("{dir}", str(tmp_path)) for e in extra]
    message = message.replace("{dir}", str(tmp_path))
    srv = RampartServer(trace_args(None, *extra), "rampart[tracing, refused flags]")
    try:
        srv.start(wait=None, timeout=30)
    except ServerStartError:
        pass  # exited before listening (or never listened: then the message check below fails)
    else:
        srv.kill()
        pytest.fail(f"{extra} accepted: the server started\n{srv.output()}", pytrace=False)
    err = srv.stderr_text()
    assert srv.proc.returncode not in (0, None), f"{extra}: exit code {srv.proc.returncode}\n{err[-2000:]}"
    assert message in err, f"{extra}: {message!r} not in stderr:\n{err[-2000:]}"
    assert files_in(tmp_path) == [], f"{extra}: the refused server created {files_in(tmp_path)}"


# ---------------------------------------------------------------------------------------------------------------
# The API (module server: a trace file, tracing off)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trace_api") / "api.json"


@pytest.fixture(scope="module")
def api_server(api_file):
    with running(trace_args(api_file), "rampart[tracing api]") as srv:
        yield srv
    # No inference was traced (level OFF, or TIMESTAMPS only without requests): no file, nothing beside it.
    assert files_in(api_file.parent) == [], files_in(api_file.parent)


@pytest.fixture
def api(api_server, api_file):
    """The module server; afterwards its global settings are back to the start and the per-model overrides cleared."""
    yield api_server
    clear = {"trace_level": None, "trace_rate": None, "trace_count": None, "log_frequency": None}
    for model in ("simple", "identity_fp32"):
        assert api_server.post(f"/v2/models/{model}/trace/setting", json=clear).status_code == 200
    reset = {"trace_level": ["OFF"], "trace_rate": "1000", "trace_count": "-1", "log_frequency": "0"}
    r = api_server.post("/v2/trace/setting", json=reset)
    assert r.json() == settings(file=api_file), r.text


def grpc_settings(response) -> dict:
    """TraceSettingResponse -> the HTTP JSON form (trace_level a list, the others one string)."""
    out = {}
    for key, value in response.settings.items():
        values = list(value.value)
        out[key] = values if key == "trace_level" else (values[0] if len(values) == 1 else values)
    return out


def trace_request(model: str = "", **values):
    """A TraceSettingRequest; a value of None is sent as an empty value list (gRPC's clear)."""
    req = service_pb2.TraceSettingRequest(model_name=model)
    for key, v in values.items():
        req.settings[key].SetInParent()
        if v is not None:
            req.settings[key].value.extend(v if isinstance(v, list) else [v])
    return req


def test_http_get(api, api_file):
    expected = settings(file=api_file)
    for path in ("/v2/trace/setting", "/v2/models/simple/trace/setting", "/v2/models/mlp/trace/setting"):
        r = api.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), (path, r.text)
        assert r.json() == expected, path


def test_grpc_get(api, api_file):
    with api.grpc_client() as c:
        assert grpc_settings(c.get_trace_settings()) == settings(file=api_file)
        assert grpc_settings(c.get_trace_settings(model_name="simple")) == settings(file=api_file)


def test_http_update_any_subset(api, api_file):
    r = api.post("/v2/trace/setting", json={"trace_rate": "7"})
    assert r.status_code == 200 and r.json() == settings(rate="7", file=api_file), r.text
    r = api.post("/v2/trace/setting", json={"trace_count": "5", "log_frequency": "3"})
    assert r.json() == settings(rate="7", count="5", log_frequency="3", file=api_file), r.text
    r = api.post("/v2/trace/setting", json={"trace_level": ["TIMESTAMPS"]})
    assert r.json() == settings("TIMESTAMPS", "7", "5", "3", api_file), r.text
    r = api.post("/v2/trace/setting", data=b"{}")
    assert r.json() == settings("TIMESTAMPS", "7", "5", "3", api_file), r.text
    assert api.get("/v2/trace/setting").json() == r.json()
    # Models without their own settings follow the global ones.
    assert api.get("/v2/models/simple/trace/setting").json() == r.json()
    r = api.post("/v2/trace/setting", json={"trace_level": ["OFF"], "trace_count": "-1"})
    assert r.json() == settings("OFF", "7", "-1", "3", api_file), r.text


def test_tritonclient_http(api, api_file):
    with api.client() as c:
        assert c.get_trace_settings() == settings(file=api_file)
        assert c.update_trace_settings(model_name="simple", settings={"trace_rate": "4"}) == settings(rate="4", file=api_file)
        assert c.get_trace_settings(model_name="simple") == settings(rate="4", file=api_file)
        assert c.update_trace_settings(model_name="simple", settings={"trace_rate": None}) == settings(file=api_file)


def test_grpc_update(api, api_file):
    with api.grpc_client() as c:
        r = c.update_trace_settings(settings={"trace_rate": "9", "trace_level": ["TIMESTAMPS"]})
        assert grpc_settings(r) == settings("TIMESTAMPS", "9", file=api_file)
        r = c.update_trace_settings(model_name="simple", settings={"trace_count": "3"})
        assert grpc_settings(r) == settings("TIMESTAMPS", "9", "3", file=api_file)
        # The override is the model's: the global settings and the other models are unchanged.
        assert grpc_settings(c.get_trace_settings()) == settings("TIMESTAMPS", "9", file=api_file)
        assert grpc_settings(c.get_trace_settings(model_name="mlp")) == settings("TIMESTAMPS", "9", file=api_file)
        # An empty value clears the override.
        r = c.update_trace_settings(model_name="simple", settings={"trace_count": None})
        assert grpc_settings(r) == settings("TIMESTAMPS", "9", file=api_file)
    r = api.grpc_stub().TraceSetting(trace_request("simple", trace_rate="2", trace_level=["OFF"]))
    assert grpc_settings(r) == settings("OFF", "2", file=api_file)
    assert api.get("/v2/models/simple/trace/setting").json() == settings("OFF", "2", file=api_file)


def test_http_per_model_override_and_clear(api, api_file):
    r = api.post("/v2/models/simple/trace/setting", json={"trace_rate": "5", "trace_level": ["TIMESTAMPS"]})
    assert r.status_code == 200 and r.json() == settings("TIMESTAMPS", "5", file=api_file), r.text
    assert api.get("/v2/trace/setting").json() == settings(file=api_file)
    assert api.get("/v2/models/identity_fp32/trace/setting").json() == settings(file=api_file)
    # A global update: the model keeps its own rate and level, takes the new global count.
    api.post("/v2/trace/setting", json={"trace_rate": "9", "trace_count": "8"})
    assert api.get("/v2/models/simple/trace/setting").json() == settings("TIMESTAMPS", "5", "8", file=api_file)
    assert api.get("/v2/models/identity_fp32/trace/setting").json() == settings(rate="9", count="8", file=api_file)
    # null clears one override at a time, back to the global value.
    r = api.post("/v2/models/simple/trace/setting", json={"trace_rate": None})
    assert r.json() == settings("TIMESTAMPS", "9", "8", file=api_file), r.text
    r = api.post("/v2/models/simple/trace/setting", json={"trace_level": None})
    assert r.json() == settings(rate="9", count="8", file=api_file), r.text
    assert api.get("/v2/models/simple/trace/setting").json() == api.get("/v2/trace/setting").json()


BAD_HTTP_UPDATES = [
    ({"trace_file": "/tmp/rampart-trace-api.json"}, 501, FILE_REFUSED),
    ({"trace_rate": "1", "trace_file": "/tmp/rampart-trace-api.json"}, 501, FILE_REFUSED),
    ({"trace_file": None}, 501, FILE_REFUSED),
    ({"trace_file": ""}, 501, FILE_REFUSED),
    ({"trace_rate": "x"}, 400, "Unable to parse 'trace_rate', got: x"),
    ({"trace_count": "1", "trace_rate": "x"}, 400, "Unable to parse 'trace_rate', got: x"),
    ({"trace_rate": "99999999999"}, 400, "trace_rate"),
    ({"trace_rate": "0"}, 400, "trace_rate"),
    ({"trace_count": "-2"}, 400, "trace_count"),
    ({"trace_count": "x"}, 400, "Unable to parse 'trace_count', got: x"),
    ({"log_frequency": "x"}, 400, "Unable to parse 'log_frequency', got: x"),
    ({"trace_level": ["OFF", "TIMESTAMPS"]}, 400, OFF_ALONE),
    ({"trace_rate": "1", "trace_level": ["TIMESTAMPS", "OFF"]}, 400, OFF_ALONE),
    ({"trace_rate": "1", "no_such_setting": "1"}, 400, "no_such_setting"),
    ({"trace_mode": "opentelemetry"}, 400, "trace_mode"),
    ({"trace_rate": 5}, 400, "trace_rate"),
    ({"trace_count": -1}, 400, "trace_count"),
    ({"trace_level": "TIMESTAMPS"}, 400, "trace_level"),
    ({"trace_level": [1]}, 400, "trace_level"),
]


@pytest.mark.parametrize("path", ["/v2/trace/setting", "/v2/models/simple/trace/setting"], ids=["global", "model"])
@pytest.mark.parametrize("body,status,message", BAD_HTTP_UPDATES)
def test_http_bad_update_changes_nothing(api, path, body, status, message):
    before = api.get(path).json()
    r = api.post(path, json=body)
    assert r.status_code == status, f"{body}: {r.status_code} {r.text}"
    error = r.json()["error"]
    if status == 501 or message.startswith(("Unable", "Expect")):
        assert error == message, f"{body}: {error!r}"
    else:
        assert message in error, f"{body}: {error!r}"
    assert api.get(path).json() == before
    assert api.get("/v2/trace/setting").json()["trace_rate"] == "1000"


@pytest.mark.parametrize("key", ["trace_level", "trace_rate", "trace_count", "log_frequency"])
def test_global_settings_cannot_be_cleared(api, api_file, key):
    r = api.post("/v2/trace/setting", json={key: None})
    assert r.status_code == 400 and "cannot be cleared" in r.json()["error"], r.text
    grpc_error(lambda: api.grpc_stub().TraceSetting(trace_request(**{key: None})), SC.INVALID_ARGUMENT, "cannot be cleared")
    assert api.get("/v2/trace/setting").json() == settings(file=api_file)


def test_http_body_must_be_a_json_object(api):
    for body in (b"[]", b"not json", b'"x"'):
        r = api.post("/v2/trace/setting", data=body)
        assert r.status_code == 400 and r.json()["error"], (body, r.text)


def test_http_tensors_level_refused(api, api_file):
    r = api.post("/v2/trace/setting", json={"trace_level": ["TENSORS"]})
    assert 400 <= r.status_code < 600 and "not supported yet" in r.json()["error"], r.text
    assert api.get("/v2/trace/setting").json() == settings(file=api_file)


@pytest.mark.parametrize("model", ["", "simple"], ids=["global", "model"])
def test_grpc_bad_update_changes_nothing(api, model):
    stub = api.grpc_stub()
    before = grpc_settings(stub.TraceSetting(trace_request(model)))
    file_path = str(api.get("/v2/trace/setting").json()["trace_file"]) + ".client"
    for values in ({"trace_file": file_path}, {"trace_rate": "1", "trace_file": file_path}, {"trace_file": None}):
        grpc_error(lambda: stub.TraceSetting(trace_request(model, **values)), SC.UNIMPLEMENTED, exact=FILE_REFUSED)
    for values, message in (
        ({"trace_rate": "x"}, "Unable to parse 'trace_rate', got: x"),
        ({"trace_count": "1", "trace_rate": "x"}, "Unable to parse 'trace_rate', got: x"),
        ({"trace_level": ["OFF", "TIMESTAMPS"]}, OFF_ALONE),
    ):
        grpc_error(lambda: stub.TraceSetting(trace_request(model, **values)), SC.INVALID_ARGUMENT, exact=message)
    for values, part in (
        ({"trace_rate": "0"}, "trace_rate"),
        ({"trace_count": "-2"}, "trace_count"),
        ({"trace_rate": ["1", "2"]}, "trace_rate"),
        ({"trace_rate": "1", "no_such_setting": "1"}, "no_such_setting"),
    ):
        grpc_error(lambda: stub.TraceSetting(trace_request(model, **values)), SC.INVALID_ARGUMENT, part)
    assert grpc_settings(stub.TraceSetting(trace_request(model))) == before
    assert not Path(file_path).exists()


def test_unknown_and_invalid_models(api):
    missing = "Request for unknown model: 'no_such_model' is not found"
    for method, body in (("GET", None), ("POST", {"trace_rate": "1"})):
        r = api.request(method, "/v2/models/no_such_model/trace/setting", json=body)
        assert (r.status_code, r.json()) == (404, {"error": missing}), r.text
        r = api.request(method, "/v2/models/..%2Fsimple/trace/setting", json=body)
        assert r.status_code == 400 and r.json()["error"].startswith("invalid model name '../simple'"), r.text
        # Trace settings are per model, not per version.
        r = api.request(method, "/v2/models/simple/versions/1/trace/setting", json=body)
        assert r.status_code == 404, r.text
    stub = api.grpc_stub()
    grpc_error(lambda: stub.TraceSetting(trace_request("no_such_model")), SC.NOT_FOUND, exact=missing)
    grpc_error(lambda: stub.TraceSetting(trace_request("no_such_model", trace_rate="1")), SC.NOT_FOUND, exact=missing)
    grpc_error(lambda: stub.TraceSetting(trace_request("a/b")), SC.INVALID_ARGUMENT, "invalid model name")
    grpc_error(lambda: stub.TraceSetting(trace_request("x" * 256)), SC.INVALID_ARGUMENT, "invalid model name")


def test_tracing_needs_a_trace_file(tmp_path):
    """Without a trace file tracing cannot be switched on through the API (and the file cannot be chosen there)."""
    with running(trace_args(None)) as srv:
        for path in ("/v2/trace/setting", "/v2/models/simple/trace/setting"):
            r = srv.post(path, json={"trace_level": ["TIMESTAMPS"], "trace_rate": "1"})
            assert r.status_code == 501 and "tracing needs a trace file" in r.json()["error"], r.text
            r = srv.post(path, json={"trace_level": ["TIMESTAMPS"], "trace_file": str(tmp_path / "client.json")})
            assert (r.status_code, r.json()) == (501, {"error": FILE_REFUSED}), r.text
            assert srv.get(path).json() == settings()
        grpc_error(
            lambda: srv.grpc_stub().TraceSetting(trace_request("simple", trace_level=["TIMESTAMPS"])),
            SC.UNIMPLEMENTED,
            "tracing needs a trace file",
        )
        http_simple(srv)
        grpc_simple(srv)
        settle()
    assert files_in(tmp_path) == []


def test_client_cannot_choose_the_trace_file(tmp_path):
    """A tracing server: POST with trace_file is refused (HTTP 501 / gRPC UNIMPLEMENTED) and changes nothing;
    the traces go to the operator's file only; nothing appears where the client asked."""
    own, asked = tmp_path / "own" / "t.json", tmp_path / "asked" / "t.json"
    own.parent.mkdir()
    asked.parent.mkdir()
    with running(trace_args(own, "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1")) as srv:
        for path in ("/v2/trace/setting", "/v2/models/simple/trace/setting"):
            r = srv.post(path, json={"trace_file": str(asked), "log_frequency": "1"})
            assert (r.status_code, r.json()) == (501, {"error": FILE_REFUSED}), r.text
            assert srv.get(path).json() == settings("TIMESTAMPS", "1", file=own)
        grpc_error(lambda: srv.grpc_stub().TraceSetting(trace_request(trace_file=str(asked))), SC.UNIMPLEMENTED, exact=FILE_REFUSED)
        http_simple(srv)
        grpc_simple(srv)
        settle()
    assert files_in(asked.parent) == []
    assert [t.model_name for t in parse_traces(own)] == ["simple", "simple"]


# ---------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rate,count,requests,traced",
    [(3, -1, 10, 4), (1, 2, 5, 2), (2, 3, 10, 3), (4, -1, 4, 1), (1, -1, 6, 6), (1000, -1, 5, 1)],
)
def test_sampling_by_rate_and_count(tmp_path, rate, count, requests, traced):
    trace_file = tmp_path / "t.json"
    extra = ["--trace-config=level=TIMESTAMPS", f"--trace-config=rate={rate}", f"--trace-config=count={count}"]
    with running(trace_args(trace_file, *extra)) as srv:
        for _ in range(requests):
            http_simple(srv)
        remaining = str(count if count == -1 else max(count - traced, 0))
        assert srv.get("/v2/trace/setting").json()["trace_count"] == remaining
        settle()
    traces = parse_traces(trace_file)
    assert len(traces) == traced, [t.id for t in traces]
    assert all(t.model_name == "simple" and t.model_version == 1 for t in traces)


def test_sigterm_right_after_responses_keeps_every_trace(tmp_path):
    """Every request the client saw answered is in the file written at SIGTERM, even when the signal follows the
    last response at once (each request on its own connection). Several short runs, so that a race shows."""
    got = []
    for run in range(5):
        trace_file = tmp_path / f"run{run}.json"
        with running(trace_args(trace_file, "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1")) as srv:
            grpc_simple(srv)
            for _ in range(2):
                r = requests.post(srv.base + "/v2/models/simple/infer", json=SIMPLE, headers={"Connection": "close"}, timeout=30)
                assert r.status_code == 200, r.text
        got.append(len(parse_traces(trace_file)) if trace_file.exists() else 0)
    assert got == [3] * 5, f"traces written per run (3 requests answered each): {got}"


def test_no_trace_no_file(tmp_path):
    with running(trace_args(tmp_path / "t.json", "--trace-config=level=TIMESTAMPS", "--trace-config=rate=2", "--trace-config=count=0")) as srv:
        for _ in range(3):
            http_simple(srv)
        settle()
    assert files_in(tmp_path) == []


def test_sampling_switched_by_the_api(tmp_path):
    """Tracing on (rate 2) then off through the API; a count set through the API, used up."""
    trace_file = tmp_path / "t.json"
    with running(trace_args(trace_file)) as srv:
        for _ in range(2):
            http_simple(srv)  # level OFF: not traced
        assert srv.post("/v2/trace/setting", json={"trace_level": ["TIMESTAMPS"], "trace_rate": "2"}).status_code == 200
        for _ in range(3):
            http_simple(srv)  # 1st and 3rd traced
        assert srv.post("/v2/trace/setting", json={"trace_level": ["OFF"]}).status_code == 200
        for _ in range(3):
            http_simple(srv)
        r = srv.post("/v2/trace/setting", json={"trace_level": ["TIMESTAMPS"], "trace_rate": "1", "trace_count": "1"})
        assert r.json()["trace_count"] == "1", r.text
        for _ in range(3):
            grpc_simple(srv)  # only the first: count 1
        assert srv.get("/v2/trace/setting").json()["trace_count"] == "0"
        settle()
    traces = parse_traces(trace_file)
    assert [t.names[0] for t in traces] == ["HTTP_RECV_START", "HTTP_RECV_START", "GRPC_WAITREAD_START"], traces


def test_per_model_override_traces_only_that_model(tmp_path):
    trace_file = tmp_path / "t.json"
    with running(trace_args(trace_file)) as srv:
        r = srv.post("/v2/models/simple/trace/setting", json={"trace_level": ["TIMESTAMPS"], "trace_rate": "1"})
        assert r.json()["trace_level"] == ["TIMESTAMPS"], r.text
        assert srv.get("/v2/trace/setting").json()["trace_level"] == ["OFF"]
        for _ in range(3):
            http_simple(srv)
            http_identity(srv)
            grpc_simple(srv)
        settle()
    assert [t.model_name for t in parse_traces(trace_file)] == ["simple"] * 6


def test_per_model_rate_has_its_own_counter(tmp_path):
    """Global rate 2; `simple` with its own rate 1. Requests to `simple` do not advance the global counter:
    identity_fp32 is traced on its 1st and 3rd request, `simple` every time."""
    trace_file = tmp_path / "t.json"
    with running(trace_args(trace_file, "--trace-config=level=TIMESTAMPS", "--trace-config=rate=2")) as srv:
        assert srv.post("/v2/models/simple/trace/setting", json={"trace_rate": "1"}).status_code == 200
        http_identity(srv)
        for _ in range(3):
            http_simple(srv)
        http_identity(srv)
        http_identity(srv)
        settle()
    names = [t.model_name for t in parse_traces(trace_file)]
    assert names == ["identity_fp32", "simple", "simple", "simple", "identity_fp32"], names


def test_per_model_level_only_shares_the_global_counter(tmp_path):
    """An override of the level alone keeps the server's scope: with global rate 2, alternating requests to `simple`
    (level overridden) and identity_fp32 are counted together, so only the odd ones -- all `simple` -- are traced."""
    trace_file = tmp_path / "t.json"
    with running(trace_args(trace_file, "--trace-config=level=TIMESTAMPS", "--trace-config=rate=2")) as srv:
        assert srv.post("/v2/models/simple/trace/setting", json={"trace_level": ["TIMESTAMPS"]}).status_code == 200
        for _ in range(3):
            http_simple(srv)
            http_identity(srv)
        settle()
    names = [t.model_name for t in parse_traces(trace_file)]
    assert names == ["simple"] * 3, names


def test_per_model_count(tmp_path):
    """`simple` with its own count 2 (rate 1): two traces, its remaining count 0, the global count untouched;
    once cleared, `simple` is traced through the global settings again."""
    trace_file = tmp_path / "t.json"
    extra = ["--trace-config=level=TIMESTAMPS", "--trace-config=rate=1", "--trace-config=count=3"]
    with running(trace_args(trace_file, *extra)) as srv:
        assert srv.post("/v2/models/simple/trace/setting", json={"trace_count": "2", "trace_rate": "1"}).status_code == 200
        for _ in range(4):
            http_simple(srv)
        http_identity(srv)
        assert srv.get("/v2/models/simple/trace/setting").json()["trace_count"] == "0"
        assert srv.get("/v2/trace/setting").json()["trace_count"] == "2"
        assert srv.get("/v2/models/identity_fp32/trace/setting").json()["trace_count"] == "2"
        r = srv.post("/v2/models/simple/trace/setting", json={"trace_count": None, "trace_rate": None})
        assert r.json()["trace_count"] == "2", r.text
        http_simple(srv)
        assert srv.get("/v2/trace/setting").json()["trace_count"] == "1"
        settle()
    names = [t.model_name for t in parse_traces(trace_file)]
    assert names == ["simple", "simple", "identity_fp32", "simple"], names


# ---------------------------------------------------------------------------------------------------------------
# File contents
# ---------------------------------------------------------------------------------------------------------------


def test_http_trace_timestamps(tmp_path):
    trace_file = tmp_path / "t.json"
    with running(trace_args(trace_file, "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1")) as srv:
        windows = []
        for _ in range(2):
            t0 = time.time_ns()
            http_simple(srv)
            windows.append((t0, time.time_ns()))
        settle()
    private(trace_file)
    assert files_in(tmp_path) == ["t.json"]
    traces = parse_traces(trace_file)
    assert len(traces) == 2
    for trace, (t0, t1) in zip(traces, windows):
        assert (trace.model_name, trace.model_version) == ("simple", 1)
        assert trace.names == HTTP_STAMPS, trace.names
        assert t0 <= trace.ns[0] and trace.ns[-1] <= t1, f"timestamps {trace.ns} outside the request's window [{t0}, {t1}]"


def test_grpc_trace_timestamps(tmp_path):
    trace_file = tmp_path / "t.json"
    with running(trace_args(trace_file, "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1")) as srv:
        t0 = time.time_ns()
        grpc_simple(srv)
        stream = srv.grpc_stub().ModelStreamInfer(iter([simple_grpc_request(id="s1")]))
        assert [r.infer_response.id for r in stream] == ["s1"]
        with srv.grpc_client() as c:
            assert c.get_model_metadata("simple").name == "simple"  # not an inference: not traced
        t1 = time.time_ns()
        settle()
    private(trace_file)
    traces = parse_traces(trace_file)
    assert len(traces) == 2, traces
    for trace in traces:
        assert (trace.model_name, trace.model_version) == ("simple", 1)
        assert trace.names == GRPC_STAMPS, trace.names
        assert t0 <= trace.ns[0] and trace.ns[-1] <= t1, (trace.ns, t0, t1)


def test_cache_hit_has_no_compute_timestamps(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("simple", "identity_fp32"):
        dest = repo / name
        dest.mkdir()
        (dest / "1").mkdir()
        (dest / "1" / "model.onnx").write_bytes((example_repo() / name / "1" / "model.onnx").read_bytes())
        config = (example_repo() / name / "config.pbtxt").read_text()
        (dest / "config.pbtxt").write_text(config + ("\nresponse_cache { enable: true }\n" if name == "simple" else ""))
    trace_file = tmp_path / "t.json"
    extra = ["--trace-config=level=TIMESTAMPS", "--trace-config=rate=1", "--cache-config=local,size=1048576"]
    with running(trace_args(trace_file, *extra, repo=repo)) as srv:
        http_simple(srv)  # miss
        http_simple(srv)  # hit
        grpc_simple(srv)  # hit
        settle()
    traces = parse_traces(trace_file)
    assert len(traces) == 3
    assert traces[0].names == HTTP_STAMPS, traces[0].names
    for trace in traces[1:]:
        assert not COMPUTE & set(trace.names), trace.names
        assert {"REQUEST_START", "REQUEST_END"} <= set(trace.names), trace.names
    assert traces[1].names[:2] == ["HTTP_RECV_START", "HTTP_RECV_END"] and traces[1].names[-2:] == ["HTTP_SEND_START", "HTTP_SEND_END"]
    assert traces[2].names[:2] == GRPC_STAMPS[:2] and traces[2].names[-2:] == GRPC_STAMPS[-2:]


def test_log_frequency_writes_indexed_files(tmp_path):
    """log-frequency 2 and five traces: <file>.0 and <file>.1 while running (two traces each), <file>.2 (the last
    one) at shutdown; <file> itself is never written."""
    trace_file = tmp_path / "t.json"
    extra = ["--trace-config=level=TIMESTAMPS", "--trace-config=rate=1", "--trace-config=triton,log-frequency=2"]
    with running(trace_args(trace_file, *extra)) as srv:
        for _ in range(4):
            http_simple(srv)
        deadline = time.monotonic() + 5
        while files_in(tmp_path) != ["t.json.0", "t.json.1"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert files_in(tmp_path) == ["t.json.0", "t.json.1"], "written every 2 traces, before shutdown"
        grpc_simple(srv)
        settle()
    assert files_in(tmp_path) == ["t.json.0", "t.json.1", "t.json.2"]
    per_file = [parse_traces(tmp_path / f"t.json.{i}") for i in range(3)]
    assert [len(traces) for traces in per_file] == [2, 2, 1]
    assert per_file[2][0].names == GRPC_STAMPS
    ids = [t.id for traces in per_file for t in traces]
    assert len(set(ids)) == 5, ids
    for i in range(3):
        private(tmp_path / f"t.json.{i}")


def test_log_frequency_set_through_the_api(tmp_path):
    trace_file = tmp_path / "t.json"
    with running(trace_args(trace_file, "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1")) as srv:
        assert srv.post("/v2/trace/setting", json={"log_frequency": "1"}).json()["log_frequency"] == "1"
        http_simple(srv)
        grpc_simple(srv)
        settle()
    assert files_in(tmp_path) == ["t.json.0", "t.json.1"]
    assert [len(parse_traces(tmp_path / f"t.json.{i}")) for i in range(2)] == [1, 1]


def test_per_model_log_frequency_applies_to_that_model(tmp_path):
    """The model's own log_frequency (which GET reports for it) governs its traces, as in Triton, where every
    per-model setting has its own buffer: `simple` with log_frequency 1 under a global 0 has each trace written to
    an indexed file at once, while identity_fp32's trace waits for shutdown in <file>."""
    trace_file = tmp_path / "t.json"
    with running(trace_args(trace_file, "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1")) as srv:
        r = srv.post("/v2/models/simple/trace/setting", json={"log_frequency": "1"})
        assert r.json()["log_frequency"] == "1", r.text
        http_simple(srv)
        http_simple(srv)
        http_identity(srv)
        settle()
    assert files_in(tmp_path) == ["t.json", "t.json.0", "t.json.1"], files_in(tmp_path)
    assert [t.model_name for t in parse_traces(trace_file)] == ["identity_fp32"]


def test_trace_file_mode_is_private_under_a_permissive_umask(tmp_path):
    trace_file = tmp_path / "t.json"
    old = os.umask(0)  # inherited by the server process
    try:
        with running(trace_args(trace_file, "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1"), "rampart[tracing umask 0]") as srv:
            os.umask(old)
            http_simple(srv)
            settle()
    finally:
        os.umask(old)
    private(trace_file)
    assert len(parse_traces(trace_file)) == 1
