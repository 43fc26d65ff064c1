"""Model control (docs/protocol.md, "Model control"): `--model-control-mode none|poll|explicit`, the repository
load / unload API over HTTP and gRPC (config and `file:` overrides, reloads, name checks), repository polling under
traffic, and Rampart's secure default (poll / explicit mode refused on an unauthenticated non-loopback listener).

Every test builds its own small ONNX models (FP32 `OUTPUT0 = INPUT0 + c`, [batch, 4]) into tmp_path with the onnx
helper API and starts its own short-lived server(s) on the first selected engine."""

from __future__ import annotations

import base64
import json
import os
import stat
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from conftest import (
    assert_error,
    base_args,
    grpc_base_args,
    grpc_error,
    parse_raw_response,
    raw_exchange,
    run_to_exit,
    running,
    selected_engines,
)

ENGINE = selected_engines()[0]
MODE_MESSAGE = "explicit model load / unload is not allowed if polling is enabled"
X = np.array([[0.5, 1.5, 2.5, 3.5]], dtype=np.float32)
POLL = ["--model-control-mode=poll", "--repository-poll-secs=1"]
EXPLICIT = ["--model-control-mode=explicit"]
WAIT = 20.0  # deadline (s) for anything the poller must pick up (polls every second)


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


def add_model_bytes(const: int) -> bytes:
    """ONNX model OUTPUT0 = INPUT0 + const (FP32 [batch, 4]). The doc string makes the file size differ per
    constant, so a replaced file differs in size as well as in content."""
    k = numpy_helper.from_array(np.full((4,), const, dtype=np.float32), "K")
    g = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "K"], ["OUTPUT0"])],
        f"add{const}",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", 4])],
        [k],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="rampart-test_model_control")
    m.ir_version = 8
    m.doc_string = "c" * const
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()


def config_pbtxt(name: str, max_batch_size: int = 8, extra: str = "") -> str:
    return (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n' + extra
    )


def config_json(name: str, max_batch_size: int = 8, **extra) -> str:
    """The same model configuration as a ModelConfig JSON string (the `config` load parameter)."""
    cfg = {
        "name": name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": max_batch_size,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
        **extra,
    }
    return json.dumps(cfg)


def atomic_write(path: Path, data: bytes | str, staging: Path) -> None:
    """Write `path` by renaming a complete file over it (staging must be on the same filesystem, outside the
    model repository), so the poller never sees half a file."""
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_model(repo: Path, name: str, const: int = 1, versions=(1,), max_batch_size: int = 8, extra: str = "") -> Path:
    d = repo / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.pbtxt").write_text(config_pbtxt(name, max_batch_size, extra))
    for v in versions:
        (d / str(v)).mkdir(exist_ok=True)
        (d / str(v) / "model.onnx").write_bytes(add_model_bytes(const))
    return d


def staged_model(repo: Path, staging: Path, name: str, const: int) -> None:
    """Create model `name` complete in `staging`, then move it into the repository in one rename."""
    staging.mkdir(parents=True, exist_ok=True)
    built = write_model(staging / uuid.uuid4().hex, name, const)
    os.rename(built, repo / name)


# --------------------------------------------------------------------------------------------------------------
# Servers and requests
# --------------------------------------------------------------------------------------------------------------


def explicit(repo: Path, *extra: str, grpc_on: bool = False):
    build = grpc_base_args if grpc_on else base_args
    return running(build(repo, ENGINE, [*EXPLICIT, *extra]), f"rampart[{ENGINE}, explicit]")


def infer_body(rows: int = 1) -> bytes:
    x = np.tile(X, (rows, 1))
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(x.shape), "data": x.flatten().tolist()}]}
    ).encode()


def infer(srv, model: str, rows: int = 1, session: requests.Session | None = None, **kw) -> requests.Response:
    http = session or srv.session
    return http.post(f"{srv.base}/v2/models/{model}/infer", data=infer_body(rows), timeout=30, **kw)


def added(r: requests.Response) -> float:
    """The constant the model added (200 required)."""
    assert r.status_code == 200, f"infer failed: {r.status_code} {r.text[:500]!r}"
    out = r.json()["outputs"][0]
    got = np.array(out["data"], dtype=np.float32).reshape(out["shape"])
    diff = got - np.tile(X, (got.shape[0], 1))
    assert np.allclose(diff, diff.flat[0]), f"not a constant offset: {out}"
    return float(diff.flat[0])


def assert_adds(srv, model: str, const: int, rows: int = 1) -> None:
    assert added(infer(srv, model, rows)) == const


def index_of(srv) -> dict[str, list[dict]]:
    by_name: dict[str, list[dict]] = {}
    for e in srv.index():
        by_name.setdefault(e["name"], []).append(e)
    return by_name


def model_config(srv, model: str) -> dict:
    r = srv.get(f"/v2/models/{model}/config")
    assert r.status_code == 200, r.text
    return r.json()


def load(srv, model: str, parameters: dict | None = None, headers: dict | None = None) -> requests.Response:
    body = json.dumps({"parameters": parameters}).encode() if parameters is not None else b""
    return srv.post(f"/v2/repository/models/{model}/load", data=body, headers=headers or {})


def unload(srv, model: str, body: bytes = b"", headers: dict | None = None) -> requests.Response:
    return srv.post(f"/v2/repository/models/{model}/unload", data=body, headers=headers or {})


def assert_not_served(srv, model: str) -> None:
    """Inference on a model that has no READY version: 404 / NOT_FOUND, as Triton ("… is not found" for a model
    the server never loaded, "… has no available versions" for one that failed to load or was unloaded)."""
    assert_error(infer(srv, model), 404, f"Request for unknown model: '{model}' ")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raw_request(srv, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """A hand-written request with the exact `path` (no client-side normalisation of `..` or `%2E`)."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    status, _, rbody = parse_raw_response(raw_exchange(srv.host, srv.port, head + body))
    return status, rbody


def wait_for(what: str, check, timeout: float = WAIT, srv=None):
    """Call `check()` until it returns a truthy value (returned) or `timeout` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, requests.RequestException, KeyError, ValueError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.1)
    tail = f"\n{srv.output()[-3000:]}" if srv is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}{tail}")


