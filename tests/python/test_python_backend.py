"""Triton's Python backend (`backend: "python"`, crates/rampart-python): the models in tests/python/python_models,
written against `triton_python_backend_utils`, served by the real binary and called through tritonclient (HTTP and
gRPC, decoupled models over ModelStreamInfer) and raw HTTP where status codes and messages matter.

Each model instance is a worker process: a crash or a hang fails the requests it held with UNAVAILABLE naming the
model and the worker is restarted (the first restart at the next request); the worker's environment carries none of
the server's variables; unloading a model runs its `finalize()` and leaves no worker behind.

A server running as root starts its workers as uid 65534, which must be able to run the interpreter and read the
repository: the repositories live in world-readable temporary directories, and the interpreter is the first of
this venv's python and /usr/bin/python3 that imports numpy as that user (`worker_python`).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import ml_dtypes
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import (
    HTTP_TIMEOUT,
    GrpcClient,
    assert_error,
    concurrently,
    finish_server,
    grpc_base_args,
    grpc_error,
    start_server,
    wait_models_settled,
)

FIXTURES = Path(__file__).resolve().parent / "python_models"
SECRET = ("RAMPART_TEST_SECRET", "hunter2")
# The worker's whole environment (crates/rampart-python/src/spawn.rs).
WORKER_ENV = {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "RAMPART_SANDBOX"}
NOBODY = 65534  # the workers' user when the server runs as root
DECOUPLED_HTTP = "HTTP end point doesn't support models with decoupled transaction policy"


def runs_numpy_as(python: str, uid: int) -> bool:
    kw = {"user": uid, "group": uid, "extra_groups": []}
    try:
        probe = subprocess.run([python, "-I", "-c", "import numpy"], capture_output=True, timeout=60, **kw)
    except OSError:
        return False
    return probe.returncode == 0


@pytest.fixture(scope="session")
def worker_python() -> tuple[str, list[str]]:
    """(interpreter, extra server arguments): an interpreter the workers' user can run with numpy. As root, when
    neither candidate works for uid 65534, the workers keep root (`user=0`) and the venv's python."""
    if os.geteuid() != 0:
        return sys.executable, []
    for python in (sys.executable, "/usr/bin/python3"):
        if runs_numpy_as(python, NOBODY):
            return python, []
    return sys.executable, ["--backend-config=python,user=0"]


@pytest.fixture(scope="session")
def worker_uid(worker_python) -> int:
    return os.geteuid() if worker_python[1] or os.geteuid() != 0 else NOBODY


