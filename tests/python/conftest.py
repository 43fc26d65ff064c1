"""Shared fixtures and helpers for the Rampart HTTP conformance suite.

The suite runs the real `rampart` binary (env RAMPART_BIN, default
target/release/rampart) on port 0 and talks to it over loopback HTTP.

Environment:
  RAMPART_BIN       path to the server binary (relative paths are taken from the repo root)
  RAMPART_ORT_DIR   ONNX Runtime library directory, passed as --backend-directory
  RAMPART_ENGINES   comma-separated subset of "onnxruntime,tract" (default: both)

Helpers defined here are imported by the test modules with `from conftest import ...`
(pytest puts this directory on sys.path because it has no __init__.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
ALL_ENGINES = ("onnxruntime", "tract")

# Every HTTP call made by the suite carries a timeout (seconds).
HTTP_TIMEOUT = 30.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

PORT_RE = re.compile(r"Started HTTPService at (\S+):(\d+)")


# ---------------------------------------------------------------------------------------
# Locations and engine selection
# ---------------------------------------------------------------------------------------


def _from_env_path(var: str, default: str) -> Path:
    value = os.environ.get(var, default)
    path = Path(value)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def rampart_bin() -> Path:
    return _from_env_path("RAMPART_BIN", "target/release/rampart")


def ort_dir() -> Path:
    return _from_env_path("RAMPART_ORT_DIR", "third_party/onnxruntime")


def example_repo() -> Path:
    return REPO_ROOT / "examples" / "models"


def selected_engines() -> list[str]:
    raw = os.environ.get("RAMPART_ENGINES", ",".join(ALL_ENGINES))
    engines = [e.strip() for e in raw.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ALL_ENGINES]
    if unknown:
        raise pytest.UsageError(f"RAMPART_ENGINES: unknown engine(s) {unknown}; known: {ALL_ENGINES}")
    return engines


def engine_args(engine: str | None) -> list[str]:
    if engine in (None, "onnxruntime"):
        return []
    if engine == "tract":
        return ["--backend-config=onnxruntime,engine=tract"]
    raise ValueError(f"unknown engine {engine!r}")


def base_args(repo: Path | str, engine: str | None = None, extra: list[str] | tuple = ()) -> list[str]:
    """The contract's standard command line (without the binary)."""
    return [
        f"--model-repository={repo}",
        "--http-address=127.0.0.1",
        "--http-port=0",
        "--allow-grpc=false",
        "--allow-metrics=false",
        f"--backend-directory={ort_dir()}",
        *engine_args(engine),
        *extra,
    ]


def require_binary() -> Path:
    binary = rampart_bin()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"rampart binary not found or not executable at {binary} "
            "(build it with `cargo build --release` or set RAMPART_BIN)",
            pytrace=False,
        )
    return binary


# ---------------------------------------------------------------------------------------
# Server process management
# ---------------------------------------------------------------------------------------


class ServerStartError(RuntimeError):
    pass