def entries(srv, model: str) -> list[dict]:
    return index_of(srv).get(model, [])


def is_ready_v(srv, model: str, version: str = "1") -> bool:
    return any(e.get("state") == "READY" and e.get("version") == version for e in entries(srv, model))


def is_unloaded(srv, model: str) -> bool:
    es = entries(srv, model)
    return bool(es) and all(e.get("state") == "UNAVAILABLE" and e.get("reason") == "unloaded" for e in es)


def assert_ready_entry(es: list[dict], model: str, version: str = "1") -> None:
    """Exactly one index entry, {"name", "version", "state": "READY"} (an empty "reason" is tolerated)."""
    assert len(es) == 1, es
    e = dict(es[0])
    assert e.pop("reason", "") == "", f"READY entry with a reason: {es}"
    assert e == {"name": model, "version": version, "state": "READY"}, es


class Traffic:
    """Background threads doing back-to-back HTTP inferences on one model; every answer is recorded."""

    def __init__(self, srv, model: str, threads: int = 2):
        self.srv, self.model = srv, model
        self.stop = threading.Event()
        self.results: list[tuple] = []  # (status, model_version, added constant or error text)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self):
        with requests.Session() as s:
            while not self.stop.is_set():
                try:
                    r = infer(self.srv, self.model, session=s)
                except requests.RequestException as e:
                    rec = (None, None, repr(e))
                else:
                    if r.status_code == 200:
                        try:
                            rec = (200, r.json()["model_version"], added(r))
                        except (AssertionError, KeyError, ValueError) as e:
                            rec = (200, None, f"bad answer: {e}: {r.text[:300]}")
                    else:
                        rec = (r.status_code, None, r.text[:300])
                with self.lock:
                    self.results.append(rec)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def count(self) -> int:
        with self.lock:
            return len(self.results)

    def wait_requests(self, n: int = 20) -> None:
        start = self.count()
        wait_for(f"{n} more requests", lambda: self.count() >= start + n, timeout=10)

    def failures(self) -> list[tuple]:
        with self.lock:
            return [r for r in self.results if r[0] != 200 or r[1] is None]