@pytest.fixture
def public_dir():
    """A fresh world-readable directory (pytest's tmp_path is private to us, not to the workers' user)."""
    made = []

    def make() -> Path:
        path = Path(tempfile.mkdtemp(prefix="rampart-python-test-"))
        path.chmod(0o755)
        made.append(path)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def module_public_dir():
    path = Path(tempfile.mkdtemp(prefix="rampart-python-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def copy_repo(dest: Path, names: list[str] | None = None) -> Path:
    """The fixture models (all, or `names`) copied under `dest`, readable by every user."""
    dest.mkdir(mode=0o755, exist_ok=True)
    for name in names or sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()):
        shutil.copytree(FIXTURES / name, dest / name)
    for path in dest.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


def python_server(repo: Path, worker_python: tuple[str, list[str]], name: str):
    """A server (HTTP and gRPC) on `repo`, made readable by the workers' user, whose workers run the
    `worker_python` interpreter; every model of the repository is READY."""
    for path in repo.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    python, more = worker_python
    extra = ["--exit-on-error=false", f"--backend-config=python,interpreter={python}", *more]
    server = start_server(grpc_base_args(repo, extra=extra), name, wait="live")
    index = wait_models_settled(server)
    assert all(e["state"] == "READY" for e in index), index
    return server


def python3_on_path(bindir: Path, target: str, *flags: str) -> Path:
    """`bindir/python3`, a script that runs `target` (with `flags`). A script, not a symlink: a symlink to a venv's
    python outside the venv does not find the venv (pyvenv.cfg is looked up next to the link)."""
    bindir.mkdir(mode=0o755)
    script = bindir / "python3"
    script.write_text(f'#!/bin/sh\nexec {" ".join([target, *flags])} "$@"\n')
    script.chmod(0o755)
    return bindir


def worker_pids(server_pid: int) -> list[int]:
    """The server's child processes that run the Python backend's worker (rampart_ipc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"rampart_ipc" in cmdline:
            pids.append(int(entry.name))
    return pids


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


def json_infer(datatype: str, shape: list[int], data: list, name: str = "IN") -> dict:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}


@pytest.fixture(scope="module")
def server_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server_home")


@pytest.fixture(scope="module")
def srv(module_public_dir, server_home, worker_python):
    """Every fixture model, HTTP and gRPC; the server's environment holds a secret and a HOME of its own so that
    the worker's environment can be compared with it."""
    repo = copy_repo(module_public_dir / "repo")
    python, extra = worker_python
    env = dict(os.environ, HOME=str(server_home))
    env[SECRET[0]] = SECRET[1]
    extra = ["--exit-on-error=false", f"--backend-config=python,interpreter={python}", *extra]
    args = grpc_base_args(repo, extra=extra)
    server = start_server(args, "rampart-python", wait="live", env=env)
    wait_models_settled(server)
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


def add_sub_inputs(module, a: np.ndarray, b: np.ndarray):
    ins = [module.InferInput("INPUT0", list(a.shape), "FP32"), module.InferInput("INPUT1", list(b.shape), "FP32")]
    ins[0].set_data_from_numpy(a)
    ins[1].set_data_from_numpy(b)
    return ins


def int_input(module, value: int, name: str = "IN"):
    t = module.InferInput(name, [1], "INT32")
    t.set_data_from_numpy(np.array([value], dtype=np.int32))
    return [t]


# ---------------------------------------------------------------------------------------
# Plain models
# ---------------------------------------------------------------------------------------


def test_add_sub_over_http_and_grpc(http, gclient):
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 0.5, dtype=np.float32)
    for client, module in ((http, httpclient), (gclient, grpcclient)):
        result = client.infer("add_sub", add_sub_inputs(module, a, b))
        assert result.as_numpy("OUTPUT0").dtype == np.float32
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_dynamic_batching_hands_concurrent_requests_to_one_execute_call(srv):
    """With a 200 ms queue delay, requests sent together arrive in one `execute(requests)` list: each response's
    REQUESTS is the length of the list its request was in."""
    n = 4

    def one(i):
        a = [float(i)] * 4
        body = {
            "inputs": [
                {"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": a},
                {"name": "INPUT1", "datatype": "FP32", "shape": [1, 4], "data": [1.0] * 4},
            ]
        }
        r = requests.post(f"{srv.base}/v2/models/add_sub_batched/infer", json=body, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        out = {o["name"]: o["data"] for o in r.json()["outputs"]}
        assert out["OUTPUT0"] == [i + 1.0] * 4 and out["OUTPUT1"] == [i - 1.0] * 4, (i, out)
        return out["REQUESTS"][0]

    counts = concurrently(one, n)
    assert max(counts) >= 2, f"every request ran in an execute() call of its own: {counts}"
    for k in set(counts):
        assert counts.count(k) % k == 0, f"inconsistent list lengths {counts}"


def test_bytes_round_trip_nul_and_non_utf8(http, gclient):
    words = np.array([b"plain", b"", b"\x00nul\x00inside", b"\xff\xfe\x80 not utf-8", "é".encode()], dtype=np.object_)
    for client, module in ((http, httpclient), (gclient, grpcclient)):
        t = module.InferInput("IN", [len(words)], "BYTES")
        t.set_data_from_numpy(words)
        out = client.infer("identity_bytes", [t]).as_numpy("OUT")
        assert out.shape == (len(words),)
        assert [bytes(x) for x in out] == list(words)


def test_large_tensors_travel_in_sealed_memory_both_ways(http, gclient):
    """Tensors above the inline size (32 KiB with the header) go through a sealed memfd in both directions."""
    big = bytes(range(256)) * 1024  # 256 KiB
    words = np.array([big, b"small", big[:40000]], dtype=np.object_)
    for client, module in ((http, httpclient), (gclient, grpcclient)):
        t = module.InferInput("IN", [len(words)], "BYTES")
        t.set_data_from_numpy(words)
        out = client.infer("identity_bytes", [t]).as_numpy("OUT")
        assert [bytes(x) for x in out] == list(words)


NUMERIC = {
    "BOOL": (np.bool_, [True, False, True]),
    "UINT8": (np.uint8, [0, 255, 7]),
    "UINT16": (np.uint16, [0, 65535, 7]),
    "UINT32": (np.uint32, [0, 2**32 - 1, 7]),
    "UINT64": (np.uint64, [0, 2**64 - 1, 7]),
    "INT8": (np.int8, [-128, 127, 0]),
    "INT16": (np.int16, [-32768, 32767, 0]),
    "INT32": (np.int32, [-(2**31), 2**31 - 1, 0]),
    "INT64": (np.int64, [-(2**63), 2**63 - 1, 0]),
    "FP16": (np.float16, [0.5, -65504.0, 1e-3]),
    "FP32": (np.float32, [1.5, -3.25, 3.4e38]),
    "FP64": (np.float64, [1e-300, -2.5, 1e300]),
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_numeric_type_maps_to_its_numpy_type_and_back(protocol, http, gclient):
    client, module = (http, httpclient) if protocol == "http" else (gclient, grpcclient)
    inputs = []
    for kind, (np_type, values) in NUMERIC.items():
        t = module.InferInput(f"IN_{kind}", [3], kind)
        t.set_data_from_numpy(np.array(values, dtype=np_type))
        inputs.append(t)
    result = client.infer("types", inputs)
    seen = dict(x.decode().split("=") for x in result.as_numpy("NUMPY_TYPES"))
    assert seen == {kind: np.dtype(t).name for kind, (t, _) in NUMERIC.items()}
    for kind, (np_type, values) in NUMERIC.items():
        out = result.as_numpy(f"OUT_{kind}")
        assert out.dtype == np_type, kind
        np.testing.assert_array_equal(out, np.array(values, dtype=np_type), err_msg=kind)


def test_request_id_parameters_correlation_id_flags_and_requested_outputs(srv, gclient):
    body = {
        "id": "req-7",
        "parameters": {"sequence_id": 42, "sequence_start": True, "custom": "x", "n": 3, "flag": False},
        "inputs": [{"name": "IN", "datatype": "INT32", "shape": [1], "data": [0]}],
    }
    r = srv.infer("request_info", body)
    assert r.status_code == 200, r.text
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert out["ID"] == ["req-7"]
    assert json.loads(out["PARAMETERS"][0]) == {"custom": "x", "n": 3, "flag": False}
    assert out["CORRELATION_ID"] == ["42"], "a numeric sequence id is an int"
    assert out["FLAGS"] == [1], "TRITONSERVER_REQUEST_FLAG_SEQUENCE_START"
    assert out["REQUESTED"] == ["ID", "PARAMETERS", "CORRELATION_ID", "FLAGS", "REQUESTED", "TIMEOUT"]
    assert out["TIMEOUT"] == [0]

    body.update(parameters={}, outputs=[{"name": "FLAGS"}, {"name": "PARAMETERS"}])
    del body["id"]
    r = srv.infer("request_info", body)
    assert r.status_code == 200, r.text
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert out == {"FLAGS": [0], "PARAMETERS": ["{}"]}

    result = gclient.infer(
        "request_info", int_input(grpcclient, 0), request_id="g1", sequence_id="seq-a", sequence_end=True,
        timeout=7_000_000,
    )
    assert result.as_numpy("TIMEOUT").tolist() == [7_000_000], "request.timeout() in microseconds"
    assert result.as_numpy("ID").tolist() == [b"g1"]
    assert result.as_numpy("CORRELATION_ID").tolist() == [b"'seq-a'"], "a string sequence id is a str"
    assert result.as_numpy("FLAGS").tolist() == [2], "TRITONSERVER_REQUEST_FLAG_SEQUENCE_END"


def test_async_execute(http):
    t = httpclient.InferInput("IN", [3], "FP64")
    t.set_data_from_numpy(np.array([0.5, -1.0, 2.0]))
    assert http.infer("async_execute", [t]).as_numpy("OUT").tolist() == [1.5, 0.0, 3.0]


def test_dlpack_round_trip(http):
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    t = httpclient.InferInput("IN", [2, 3], "FP32")
    t.set_data_from_numpy(x)
    result = http.infer("dlpack", [t])
    np.testing.assert_array_equal(result.as_numpy("OUT"), x)
    np.testing.assert_array_equal(result.as_numpy("OUT2"), x)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bf16_travels_through_dlpack_without_torch(protocol, http, gclient):
    client, module = (http, httpclient) if protocol == "http" else (gclient, grpcclient)
    x = np.array([[1.0, -2.5, 0.0078125, 3.0e38]], dtype=ml_dtypes.bfloat16)
    t = module.InferInput("INPUT0", list(x.shape), "BF16")
    t.set_data_from_numpy(x)
    result = client.infer("identity_bf16", [t])
    for name in ("OUTPUT0", "OUTPUT1"):
        out = result.as_numpy(name)
        assert out.dtype == ml_dtypes.bfloat16, name
        np.testing.assert_array_equal(out.view(np.uint16), x.view(np.uint16), err_msg=name)
    checks = [c.decode() for c in result.as_numpy("CHECKS")[0]]
    as_numpy = "Tensor dtype is BF16 and cannot be converted to NumPy. Use to_dlpack() and from_dlpack() instead."
    assert checks[0] == f"TritonError: {as_numpy}", "Triton's message, as a TritonModelException"
    assert checks[1] == checks[0], "a tensor made from DLPack is BF16 too"
    assert checks[2] == "RuntimeError: Unsupported dtype in DLTensor.", "numpy itself cannot read BF16"
    assert checks[3] == f"dtype=14,14 shape={list(x.shape)}", "TYPE_BF16 either way"


def test_auto_complete_config_fills_in_the_config(srv, http):
    r = srv.get("/v2/models/auto_complete/config")
    assert r.status_code == 200, r.text
    config = r.json()
    assert config["max_batch_size"] == 4
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("X", "TYPE_INT64", [2])]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [("DOUBLED", "TYPE_INT64", [2])]
    x = np.array([[1, 2], [-3, 2**40]], dtype=np.int64)
    t = httpclient.InferInput("X", [2, 2], "INT64")
    t.set_data_from_numpy(x)
    np.testing.assert_array_equal(http.infer("auto_complete", [t]).as_numpy("DOUBLED"), x * 2)


# ---------------------------------------------------------------------------------------
# Decoupled models
# ---------------------------------------------------------------------------------------


class Stream:
    """A started tritonclient stream whose (result, error) pairs land in a queue."""

    def __init__(self, client):
        self.items: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: self.items.put((result, error)))

    def next(self, timeout: float = 10.0):
        return self.items.get(timeout=timeout)


