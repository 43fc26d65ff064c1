"""Shared fixtures and helpers for the Rampart conformance suite (HTTP and gRPC).

The suite runs the real `rampart` binary (env RAMPART_BIN, default
target/release/rampart) on port 0 and talks to it over loopback HTTP, and, for the
gRPC tests (test_grpc_*.py), over loopback gRPC on a second port 0 listener.

Environment:
  RAMPART_BIN       path to the server binary (relative paths are taken from the repo root)
  RAMPART_ORT_DIR   ONNX Runtime library directory, passed as --backend-directory
  RAMPART_ENGINES   comma-separated subset of "onnxruntime,tract" (default: both)

Helpers defined here are imported by the test modules with `from conftest import ...`
(pytest puts this directory on sys.path because it has no __init__.py).
"""

from __future__ import annotations

import contextlib
import inspect
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
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
ALL_ENGINES = ("onnxruntime", "tract")

# Every HTTP call made by the suite carries a timeout (seconds).
HTTP_TIMEOUT = 30.0
# Every gRPC call made by the suite carries a deadline (seconds); streams too.
GRPC_TIMEOUT = 30.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

# Searched (not matched) in each output line, so a suffix such as " with TLS" after the port is tolerated.
PORT_RE = re.compile(r"Started HTTPService at (\S+):(\d+)")
GRPC_PORT_RE = re.compile(r"Started GRPCInferenceService at (\S+):(\d+)")
# Client-side channel limits: unlimited, so that only the server's limits are tested.
GRPC_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


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


def grpc_base_args(repo: Path | str, engine: str | None = None, extra: list[str] | tuple = ()) -> list[str]:
    """`base_args` with the gRPC listener on 127.0.0.1 port 0 (HTTP stays on port 0, metrics off)."""
    args = base_args(repo, engine, extra)
    i = args.index("--allow-grpc=false")
    args[i : i + 1] = ["--allow-grpc=true", "--grpc-address=127.0.0.1", "--grpc-port=0"]
    return args


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
# TLS client settings
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsClient:
    """What a client needs to talk to a TLS listener: the CA (PEM file) it trusts for the server
    certificate and, for mutual TLS, its own certificate chain and key (PEM files).

    Servers are reached as 127.0.0.1, so the server certificate must carry SAN IP:127.0.0.1."""

    ca: str
    cert: str | None = None
    key: str | None = None

    def requests_kwargs(self) -> dict:
        """verify= / cert= for requests."""
        return {"verify": str(self.ca), "cert": (str(self.cert), str(self.key)) if self.cert else None}

    def ssl_context(self, alpn: list[str] | None = None):
        """A client-side ssl.SSLContext (verifies the server against `ca`, presents cert/key if set)."""
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.ca))
        if self.cert:
            ctx.load_cert_chain(str(self.cert), str(self.key))
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def http_client_kwargs(self) -> dict:
        """Keyword arguments for tritonclient.http.InferenceServerClient (geventhttpclient underneath):
        `ssl_options` takes ca_certs / certfile / keyfile (the default ssl_context_factory is
        gevent.ssl.create_default_context, which verifies the server and its host name)."""
        options = {"ca_certs": str(self.ca)}
        if self.cert:
            options.update(certfile=str(self.cert), keyfile=str(self.key))
        return {"ssl": True, "ssl_options": options}

    def grpc_client_kwargs(self) -> dict:
        """Keyword arguments for tritonclient.grpc.InferenceServerClient (file paths, read by the client)."""
        kw = {"ssl": True, "root_certificates": str(self.ca)}
        if self.cert:
            kw.update(private_key=str(self.key), certificate_chain=str(self.cert))
        return kw

    def grpc_credentials(self):
        import grpc

        def read(path):
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca), private_key=read(self.key), certificate_chain=read(self.cert)
        )


# ---------------------------------------------------------------------------------------
# Server process management
# ---------------------------------------------------------------------------------------


class ServerStartError(RuntimeError):
    pass