@pytest.fixture
def repo(tmp_path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    return r


# --------------------------------------------------------------------------------------------------------------
# Secure default: poll / explicit refused on an unauthenticated non-loopback listener
# --------------------------------------------------------------------------------------------------------------


def exposed_args(repo: Path, *extra: str) -> list[str]:
    args = base_args(repo, ENGINE, list(extra))
    args[args.index("--http-address=127.0.0.1")] = "--http-address=0.0.0.0"
    return args


@pytest.mark.parametrize("mode", ["explicit", "poll"])
def test_startup_refused_when_model_control_is_exposed(repo, mode):
    write_model(repo, "a")
    proc = run_to_exit(exposed_args(repo, f"--model-control-mode={mode}"))
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, f"expected exit 1, got {proc.returncode}\n{err[-3000:]}"
    for part in ("refused", "HTTP on 0.0.0.0:0", "--allow-unauthenticated-model-control=true", "--http-address=127.0.0.1"):
        assert part in err, f"stderr lacks {part!r}:\n{err[-3000:]}"
    assert "Started HTTPService" not in err + proc.stdout.decode(errors="replace")


def test_startup_refused_names_the_exposed_grpc_listener(repo):
    write_model(repo, "a")
    args = grpc_base_args(repo, ENGINE, EXPLICIT)
    args[args.index("--grpc-address=127.0.0.1")] = "--grpc-address=0.0.0.0"
    proc = run_to_exit(args)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, f"expected exit 1, got {proc.returncode}\n{err[-3000:]}"
    assert "refused" in err and "gRPC on 0.0.0.0:0" in err, err[-3000:]
    assert "HTTP on" not in err, f"the loopback HTTP listener is not exposed: {err[-3000:]}"


def test_mode_none_starts_on_any_address(repo):
    write_model(repo, "a")
    with running(exposed_args(repo)) as srv:
        assert_adds(srv, "a", 1)


def test_exposed_listener_starts_with_allow_unauthenticated(repo):
    write_model(repo, "a")
    with running(exposed_args(repo, *EXPLICIT, "--allow-unauthenticated-model-control=true")) as srv:
        r = load(srv, "a")
        assert r.status_code == 200, r.text
        assert_adds(srv, "a", 1)


def test_exposed_listener_starts_with_restricted_model_repository(repo):
    write_model(repo, "a")
    args = exposed_args(repo, *EXPLICIT, "--http-restricted-api=model-repository:admin-key=s3cret")
    with running(args) as srv:
        r = load(srv, "a")
        assert r.status_code == 403, f"load without the credential: {r.status_code} {r.text!r}"
        assert "admin-key" in r.text, r.text
        r = load(srv, "a", headers={"admin-key": "wrong"})
        assert r.status_code == 403, f"load with a wrong credential: {r.status_code} {r.text!r}"
        assert srv.post("/v2/repository/index").status_code == 403
        assert_not_served(srv, "a")  # nothing may have been loaded by the refused requests
        r = load(srv, "a", headers={"admin-key": "s3cret"})
        assert r.status_code == 200, r.text
        assert_adds(srv, "a", 1)
        r = unload(srv, "a")
        assert r.status_code == 403, r.text
        assert_adds(srv, "a", 1)
        r = unload(srv, "a", headers={"admin-key": "s3cret"})
        assert r.status_code == 200, r.text
        assert_not_served(srv, "a")


def test_exposed_grpc_listener_starts_with_restricted_model_repository(repo):
    write_model(repo, "a", 1)
    args = grpc_base_args(repo, ENGINE, [*EXPLICIT, "--grpc-restricted-protocol=model-repository:admin-key=s3cret"])
    args[args.index("--grpc-address=127.0.0.1")] = "--grpc-address=0.0.0.0"
    with running(args) as srv:
        stub = srv.grpc_stub()
        req = service_pb2.RepositoryModelLoadRequest(model_name="a")
        grpc_error(lambda: stub.RepositoryModelLoad(req), grpc.StatusCode.UNAVAILABLE, "restricted")
        assert_not_served(srv, "a")
        stub.RepositoryModelLoad(req, metadata=[("triton-grpc-protocol-admin-key", "s3cret")])
        assert_adds(srv, "a", 1)


def test_load_model_flag_checks(repo):
    write_model(repo, "a")
    proc = run_to_exit(base_args(repo, ENGINE, ["--load-model=a"]))
    assert proc.returncode == 1
    assert "requires setting '--model-control-mode=explicit'" in proc.stderr.decode(errors="replace")
    proc = run_to_exit(base_args(repo, ENGINE, [*EXPLICIT, "--load-model=*", "--load-model=a"]))
    assert proc.returncode == 1
    assert "Wildcard model name '*' must be the ONLY startup model" in proc.stderr.decode(errors="replace")


# --------------------------------------------------------------------------------------------------------------
# Explicit mode: startup models, index, load / unload
# --------------------------------------------------------------------------------------------------------------


def test_explicit_startup_loads_only_the_listed_models(repo):
    write_model(repo, "a", 1)
    write_model(repo, "b", 2)
    write_model(repo, "c", 3)
    with explicit(repo, "--load-model=a") as srv:
        idx = index_of(srv)
        assert_ready_entry(idx["a"], "a")
        assert idx.get("b") == [{"name": "b"}], f"never-loaded models appear with their name only: {idx}"
        assert idx.get("c") == [{"name": "c"}], idx
        assert_adds(srv, "a", 1)
        assert_not_served(srv, "b")
        assert_error(srv.get("/v2/models/b/ready"), 404, exact="Request for unknown model: 'b' is not found")
        assert srv.get("/v2/health/ready").status_code == 200
        r = srv.post("/v2/repository/index", json={"ready": True})
        assert r.status_code == 200 and [e["name"] for e in r.json()] == ["a"], r.text


def test_explicit_without_load_model_loads_nothing(repo):
    write_model(repo, "a")
    write_model(repo, "b")
    with explicit(repo) as srv:
        assert srv.index() == [{"name": "a"}, {"name": "b"}]
        assert srv.get("/v2/health/ready").status_code == 200
        assert_not_served(srv, "a")


def test_explicit_load_model_star_loads_everything(repo):
    write_model(repo, "a", 1)
    write_model(repo, "b", 2)
    with explicit(repo, "--load-model=*") as srv:
        assert is_ready_v(srv, "a") and is_ready_v(srv, "b"), srv.index()
        assert_adds(srv, "a", 1)
        assert_adds(srv, "b", 2)


def test_load_unload_cycle(repo):
    write_model(repo, "a", 4)
    with explicit(repo) as srv:
        r = load(srv, "a")
        assert r.status_code == 200, r.text
        assert_ready_entry(entries(srv, "a"), "a")
        assert srv.get("/v2/models/a/ready").status_code == 200
        assert model_config(srv, "a")["max_batch_size"] == 8
        assert_adds(srv, "a", 4, rows=3)

        r = unload(srv, "a")
        assert r.status_code == 200, r.text
        (e,) = entries(srv, "a")
        assert e == {"name": "a", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}, e
        assert_not_served(srv, "a")
        assert_error(srv.get("/v2/models/a/ready"), 400, exact="Model version not ready")
        # Strict readiness (the default) accepts unloaded versions.
        assert srv.get("/v2/health/ready").status_code == 200

        # Unloading again is fine; loading again serves again.
        assert unload(srv, "a").status_code == 200
        assert load(srv, "a").status_code == 200
        assert is_ready_v(srv, "a"), srv.index()
        assert_adds(srv, "a", 4)


def test_unload_answers(repo):
    write_model(repo, "a")
    with explicit(repo) as srv:
        r = unload(srv, "a")
        assert r.status_code == 200, f"a model of the repository that is not loaded unloads fine: {r.text}"
        assert_error(unload(srv, "nowhere"), 404)
        assert_error(load(srv, "nowhere"), 400, "no model directory")
        assert load(srv, "a").status_code == 200
        r = unload(srv, "a", b'{"parameters":{"unload_dependents":true}}')
        assert r.status_code == 200, r.text
        assert is_unloaded(srv, "a"), srv.index()
        assert load(srv, "a").status_code == 200
        r = unload(srv, "a", b'{"parameters":{"unload_dependents":false}}')
        assert r.status_code == 200, r.text
        assert is_unloaded(srv, "a"), srv.index()
        assert_error(unload(srv, "a", b'{"parameters":{"unload_dependents":"yes"}}'), 400)


def test_tritonclient_http_load_unload(repo):
    write_model(repo, "a", 2)
    with explicit(repo) as srv:
        c = srv.client()
        try:
            assert not c.is_model_ready("a")
            c.load_model("a")
            assert c.is_model_ready("a")
            inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
            inp.set_data_from_numpy(X)
            out = c.infer("a", [inp]).as_numpy("OUTPUT0")
            np.testing.assert_allclose(out, X + 2)
            c.load_model("a", config=config_json("a", 2))
            assert c.get_model_config("a")["max_batch_size"] == 2
            c.unload_model("a", unload_dependents=True)
            assert not c.is_model_ready("a")
            with pytest.raises(InferenceServerException) as e:
                c.load_model("nowhere")
            assert "no model directory" in str(e.value)
        finally:
            c.close()


def test_unload_waits_for_in_flight_requests(repo):
    # A lone request waits out the 1.5 s batching delay, so it is still in flight when the unload arrives.
    write_model(repo, "slow", 3, extra="dynamic_batching { max_queue_delay_microseconds: 1500000 }\n")
    with explicit(repo, "--load-model=slow") as srv:
        done: dict = {}

        def request():
            with requests.Session() as s:
                done["response"] = infer(srv, "slow", session=s)
            done["at"] = time.monotonic()

        t = threading.Thread(target=request)
        started = time.monotonic()
        t.start()
        time.sleep(0.4)
        assert "response" not in done, "the request was not held by the batcher: the test cannot check draining"
        r = unload(srv, "slow")
        unloaded_at = time.monotonic()
        t.join(30)
        assert r.status_code == 200, r.text
        assert added(done["response"]) == 3, "the in-flight request must be answered, not failed by the unload"
        assert unloaded_at >= done["at"] - 0.05, (
            f"unload returned {done['at'] - unloaded_at:.2f}s before its in-flight request was answered"
        )
        assert unloaded_at - started >= 1.0, "the unload did not wait for the request"
        assert is_unloaded(srv, "slow"), srv.index()


# --------------------------------------------------------------------------------------------------------------
# Reloads
# --------------------------------------------------------------------------------------------------------------


def test_reload_picks_up_changed_files(repo):
    d = write_model(repo, "a", 1)
    with explicit(repo, "--load-model=a") as srv:
        assert_adds(srv, "a", 1)
        (d / "1" / "model.onnx").write_bytes(add_model_bytes(5))
        (d / "config.pbtxt").write_text(config_pbtxt("a", 4))
        r = load(srv, "a")
        assert r.status_code == 200, r.text
        assert_adds(srv, "a", 5)
        assert model_config(srv, "a")["max_batch_size"] == 4
        # A new version folder under the default policy (latest 1) replaces version 1.
        (d / "2").mkdir()
        (d / "2" / "model.onnx").write_bytes(add_model_bytes(6))
        assert load(srv, "a").status_code == 200
        r = infer(srv, "a")
        assert added(r) == 6 and r.json()["model_version"] == "2", r.text
        assert srv.get("/v2/models/a").json()["versions"] == ["2"]


def test_reload_of_unchanged_model_is_a_noop(repo):
    write_model(repo, "a", 1)
    with explicit(repo, "--load-model=a") as srv:
        for _ in range(3):
            assert_adds(srv, "a", 1)
        before = srv.get("/v2/models/a/stats").json()["model_stats"][0]
        assert before["inference_count"] == 3, before
        r = load(srv, "a")
        assert r.status_code == 200, r.text
        assert_adds(srv, "a", 1)
        after = srv.get("/v2/models/a/stats").json()["model_stats"][0]
        assert after["inference_count"] == 4, f"the unchanged model was rebuilt (statistics reset): {after}"


BROKEN_CHANGES = {
    "corrupt config.pbtxt": ("config.pbtxt", b"max_batch_size: [[[ this is not a config"),
    "broken model.onnx": ("1/model.onnx", b"\x08\x07garbage, not an ONNX model" * 8),
    "config with a wrong input": ("config.pbtxt", config_pbtxt("a").replace("INPUT0", "NOPE").encode()),
}


@pytest.mark.parametrize("change", list(BROKEN_CHANGES))
def test_failed_reload_keeps_the_old_version_serving(repo, change):
    d = write_model(repo, "a", 1, max_batch_size=8)
    rel, data = BROKEN_CHANGES[change]
    with explicit(repo, "--load-model=a") as srv:
        cfg_before = model_config(srv, "a")
        (d / rel).write_bytes(data)
        assert_error(load(srv, "a"), 400, "failed to load 'a'")
        assert_adds(srv, "a", 1)
        assert model_config(srv, "a") == cfg_before
        assert is_ready_v(srv, "a"), srv.index()
        assert srv.get("/v2/models/a/ready").status_code == 200
        assert srv.get("/v2/health/ready").status_code == 200
        # Fixed files load again.
        write_model(repo, "a", 7, max_batch_size=4)
        assert load(srv, "a").status_code == 200
        assert_adds(srv, "a", 7)
        assert model_config(srv, "a")["max_batch_size"] == 4


def test_explicit_reload_under_traffic_without_failed_requests(repo):
    d = write_model(repo, "live", 1)
    with explicit(repo, "--load-model=live") as srv:
        with Traffic(srv, "live") as traffic:
            traffic.wait_requests()
            (d / "1" / "model.onnx").write_bytes(add_model_bytes(2))
            r = load(srv, "live")
            assert r.status_code == 200, r.text
            assert_adds(srv, "live", 2)
            traffic.wait_requests()
            r = load(srv, "live", {"config": config_json("live", 4, dynamic_batching={})})
            assert r.status_code == 200, r.text
            assert model_config(srv, "live")["max_batch_size"] == 4
            traffic.wait_requests()
            (d / "1" / "model.onnx").write_bytes(b"broken")
            assert_error(load(srv, "live"), 400, "failed to load 'live'")
            traffic.wait_requests()
        results = list(traffic.results)
        failures = traffic.failures()
        assert not failures, f"{len(failures)} of {len(results)} requests failed during the reloads, e.g. {failures[:5]}"
        seen = {(v, c) for _, v, c in results}
        assert seen <= {("1", 1.0), ("1", 2.0)}, seen
        assert ("1", 1.0) in seen and ("1", 2.0) in seen, seen
        assert model_config(srv, "live")["max_batch_size"] == 4, "the failed reload must not change the served config"


def test_failed_first_load_reports_the_error(repo):
    d = write_model(repo, "a", 1)
    (d / "1" / "model.onnx").write_bytes(b"not onnx at all")
    with explicit(repo) as srv:
        assert_error(load(srv, "a"), 400, "failed to load 'a'")
        assert_not_served(srv, "a")
        write_model(repo, "a", 2)
        assert load(srv, "a").status_code == 200
        assert_adds(srv, "a", 2)


# --------------------------------------------------------------------------------------------------------------
# `config` override
# --------------------------------------------------------------------------------------------------------------


def test_config_override_is_applied_then_disk_config_comes_back(repo):
    write_model(repo, "a", 1, max_batch_size=8)
    with explicit(repo, "--load-model=a") as srv:
        assert "dynamic_batching" not in model_config(srv, "a")
        override = config_json("a", 2, dynamic_batching={"max_queue_delay_microseconds": 100})
        r = load(srv, "a", {"config": override})
        assert r.status_code == 200, r.text
        cfg = model_config(srv, "a")
        assert cfg["max_batch_size"] == 2, cfg
        assert "dynamic_batching" in cfg and int(cfg["dynamic_batching"]["max_queue_delay_microseconds"]) == 100, cfg
        assert_adds(srv, "a", 1, rows=2)
        assert_error(infer(srv, "a", rows=3), 400, "batch-size must be <= 2")
        # The same override again is accepted; a load without one goes back to config.pbtxt.
        assert load(srv, "a", {"config": override}).status_code == 200
        r = load(srv, "a")
        assert r.status_code == 200, r.text
        cfg = model_config(srv, "a")
        assert cfg["max_batch_size"] == 8 and "dynamic_batching" not in cfg, cfg
        assert_adds(srv, "a", 1, rows=3)


def test_config_override_on_a_model_not_yet_loaded(repo):
    write_model(repo, "a", 3)
    with explicit(repo) as srv:
        assert load(srv, "a", {"config": config_json("a", 1)}).status_code == 200
        assert model_config(srv, "a")["max_batch_size"] == 1
        assert_adds(srv, "a", 3)


@pytest.mark.parametrize(
    "override",
    ["{not json", '{"max_batch_size": "many"}', '{"no_such_field": 1}', "[]"],
    ids=["not-json", "wrong-type", "unknown-field", "not-an-object"],
)
def test_invalid_config_override(repo, override):
    write_model(repo, "a", 1)
    with explicit(repo, "--load-model=a") as srv:
        assert_error(load(srv, "a", {"config": override}), 400, "Invalid config override")
        assert_adds(srv, "a", 1)
        assert model_config(srv, "a")["max_batch_size"] == 8


# --------------------------------------------------------------------------------------------------------------
# Load parameters
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,contains",
    [
        (b'{"parameters":{"bogus":"x"}}', "unexpected load parameter"),
        (b'{"parameters":{"config":5}}', "config"),
        (b'{"parameters":{"config":{"max_batch_size":2}}}', "config"),
        (b'{"parameters":{"config":null}}', "config"),
        (b'{"parameters":"config"}', "parameters"),
        (b"{not json", ""),
        (b"[1]", ""),
    ],
    ids=["unknown-key", "config-int", "config-object", "config-null", "parameters-string", "bad-json", "array"],
)
def test_bad_load_parameters(repo, body, contains):
    write_model(repo, "a", 1)
    with explicit(repo) as srv:
        r = srv.post("/v2/repository/models/a/load", data=body)
        assert_error(r, 400, contains)
        assert_not_served(srv, "a")