def final_flag(result) -> bool:
    return result.get_response().parameters["triton_final_response"].bool_param


@pytest.mark.parametrize("model", ["repeat_decoupled", "repeat_thread"])
def test_decoupled_model_sends_one_response_per_element_then_final(model, gclient):
    stream = Stream(gclient)
    try:
        for request_id, values in (("r1", [7, -1, 30]), ("r2", [])):
            t = grpcclient.InferInput("IN", [len(values)], "INT32")
            t.set_data_from_numpy(np.array(values, dtype=np.int32))
            gclient.async_stream_infer(model, [t], request_id=request_id, enable_empty_final_response=True)
            for i, v in enumerate(values):
                result, error = stream.next()
                assert error is None, error
                assert result.get_response().id == request_id
                assert (result.as_numpy("OUT").tolist(), result.as_numpy("IDX").tolist()) == ([v], [i])
                assert final_flag(result) is False
            result, error = stream.next()
            assert error is None, error
            assert result.get_response().id == request_id
            assert len(result.get_response().outputs) == 0 and final_flag(result) is True
        with pytest.raises(queue.Empty):
            stream.next(timeout=0.5)
    finally:
        gclient.stop_stream()


def test_decoupled_model_refused_over_http_infer(srv):
    r = srv.infer("repeat_decoupled", json_infer("INT32", [1], [1]))
    assert_error(r, 501, exact=DECOUPLED_HTTP)


