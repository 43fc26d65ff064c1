"""Helpers shared by the cloud front-end suites (test_sagemaker.py, test_vertex_ai.py).

A front end (`FrontEnd`) is a further listener, announced by "Started <service> at <addr>:<port>"; its servers
are conftest RampartServers (`CloudServer`) started with their own environment, which poll the front end's health
route for readiness. The request and assertion helpers below are the ones both suites use on the `simple` model.

Imported by the test modules with `from cloud_frontends import ...` (pytest puts this directory on sys.path, as
for conftest).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
from dataclasses import dataclass, field

import numpy as np
import requests
import tritonclient.http as httpclient

from conftest import HTTP_TIMEOUT, RampartServer, concurrently, run_to_exit, running, start_server

# The `simple` model's request and expected outputs.
A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)
SUM = (A + B).reshape(-1).tolist()
DIFF = (A - B).reshape(-1).tolist()
SIMPLE_JSON = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": A.reshape(-1).tolist()},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": B.reshape(-1).tolist()},
    ]
}
SIMPLE_BODY = json.dumps(SIMPLE_JSON).encode()
JSON_HDR = {"Content-Type": "application/json"}


# ---------------------------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------------------------


def child_env(extra: dict | None = None) -> dict:
    """The test process's environment without any SAGEMAKER_* / AIP_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "AIP_"))}
    env.update(extra or {})
    return env


class CloudServer(RampartServer):
    """A rampart process with a front end's listener: `extra_port` / `extra_base` (conftest) are that listener,
    `port` the main HTTP port (None with main_http=False). `start(wait=...)` polls GET `health_route` on the
    front end's listener (with `health_headers`, on a fresh connection) until 200."""

    def __init__(self, args, label, *, listener: re.Pattern, health_route: str, main_http: bool = True, **kw):
        super().__init__(args, label, grpc=False, http=main_http, extra_listener=listener, **kw)
        self.health_route = health_route

    def ready_path(self, wait: str) -> str:
        return self.health_route

    def ready_probe(self, path: str) -> requests.Response:
        return requests.get(self.extra_base + path, headers=self.health_headers, timeout=5)


@dataclass(frozen=True)
class FrontEnd:
    """One cloud front end. `service` is its name in the "Started <service> at" line; readiness is GET
    `health_route` on its listener, or the route the child's environment sets in `health_route_var`. A server
    started without an environment gets `default_env` (over the test process's, see `child_env`)."""

    service: str
    health_route: str
    health_route_var: str | None = None
    default_env: dict = field(default_factory=dict)

    @property
    def listener(self) -> re.Pattern:
        return re.compile(rf"Started {re.escape(self.service)} at (\S+):(\d+)")

    def server_kw(self, env: dict | None = None, wait: bool = True, **kw) -> dict:
        """conftest `start_server` / `running` arguments for a CloudServer (`kw`: further ones, e.g. main_http,
        health_headers)."""
        env = child_env(self.default_env if env is None else env)
        route = env.get(self.health_route_var, self.health_route) if self.health_route_var else self.health_route
        return {
            "server_class": CloudServer,
            "env": env,
            "listener": self.listener,
            "health_route": route,
            "wait": "ready" if wait else None,
            **kw,
        }

    def start(self, args, label, env: dict | None = None, wait: bool = True, **kw) -> CloudServer:
        return start_server(args, label, **self.server_kw(env, wait, **kw))

    def running(self, args, label, env: dict | None = None, wait: bool = True, **kw):
        """A server for one test (conftest `running`: afterwards it must still run and exit 0 on SIGTERM)."""
        return running(args, label, **self.server_kw(env, wait, **kw))

    def startup_failure(self, args, env: dict | None, timeout: float = 60) -> str:
        """Run the binary expecting it to refuse to start; returns its output (stderr + stdout)."""
        proc = run_to_exit(args, timeout, env=child_env(env))
        out = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
        assert proc.returncode == 1, f"started although it should have refused (exit {proc.returncode}):\n{out[-3000:]}"
        assert f"Started {self.service}" not in out and "Started HTTPService" not in out, out[-3000:]
        return out


# ---------------------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------------------


def front_end(srv, method: str, path: str, **kw) -> requests.Response:
    """One request to the front end's listener on a fresh connection (never a pooled one a refusal may have
    closed)."""
    kw.setdefault("timeout", HTTP_TIMEOUT)
    return requests.request(method, srv.extra_base + path, **kw)