def test_load_body_is_optional(repo):
    write_model(repo, "a", 1)
    write_model(repo, "b", 2)
    with explicit(repo) as srv:
        assert srv.post("/v2/repository/models/a/load").status_code == 200
        assert srv.post("/v2/repository/models/b/load", data=b"{}").status_code == 200
        assert srv.post("/v2/repository/models/b/unload").status_code == 200
        assert_adds(srv, "a", 1)


# --------------------------------------------------------------------------------------------------------------
# `file:` override
# --------------------------------------------------------------------------------------------------------------


def override_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("rampart-model-*"))


def test_file_override_refused_without_the_flag(repo):
    write_model(repo, "a", 1)
    with explicit(repo, "--load-model=a") as srv:
        before = override_dirs()
        params = {"config": config_json("a"), "file:1/model.onnx": b64(add_model_bytes(9))}
        assert_error(load(srv, "a", params), 403, "--allow-model-file-override")
        assert_error(load(srv, "uploaded", {"config": config_json("uploaded"), "file:1/model.onnx": b64(add_model_bytes(9))}), 403, "--allow-model-file-override")
        # Even without config the refusal is the answer (the feature is off).
        assert_error(load(srv, "a", {"file:1/model.onnx": b64(add_model_bytes(9))}), 403, "--allow-model-file-override")
        assert_adds(srv, "a", 1)
        assert_not_served(srv, "uploaded")
        assert override_dirs() == before, "nothing may be written for a refused override"