# ---------------------------------------------------------------------------------------
# Errors, crashes and hangs
# ---------------------------------------------------------------------------------------


def test_an_exception_in_execute_is_a_500_with_the_exception(srv, gclient):
    r = srv.infer("raises", json_infer("INT32", [1], [0]))
    assert_error(r, 500, "Failed to process the request(s) for model 'raises_0_0'", "ValueError: bad thing")
    grpc_error(
        lambda: gclient.infer("raises", int_input(grpcclient, 0)), grpc.StatusCode.INTERNAL,
        "ValueError: bad thing",
    )


def test_an_error_response_keeps_its_code(srv, gclient):
    r = srv.infer("error_response", json_infer("INT32", [1], [-5]))
    assert_error(r, 400, exact="custom")
    grpc_error(
        lambda: gclient.infer("error_response", int_input(grpcclient, -1)),
        grpc.StatusCode.INVALID_ARGUMENT, exact="custom",
    )
    r = srv.infer("error_response", json_infer("INT32", [1], [5]))
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [5], r.text


def crash_pid(srv) -> int:
    r = srv.infer("crash", json_infer("INT32", [1], [0]))
    assert r.status_code == 200, r.text
    return {o["name"]: o["data"] for o in r.json()["outputs"]}["PID"][0]


def test_a_crashed_worker_fails_its_request_with_503_and_is_restarted(srv, gclient):
    before = crash_pid(srv)
    assert before in worker_pids(srv.proc.pid)
    r = srv.infer("crash", json_infer("INT32", [1], [1]))
    assert_error(r, 503, "python model 'crash'", "SIGKILL")
    after = crash_pid(srv)
    assert after != before, "the next request is answered by a new worker"
    assert before not in worker_pids(srv.proc.pid), "the dead worker was reaped"
    r = srv.infer("crash", json_infer("INT32", [1], [2]))
    assert_error(r, 503, "python model 'crash'", "exited with status 3")
    assert crash_pid(srv) != after, "after a success, the next crash restarts at once too"
    grpc_error(
        lambda: gclient.infer("crash", int_input(grpcclient, 1)), grpc.StatusCode.UNAVAILABLE,
        "python model 'crash'",
    )
    result = gclient.infer("crash", int_input(grpcclient, 9))
    assert result.as_numpy("OUT").tolist() == [9]