class RampartServer:
    """One `rampart` process. Output (stdout and stderr) is collected by background threads.

    `port` is the HTTP port. `grpc_port` is the gRPC port when the server was started with
    `--allow-grpc=true` (see `grpc_base_args`), else None; `start` then also waits for the
    "Started GRPCInferenceService at" line and for gRPC ServerLive to answer.

    `http_tls` / `grpc_tls` (TlsClient) are the client settings for a server started with TLS on that
    listener: readiness polling, `request()` / `get()` / `post()`, `client()`, `grpc_channel()`, `grpc_stub()`, `grpc_client()`
    and `assert_live` then use https / a TLS channel with them.

    `health_headers` (HTTP headers) / `grpc_health_metadata` (gRPC metadata pairs) are sent by the readiness
    polls and `assert_live` only, for servers whose `health` category is restricted (test_restricted.py).

    `env` is the child's whole environment (None: the test process's). `extra_listener` is a regex with groups
    (host, port) for the "Started ... at <addr>:<port>" line of a further listener (the SageMaker / Vertex AI front
    ends): `start` waits for it too and sets `extra_host` / `extra_port` (`extra_base`). `http=False`: the main
    HTTP listener is off, `start` does not wait for it. Readiness polls `ready_path(wait)` with `ready_probe`;
    subclasses may poll elsewhere (cloud_frontends.CloudServer)."""

    host = "127.0.0.1"

    def __init__(
        self,
        args: list[str],
        label: str = "rampart",
        grpc: bool | None = None,
        http_tls: TlsClient | None = None,
        grpc_tls: TlsClient | None = None,
        health_headers: dict | None = None,
        grpc_health_metadata: list | None = None,
        env: dict | None = None,
        extra_listener: re.Pattern | None = None,
        http: bool = True,
    ):
        self.args = list(args)
        self.env = None if env is None else dict(env)
        self.extra_listener = extra_listener
        self.expect_http = http
        self.health_headers = dict(health_headers or {})
        self.grpc_health_metadata = list(grpc_health_metadata or [])
        self.label = label
        self.expect_grpc = ("--allow-grpc=true" in self.args) if grpc is None else grpc
        self.http_tls = http_tls
        self.grpc_tls = grpc_tls
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.grpc_port: int | None = None
        self.extra_host: str | None = None
        self.extra_port: int | None = None
        self._lock = threading.Lock()
        self._stderr: list[str] = []
        self._stdout: list[str] = []
        self._port_found = threading.Event()
        self._grpc_port_found = threading.Event()
        self._extra_port_found = threading.Event()
        self._threads: list[threading.Thread] = []
        self.session = requests.Session()
        self._grpc_channel = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, wait: str | None = "ready", timeout: float = START_TIMEOUT) -> "RampartServer":
        binary = require_binary()
        self.proc = subprocess.Popen(
            [str(binary), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(REPO_ROOT),
            env=self.env,
        )
        for stream, sink in ((self.proc.stderr, self._stderr), (self.proc.stdout, self._stdout)):
            t = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            t.start()
            self._threads.append(t)
        deadline = time.monotonic() + timeout
        events = []
        if self.expect_http:
            events.append((self._port_found, "Started HTTPService at"))
        if self.expect_grpc:
            events.append((self._grpc_port_found, "Started GRPCInferenceService at"))
        if self.extra_listener is not None:
            events.append((self._extra_port_found, self.extra_listener.pattern))
        for event, line in events:
            while not event.wait(0.1):
                if self.proc.poll() is not None:
                    self._join_pumps()
                    raise ServerStartError(
                        f"{self.label} exited with code {self.proc.returncode} before listening\n{self.output()}"
                    )
                if time.monotonic() > deadline:
                    self.kill()
                    raise ServerStartError(f"{self.label}: no '{line}' line within {timeout}s\n{self.output()}")
        if wait is not None:
            path = self.ready_path(wait)
            while True:
                try:
                    r = self.ready_probe(path)
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
            if self.expect_grpc:
                self._wait_grpc_live(deadline, timeout)
        return self

    def ready_path(self, wait: str) -> str:
        """What `start(wait=...)` polls until 200: "ready" / "live" health on the main HTTP port."""
        return {"ready": "/v2/health/ready", "live": "/v2/health/live"}[wait]

    def ready_probe(self, path: str) -> requests.Response:
        """One readiness poll of `path` (with `health_headers`)."""
        return self.get(path, timeout=5, headers=self.health_headers)

    def _wait_grpc_live(self, deadline: float, timeout: float) -> None:
        import grpc
        from tritonclient.grpc import service_pb2

        stub = self.grpc_stub()
        while True:
            try:
                if stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=5, metadata=self.grpc_health_metadata).live:
                    return
            except grpc.RpcError:
                pass
            if self.proc.poll() is not None:
                self._join_pumps()
                raise ServerStartError(f"{self.label} exited with code {self.proc.returncode}\n{self.output()}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServerStartError(f"{self.label}: gRPC ServerLive not true within {timeout}s\n{self.output()}")
            time.sleep(0.1)

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
            if self.grpc_port is None:
                m = GRPC_PORT_RE.search(line)
                if m:
                    self.grpc_port = int(m.group(2))
                    self._grpc_port_found.set()
            if self.extra_listener is not None and self.extra_port is None:
                m = self.extra_listener.search(line)
                if m:
                    self.extra_host, self.extra_port = m.group(1), int(m.group(2))
                    self._extra_port_found.set()
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
        self.close_grpc()
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
        self.close_grpc()
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
        scheme = "https" if self.http_tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def extra_base(self) -> str:
        """URL of the `extra_listener` (plain HTTP)."""
        return f"http://{self.host}:{self.extra_port}"

    def http_tls_kwargs(self) -> dict:
        """verify= / cert= for a one-off requests call to this server ({} without HTTP TLS)."""
        return self.http_tls.requests_kwargs() if self.http_tls is not None else {}

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", HTTP_TIMEOUT)
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override Session.verify.
        for k, v in self.http_tls_kwargs().items():
            kw.setdefault(k, v)
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

        tls = self.http_tls.http_client_kwargs() if self.http_tls is not None else {}
        return httpclient.InferenceServerClient(
            url=self.url, connection_timeout=10.0, network_timeout=HTTP_TIMEOUT, **tls
        )


    # -- gRPC ----------------------------------------------------------------------------

    @property
    def grpc_url(self) -> str:
        """host:port of the gRPC listener, the form tritonclient.grpc and perf_analyzer want."""
        assert self.grpc_port is not None, f"{self.label} was not started with gRPC"
        return f"{self.host}:{self.grpc_port}"

    def grpc_channel(self):
        """A new channel to the gRPC port with unlimited client-side message sizes (caller closes it):
        insecure, or TLS with `grpc_tls` when the server was started with gRPC TLS."""
        import grpc

        if self.grpc_tls is not None:
            return grpc.secure_channel(self.grpc_url, self.grpc_tls.grpc_credentials(), options=GRPC_CHANNEL_OPTIONS)
        return grpc.insecure_channel(self.grpc_url, options=GRPC_CHANNEL_OPTIONS)

    def grpc_stub(self, timeout: float = GRPC_TIMEOUT) -> "GrpcStub":
        """Raw generated stub (service_pb2_grpc) on a shared channel; every call gets `timeout` by default."""
        with self._lock:
            if self._grpc_channel is None:
                self._grpc_channel = self.grpc_channel()
            channel = self._grpc_channel
        return GrpcStub(channel, timeout)

    def grpc_client(self, timeout: float = GRPC_TIMEOUT) -> "GrpcClient":
        """tritonclient.grpc client whose calls default to client_timeout / stream_timeout = `timeout`."""
        return GrpcClient(self.grpc_url, timeout, tls=self.grpc_tls)

    def close_grpc(self) -> None:
        with self._lock:
            channel, self._grpc_channel = self._grpc_channel, None
        if channel is not None:
            channel.close()


class GrpcStub:
    """`service_pb2_grpc.GRPCInferenceServiceStub` whose calls default to `timeout=` (a deadline on every call)."""

    def __init__(self, channel, timeout: float = GRPC_TIMEOUT):
        from tritonclient.grpc import service_pb2_grpc

        self.channel = channel
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        self._timeout = timeout

    def __getattr__(self, name: str):
        method = getattr(self._stub, name)

        def call(request, **kw):
            kw.setdefault("timeout", self._timeout)
            return method(request, **kw)

        return call


class GrpcClient:
    """`tritonclient.grpc.InferenceServerClient` that fills in `client_timeout` (unary calls) or
    `stream_timeout` (start_stream) when the caller does not, so every call has a deadline."""

    def __init__(self, url: str, timeout: float = GRPC_TIMEOUT, tls: TlsClient | None = None):
        import tritonclient.grpc as grpcclient

        self._client = grpcclient.InferenceServerClient(url=url, **(tls.grpc_client_kwargs() if tls else {}))
        self._timeout = timeout

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr
        params = inspect.signature(attr).parameters
        key = next((k for k in ("client_timeout", "stream_timeout") if k in params), None)
        if key is None:
            return attr

        def call(*args, **kw):
            if kw.get(key) is None:
                kw[key] = self._timeout
            return attr(*args, **kw)

        return call

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "GrpcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_server(
    args: list[str],
    label: str,
    wait: str | None = "ready",
    timeout: float = START_TIMEOUT,
    http_tls: TlsClient | None = None,
    grpc_tls: TlsClient | None = None,
    server_class: type[RampartServer] = RampartServer,
    **server_kw,
) -> RampartServer:
    """Start a RampartServer, or a `server_class` instance (`server_kw`: further constructor arguments, e.g.
    health_headers)."""
    srv = server_class(args, label, http_tls=http_tls, grpc_tls=grpc_tls, **server_kw)
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