def test_file_override_requires_config(repo):
    with explicit(repo, "--allow-model-file-override=true") as srv:
        assert_error(
            load(srv, "up", {"file:1/model.onnx": b64(add_model_bytes(1))}),
            400,
            "Load parameter 'config' must be specified for model file override",
        )
        assert_not_served(srv, "up")


ESCAPES = [
    "../{tag}",
    "1/../../{tag}",
    "1/../../../{tag}",
    "/tmp/{tag}",
    "1\\..\\..\\{tag}",
    "1/mo\ndel.onnx",
    "1/mo\x00del.onnx",
    "",
]


@pytest.mark.parametrize("path", ESCAPES, ids=["dotdot", "up-two", "up-three", "absolute", "backslash", "newline", "nul", "empty"])
def test_file_override_paths_stay_inside(repo, path):
    tag = f"rampart-escape-{uuid.uuid4().hex}"
    rel = path.format(tag=tag)
    with explicit(repo, "--allow-model-file-override=true") as srv:
        before = override_dirs()
        params = {"config": config_json("up"), "file:1/model.onnx": b64(add_model_bytes(1)), f"file:{rel}": b64(b"escaped")}
        assert_error(load(srv, "up", params), 400, "Invalid file parameter")
        assert not (Path(tempfile.gettempdir()) / tag).exists(), "a file was written outside the override directory"
        assert not (Path("/tmp") / tag).exists(), "a file was written outside the override directory"
        assert not (repo / tag).exists()
        assert_not_served(srv, "up")
        assert override_dirs() <= before, "a refused override must leave no directory behind"


def test_file_override_upload_loads_and_serves(repo):
    write_model(repo, "a", 1)
    with explicit(repo, "--allow-model-file-override=true", "--load-model=a") as srv:
        before = override_dirs()
        model = add_model_bytes(5)
        params = {"config": config_json("uploaded", 4), "file:1/model.onnx": b64(model)}
        r = load(srv, "uploaded", params)
        assert r.status_code == 200, r.text
        assert_adds(srv, "uploaded", 5)
        assert is_ready_v(srv, "uploaded"), srv.index()
        assert model_config(srv, "uploaded")["max_batch_size"] == 4
        assert not (repo / "uploaded").exists(), "the upload must not go into the model repository"
        new = override_dirs() - before
        assert len(new) == 1, f"expected one fresh override directory, got {new}"
        (d,) = new
        assert (d / "1" / "model.onnx").read_bytes() == model

        # Overriding a model of the repository serves the uploaded files; a plain load goes back to disk.
        r = load(srv, "a", {"config": config_json("a"), "file:1/model.onnx": b64(add_model_bytes(8))})
        assert r.status_code == 200, r.text
        assert_adds(srv, "a", 8)
        assert load(srv, "a").status_code == 200
        assert_adds(srv, "a", 1)

        assert unload(srv, "uploaded").status_code == 200
        assert_not_served(srv, "uploaded")
        wait_for("the override directory to be removed after unload", lambda: not d.exists())
        wait_for("every override directory to be removed", lambda: override_dirs() <= before)