def test_a_hung_worker_is_killed_after_the_execute_timeout(srv, http):
    start = time.monotonic()
    r = srv.infer("hang", json_infer("INT32", [1], [1]))
    elapsed = time.monotonic() - start
    assert_error(r, 503, "python model 'hang'", "did not answer within")
    assert 0.9 <= elapsed < 10, elapsed
    start = time.monotonic()
    assert http.infer("hang", int_input(httpclient, 4)).as_numpy("OUT").tolist() == [4]
    assert time.monotonic() - start < 5


def test_a_failing_initialize_leaves_the_model_unavailable_with_the_traceback(srv):
    entry = next(e for e in srv.index() if e["name"] == "init_fails")
    assert entry["state"] == "UNAVAILABLE", entry
    assert "RuntimeError: cannot initialize: missing weights" in entry["reason"], entry
    assert "Traceback (most recent call last)" in entry["reason"], entry
    r = srv.infer("init_fails", json_infer("INT32", [1], [0]))
    assert_error(r, 404, exact="Request for unknown model: 'init_fails' has no available versions")


# ---------------------------------------------------------------------------------------
# The worker's environment and lifetime
# ---------------------------------------------------------------------------------------


def test_the_worker_environment_holds_none_of_the_servers(srv, server_home, worker_uid):
    r = srv.infer("env_probe", json_infer("INT32", [1], [0]))
    assert r.status_code == 200, r.text
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    env = dict(item.split("=", 1) for item in out["ENV"])
    assert SECRET[0] not in env and not any(SECRET[1] in v for v in env.values()), env
    assert set(env) <= WORKER_ENV, f"unexpected variables {set(env) - WORKER_ENV}"
    home = Path(env["HOME"])
    assert home != server_home and home != Path(os.environ.get("HOME", "/")), env
    assert env["TMPDIR"] == env["HOME"] == out["CWD"][0], (env, out)
    assert out["UID"] == [worker_uid], out["UID"]
    assert home.name.startswith("rampart-python-") and home.is_dir(), home
    assert home.stat().st_uid == worker_uid, f"{home} belongs to uid {home.stat().st_uid}"
    assert home.stat().st_mode & 0o077 == 0, f"{home} is open to other users: {oct(home.stat().st_mode)}"