def main(srv, method: str, path: str, **kw) -> requests.Response:
    """One request to the main HTTP port on a fresh connection."""
    kw.setdefault("timeout", HTTP_TIMEOUT)
    return requests.request(method, srv.base + path, **kw)


def chunked_post(srv, path: str, chunks, headers: dict | None = None, timeout: float = 120.0):
    """POST to the front end's listener with Transfer-Encoding: chunked via http.client (one chunk per item of
    `chunks`). Returns (status, body bytes, seconds)."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", srv.extra_port, timeout=timeout)
    try:
        hdrs = {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **(headers or {})}
        try:
            conn.request("POST", path, body=chunks, headers=hdrs, encode_chunked=True)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (refusal) and closed: read the answer below
        resp = conn.getresponse()
        return resp.status, resp.read(), time.monotonic() - t0
    finally:
        conn.close()


def concurrent_answers(send, n: int = 16) -> list:
    """`send(i)` for i in 0..n from n threads released together (conftest `concurrently`); each answer as
    (status, its "id", its outputs when 200 else None), in order."""

    def answer(i):
        r = send(i)
        return r.status_code, r.json().get("id"), outputs_of(r.json()) if r.status_code == 200 else None

    return concurrently(answer, n)


def padded(body: bytes, size: int) -> bytes:
    """`body` with trailing blanks up to `size` bytes."""
    assert len(body) <= size
    return body + b" " * (size - len(body))


def binary_request(binary_inputs: bool = True) -> tuple[bytes, int | None]:
    """tritonclient-built body: INPUT0/INPUT1 (binary or JSON), OUTPUT0 requested binary, OUTPUT1 as JSON."""
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(A, binary_data=binary_inputs)
    inputs[1].set_data_from_numpy(B, binary_data=binary_inputs)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]
    return httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)


# ---------------------------------------------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------------------------------------------


def denied(key: str) -> dict:
    return {"error": f"This API is restricted, expecting header '{key}'"}


def assert_denied(r: requests.Response, key: str, what: str = "") -> None:
    assert r.status_code == 403, f"{what}: expected 403, got {r.status_code}: {r.content[:500]!r}"
    assert r.json() == denied(key), f"{what}: {r.content[:500]!r}"


def key_header(keys: dict, cat: str) -> dict:
    """`keys`: category -> (header, value) of a restricted server; the header that opens `cat`."""
    key, value = keys[cat]
    return {key: value}


def other_key_headers(keys: dict, cat: str) -> dict:
    """The headers of every category in `keys` but `cat`."""
    return {key: value for c, (key, value) in keys.items() if c != cat}


def outputs_of(body: dict) -> dict:
    return {o["name"]: o["data"] for o in body["outputs"]}


def assert_simple_json(r: requests.Response, model: str = "simple", typed: bool = False) -> dict:
    """A 200 JSON answer of `model` (a copy of `simple`) to SIMPLE_JSON; `typed`: each output is INT32 [1, 16] too."""
    assert r.status_code == 200, f"{r.status_code}: {r.content[:1000]!r}"
    body = r.json()
    assert body["model_name"] == model and body["model_version"] == "1", body
    assert outputs_of(body) == {"OUTPUT0": SUM, "OUTPUT1": DIFF}, body
    if typed:
        for o in body["outputs"]:
            assert o["datatype"] == "INT32" and o["shape"] == [1, 16], o
    return body


def assert_simple_binary_body(content: bytes, size: int, model: str = "simple") -> dict:
    """A binary answer to `binary_request()` whose JSON header is `size` bytes: OUTPUT0 binary (64 bytes), OUTPUT1
    JSON; the values as tritonclient parses them. Returns the header's outputs by name."""
    assert 0 < size and len(content) == size + 64, (size, len(content))
    header = json.loads(content[:size])
    assert header["model_name"] == model, header
    outs = {o["name"]: o for o in header["outputs"]}
    assert outs["OUTPUT0"]["parameters"] == {"binary_data_size": 64}, outs
    assert outs["OUTPUT1"]["data"] == DIFF, outs
    result = httpclient.InferenceServerClient.parse_response_body(content, header_length=size)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    return outs


def assert_alive(srv) -> None:
    assert srv.alive(), f"{srv.label} died (exit code {srv.proc.returncode})\n{srv.output()}"