def test_file_override_directory_is_private(repo):
    """The uploaded files go into a fresh directory only the server's user can enter (mode 0700)."""
    with explicit(repo, "--allow-model-file-override=true") as srv:
        before = override_dirs()
        r = load(srv, "priv", {"config": config_json("priv"), "file:1/model.onnx": b64(add_model_bytes(2))})
        assert r.status_code == 200, r.text
        new = override_dirs() - before
        assert len(new) == 1, f"expected one fresh override directory, got {new}"
        (d,) = new
        mode = stat.S_IMODE(d.stat().st_mode)
        assert mode & 0o077 == 0, f"override directory {d} is not private: mode {oct(mode)}"
        assert_adds(srv, "priv", 2)


def test_file_override_with_tritonclient_http(repo):
    with explicit(repo, "--allow-model-file-override=true") as srv:
        c = srv.client()
        try:
            c.load_model("tc_up", config=config_json("tc_up"), files={"file:1/model.onnx": add_model_bytes(6)})
            assert c.is_model_ready("tc_up")
            inp = httpclient.InferInput("INPUT0", [1, 4], "FP32")
            inp.set_data_from_numpy(X)
            np.testing.assert_allclose(c.infer("tc_up", [inp]).as_numpy("OUTPUT0"), X + 6)
        finally:
            c.close()


def test_file_override_bad_base64(repo):
    with explicit(repo, "--allow-model-file-override=true") as srv:
        params = {"config": config_json("up"), "file:1/model.onnx": "!!! not base64 !!!"}
        assert_error(load(srv, "up", params), 400)
        assert_not_served(srv, "up")


def test_file_override_broken_upload_keeps_old_serving(repo):
    write_model(repo, "a", 1)
    with explicit(repo, "--allow-model-file-override=true", "--load-model=a") as srv:
        params = {"config": config_json("a"), "file:1/model.onnx": b64(b"definitely not onnx")}
        assert_error(load(srv, "a", params), 400, "failed to load 'a'")
        assert_adds(srv, "a", 1)


# --------------------------------------------------------------------------------------------------------------
# Model names
# --------------------------------------------------------------------------------------------------------------

BAD_NAMES = [
    ("%20", "cannot be empty"),
    ("%20%20%09", "cannot be empty"),
    ("..", "path traversal"),
    ("%2E%2E", "path traversal"),
    ("a%5Cb", "path traversal"),
    ("a%0Ab", "control characters"),
    ("a%01", "control characters"),
]


@pytest.mark.parametrize("name,message", BAD_NAMES, ids=[n for n, _ in BAD_NAMES])
def test_http_model_name_validation(repo, name, message):
    write_model(repo, "a", 1)
    with explicit(repo, "--load-model=a") as srv:
        for action in ("load", "unload"):
            status, body = raw_request(srv, "POST", f"/v2/repository/models/{name}/{action}", b"{}")
            assert status == 400, f"{action} {name!r}: {status} {body[:300]!r}"
            assert message in json.loads(body)["error"], f"{action} {name!r}: {body!r}"
        for method, path in (("GET", f"/v2/models/{name}"), ("POST", f"/v2/models/{name}/infer"), ("GET", f"/v2/models/{name}/config")):
            status, body = raw_request(srv, method, path, infer_body() if method == "POST" else b"")
            assert status == 400, f"{method} {path}: expected 400 (invalid name), got {status} {body[:300]!r}"
            assert message in json.loads(body)["error"], f"{method} {path}: {body!r}"
        assert_adds(srv, "a", 1)


def test_http_model_name_with_encoded_slash(repo):
    write_model(repo, "a", 1)
    with explicit(repo) as srv:
        status, body = raw_request(srv, "POST", "/v2/repository/models/..%2Fa/load", b"{}")
        assert status == 400 and b"path traversal" in body, f"{status} {body[:300]!r}"
        status, body = raw_request(srv, "POST", "/v2/repository/models/a%2F1/load", b"{}")
        assert status == 400 and b"path traversal" in body, f"{status} {body[:300]!r}"
        assert_not_served(srv, "a")


GRPC_BAD_NAMES = [
    ("", "cannot be empty"),
    ("  ", "cannot be empty"),
    ("..", "path traversal"),
    (".", "path traversal"),
    ("a/b", "path traversal"),
    ("../a", "path traversal"),
    ("a\\b", "path traversal"),
    ("a\nb", "control characters"),
]


def test_grpc_model_name_validation(repo):
    write_model(repo, "a", 1)
    with explicit(repo, "--load-model=a", grpc_on=True) as srv:
        stub = srv.grpc_stub()
        for name, message in GRPC_BAD_NAMES:
            grpc_error(
                lambda: stub.RepositoryModelLoad(service_pb2.RepositoryModelLoadRequest(model_name=name)),
                grpc.StatusCode.INVALID_ARGUMENT,
                message,
            )
            grpc_error(
                lambda: stub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name=name)),
                grpc.StatusCode.INVALID_ARGUMENT,
                message,
            )
        assert stub.ModelReady(service_pb2.ModelReadyRequest(name="a")).ready