@pytest.fixture(scope="module")
def explicit_srv(module_public_dir, worker_python):
    """add_sub with --model-control-mode=explicit and no interpreter option: `python3` from the server's PATH,
    a script that runs `worker_python`."""
    repo = copy_repo(module_public_dir / "explicit_repo", ["add_sub"])
    bindir = python3_on_path(module_public_dir / "bin", worker_python[0])
    args = grpc_base_args(repo, extra=["--model-control-mode=explicit", "--load-model=add_sub", *worker_python[1]])
    server = start_server(args, "rampart-python-explicit", env=dict(os.environ, PATH=str(bindir)))
    yield server
    finish_server(server)


def test_the_default_interpreter_is_python3_on_path(explicit_srv, worker_python):
    r = explicit_srv.post("/v2/repository/models/add_sub/load")
    assert r.status_code == 200, r.text
    c = explicit_srv.client()
    try:
        ones = np.ones((1, 4), dtype=np.float32)
        assert c.infer("add_sub", add_sub_inputs(httpclient, ones, ones)).as_numpy("OUTPUT0").tolist() == [[2.0] * 4]
    finally:
        c.close()
    (pid,) = worker_pids(explicit_srv.proc.pid)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv0 = f.read().split(b"\0")[0].decode()
    assert argv0 == worker_python[0], "the script on PATH ran the worker"


def test_unload_runs_finalize_and_ends_the_worker(explicit_srv):
    r = explicit_srv.post("/v2/repository/models/add_sub/load")
    assert r.status_code == 200, r.text
    assert len(worker_pids(explicit_srv.proc.pid)) == 1
    # (Loading a loaded model reloads it: the replaced instance was finalized already.)
    finalized = explicit_srv.stderr_text().count("add_sub finalize called")
    r = explicit_srv.post("/v2/repository/models/add_sub/unload")
    assert r.status_code == 200, r.text
    wait_for(
        lambda: explicit_srv.stderr_text().count("add_sub finalize called") == finalized + 1, what="finalize log line"
    )
    wait_for(lambda: not worker_pids(explicit_srv.proc.pid), what="no worker process left")
    r = explicit_srv.infer("add_sub", json_infer("FP32", [1, 4], [0.0] * 4, name="INPUT0"))
    assert_error(r, 404, exact="Request for unknown model: 'add_sub' has no available versions")