class RampartServer:
    """One `rampart` process. Output (stdout and stderr) is collected by background threads."""

    host = "127.0.0.1"

    def __init__(self, args: list[str], label: str = "rampart"):
        self.args = list(args)
        self.label = label
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._lock = threading.Lock()
        self._stderr: list[str] = []
        self._stdout: list[str] = []
        self._port_found = threading.Event()
        self._threads: list[threading.Thread] = []
        self.session = requests.Session()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, wait: str | None = "ready", timeout: float = START_TIMEOUT) -> "RampartServer":
        binary = require_binary()
        self.proc = subprocess.Popen(
            [str(binary), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(REPO_ROOT),
        )
        for stream, sink in ((self.proc.stderr, self._stderr), (self.proc.stdout, self._stdout)):
            t = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            t.start()
            self._threads.append(t)
        deadline = time.monotonic() + timeout
        while not self._port_found.wait(0.1):
            if self.proc.poll() is not None:
                self._join_pumps()
                raise ServerStartError(
                    f"{self.label} exited with code {self.proc.returncode} before listening\n{self.output()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(f"{self.label}: no 'Started HTTPService at' line within {timeout}s\n{self.output()}")
        if wait is not None:
            path = {"ready": "/v2/health/ready", "live": "/v2/health/live"}[wait]
            while True:
                try:
                    r = self.session.get(self.base + path, timeout=5)
                    if r.status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if self.proc.poll() is not None:
                    self._join_pumps()
                    raise ServerStartError(f"{self.label} exited with code {self.proc.returncode}\n{self.output()}")
                if time.monotonic() > deadline:
                    self.kill()
                    raise ServerStartError(f"{self.label}: {path} not 200 within {timeout}s\n{self.output()}")
                time.sleep(0.1)
        return self

    def _pump(self, stream, sink: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            with self._lock:
                sink.append(line)
            if self.port is None:
                m = PORT_RE.search(line)
                if m:
                    self.port = int(m.group(2))
                    self._port_found.set()
        stream.close()

    def _join_pumps(self, timeout: float = 5.0) -> None:
        for t in self._threads:
            t.join(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send `sig` and wait for exit; returns the exit code (kills after `timeout`)."""
        assert self.proc is not None
        self.session.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"{self.label} did not exit within {timeout}s of signal {sig}\n{self.output()}")
        self._join_pumps()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._join_pumps()

    # -- output --------------------------------------------------------------------------

    def stderr_text(self) -> str:
        with self._lock:
            return "".join(self._stderr)

    def stdout_text(self) -> str:
        with self._lock:
            return "".join(self._stdout)

    def output(self, tail: int = 200) -> str:
        with self._lock:
            err = self._stderr[-tail:]
            out = self._stdout[-tail:]
        return "--- stderr (tail) ---\n" + "".join(err) + "--- stdout (tail) ---\n" + "".join(out)

    # -- HTTP ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """host:port, the form tritonclient wants."""
        return f"{self.host}:{self.port}"

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return self.session.request(method, self.base + path, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)

    def infer(self, model: str, body, version: str | None = None, headers: dict | None = None, **kw):
        """POST raw bytes / dict (JSON-encoded) to the infer endpoint."""
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "") + "/infer"
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        return self.post(path, data=body, headers=headers or {}, **kw)

    def index(self) -> list[dict]:
        r = self.post("/v2/repository/index")
        assert r.status_code == 200, r.text
        return r.json()

    def client(self):
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(url=self.url, connection_timeout=10.0, network_timeout=HTTP_TIMEOUT)


def start_server(args: list[str], label: str, wait: str | None = "ready", timeout: float = START_TIMEOUT) -> RampartServer:
    srv = RampartServer(args, label)
    try:
        srv.start(wait=wait, timeout=timeout)
    except ServerStartError as e:
        pytest.fail(str(e), pytrace=False)
    return srv


def finish_server(srv: RampartServer) -> None:
    """Teardown contract: the server must still be running (nothing crashed it) and must exit 0 on SIGTERM."""
    crashed = not srv.alive()
    rc = srv.stop(signal.SIGTERM)
    assert not crashed, f"{srv.label} died during the tests (exit code {rc})\n{srv.output()}"
    assert rc == 0, f"{srv.label} exited with {rc} after SIGTERM\n{srv.output()}"


def run_to_exit(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run the binary expecting it to terminate by itself (startup errors)."""
    binary = require_binary()
    try:
        return subprocess.run(
            [str(binary), *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, cwd=str(REPO_ROOT)
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"rampart did not exit within {timeout}s; stderr:\n{(e.stderr or b'').decode(errors='replace')[-4000:]}"
        )


def wait_models_settled(srv: RampartServer, timeout: float = START_TIMEOUT) -> list[dict]:
    """Poll the repository index until no entry is still loading."""
    deadline = time.monotonic() + timeout
    while True:
        idx = srv.index()
        if all(e.get("state") in ("READY", "UNAVAILABLE") for e in idx):
            return idx
        if time.monotonic() > deadline:
            raise AssertionError(f"models still loading after {timeout}s: {idx}")
        time.sleep(0.2)


def assert_live(srv: RampartServer) -> None:
    """The server process is running and /v2/health/live answers 200."""
    assert srv.alive(), f"{srv.label} is not running (exit code {srv.proc.returncode})\n{srv.output()}"
    try:
        r = requests.get(srv.base + "/v2/health/live", timeout=10)
    except requests.RequestException as e:  # pragma: no cover - diagnostic path
        raise AssertionError(f"{srv.label}: /v2/health/live failed: {e}\n{srv.output()}")
    assert r.status_code == 200, f"/v2/health/live -> {r.status_code} {r.text!r}\n{srv.output()}"


# ---------------------------------------------------------------------------------------
# Generated model repositories
# ---------------------------------------------------------------------------------------


def _run_gen_models(flag: str, dest: Path) -> Path:
    script = REPO_ROOT / "scripts" / "gen_models.py"
    if not script.is_file():
        pytest.fail(f"{script} is missing", pytrace=False)
    proc = subprocess.run(
        [sys.executable, str(script), flag, str(dest)], capture_output=True, timeout=600, cwd=str(REPO_ROOT)
    )
    if proc.returncode != 0:
        pytest.fail(
            f"gen_models.py {flag} failed ({proc.returncode}):\n{proc.stdout.decode()}\n{proc.stderr.decode()}",
            pytrace=False,
        )
    return dest


# ---------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------

SERVER_FIXTURES = ("server", "test_repo_server", "cap_server")


@pytest.fixture(scope="session", params=selected_engines())
def engine(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    repo = example_repo()
    if not (repo / "simple").is_dir():
        pytest.fail(f"example model repository missing: {repo}", pytrace=False)
    return repo


@pytest.fixture(scope="session")
def server(engine, examples_dir):
    """Rampart serving examples/models, one process per engine for the whole session."""
    srv = start_server(base_args(examples_dir, engine), f"rampart[{engine}, examples]")
    yield srv
    finish_server(srv)


@pytest.fixture(scope="session")
def test_repo(tmp_path_factory) -> Path:
    return _run_gen_models("--test-repo", tmp_path_factory.mktemp("test_repo"))


@pytest.fixture(scope="session")
def bad_repo(tmp_path_factory) -> Path:
    return _run_gen_models("--bad-repo", tmp_path_factory.mktemp("bad_repo"))


@pytest.fixture(scope="session")
def test_repo_server(engine, test_repo):
    """Rampart serving the generated test repository. --exit-on-error=false because an engine may
    legitimately refuse a datatype (the model must then be UNAVAILABLE with a reason)."""
    srv = start_server(
        base_args(test_repo, engine, ["--exit-on-error=false"]), f"rampart[{engine}, test repo]", wait="live"
    )
    wait_models_settled(srv)
    yield srv
    finish_server(srv)


@pytest.fixture
def client(server):
    c = server.client()
    yield c
    c.close()


@pytest.fixture(autouse=True)
def _server_still_serving(request):
    """After every test: each shared server the test used must still be alive and live."""
    servers = [request.getfixturevalue(n) for n in request.fixturenames if n in SERVER_FIXTURES]
    for srv in servers:
        if not srv.alive():
            pytest.fail(f"{srv.label} had already died before this test\n{srv.output()}", pytrace=False)
    yield
    for srv in servers:
        assert_live(srv)


def pytest_collection_modifyitems(config, items):
    # Bound every test in time when pytest-timeout is installed (HTTP calls have their own timeouts).
    if config.pluginmanager.hasplugin("timeout"):
        for item in items:
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(300))


# ---------------------------------------------------------------------------------------
# Wire-format helpers
# ---------------------------------------------------------------------------------------


def serialize_bytes(elements: list[bytes]) -> bytes:
    """BYTES wire format: per element a uint32 LE length followed by the raw bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def deserialize_bytes(buf: bytes) -> list[bytes]:
    out, off = [], 0
    while off < len(buf):
        assert off + 4 <= len(buf), "truncated BYTES length prefix in response"
        (n,) = struct.unpack_from("<I", buf, off)
        off += 4
        assert off + n <= len(buf), "BYTES element runs past the end of the response buffer"
        out.append(buf[off : off + n])
        off += n
    return out


def binary_body(header: dict, blobs: list[bytes] = ()) -> tuple[bytes, dict]:
    """JSON header followed by binary blobs; returns (body, headers) with Inference-Header-Content-Length."""
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}


def parse_infer_response(resp: requests.Response) -> tuple[dict, dict[str, bytes]]:
    """Split a (possibly binary) inference response into its JSON header and per-output binary data."""
    body = resp.content
    hlen = resp.headers.get("Inference-Header-Content-Length")
    if hlen is None:
        return json.loads(body), {}
    n = int(hlen)
    assert 0 < n <= len(body), f"bad Inference-Header-Content-Length {n} for body of {len(body)} bytes"
    header = json.loads(body[:n])
    tail = body[n:]
    blobs, off = {}, 0
    for out in header.get("outputs", []):
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            blobs[out["name"]] = tail[off : off + size]
            off += size
    assert off == len(tail), f"binary tail is {len(tail)} bytes but outputs declare {off}"
    return header, blobs


def error_message(resp: requests.Response) -> str:
    """The body must be exactly {"error": "<non-empty string>"}; returns the message."""
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON (status {resp.status_code}): {resp.content[:500]!r}")
    assert isinstance(body, dict) and list(body) == ["error"], f"error body must be {{'error': ...}}, got {body!r}"
    assert isinstance(body["error"], str) and body["error"], f"empty error message: {body!r}"
    return body["error"]


def assert_error(resp: requests.Response, status: int | tuple, *contains: str, exact: str | None = None) -> str:
    """Assert status (or one of several) and an error body; optional exact message / substrings."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in statuses, f"expected HTTP {statuses}, got {resp.status_code}: {resp.text[:1000]!r}"
    msg = error_message(resp)
    if exact is not None:
        assert msg == exact, f"error message mismatch:\n  expected: {exact!r}\n  got:      {msg!r}"
    for part in contains:
        assert part in msg, f"error message {msg!r} does not contain {part!r}"
    return msg


def assert_4xx(resp: requests.Response) -> str:
    assert 400 <= resp.status_code < 500, f"expected a 4xx, got {resp.status_code}: {resp.text[:1000]!r}"
    return error_message(resp)


def raw_exchange(host: str, port: int, data: bytes, timeout: float = 15.0, shutdown_write: bool = False) -> bytes:
    """Send raw bytes on a fresh TCP connection and read until the server closes or `timeout`
    passes. Used for requests that `requests` refuses to build (lying Content-Length, etc.)."""
    chunks = []
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(data)
            if shutdown_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if _complete_http_response(b"".join(chunks)):
                break
    return b"".join(chunks)


def _complete_http_response(buf: bytes) -> bool:
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    head = buf[:head_end].decode("latin-1")
    m = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head)
    if m:
        return len(buf) - head_end - 4 >= int(m.group(1))
    if re.search(r"(?im)^transfer-encoding:\s*chunked", head):
        return buf.endswith(b"0\r\n\r\n")
    return False


def parse_raw_response(raw: bytes) -> tuple[int, dict, bytes]:
    """Parse status line, headers and (content-length delimited or chunked) body."""
    assert raw, "no HTTP response received"
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        body = out
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return status, headers, body