# --------------------------------------------------------------------------------------------------------------
# Modes that refuse load / unload
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "poll"])
def test_load_unload_refused_outside_explicit_mode(repo, mode):
    write_model(repo, "a", 1)
    extra = [] if mode == "none" else POLL
    with running(grpc_base_args(repo, ENGINE, extra), f"rampart[{mode}]") as srv:
        assert_error(load(srv, "a"), 503, exact=MODE_MESSAGE)
        assert_error(unload(srv, "a"), 503, exact=MODE_MESSAGE)
        assert_error(load(srv, "b"), 503, exact=MODE_MESSAGE)
        assert_error(load(srv, "a", {"config": config_json("a", 2)}), 503, exact=MODE_MESSAGE)
        assert_error(srv.post("/v2/repository/foo/models/a/load", data=b"{}"), 501, "repository_name")
        assert_error(srv.post("/v2/repository/foo/models/a/unload", data=b"{}"), 501, "repository_name")
        stub = srv.grpc_stub()
        grpc_error(
            lambda: stub.RepositoryModelLoad(service_pb2.RepositoryModelLoadRequest(model_name="a")),
            grpc.StatusCode.UNAVAILABLE,
            exact=MODE_MESSAGE,
        )
        grpc_error(
            lambda: stub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name="a")),
            grpc.StatusCode.UNAVAILABLE,
            exact=MODE_MESSAGE,
        )
        # Still serving, index works, config unchanged.
        assert_adds(srv, "a", 1)
        assert is_ready_v(srv, "a")
        assert model_config(srv, "a")["max_batch_size"] == 8


def test_named_repository_refused_in_explicit_mode(repo):
    write_model(repo, "a", 1)
    with explicit(repo) as srv:
        assert_error(srv.post("/v2/repository/foo/models/a/load", data=b"{}"), 501, "repository_name")
        assert_not_served(srv, "a")
        assert load(srv, "a").status_code == 200
        assert_error(srv.post("/v2/repository/foo/models/a/unload", data=b"{}"), 501, "repository_name")
        assert_adds(srv, "a", 1)


# --------------------------------------------------------------------------------------------------------------
# gRPC
# --------------------------------------------------------------------------------------------------------------


def grpc_infer(client, model: str) -> tuple[np.ndarray, str]:
    inp = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    inp.set_data_from_numpy(X)
    res = client.infer(model, [inp])
    return res.as_numpy("OUTPUT0"), res.get_response().model_version


def grpc_ready(client, model: str) -> bool:
    """gRPC ModelReady; a model the server does not know may also answer NOT_FOUND (as in test_grpc_infer)."""
    try:
        return client.is_model_ready(model)
    except InferenceServerException as e:
        assert "NOT_FOUND" in str(e.status()), e
        return False


def test_grpc_explicit_load_unload_reload(repo):
    d = write_model(repo, "a", 1)
    write_model(repo, "b", 2)
    with explicit(repo, grpc_on=True) as srv:
        c = srv.grpc_client()
        try:
            idx = {m.name: m for m in c.get_model_repository_index().models}
            assert set(idx) == {"a", "b"} and idx["a"].state == "" and idx["a"].version == "", idx
            assert not grpc_ready(c, "a")
            c.load_model("a")
            assert grpc_ready(c, "a")
            out, version = grpc_infer(c, "a")
            np.testing.assert_allclose(out, X + 1)
            assert version == "1"

            # Reload with changed files.
            (d / "1" / "model.onnx").write_bytes(add_model_bytes(3))
            c.load_model("a")
            np.testing.assert_allclose(grpc_infer(c, "a")[0], X + 3)

            # Config override, then back to disk.
            c.load_model("a", config=config_json("a", 2))
            assert c.get_model_config("a").config.max_batch_size == 2
            c.load_model("a")
            assert c.get_model_config("a").config.max_batch_size == 8

            c.unload_model("a", unload_dependents=True)
            assert not grpc_ready(c, "a")
            idx = {(m.name, m.version): m for m in c.get_model_repository_index().models}
            assert idx[("a", "1")].state == "UNAVAILABLE" and idx[("a", "1")].reason == "unloaded", idx
            c.unload_model("b")  # in the repository, not loaded: fine
            assert srv.get("/v2/health/ready").status_code == 200
        finally:
            c.close()

        stub = srv.grpc_stub()
        grpc_error(lambda: stub.RepositoryModelLoad(service_pb2.RepositoryModelLoadRequest(model_name="nowhere")),
                   grpc.StatusCode.INVALID_ARGUMENT, "no model directory")
        grpc_error(lambda: stub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name="nowhere")),
                   grpc.StatusCode.NOT_FOUND)
        req = service_pb2.RepositoryModelLoadRequest(model_name="a")
        req.parameters["config"].string_param = "{not json"
        grpc_error(lambda: stub.RepositoryModelLoad(req), grpc.StatusCode.INVALID_ARGUMENT, "Invalid config override")
        req = service_pb2.RepositoryModelLoadRequest(model_name="a")
        req.parameters["bogus"].string_param = "x"
        grpc_error(lambda: stub.RepositoryModelLoad(req), grpc.StatusCode.INVALID_ARGUMENT, "unexpected load parameter")
        req = service_pb2.RepositoryModelLoadRequest(model_name="a")
        req.parameters["config"].bytes_param = config_json("a").encode()
        grpc_error(lambda: stub.RepositoryModelLoad(req), grpc.StatusCode.INVALID_ARGUMENT, "config")
        req = service_pb2.RepositoryModelUnloadRequest(model_name="a")
        req.parameters["unload_dependents"].string_param = "yes"
        grpc_error(lambda: stub.RepositoryModelUnload(req), grpc.StatusCode.INVALID_ARGUMENT)
        req = service_pb2.RepositoryModelLoadRequest(model_name="a", repository_name="foo")
        grpc_error(lambda: stub.RepositoryModelLoad(req), grpc.StatusCode.UNIMPLEMENTED, "repository_name")