def test_an_interpreter_without_numpy_is_refused_in_one_line(public_dir, worker_python):
    """`python3` on PATH cannot import numpy: the python models fail to load with a one-line reason. It is
    `worker_python` run with -S (no site-packages), so the test does not depend on what is installed where."""
    root = public_dir()
    bindir = python3_on_path(root / "bin", worker_python[0], "-S")
    probe = subprocess.run([str(bindir / "python3"), "-I", "-c", "import numpy"], capture_output=True, timeout=30)
    assert probe.returncode != 0, "the numpy-less interpreter imports numpy"
    repo = copy_repo(root / "repo", ["add_sub"])
    args = grpc_base_args(repo, extra=["--exit-on-error=false", *worker_python[1]])
    server = start_server(args, "rampart-python-no-numpy", wait="live", env=dict(os.environ, PATH=str(bindir)))
    try:
        (entry,) = wait_models_settled(server)
        assert entry["state"] == "UNAVAILABLE", entry
        assert "cannot import numpy" in entry["reason"], entry
        assert "\n" not in entry["reason"], entry
        assert not worker_pids(server.proc.pid)
    finally:
        finish_server(server)


def test_a_model_without_inputs_loads_and_its_argv_is_triton_s(srv):
    r = requests.post(f"{srv.base}/v2/models/no_inputs/infer", json={"inputs": []}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == ["['']"], r.text
    assert "no_inputs initialized" in srv.stderr_text()


def test_a_model_py_without_config_is_a_python_model(srv):
    cfg = requests.get(f"{srv.base}/v2/models/autofill_no_config/config", timeout=HTTP_TIMEOUT).json()
    assert cfg["backend"] == "python" and cfg["default_model_filename"] == "model.py", cfg
    assert [i["name"] for i in cfg["input"]] == ["IN"], cfg
    r = requests.post(f"{srv.base}/v2/models/autofill_no_config/infer", json=json_infer("INT32", [2], [3, 4]),
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [6, 8]


def test_a_decoupled_execute_that_returns_responses_fails_the_request_at_once(srv):
    t0 = time.monotonic()
    r = requests.post(f"{srv.base}/v2/models/decoupled_returns/generate", json={"IN": 1}, timeout=HTTP_TIMEOUT)
    assert time.monotonic() - t0 < 10, "the request waited for a final flag that never comes"
    assert r.status_code == 500, r.text
    assert "is using the decoupled mode and the execute function must return None" in r.json()["error"], r.text


# ---------------------------------------------------------------------------------------
# Sequence batching
# ---------------------------------------------------------------------------------------


def test_a_sequence_batched_python_model_sees_each_request_with_its_sequence(srv, gclient):
    """sequence_accumulate keeps a running sum per correlation ID; two sequences interleave. Each request reaches
    `execute` as itself: `correlation_id()`, `flags()` (START 1, END 2) and the START/CORRID control tensors."""

    def send(seq: int, value: int, start=False, end=False):
        t = grpcclient.InferInput("IN", [1, 1], "INT32")
        t.set_data_from_numpy(np.array([[value]], dtype=np.int32))
        r = gclient.infer("sequence_accumulate", [t], sequence_id=seq, sequence_start=start, sequence_end=end)
        return int(r.as_numpy("SUM").reshape(-1)[0]), r.as_numpy("SEEN").reshape(-1).tolist()

    assert send(11, 1, start=True) == (1, [11, 1, 1, 11])
    assert send(22, 100, start=True) == (100, [22, 1, 1, 22])
    assert send(11, 2) == (3, [11, 0, 0, 11])
    assert send(22, 200, end=True) == (300, [22, 2, 0, 22])
    assert send(11, 3, end=True) == (6, [11, 2, 0, 11])