@contextlib.contextmanager
def running(args: list[str], label: str = "rampart", **kw):
    """A server for one test (`kw`: `start_server` arguments); afterwards it must still run and exit 0 on
    SIGTERM (`finish_server`)."""
    srv = start_server(args, label, **kw)
    try:
        yield srv
    finally:
        finish_server(srv)


def concurrently(fn, n: int) -> list:
    """Calls `fn(i)` for i in 0..n on n threads released together; their results in order."""
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def run_to_exit(args: list[str], timeout: float = 60.0, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the binary expecting it to terminate by itself (startup errors); `env`: the child's whole environment
    (None: the test process's). Exit codes: 2 when the command line does not parse (clap's usage error), 1 for
    every other refusal to start (rampart-pbtxt: 1 for any error)."""
    binary = require_binary()
    try:
        return subprocess.run(
            [str(binary), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            cwd=str(REPO_ROOT),
            env=env,
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
        r = requests.get(srv.base + "/v2/health/live", timeout=10, headers=srv.health_headers, **srv.http_tls_kwargs())
    except requests.RequestException as e:  # pragma: no cover - diagnostic path
        raise AssertionError(f"{srv.label}: /v2/health/live failed: {e}\n{srv.output()}")
    assert r.status_code == 200, f"/v2/health/live -> {r.status_code} {r.text!r}\n{srv.output()}"
    if srv.grpc_port is not None:
        assert_grpc_live(srv)


def assert_grpc_live(srv: RampartServer) -> None:
    """The server process is running and gRPC ServerLive answers live=true."""
    import grpc
    from tritonclient.grpc import service_pb2

    assert srv.alive(), f"{srv.label} is not running (exit code {srv.proc.returncode})\n{srv.output()}"
    try:
        live = srv.grpc_stub().ServerLive(service_pb2.ServerLiveRequest(), timeout=10, metadata=srv.grpc_health_metadata).live
    except grpc.RpcError as e:  # pragma: no cover - diagnostic path
        raise AssertionError(f"{srv.label}: gRPC ServerLive failed: {e.code()} {e.details()}\n{srv.output()}")
    assert live is True, f"{srv.label}: gRPC ServerLive answered live=false\n{srv.output()}"


HEALTH_SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING


def grpc_health_check(srv: RampartServer, service: str = "", timeout: float = GRPC_TIMEOUT) -> int:
    """grpc.health.v1.Health/Check with a hand-encoded request; returns the `status` enum value
    (0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN)."""
    raw = service.encode()
    request = (b"\x0a" + _varint(len(raw)) + raw) if raw else b""
    with srv.grpc_channel() as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        response = check(request, timeout=timeout)
    return _decode_varint_field(response, 1)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _decode_varint_field(buf: bytes, field: int) -> int:
    """Value of varint field `field` in a protobuf message (0, the proto3 default, when absent)."""
    off, value = 0, 0

    def read_varint() -> int:
        nonlocal off
        shift, result = 0, 0
        while True:
            assert off < len(buf), f"truncated varint in {buf!r}"
            b = buf[off]
            off += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while off < len(buf):
        key = read_varint()
        num, wire = key >> 3, key & 7
        if wire == 0:
            v = read_varint()
            if num == field:
                value = v
        elif wire == 2:
            off += read_varint()
        elif wire == 1:
            off += 8
        elif wire == 5:
            off += 4
        else:
            raise AssertionError(f"unexpected wire type {wire} in {buf!r}")
    return value


def grpc_error(fn, code, *contains: str, exact: str | None = None) -> str:
    """Call `fn()`, which must fail with gRPC status `code` (a grpc.StatusCode or a tuple of them), raised either
    as grpc.RpcError (raw stubs) or as tritonclient's InferenceServerException. Checks the message (exact and/or
    substrings) and returns it."""
    import grpc
    from tritonclient.utils import InferenceServerException

    codes = code if isinstance(code, tuple) else (code,)
    try:
        result = fn()
    except grpc.RpcError as e:
        got, msg = e.code(), e.details() or ""
        got_name = str(got)
    except InferenceServerException as e:
        got_name, msg = str(e.status()), e.message() or ""
    else:
        raise AssertionError(f"expected gRPC {[str(c) for c in codes]}, got a response: {str(result)[:1000]!r}")
    assert got_name in [str(c) for c in codes], f"expected gRPC {[str(c) for c in codes]}, got {got_name}: {msg!r}"
    assert msg, f"{got_name} without a message"
    if exact is not None:
        assert msg == exact, f"error message mismatch:\n  expected: {exact!r}\n  got:      {msg!r}"
    for part in contains:
        assert part in msg, f"error message {msg!r} does not contain {part!r}"
    return msg


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

SERVER_FIXTURES = (
    "server",
    "test_repo_server",
    "cap_server",
    "grpc_server",
    "grpc_test_repo_server",
    "grpc_cap_server",
    "grpc_mixed_server",
    # test_tls.py
    "tls_server",
    "mtls_server",
)


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


@pytest.fixture(scope="session")
def grpc_server(engine, examples_dir):
    """Rampart serving examples/models with HTTP and gRPC listeners, one process per engine for the session."""
    srv = start_server(grpc_base_args(examples_dir, engine), f"rampart[{engine}, examples, grpc]")
    yield srv
    finish_server(srv)


@pytest.fixture(scope="session")
def grpc_test_repo_server(engine, test_repo):
    """The generated test repository with HTTP and gRPC listeners (--exit-on-error=false, as test_repo_server)."""
    srv = start_server(
        grpc_base_args(test_repo, engine, ["--exit-on-error=false"]), f"rampart[{engine}, test repo, grpc]", wait="live"
    )
    wait_models_settled(srv)
    yield srv
    finish_server(srv)


@pytest.fixture
def client(server):
    c = server.client()
    yield c
    c.close()


@pytest.fixture
def gclient(grpc_server):
    """tritonclient.grpc client (with default deadlines) on the examples gRPC server."""
    c = grpc_server.grpc_client()
    yield c
    c.close()


@pytest.fixture
def gstub(grpc_server):
    """Raw service_pb2_grpc stub (with default deadlines) on the examples gRPC server."""
    return grpc_server.grpc_stub()


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


# ---------------------------------------------------------------------------------------
# gRPC request helpers (hand-built ModelInferRequest messages for the raw stubs)
# ---------------------------------------------------------------------------------------

# Datatype -> the InferTensorContents field that carries it (docs/protocol.md, "Data types"). FP16 and BF16
# have none: raw only.
TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def set_grpc_param(params, key: str, value, kind: str | None = None) -> None:
    """Set InferParameter `key` in a protobuf parameters map. `kind` is one of bool, int64, string, double,
    uint64; without it the kind follows the Python type (bool, int -> int64, str, float -> double)."""
    if kind is None:
        kind = {bool: "bool", int: "int64", str: "string", float: "double"}[type(value)]
    setattr(params[key], f"{kind}_param", value)


def grpc_input(name: str, datatype: str, shape, contents: dict | None = None, **params):
    """An InferInputTensor; `contents` maps InferTensorContents field names to value lists."""
    from tritonclient.grpc import service_pb2

    t = service_pb2.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=list(shape))
    for field, values in (contents or {}).items():
        getattr(t.contents, field).extend(values)
    for k, v in params.items():
        set_grpc_param(t.parameters, k, v)
    return t


def typed_input(name: str, datatype: str, array):
    """An InferInputTensor carrying `array` in the typed contents field for `datatype`."""
    import numpy as np

    flat = np.asarray(array).reshape(-1)
    if datatype == "BYTES":
        values = [v if isinstance(v, bytes) else str(v).encode() for v in flat]
    elif datatype == "BOOL":
        values = [bool(v) for v in flat]
    elif datatype.startswith(("INT", "UINT")):
        values = [int(v) for v in flat]
    else:
        values = [float(v) for v in flat]
    return grpc_input(name, datatype, np.asarray(array).shape, {TYPED_FIELD[datatype]: values})


def raw_bytes(array, datatype: str) -> bytes:
    """raw_input_contents encoding: little-endian element bytes; BYTES as uint32 LE length + bytes per element."""
    import numpy as np

    if datatype == "BYTES":
        return serialize_bytes([v if isinstance(v, bytes) else str(v).encode() for v in np.asarray(array).reshape(-1)])
    assert sys.byteorder == "little", "raw tensor bytes are little-endian; numpy's native order is used as is"
    return np.ascontiguousarray(array).tobytes()


def grpc_request(
    model: str, inputs=(), raw=(), outputs=(), version: str = "", id: str = "", parameters: dict | None = None
):
    """A ModelInferRequest. `outputs` are names; `parameters` values are Python values (see set_grpc_param)
    or (value, kind) pairs."""
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=model, model_version=version, id=id)
    req.inputs.extend(inputs)
    req.raw_input_contents.extend(raw)
    for name in outputs:
        req.outputs.add(name=name)
    for k, v in (parameters or {}).items():
        if isinstance(v, tuple):
            set_grpc_param(req.parameters, k, v[0], v[1])
        else:
            set_grpc_param(req.parameters, k, v)
    return req


def simple_grpc_request(a=None, b=None, typed: bool = False, **kw):
    """`simple` (INT32 add/sub) with INPUT0=a, INPUT1=b (default arange(16) and 3s, batch 1), raw or typed."""
    import numpy as np

    a = np.arange(16, dtype=np.int32).reshape(1, 16) if a is None else a
    b = np.full((1, 16), 3, dtype=np.int32) if b is None else b
    if typed:
        return grpc_request("simple", [typed_input("INPUT0", "INT32", a), typed_input("INPUT1", "INT32", b)], **kw)
    inputs = [grpc_input("INPUT0", "INT32", a.shape), grpc_input("INPUT1", "INT32", b.shape)]
    return grpc_request("simple", inputs, [raw_bytes(a, "INT32"), raw_bytes(b, "INT32")], **kw)


def grpc_result(response):
    """Wrap a ModelInferResponse in tritonclient's InferResult (as_numpy reads raw_output_contents)."""
    from tritonclient.grpc import InferResult

    return InferResult(response)


def write_repo(root: Path, models: dict[str, str]) -> Path:
    """A repository of config-only models (the built-in backends and ensembles need no model file): each
    `<root>/<name>/config.pbtxt` with an empty version folder `1/`."""
    for name, config in models.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(config)
    return root