def test_grpc_file_override(repo):
    write_model(repo, "a", 1)
    with explicit(repo, "--load-model=a", grpc_on=True) as srv:
        c = srv.grpc_client()
        try:
            grpc_error(
                lambda: c.load_model("g_up", config=config_json("g_up"), files={"file:1/model.onnx": add_model_bytes(4)}),
                grpc.StatusCode.PERMISSION_DENIED,
                "--allow-model-file-override",
            )
            assert not grpc_ready(c, "g_up")
        finally:
            c.close()

    with explicit(repo, "--allow-model-file-override=true", grpc_on=True) as srv:
        c = srv.grpc_client()
        try:
            c.load_model("g_up", config=config_json("g_up"), files={"file:1/model.onnx": add_model_bytes(4)})
            assert grpc_ready(c, "g_up")
            np.testing.assert_allclose(grpc_infer(c, "g_up")[0], X + 4)
            grpc_error(
                lambda: c.load_model("g_up2", files={"file:1/model.onnx": add_model_bytes(4)}),
                grpc.StatusCode.INVALID_ARGUMENT,
                "Load parameter 'config' must be specified for model file override",
            )
            grpc_error(
                lambda: c.load_model("g_up3", config=config_json("g_up3"), files={"file:1/model.onnx": add_model_bytes(4), "file:../../x": b"x"}),
                grpc.StatusCode.INVALID_ARGUMENT,
                "Invalid file parameter",
            )
            assert not grpc_ready(c, "g_up3")
            # A file parameter must be bytes.
            req = service_pb2.RepositoryModelLoadRequest(model_name="g_up4")
            req.parameters["config"].string_param = config_json("g_up4")
            req.parameters["file:1/model.onnx"].string_param = "not bytes"
            grpc_error(lambda: srv.grpc_stub().RepositoryModelLoad(req), grpc.StatusCode.INVALID_ARGUMENT)
            c.unload_model("g_up")
            assert not grpc_ready(c, "g_up")
        finally:
            c.close()


# --------------------------------------------------------------------------------------------------------------
# Poll mode
# --------------------------------------------------------------------------------------------------------------


def test_poll_adds_and_removes_models(repo, tmp_path):
    staging = tmp_path / "staging"
    write_model(repo, "a", 1)
    with running(base_args(repo, ENGINE, POLL), f"rampart[{ENGINE}, poll]") as srv:
        assert_adds(srv, "a", 1)
        staged_model(repo, staging, "b", 2)
        wait_for("model b to be loaded", lambda: is_ready_v(srv, "b"), srv=srv)
        assert_adds(srv, "b", 2)

        os.rename(repo / "a", staging / "a_removed")
        wait_for("model a to be unloaded", lambda: is_unloaded(srv, "a"), srv=srv)
        (e,) = entries(srv, "a")
        assert e == {"name": "a", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}, e
        assert_not_served(srv, "a")
        assert_adds(srv, "b", 2)
        assert srv.get("/v2/health/ready").status_code == 200

        os.rename(staging / "a_removed", repo / "a")
        wait_for("model a to come back", lambda: is_ready_v(srv, "a"), srv=srv)
        assert_adds(srv, "a", 1)


def test_poll_swaps_under_traffic_without_failed_requests(repo, tmp_path):
    staging = tmp_path / "staging"
    d = write_model(repo, "live", 1)
    with running(base_args(repo, ENGINE, POLL), f"rampart[{ENGINE}, poll, traffic]") as srv:
        with Traffic(srv, "live") as traffic:
            traffic.wait_requests()

            # 1. config.pbtxt edited: smaller max batch size, dynamic batching on.
            atomic_write(d / "config.pbtxt", config_pbtxt("live", 4, "dynamic_batching { max_queue_delay_microseconds: 200 }\n"), staging)
            wait_for(
                "the edited config to be served",
                lambda: (lambda c: c["max_batch_size"] == 4 and "dynamic_batching" in c)(model_config(srv, "live")),
                srv=srv,
            )
            traffic.wait_requests()

            # 2. A new version folder: under the default policy (latest 1) version 2 replaces version 1.
            v2 = staging / "v2"
            v2.mkdir(parents=True)
            (v2 / "model.onnx").write_bytes(add_model_bytes(2))
            os.rename(v2, d / "2")
            wait_for("version 2 to be served", lambda: srv.get("/v2/models/live").json()["versions"] == ["2"], srv=srv)
            traffic.wait_requests()

            # 3. Version 2's model.onnx replaced.
            atomic_write(d / "2" / "model.onnx", add_model_bytes(3), staging)
            wait_for("the replaced model.onnx to be served", lambda: added(infer(srv, "live")) == 3, srv=srv)
            traffic.wait_requests()

        failures = traffic.failures()
        results = list(traffic.results)
        assert not failures, f"{len(failures)} of {len(results)} requests failed during the swaps, e.g. {failures[:5]}"
        seen = {(v, c) for _, v, c in results}
        assert seen <= {("1", 1.0), ("2", 2.0), ("2", 3.0)}, f"unexpected (version, constant) answers: {seen}"
        assert ("1", 1.0) in seen and ("2", 3.0) in seen, seen
        assert len(results) >= 80, f"only {len(results)} requests were made: the traffic check is too thin"
        assert model_config(srv, "live")["max_batch_size"] == 4


def test_poll_broken_change_keeps_the_old_model_serving(repo, tmp_path):
    staging = tmp_path / "staging"
    d = write_model(repo, "a", 1)
    with running(base_args(repo, ENGINE, POLL), f"rampart[{ENGINE}, poll, broken]") as srv:
        cfg = model_config(srv, "a")
        with Traffic(srv, "a", threads=1) as traffic:
            mark = len(srv.output())
            atomic_write(d / "config.pbtxt", "max_batch_size: [[[ broken", staging)
            # The poller must have tried (and failed) to reload before the old model is checked.
            wait_for("the poller to log the failed reload", lambda: "failed to load 'a'" in srv.output()[mark:], srv=srv)
            assert_adds(srv, "a", 1)
            assert model_config(srv, "a") == cfg
            assert is_ready_v(srv, "a"), srv.index()

            mark = len(srv.output())
            atomic_write(d / "1" / "model.onnx", b"\x08\x07 not an onnx model" * 4, staging)
            atomic_write(d / "config.pbtxt", config_pbtxt("a"), staging)
            wait_for("the poller to log the failed reload", lambda: "failed to load 'a'" in srv.output()[mark:], srv=srv)
            assert_adds(srv, "a", 1)
            assert is_ready_v(srv, "a"), srv.index()

            # A good change is still picked up.
            atomic_write(d / "1" / "model.onnx", add_model_bytes(6), staging)
            atomic_write(d / "config.pbtxt", config_pbtxt("a", 2), staging)
            wait_for("the fixed model to be served", lambda: added(infer(srv, "a")) == 6, srv=srv)
            assert model_config(srv, "a")["max_batch_size"] == 2
        failures = traffic.failures()
        assert not failures, f"{len(failures)} of {len(traffic.results)} requests failed, e.g. {failures[:5]}"
        assert srv.get("/v2/health/ready").status_code == 200
