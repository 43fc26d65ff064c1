"""Hostile input per attack class of Triton's published vulnerabilities (docs/protocol.md,
"Security history (CVEs)"), on HTTP and gRPC. Each test names the CVE(s) it covers, sends the attack, asserts
Rampart's exact status and message, then asserts that the server is still running, still answers a normal `simple`
inference on both protocols (INPUT0 = 0..15, INPUT1 = 3 → OUTPUT0 = sum, OUTPUT1 = difference), and that its
memory stayed bounded:

  * retained: VmRSS (from /proc/<pid>/status) after the attack minus before, below RSS_BUDGET (64 MiB);
  * peak: VmHWM after the attack minus VmRSS before (the peak is reset first by writing 5 to
    /proc/<pid>/clear_refs), below a per-test budget (64 MiB unless the test says why the server may legitimately
    hold more, e.g. a request it must buffer).

Backend-specific rows of the table (TensorRT, DALI, MLflow, Python-backend internals) are covered through their
HTTP/gRPC triggers only: the request reaches Rampart and must be refused or answered safely.

Servers (module scope, default engine, both listeners):
  * `srv`: examples/models, `--log-verbose=1` (so Rampart's own debug output is covered by the log-injection check;
    hyper / h2 / tonic stay at INFO) and `--audit-log-file`; every category open.
  * `restricted`: the same with `--http-restricted-api` / `--grpc-restricted-protocol`
    `model-repository,logging,trace,shared-memory:admin-key=<secret>`: admin attacks must be refused by the
    restriction first (403 / UNAVAILABLE), before any parsing.
  * `fresh` (per test): a plain server for the memory-amplification tests, so that memory the allocator kept from
    earlier attacks neither hides nor inflates what one request costs.
The last tests check the whole server output (no forged log line) and the audit logs (one JSON object per line).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import select
import socket
import struct
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import grpc
import numpy as np
import pytest
import requests
from tritonclient.grpc import service_pb2

from conftest import (
    GRPC_TIMEOUT,
    HTTP_TIMEOUT,
    REPO_ROOT,
    binary_body,
    example_repo,
    finish_server,
    grpc_base_args,
    grpc_error,
    grpc_input,
    grpc_request,
    grpc_result,
    parse_raw_response,
    run_to_exit,
    serialize_bytes,
    set_grpc_param,
    simple_grpc_request,
    start_server,
    typed_input,
)

SC = grpc.StatusCode
MiB = 1 << 20
RSS_BUDGET = 64 * MiB
MAX_INPUT = 64 * MiB  # --http-max-input-size and --grpc-max-message-size defaults

SECRET = "Cve-Adm1n-S3cret"
ADMIN_CATEGORIES = "model-repository,logging,trace,shared-memory"

NO_LOAD = "explicit model load / unload is not allowed if polling is enabled"
SHM_DISABLED = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
CUDA_SHM = "CUDA shared memory is not supported: this server was built without GPU support"
LOG_FILE_REFUSED = "log file location can not be updated through network protocol"  # HTTP 501 / gRPC UNIMPLEMENTED
TRACE_FILE_REFUSED = "trace file location can not be updated through network protocol"  # HTTP 501 / gRPC UNIMPLEMENTED
CLASS_BYTES = "class result not available for output due to unsupported type 'BYTES'"
HTTP_BOMB = (
    f"decompressed request JSON size of more than {MAX_INPUT} bytes exceeds the maximum allowed input size of {MAX_INPUT}"
    " bytes. Use --http-max-input-size to increase the limit."
)
GRPC_BOMB = f"Error decompressing: size limit, of {MAX_INPUT} bytes, exceeded while decompressing message"
JSON_PARSE = "failed to parse the request JSON buffer: "
DATA_DEPTH = "Unable to parse 'data' of input 'INPUT0': JSON nesting depth exceeds maximum allowed limit (100)"
TOO_MANY_VALUES = (
    "the request JSON has too many values (at most 4194304 values and 65536 objects); send large tensors with the "
    "binary tensor extension"
)
MAX_JSON_VALUES, MAX_JSON_OBJECTS = 4_194_304, 65_536  # values: 1 + each ',' '[' '{' outside strings
MAX_BYTES_ELEMENTS = 1 << 20  # --max-request-bytes-elements default
MAX_OUTPUTS = 1024  # --max-request-outputs default
DENIED_HTTP = {"error": "This API is restricted, expecting header 'admin-key'"}
DENIED_GRPC = "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"
ADMIN_MD = [("triton-grpc-protocol-admin-key", SECRET)]

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)
SIMPLE_JSON = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": A.reshape(-1).tolist()},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": B.reshape(-1).tolist()},
    ]
}
SIMPLE_BODY = json.dumps(SIMPLE_JSON).encode()


def unknown_model(name: str) -> str:
    return f"Request for unknown model: '{name}' is not found"


MAX_MODEL_NAME = 255  # bytes
_RUST_ESCAPES = {"\0": "\\0", "\t": "\\t", "\n": "\\n", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def _is_control(c: str) -> bool:
    return ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F


def invalid_model_name(name: str) -> str | None:
    """The message of the model-name check every model-named API runs first (HTTP 400 / INVALID_ARGUMENT; the
    project's rule, stricter than Triton), or None for a well-formed name (then an unknown model is 404 /
    NOT_FOUND). Checked in this order: blank (after trimming white space), a control character (the name in Rust's debug
    form), `.` / `..` / a `/` or `\\` anywhere (the name echoed as is), longer than 255 bytes."""
    if not name.strip():
        return "Model name cannot be empty. Please enter a valid name to deploy."
    if any(_is_control(c) for c in name):
        # Rust's {:?}: the names used here are ASCII, where only these characters are escaped.
        assert name.isascii(), f"invalid_model_name: no debug-form rule for {name!r}"
        debug = "".join(_RUST_ESCAPES.get(c) or (f"\\u{{{ord(c):x}}}" if _is_control(c) else c) for c in name)
        return f'invalid model name "{debug}": control characters are not allowed'
    if name in (".", "..") or "/" in name or "\\" in name:
        return f"invalid model name '{name}', model name must not contain path traversal characters"
    if len(name.encode()) > MAX_MODEL_NAME:
        return f"invalid model name: {len(name.encode())} bytes long, at most {MAX_MODEL_NAME} are allowed"
    return None


def too_many_outputs(n: int) -> str:
    """--max-request-outputs, checked before the model is looked up (after the request is decoded)."""
    return f"request has {n} outputs, more than the maximum of {MAX_OUTPUTS} (--max-request-outputs)"


def too_many_bytes_elements(name: str) -> str:
    """--max-request-bytes-elements, from the declared shapes of all BYTES inputs, before any model work."""
    return f"input '{name}': the request's BYTES inputs have more than {MAX_BYTES_ELEMENTS} elements (--max-request-bytes-elements)"


# ---------------------------------------------------------------------------------------------------------------
# Process memory
# ---------------------------------------------------------------------------------------------------------------


def proc_memory(srv) -> dict[str, int]:
    """VmRSS and VmHWM of the server process, in bytes."""
    out = {}
    with open(f"/proc/{srv.proc.pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak(srv) -> bool:
    """Reset VmHWM to the current RSS (clear_refs 5); False when the kernel or permissions do not allow it."""
    try:
        with open(f"/proc/{srv.proc.pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def fmt_mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


@contextmanager
def guarded(srv, peak: int = RSS_BUDGET, what: str = "attack"):
    """Around an attack: the server survives, retained RSS growth < RSS_BUDGET, peak growth < `peak`, and a normal
    inference still succeeds on both protocols."""
    assert srv.alive(), f"{srv.label} was already dead\n{srv.output()}"
    before = proc_memory(srv)
    peak_known = reset_peak(srv)
    yield
    assert srv.alive(), f"{srv.label} died during {what} (exit code {srv.proc.returncode})\n{srv.output()}"
    after = proc_memory(srv)
    grown = after["VmRSS"] - before["VmRSS"]
    problems = []
    if grown >= RSS_BUDGET:
        problems.append(
            f"RSS grew by {fmt_mib(grown)} and stayed there ({fmt_mib(before['VmRSS'])} -> {fmt_mib(after['VmRSS'])}); "
            f"budget {fmt_mib(RSS_BUDGET)}"
        )
    if peak_known and after["VmHWM"] - before["VmRSS"] >= peak:
        problems.append(
            f"peak RSS rose by {fmt_mib(after['VmHWM'] - before['VmRSS'])} ({fmt_mib(before['VmRSS'])} -> peak "
            f"{fmt_mib(after['VmHWM'])}); budget {fmt_mib(peak)}"
        )
    assert not problems, f"{what}: " + "; ".join(problems)
    assert_serving(srv)


def assert_serving(srv) -> None:
    """`simple` answers correctly over HTTP (a fresh connection) and gRPC."""
    r = requests.post(srv.base + "/v2/models/simple/infer", data=SIMPLE_BODY, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, f"normal HTTP inference failed after the attack: {r.status_code} {r.text[:500]}"
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs["OUTPUT0"] == (A + B).reshape(-1).tolist() and outs["OUTPUT1"] == (A - B).reshape(-1).tolist(), outs
    if srv.grpc_port is not None:
        res = grpc_result(srv.grpc_stub().ModelInfer(simple_grpc_request()))
        np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), A + B)
        np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), A - B)


# ---------------------------------------------------------------------------------------------------------------
# HTTP helpers (raw sockets: exact bytes on the wire, fresh connection, `Connection: close`)
# ---------------------------------------------------------------------------------------------------------------


def http(srv, method: str, path: str, **kw) -> requests.Response:
    """One request on a fresh connection (never a pooled one a previous refusal may have closed)."""
    kw.setdefault("timeout", HTTP_TIMEOUT)
    return requests.request(method, srv.base + path, **kw)


def request_head(method: str, path: str, headers=(), length: int | None = None, chunked: bool = False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *[f"{k}: {v}" for k, v in headers]]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def raw_http(srv, head: bytes, body: bytes = b"", timeout: float = HTTP_TIMEOUT):
    """Send `head`, then `body` while watching for an early answer (a server may refuse before reading the body);
    read the response until the server closes. Returns (status, headers, body, body bytes sent, seconds)."""
    t0 = time.monotonic()
    sent, resp = 0, b""
    with socket.create_connection((srv.host, srv.port), timeout=timeout) as s:
        s.sendall(head)
        view = memoryview(body)
        while sent < len(body):
            readable, writable, _ = select.select([s], [s], [], timeout)
            if readable or not writable:
                break
            try:
                sent += s.send(view[sent : sent + 256 * 1024])
            except (BrokenPipeError, ConnectionResetError):
                break
        while True:
            try:
                chunk = s.recv(1 << 16)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            resp += chunk
    assert resp, f"no HTTP response (sent {sent} of {len(body)} body bytes)"
    status, headers, rbody = parse_raw_response(resp)
    return status, headers, rbody, sent, time.monotonic() - t0


def raw_call(srv, method: str, path: str, headers=(), body: bytes = b""):
    """(status, body) of a hand-written request with an exact path (no client-side normalization)."""
    status, _, rbody, _, _ = raw_http(srv, request_head(method, path, headers, len(body)), body)
    return status, rbody


def json_error(status_body, status: int, exact: str) -> None:
    status_got, body = status_body
    assert (status_got, body) == (status, json.dumps({"error": exact}, separators=(",", ":")).encode()), (
        f"expected {status} {exact!r}, got {status_got} {body[:500]!r}"
    )


def assert_http_error(r: requests.Response, status: int, exact: str) -> None:
    assert r.status_code == status, f"expected HTTP {status}, got {r.status_code}: {r.text[:500]!r}"
    assert r.json() == {"error": exact}, f"expected {exact!r}, got {r.text[:500]!r}"


def chunked_body(chunks) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


# ---------------------------------------------------------------------------------------------------------------
# HTTP/2 with prior knowledge, by hand: one DATA frame per body byte (the h2 form of the many-chunks attack)
# ---------------------------------------------------------------------------------------------------------------


def _h2_frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def _hpack_literal(name: str, value: str) -> bytes:
    """Literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2); lengths < 127."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def h2_tiny_data_frames(host: str, port: int, path: str, headers: list, body: bytes, timeout: float = 30.0):
    """POST `body` on stream 1, one DATA frame per byte, honouring flow control. Returns (DATA received on stream 1,
    body bytes sent, GOAWAY (code, debug data) or None)."""
    conn_win = stream_win = init_win = 65535
    buf, data, ended, goaway = b"", bytearray(), False, None
    s = socket.create_connection((host, port), timeout=timeout)

    def handle(block: bytes) -> None:
        nonlocal buf, conn_win, stream_win, init_win, ended, goaway
        buf += block
        replies = b""
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            length, ftype, flags = int.from_bytes(buf[:3], "big"), buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload, buf = buf[9 : 9 + length], buf[9 + length :]
            if ftype == 4 and not flags & 1:  # SETTINGS: track INITIAL_WINDOW_SIZE, acknowledge
                for i in range(0, len(payload), 6):
                    ident, value = struct.unpack(">HI", payload[i : i + 6])
                    if ident == 4:
                        stream_win += value - init_win
                        init_win = value
                replies += _h2_frame(4, 1, 0)
            elif ftype == 8:  # WINDOW_UPDATE
                inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                if sid == 0:
                    conn_win += inc
                elif sid == 1:
                    stream_win += inc
            elif ftype == 6 and not flags & 1:  # PING
                replies += _h2_frame(6, 1, 0, payload)
            elif ftype == 0 and sid == 1:  # DATA of the response
                data.extend(payload)
                if length:
                    replies += _h2_frame(8, 0, 0, length.to_bytes(4, "big"))
                ended = ended or bool(flags & 1)
            elif ftype == 1 and sid == 1 and flags & 1:  # trailers
                ended = True
            elif ftype == 3 and sid == 1:  # RST_STREAM
                ended = True
            elif ftype == 7:  # GOAWAY
                goaway = (int.from_bytes(payload[4:8], "big"), payload[8:])
                ended = True
        if replies:
            try:
                s.sendall(replies)
            except OSError:
                ended = True

    def pump(wait: float) -> None:
        nonlocal ended
        readable, _, _ = select.select([s], [], [], wait)
        if readable:
            try:
                chunk = s.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                ended = True
            else:
                handle(chunk)

    deadline = time.monotonic() + timeout
    sent = 0
    try:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0))
        block = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", f"{host}:{port}"), *headers]
        s.sendall(_h2_frame(1, 0x4, 1, b"".join(_hpack_literal(k, v) for k, v in block)))
        while sent < len(body) and not ended and time.monotonic() < deadline:
            n = min(conn_win, stream_win, 4096, len(body) - sent)
            if n <= 0:
                pump(1.0)
                continue
            frames = b"".join(
                _h2_frame(0, 1 if sent + i + 1 == len(body) else 0, 1, body[sent + i : sent + i + 1]) for i in range(n)
            )
            try:
                s.sendall(frames)
            except OSError:
                pump(1.0)
                break
            sent += n
            conn_win -= n
            stream_win -= n
            pump(0)
        while not ended and time.monotonic() < deadline:
            pump(1.0)
    finally:
        s.close()
    return bytes(data), sent, goaway


# ---------------------------------------------------------------------------------------------------------------
# Servers and shared data
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cves")


@pytest.fixture(scope="module")
def srv(work):
    args = grpc_base_args(example_repo(), None, ["--log-verbose=1", f"--audit-log-file={work / 'audit.jsonl'}"])
    s = start_server(args, "rampart[cve suite]")
    yield s
    finish_server(s)


@pytest.fixture(scope="module")
def restricted(work):
    extra = [
        f"--http-restricted-api={ADMIN_CATEGORIES}:admin-key={SECRET}",
        f"--grpc-restricted-protocol={ADMIN_CATEGORIES}:admin-key={SECRET}",
        "--log-verbose=1",
        f"--audit-log-file={work / 'audit-restricted.jsonl'}",
    ]
    s = start_server(grpc_base_args(example_repo(), None, extra), "rampart[cve suite, admin restricted]")
    yield s
    finish_server(s)


@pytest.fixture
def fresh():
    """A server of its own for a memory-amplification test: its baseline is not lowered (nor raised) by memory the
    allocator kept from earlier attacks."""
    s = start_server(grpc_base_args(example_repo()), "rampart[cve suite, fresh]")
    yield s
    finish_server(s)


def _deflate_zeros(mib: int) -> bytes:
    """A raw deflate stream of `mib` MiB of zeros, built from one repeated full-flush block (no 1 GiB buffer)."""
    z = bytes(MiB)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(z) + c.flush(zlib.Z_FULL_FLUSH)
    middle = c.compress(z) + c.flush(zlib.Z_FULL_FLUSH)
    last = c.compress(z) + c.flush(zlib.Z_FINISH)
    return first + middle * (mib - 2) + last


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """1 GiB of zeros as `Content-Encoding: gzip` (RFC 1952) and `deflate` (zlib, RFC 1950), about 1 MiB each."""
    mib = 1024
    raw = _deflate_zeros(mib)
    crc, adler, z = 0, 1, bytes(MiB)
    for _ in range(mib):
        crc, adler = zlib.crc32(z, crc), zlib.adler32(z, adler)
    gz = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + raw + struct.pack("<II", crc, (mib * MiB) & 0xFFFFFFFF)
    zl = b"\x78\xda" + raw + struct.pack(">I", adler)
    # Cheap sanity check: the first MiB inflates to zeros.
    assert zlib.decompressobj(31).decompress(gz[:4096], MiB) == bytes(MiB)
    assert zlib.decompressobj(15).decompress(zl[:4096], MiB) == bytes(MiB)
    return {"gzip": gz, "deflate": zl, "raw-deflate": raw}


def repo_snapshot() -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(example_repo().rglob("*"))}


def traversal_keys(work: Path) -> dict[str, Path]:
    """`file:` override keys that try to write outside the load's temporary directory -> the file they aim at."""
    up = "../" * 12
    rel = str(work).lstrip("/")
    return {
        f"file:{up}{rel}/HACKED-relative": work / "HACKED-relative",
        f"file:1/{up}{rel}/HACKED-versioned": work / "HACKED-versioned",
        f"file:{work}/HACKED-absolute": work / "HACKED-absolute",
        f"file:../{work.name}x/HACKED-sibling": work.parent / f"{work.name}x" / "HACKED-sibling",
        f"file:1/model.py/../../{up}{rel}/HACKED-dotdot": work / "HACKED-dotdot",
    }


def python_backend_config(work: Path) -> str:
    """The 2023 RCE chain: a Python-backend config, plus a classification label file outside the model directory
    (CVE-2026-24147)."""
    return json.dumps(
        {
            "name": "pwned",
            "backend": "python",
            "output": [{"name": "O", "data_type": "TYPE_STRING", "dims": [1], "label_filename": "../../../../etc/passwd"}],
            "parameters": {"EXECUTION_ENV_PATH": {"string_value": str(work / "env.tar.gz")}},
        }
    )


# ===============================================================================================================
# CVE-2023-31036 (also CVE-2023-6025), CVE-2026-24147: model load with `file:` path traversal / outside labels
# ===============================================================================================================


def test_cve_2023_31036_http_load_file_traversal_refused(srv, work):
    """Model control is `none`: every load is refused before the body is looked at; nothing is written anywhere."""
    keys = traversal_keys(work)
    before = repo_snapshot()
    payload = base64.b64encode(b"import os; os.system('touch /tmp/pwned')\n").decode()
    with guarded(srv, what="load with file: traversal"):
        for model in ("simple", "pwned", "..%2F..%2Ftmp"):
            for key in keys:
                body = json.dumps({"parameters": {"config": python_backend_config(work), key: payload}}).encode()
                status, headers, rbody, _, _ = raw_http(
                    srv, request_head("POST", f"/v2/repository/models/{model}/load", [("Content-Type", "application/json")], len(body)), body
                )
                json_error((status, rbody), 503, NO_LOAD)
        json_error(raw_call(srv, "POST", "/v2/repository/models/simple/unload", body=b'{"parameters":{"unload_dependents":true}}'), 503, NO_LOAD)
    for target in keys.values():
        assert not target.exists(), f"load wrote {target}"
    assert repo_snapshot() == before, "the model repository changed"


def test_cve_2023_31036_grpc_load_file_traversal_refused(srv, work):
    keys = traversal_keys(work)
    before = repo_snapshot()
    stub = srv.grpc_stub()
    with guarded(srv, what="gRPC load with file: traversal"):
        for model in ("simple", "pwned", "../../tmp"):
            for key in keys:
                req = service_pb2.RepositoryModelLoadRequest(model_name=model)
                req.parameters["config"].string_param = python_backend_config(work)
                req.parameters[key].bytes_param = b"import os; os.system('touch /tmp/pwned')\n"
                grpc_error(lambda: stub.RepositoryModelLoad(req), SC.UNAVAILABLE, exact=NO_LOAD)
        grpc_error(
            lambda: stub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name="simple")),
            SC.UNAVAILABLE,
            exact=NO_LOAD,
        )
    for target in keys.values():
        assert not target.exists(), f"load wrote {target}"
    assert repo_snapshot() == before, "the model repository changed"
    assert srv.grpc_stub().ModelReady(service_pb2.ModelReadyRequest(name="simple")).ready is True


# ===============================================================================================================
# CVE-2024-53880: model load with an extra-large base64 `file:` content
# ===============================================================================================================


def test_cve_2024_53880_http_load_huge_file_content_refused_quickly(srv):
    """60 MiB of base64 (under the body cap) and 100 MiB (over it): refused before the body is read, in well under a
    second, without buffering it (peak budget 64 MiB)."""
    b64 = base64.b64encode(bytes(45 * MiB))
    under = b'{"parameters":{"config":"{}","file:1/model.onnx":"' + b64 + b'"}}'
    over = b'{"parameters":{"config":"{}","file:1/model.onnx":"' + b"A" * (100 * MiB) + b'"}}'
    with guarded(srv, what="load with huge file: content"):
        for body in (under, over):
            status, headers, rbody, sent, secs = raw_http(
                srv, request_head("POST", "/v2/repository/models/simple/load", [("Content-Type", "application/json")], len(body)), body
            )
            json_error((status, rbody), 503, NO_LOAD)
            assert headers.get("connection") == "close", headers
            assert secs < 5, f"refusal took {secs:.1f}s"
            assert sent < len(body), "the server read the whole body of a load it refuses"


def test_cve_2024_53880_grpc_load_huge_file_content(srv):
    """60 MiB bytes_param: UNAVAILABLE (mode none). Over the 64 MiB message cap: RESOURCE_EXHAUSTED before decoding.
    Peak budget: the 60 MiB message itself may be buffered once (64 MiB + 2 x 60 MiB)."""
    stub = srv.grpc_stub()
    with guarded(srv, peak=RSS_BUDGET + 120 * MiB, what="gRPC load with huge file: content"):
        req = service_pb2.RepositoryModelLoadRequest(model_name="simple")
        req.parameters["config"].string_param = "{}"
        req.parameters["file:1/model.onnx"].bytes_param = bytes(60 * MiB)
        grpc_error(lambda: stub.RepositoryModelLoad(req), SC.UNAVAILABLE, exact=NO_LOAD)
        req.parameters["file:1/model.onnx"].bytes_param = bytes(65 * MiB)
        size = req.ByteSize()
        grpc_error(
            lambda: stub.RepositoryModelLoad(req),
            SC.RESOURCE_EXHAUSTED,
            exact=f"Error, decoded message length too large: found {size} bytes, the limit is: {MAX_INPUT} bytes",
        )
        del req


# ===============================================================================================================
# CVE-2024-0087: log file location settable through the API
# ===============================================================================================================


def test_cve_2024_0087_http_log_file_not_settable(srv, work):
    target = work / "bashrc-via-log"
    with guarded(srv, what="POST /v2/logging log_file"):
        before = http(srv, "GET", "/v2/logging").json()
        assert before["log_file"] == "" and before["log_verbose_level"] == 1, before
        for body in (
            {"log_file": str(target)},
            {"log_file": str(target), "log_info": True, "log_verbose_level": 2},
            {"log_verbose_level": 2, "log_file": "../../../../" + str(target)},
            {"log_file": ""},
        ):
            assert_http_error(http(srv, "POST", "/v2/logging", json=body), 501, exact=LOG_FILE_REFUSED)
        # Refused as a whole: the other fields of those bodies did not apply either.
        assert http(srv, "GET", "/v2/logging").json() == before
        # Then the second half of the attack: get attacker-controlled text logged.
        req = dict(SIMPLE_JSON, id="x\n* * * * * root touch /tmp/pwned\n")
        r = http(srv, "POST", "/v2/models/simple/infer", json=req)
        assert r.status_code == 200 and r.json()["id"] == req["id"], r.text[:300]
    assert not target.exists(), f"{target} was created"


def test_cve_2024_0087_grpc_log_file_not_settable(srv, work):
    target = work / "bashrc-via-grpc-log"
    stub = srv.grpc_stub()
    with guarded(srv, what="gRPC LogSettings log_file"):
        before = stub.LogSettings(service_pb2.LogSettingsRequest())
        assert before.settings["log_file"].string_param == "" and before.settings["log_verbose_level"].uint32_param == 1, before
        req = service_pb2.LogSettingsRequest()
        req.settings["log_file"].string_param = str(target)
        grpc_error(lambda: stub.LogSettings(req), SC.UNIMPLEMENTED, exact=LOG_FILE_REFUSED)
        req.settings["log_info"].bool_param = True
        req.settings["log_verbose_level"].uint32_param = 2
        grpc_error(lambda: stub.LogSettings(req), SC.UNIMPLEMENTED, exact=LOG_FILE_REFUSED)
        with srv.grpc_client() as c:
            grpc_error(lambda: c.update_log_settings({"log_file": str(target)}), SC.UNIMPLEMENTED, exact=LOG_FILE_REFUSED)
            grpc_error(lambda: c.update_log_settings({"log_file": None}), SC.UNIMPLEMENTED, exact=LOG_FILE_REFUSED)
        assert stub.LogSettings(service_pb2.LogSettingsRequest()) == before
        resp = stub.ModelInfer(simple_grpc_request(id="x\n* * * * * root touch /tmp/pwned\n"))
        assert resp.id == "x\n* * * * * root touch /tmp/pwned\n"
    assert not target.exists(), f"{target} was created"


# ===============================================================================================================
# CVE-2024-0100: trace file settable through the API
# ===============================================================================================================


def _trace_file_bodies(target: Path) -> list[dict]:
    """POST bodies that try to choose the trace file (with and without tracing switched on next to it)."""
    return [
        {"trace_file": str(target), "trace_level": ["TIMESTAMPS"], "trace_rate": "1", "log_frequency": "1"},
        {"trace_file": str(target)},
        {"trace_rate": "1", "trace_file": "../../../../" + str(target)},
        {"trace_file": None},
        {"trace_file": ""},
    ]


def _no_file_like(target: Path) -> None:
    """Neither `target` nor a log-frequency sibling (`target.0`, ...) exists."""
    made = sorted(p.name for p in target.parent.iterdir() if p.name.startswith(target.name))
    assert not made, f"{made} created in {target.parent}"


def test_cve_2024_0100_http_trace_file_not_settable(srv, work):
    """The trace file is read-only through the API (Triton >= 24.04): any body naming `trace_file` is refused as a
    whole (501), globally and per model; the settings read afterwards are unchanged, and nothing is written."""
    target = work / "etc-via-trace"
    with guarded(srv, what="POST /v2/trace/setting trace_file"):
        for path in ("/v2/trace/setting", "/v2/models/simple/trace/setting"):
            before = http(srv, "GET", path).json()
            assert before["trace_file"] == "" and before["trace_level"] == ["OFF"], before
            for body in _trace_file_bodies(target):
                assert_http_error(http(srv, "POST", path, json=body), 501, TRACE_FILE_REFUSED)
            assert http(srv, "GET", path).json() == before
        # Unknown and malformed model names: the model is looked up / validated first.
        for body in _trace_file_bodies(target)[:2]:
            assert_http_error(http(srv, "POST", "/v2/models/no_such_model/trace/setting", json=body), 404, unknown_model("no_such_model"))
            assert_http_error(
                http(srv, "POST", "/v2/models/..%2F..%2Fetc/trace/setting", json=body),
                400,
                "invalid model name '../../etc', model name must not contain path traversal characters",
            )
        assert_http_error(http(srv, "GET", "/v2/models/no_such_model/trace/setting"), 404, unknown_model("no_such_model"))
        # Tracing cannot be switched on at all: this server has no trace file.
        r = http(srv, "POST", "/v2/trace/setting", json={"trace_level": ["TIMESTAMPS"], "trace_rate": "1"})
        assert r.status_code == 501 and "tracing needs a trace file" in r.json()["error"], r.text[:300]
        r = http(srv, "POST", "/v2/models/simple/infer", data=SIMPLE_BODY)
        assert r.status_code == 200, r.text[:300]
    _no_file_like(target)


def test_cve_2024_0100_grpc_trace_file_not_settable(srv, work):
    target = work / "etc-via-grpc-trace"
    stub = srv.grpc_stub()
    with guarded(srv, what="gRPC TraceSetting trace_file"):
        for model in ("", "simple"):
            before = stub.TraceSetting(service_pb2.TraceSettingRequest(model_name=model))
            assert list(before.settings["trace_file"].value) == [""], before
            assert list(before.settings["trace_level"].value) == ["OFF"], before
            req = service_pb2.TraceSettingRequest(model_name=model)
            req.settings["trace_file"].value.append(str(target))
            req.settings["trace_level"].value.append("TIMESTAMPS")
            req.settings["trace_rate"].value.append("1")
            grpc_error(lambda: stub.TraceSetting(req), SC.UNIMPLEMENTED, exact=TRACE_FILE_REFUSED)
            # An empty value for trace_file (gRPC's "clear") is refused too.
            req = service_pb2.TraceSettingRequest(model_name=model)
            req.settings["trace_file"].SetInParent()
            req.settings["trace_rate"].value.append("1")
            grpc_error(lambda: stub.TraceSetting(req), SC.UNIMPLEMENTED, exact=TRACE_FILE_REFUSED)
            with srv.grpc_client() as c:
                for settings in ({"trace_file": str(target), "trace_level": ["TIMESTAMPS"]}, {"trace_file": "../../../../" + str(target)}):
                    update = lambda: c.update_trace_settings(model_name=model, settings=settings)  # noqa: E731
                    grpc_error(update, SC.UNIMPLEMENTED, exact=TRACE_FILE_REFUSED)
            assert stub.TraceSetting(service_pb2.TraceSettingRequest(model_name=model)) == before
        req = service_pb2.TraceSettingRequest(model_name="no_such_model")
        req.settings["trace_file"].value.append(str(target))
        grpc_error(lambda: stub.TraceSetting(req), SC.NOT_FOUND, exact=unknown_model("no_such_model"))
    _no_file_like(target)


def test_cve_2024_0100_trace_file_stays_where_the_operator_put_it(work):
    """A server started with a trace file and tracing on: a client can neither move the file (refused, settings
    unchanged) nor get anything written where it asks; the traces still go to the operator's file, written at
    shutdown, mode 0600."""
    own = work / "operator-traces" / "trace.json"
    own.parent.mkdir()
    target = work / "etc-via-traced-server"
    args = grpc_base_args(example_repo(), None, [f"--trace-config=triton,file={own}", "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1"])
    s = start_server(args, "rampart[cve suite, tracing]")
    try:
        with guarded(s, what="trace_file on a tracing server"):
            before = http(s, "GET", "/v2/trace/setting").json()
            assert (before["trace_file"], before["trace_level"], before["trace_rate"]) == (str(own), ["TIMESTAMPS"], "1"), before
            for path in ("/v2/trace/setting", "/v2/models/simple/trace/setting"):
                for body in _trace_file_bodies(target):
                    assert_http_error(http(s, "POST", path, json=body), 501, TRACE_FILE_REFUSED)
            req = service_pb2.TraceSettingRequest()
            req.settings["trace_file"].value.append(str(target))
            grpc_error(lambda: s.grpc_stub().TraceSetting(req), SC.UNIMPLEMENTED, exact=TRACE_FILE_REFUSED)
            assert http(s, "GET", "/v2/trace/setting").json() == before
            assert http(s, "GET", "/v2/models/simple/trace/setting").json() == before
        time.sleep(0.5)  # a trace is recorded once the front end lets go of the request (see test_tracing.py)
    finally:
        finish_server(s)
    _no_file_like(target)
    assert own.stat().st_mode & 0o777 == 0o600, oct(own.stat().st_mode)
    records = json.loads(own.read_text())
    # guarded() ran one HTTP and one gRPC inference of `simple`, both traced (rate 1).
    assert sorted(r["model_name"] for r in records if "model_name" in r) == ["simple", "simple"], records
    assert sorted(p.name for p in own.parent.iterdir()) == ["trace.json"]


# ===============================================================================================================
# CVE-2024-0088 (shm offset overflow), CVE-2026-47478 (same key twice, fd reuse): client shm is off
# ===============================================================================================================

HUGE_OFFSET = 2**64 - 32


def _shm_input(region: str, offset: int = HUGE_OFFSET) -> dict:
    return {
        "name": "INPUT0",
        "datatype": "INT32",
        "shape": [1, 16],
        "parameters": {"shared_memory_region": region, "shared_memory_byte_size": 64, "shared_memory_offset": offset},
    }


def test_cve_2024_0088_http_shm_offset_overflow_refused(srv):
    with guarded(srv, what="shm offset overflow"):
        for body in (
            {"key": "/rampart_cve", "offset": HUGE_OFFSET, "byte_size": 64},
            {"key": "/rampart_cve", "offset": 0, "byte_size": 2**64 - 1},
            {"key": "/rampart_cve", "offset": 2**63, "byte_size": 2**63},
        ):
            for region in ("r0", "r1"):  # the same key under two names (CVE-2026-47478)
                status_body = raw_call(srv, "POST", f"/v2/systemsharedmemory/region/{region}/register", body=json.dumps(body).encode())
                json_error(status_body, 501, SHM_DISABLED)
        json_error(raw_call(srv, "POST", "/v2/systemsharedmemory/region/r0/unregister"), 501, SHM_DISABLED)
        # Infer reading / writing through a region (never registered: registration is off).
        req = {"inputs": [_shm_input("r1"), SIMPLE_JSON["inputs"][1]]}
        assert_http_error(http(srv, "POST", "/v2/models/simple/infer", json=req), 501, SHM_DISABLED)
        req = dict(SIMPLE_JSON, outputs=[{"name": "OUTPUT0", "parameters": {"shared_memory_region": "r1", "shared_memory_byte_size": 64, "shared_memory_offset": HUGE_OFFSET}}])
        assert_http_error(http(srv, "POST", "/v2/models/simple/infer", json=req), 501, SHM_DISABLED)
        assert http(srv, "GET", "/v2/systemsharedmemory/status").json() == []
        assert_http_error(http(srv, "GET", "/v2/systemsharedmemory/region/r1/status"), 404, "Unable to find system shared memory region: 'r1'")
        body = {"raw_handle": {"b64": base64.b64encode(b"\xff" * 64).decode()}, "device_id": 0, "byte_size": 2**64 - 1}
        assert_http_error(http(srv, "POST", "/v2/cudasharedmemory/region/c/register", json=body), 400, CUDA_SHM)


def test_cve_2024_0088_grpc_shm_offset_overflow_refused(srv):
    stub = srv.grpc_stub()
    with guarded(srv, what="gRPC shm offset overflow"):
        for offset, size in ((HUGE_OFFSET, 64), (0, 2**64 - 1), (2**63, 2**63)):
            for region in ("r0", "r1"):
                req = service_pb2.SystemSharedMemoryRegisterRequest(name=region, key="/rampart_cve", offset=offset, byte_size=size)
                grpc_error(lambda: stub.SystemSharedMemoryRegister(req), SC.UNIMPLEMENTED, exact=SHM_DISABLED)
        grpc_error(
            lambda: stub.SystemSharedMemoryUnregister(service_pb2.SystemSharedMemoryUnregisterRequest(name="r0")),
            SC.UNIMPLEMENTED,
            exact=SHM_DISABLED,
        )
        # gRPC carries shm sizes as int64_param only (docs/protocol.md, "gRPC parameters"): a uint64 one is
        # refused as it is decoded; the int64 form of the same huge offset (negative) reaches the shm manager,
        # which is off.
        for kind, value, code, message in (
            ("uint64", HUGE_OFFSET, SC.INVALID_ARGUMENT, "Unable to parse 'shared_memory_offset' of {}: expected int64_param."),
            ("int64", HUGE_OFFSET - 2**64, SC.UNIMPLEMENTED, SHM_DISABLED),
        ):
            t = grpc_input("INPUT0", "INT32", [1, 16], shared_memory_region="r1", shared_memory_byte_size=64)
            set_grpc_param(t.parameters, "shared_memory_offset", value, kind)
            req = grpc_request("simple", [t, typed_input("INPUT1", "INT32", B)])
            grpc_error(lambda: stub.ModelInfer(req), code, exact=message.format("input 'INPUT0'"))
            req = simple_grpc_request()
            out = req.outputs.add(name="OUTPUT0")
            set_grpc_param(out.parameters, "shared_memory_region", "r1")
            set_grpc_param(out.parameters, "shared_memory_byte_size", 64)
            set_grpc_param(out.parameters, "shared_memory_offset", value, kind)
            grpc_error(lambda: stub.ModelInfer(req), code, exact=message.format("output 'OUTPUT0'"))
        assert len(stub.SystemSharedMemoryStatus(service_pb2.SystemSharedMemoryStatusRequest()).regions) == 0
        grpc_error(
            lambda: stub.SystemSharedMemoryStatus(service_pb2.SystemSharedMemoryStatusRequest(name="r1")),
            SC.NOT_FOUND,
            exact="Unable to find system shared memory region: 'r1'",
        )
        creq = service_pb2.CudaSharedMemoryRegisterRequest(name="c", raw_handle=b"\xff" * 64, device_id=0, byte_size=2**64 - 1)
        grpc_error(lambda: stub.CudaSharedMemoryRegister(creq), SC.INVALID_ARGUMENT, exact=CUDA_SHM)


# ===============================================================================================================
# CVE-2024-0116: unregister a region while an inference uses it
# ===============================================================================================================


def test_cve_2024_0116_http_unregister_during_inference(srv):
    """Inferences run on four threads while the main thread unregisters (one region, all regions): every unregister
    is refused (shm is off), every inference succeeds."""
    failures: list[str] = []
    stop = threading.Event()

    def infer_loop():
        with requests.Session() as s:
            while not stop.is_set():
                r = s.post(srv.base + "/v2/models/simple/infer", data=SIMPLE_BODY, timeout=HTTP_TIMEOUT)
                if r.status_code != 200 or r.json()["outputs"][0]["data"] != (A + B).reshape(-1).tolist():
                    failures.append(f"{r.status_code} {r.text[:200]}")

    with guarded(srv, what="unregister during inference"):
        threads = [threading.Thread(target=infer_loop) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for i in range(40):
                path = "/v2/systemsharedmemory/unregister" if i % 2 else "/v2/systemsharedmemory/region/r0/unregister"
                json_error(raw_call(srv, "POST", path), 501, SHM_DISABLED)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
    assert not failures, failures[:5]


def test_cve_2024_0116_grpc_unregister_during_inference(srv):
    stub = srv.grpc_stub()
    results: list = []

    def stream():
        try:
            results.extend(stub.ModelStreamInfer(iter([simple_grpc_request(id=str(i)) for i in range(300)])))
        except grpc.RpcError as e:  # pragma: no cover - reported below
            results.append(e)

    with guarded(srv, what="gRPC unregister during a stream"):
        t = threading.Thread(target=stream)
        t.start()
        try:
            for i in range(40):
                req = service_pb2.SystemSharedMemoryUnregisterRequest(name="" if i % 2 else "r0")
                grpc_error(lambda: stub.SystemSharedMemoryUnregister(req), SC.UNIMPLEMENTED, exact=SHM_DISABLED)
        finally:
            t.join(60)
    assert len(results) == 300 and all(not isinstance(r, Exception) and not r.error_message for r in results), results[-3:]
    assert [r.infer_response.id for r in results] == [str(i) for i in range(300)]


# ===============================================================================================================
# CVE-2024-0095: log injection (request ids and model names with CR/LF/ANSI) -- the output is checked at the end
# ===============================================================================================================

# A fake line in the server's own default log format (Triton's `LMMDD hh:mm:ss.uuuuuu pid file:line] msg`), and one
# in the ISO8601 format. pid 1 is never the server's pid.
FORGED = "I0101 00:00:00.000000 1 forged.rs:1] FORGED-LOG-LINE"
FORGED_ISO = "2099-01-01T00:00:00Z I 1 forged.rs:1] FORGED-LOG-LINE"
INJECTIONS = [
    f"x\n{FORGED}",
    f"x\r\n{FORGED}",
    f"x\r{FORGED}",
    f"\x1b[2J\x1b[1;1H{FORGED}",
    f"x\u2028{FORGED}",
    f"x\x00{FORGED}",
    f"x\n{FORGED_ISO}",
    f"x/\n{FORGED}",  # fails the model-name check on '/' first, whose message echoes the name as is
]


def test_cve_2024_0095_http_log_injection(srv, restricted):
    """Ids, model names, paths and headers carrying CR/LF/ANSI/U+2028 and a fake log line: answered normally
    (ids echoed; as model names: 400 with the model-name check's message, or 404 for the well-formed U+2028 one;
    load: 503 in poll mode). `test_server_output_has_no_forged_line` then checks every output line.
    Unexpected answers are collected and asserted at the end, so that every injection is sent (and later checked
    in the output) even when one answer is wrong."""
    wrong = []
    with guarded(srv, what="log injection over HTTP"):
        for text in INJECTIONS:
            r = http(srv, "POST", "/v2/models/simple/infer", json=dict(SIMPLE_JSON, id=text))
            assert r.status_code == 200 and r.json()["id"] == text, r.text[:300]
            name = quote(text, safe="")
            invalid = invalid_model_name(text)
            by_name = (400, invalid) if invalid else (404, unknown_model(text))
            for method, path, (want_status, want_message) in (
                ("GET", f"/v2/models/{name}/config", by_name),
                ("GET", f"/v2/models/{name}", by_name),
                ("GET", f"/v2/models/{name}/trace/setting", by_name),
                ("POST", f"/v2/repository/models/{name}/load", (503, NO_LOAD)),
            ):
                status, body = raw_call(srv, method, path)
                if (status, json.loads(body)) != (want_status, {"error": want_message}):
                    wrong.append((path, status, body[:200]))
            # Restricted server: refusals are logged (WARN) with the path.
            for path in (f"/v2/repository/models/{name}/load", f"/v2/systemsharedmemory/region/{name}/register"):
                status, body = raw_call(restricted, "POST", path)
                assert (status, json.loads(body)) == (403, DENIED_HTTP), (path, status, body)
        # Raw bytes the HTTP parser accepts in a path: UTF-8 line separators (not control characters, so the names
        # are well-formed: an unknown model; a load is refused by the mode, or first by the restriction).
        config_path, load_path = "/v2/models/a\u2028b/config", "/v2/repository/models/a\u2029b/load"
        for raw_path, target, want_status, want_body in (
            (config_path, srv, 404, {"error": unknown_model("a\u2028b")}),
            (config_path, restricted, 404, {"error": unknown_model("a\u2028b")}),
            (load_path, srv, 503, {"error": NO_LOAD}),
            (load_path, restricted, 403, DENIED_HTTP),
        ):
            head = request_head("GET" if "config" in raw_path else "POST", "PLACEHOLDER").replace(
                b"PLACEHOLDER", raw_path.encode()
            )
            status, _, body, _, _ = raw_http(target, head)
            assert (status, json.loads(body)) == (want_status, want_body), (target.label, raw_path, status, body)
        r = http(srv, "GET", "/v2/health/ready", headers={"X-Request-Id": "a\tb", "User-Agent": FORGED})
        assert r.status_code == 200
    assert not wrong, f"hostile model names not answered 400 / 404 / 503 as expected: {wrong[:3]}"


def test_cve_2024_0095_grpc_log_injection(srv, restricted):
    """As the HTTP test (INVALID_ARGUMENT or NOT_FOUND for the names); unexpected answers for the hostile model
    names are asserted at the end."""
    stub, rstub = srv.grpc_stub(), restricted.grpc_stub()
    wrong = []
    with guarded(srv, what="log injection over gRPC"):
        for text in INJECTIONS:
            assert stub.ModelInfer(simple_grpc_request(id=text)).id == text
            invalid = invalid_model_name(text)
            code, msg = (SC.INVALID_ARGUMENT, invalid) if invalid else (SC.NOT_FOUND, unknown_model(text))
            for rpc, call in (
                ("ModelConfig", lambda: stub.ModelConfig(service_pb2.ModelConfigRequest(name=text))),
                ("TraceSetting", lambda: stub.TraceSetting(service_pb2.TraceSettingRequest(model_name=text))),
            ):
                try:
                    grpc_error(call, code, exact=msg)
                except AssertionError as e:
                    wrong.append((rpc, text, str(e)[:200]))
            req = simple_grpc_request()
            req.model_name = text
            out = list(stub.ModelStreamInfer(iter([req])))
            if [o.error_message for o in out] != [msg]:
                wrong.append(("ModelStreamInfer", text, [o.error_message for o in out]))
            lreq = service_pb2.RepositoryModelLoadRequest(model_name=text)
            grpc_error(lambda: rstub.RepositoryModelLoad(lreq), SC.UNAVAILABLE, exact=DENIED_GRPC)
            grpc_error(lambda: stub.RepositoryModelLoad(lreq), SC.UNAVAILABLE, exact=NO_LOAD)
        # Printable metadata values (gRPC refuses control characters in metadata client-side).
        md = [("x-request-id", FORGED), ("triton-grpc-protocol-admin-key", "wrong " + FORGED)]
        grpc_error(lambda: rstub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), metadata=md), SC.UNAVAILABLE, exact=DENIED_GRPC)
    assert not wrong, f"hostile model names not answered INVALID_ARGUMENT / NOT_FOUND as expected: {wrong[:3]}"


# ===============================================================================================================
# CVE-2024-0095: the audit log writes JSON strings with raw U+2028 / U+2029
# ===============================================================================================================


def test_cve_2024_0095_audit_log_escapes_unicode_line_separators(srv, work):
    """The audit target is the raw request path. JSON allows U+2028/U+2029/U+0085 unescaped, but line-oriented
    readers (Python's str.splitlines, many log shippers and JavaScript viewers) break lines there, so one event
    becomes two lines that are not JSON. The writer must escape them (\\u2028 ...), as it escapes control
    characters, to keep "one JSON object per line" for every reader."""
    targets = []
    for ch in ("\u2028", "\u2029"):
        targets.append(f"/v2/models/sep{ch}x/config")
        head = request_head("GET", "PLACEHOLDER").replace(b"PLACEHOLDER", targets[-1].encode())
        status, _, body, _, _ = raw_http(srv, head)
        assert (status, json.loads(body)) == (404, {"error": unknown_model(f"sep{ch}x")}), (status, body)
    raw = (work / "audit.jsonl").read_bytes()
    text = raw.decode("utf-8")
    assert text.endswith("\n"), text[-200:]
    assert "\u2028".encode() not in raw and "\u2029".encode() not in raw, "the audit log holds a raw U+2028 / U+2029"
    assert text.splitlines() == text.split("\n")[:-1], (
        "an audit event spans several lines for str.splitlines(): "
        + repr([line for line in text.split("\n") if any(c in line for c in "\u2028\u2029\x85")][:2])
    )
    for target in targets:
        escaped = json.dumps(target)[1:-1]  # "\u2028" written as the six characters \u2028
        lines = [line for line in text.splitlines() if escaped in line]
        assert len(lines) == 1, f"expected one audit line for {target!r}, got {lines}"
        event = json.loads(lines[0])
        assert (event["event"], event["protocol"], event["target"], event["outcome"]) == ("admin", "http", target, "404"), event


# ===============================================================================================================
# CVE-2024-53880's cousin CVE-2025-33201 / CVE-2025-33211: extra-large payloads (JSON header over the cap)
# ===============================================================================================================


def test_cve_2025_33201_http_oversized_json_header_refused_before_reading(srv):
    head = json.dumps(dict(SIMPLE_JSON, id="x" * (65 * MiB))).encode()
    status, headers, body, sent, secs = raw_http(
        srv,
        request_head("POST", "/v2/models/simple/infer", [("Inference-Header-Content-Length", str(len(head)))], len(head)),
        head,
    )
    json_error(
        (status, body),
        400,
        f"request size of {len(head)} bytes exceeds the maximum allowed input size of {MAX_INPUT} bytes. Use --http-max-input-size"
        " to increase the limit.",
    )
    assert sent < len(head) and secs < 5 and headers.get("connection") == "close", (sent, secs, headers)
    assert_serving(srv)


SMALL_OBJECTS = b",".join([b'{"a":1}'] * 300_000)  # 2.3 MB of 7-byte JSON objects


def _small_objects(n: int) -> bytes:
    return b",".join([b'{"a":1}'] * n)


# Objects besides the padding: index body 1, infer body 1, infer-parameters body 4 (document, parameters, 2 inputs).
@pytest.mark.parametrize(
    "path,body,status,message",
    [
        ("/v2/repository/index", b'{"ready":true,"x":[' + SMALL_OBJECTS + b"]}", 400, TOO_MANY_VALUES),
        ("/v2/models/simple/infer", b'{"x":[' + SMALL_OBJECTS + b"]}", 400, TOO_MANY_VALUES),
        ("/v2/models/simple/infer", b'{"parameters":{"x":[' + SMALL_OBJECTS + b"]}," + SIMPLE_BODY[1:], 400, TOO_MANY_VALUES),
        # At the object cap (65536 objects in all): parsed, and the unused field is ignored / refused as before.
        ("/v2/repository/index", b'{"ready":true,"x":[' + _small_objects(MAX_JSON_OBJECTS - 1) + b"]}", 200, None),
        (
            "/v2/models/simple/infer",
            b'{"x":[' + _small_objects(MAX_JSON_OBJECTS - 1) + b"]}",
            400,
            "Unable to parse 'inputs': the request must contain an 'inputs' array",
        ),
        (
            "/v2/models/simple/infer",
            b'{"parameters":{"x":[' + _small_objects(MAX_JSON_OBJECTS - 4) + b"]}," + SIMPLE_BODY[1:],
            400,
            "parameter 'x' has invalid type. It should be either 'int', 'bool', 'double' or 'string'.",
        ),
        # One object over the cap.
        ("/v2/repository/index", b'{"ready":true,"x":[' + _small_objects(MAX_JSON_OBJECTS) + b"]}", 400, TOO_MANY_VALUES),
        ("/v2/models/simple/infer", b'{"parameters":{"x":[' + _small_objects(MAX_JSON_OBJECTS - 3) + b"]}," + SIMPLE_BODY[1:], 400, TOO_MANY_VALUES),
    ],
    ids=["index", "infer", "infer-parameters", "index-at-cap", "infer-at-cap", "infer-parameters-at-cap", "index-over-cap", "infer-parameters-over-cap"],
)
def test_cve_2025_33201_http_json_of_small_objects_is_bounded(fresh, path, body, status, message):
    """2.3 MB of `{"a":1}` in fields the server does not use. The JSON pre-scan counts 300001+ objects, over the cap
    of 65536, and refuses the body before parsing it: peak budget 64 MiB + 2 x body (the body is buffered once;
    nothing is materialized), retained < 64 MiB. (Before the pre-scan each 7-byte object cost a JSON DOM map node,
    about 100 x its size, so one 64 MiB body to an open inference endpoint took several GiB.) At exactly 65536
    objects the body is parsed: measured +44 MiB for its 512 KiB (~700 bytes per JSON map), the bound the object cap
    sets, within the same budget."""
    with guarded(fresh, peak=RSS_BUDGET + 2 * len(body), what=f"{len(body) >> 10} KiB of small JSON objects to {path}"):
        r = http(fresh, "POST", path, data=body)
        if message is None:
            assert r.status_code == status and "simple" in [m["name"] for m in r.json()], r.text[:300]
        else:
            assert_http_error(r, status, message)


def test_cve_2025_33201_http_json_value_count_cap(fresh):
    """The value cap: 1 + each ',' '[' '{' outside strings. `[0,...,0]` with 4194303 zeros is 4194304 values
    (accepted: the index ignores a body it cannot use as options, see `index-at-cap`), one more is refused unparsed.
    Separators inside strings (also after an escaped quote) are not counted; a string ending in an escaped backslash
    does end there. Peak budget 16 MiB + 18 x body: the accepted body at the cap is parsed into a JSON DOM (measured
    +137 MiB for its 8 MiB, ~34 bytes per value -- the bound the value cap sets on any JSON request)."""
    at_cap = b"[" + b"0," * (MAX_JSON_VALUES - 2) + b"0]"
    over = b"[" + b"0," * (MAX_JSON_VALUES - 1) + b"0]"
    strings = b'{"ready":true,"x":"\\\",' + b",[{" * 2_000_000 + b'"}'
    assert strings.count(b",") + strings.count(b"[") + strings.count(b"{") + 1 > MAX_JSON_VALUES
    with guarded(fresh, peak=16 * MiB + 18 * len(at_cap), what="JSON value cap"):
        r = http(fresh, "POST", "/v2/repository/index", data=at_cap)
        assert r.status_code == 200 and "simple" in [m["name"] for m in r.json()], r.text[:300]
        assert_http_error(http(fresh, "POST", "/v2/repository/index", data=over), 400, TOO_MANY_VALUES)
        r = http(fresh, "POST", "/v2/repository/index", data=strings)
        assert r.status_code == 200 and "simple" in [m["name"] for m in r.json()], r.text[:300]
        # A string ending in an escaped backslash ends there: the separators after it count.
        r = http(fresh, "POST", "/v2/repository/index", data=b'{"ready":true,"x":"a\\\\","y":[' + b"0," * MAX_JSON_VALUES + b"0]}")
        assert_http_error(r, 400, TOO_MANY_VALUES)


# ===============================================================================================================
# CVE-2025-23310 / CVE-2025-23311, CVE-2026-47476: many-chunk HTTP bodies
# ===============================================================================================================

ONE_MILLION = 1_000_000


def test_cve_2025_23310_http_million_one_byte_chunks_infer(srv):
    """A valid request (padded with spaces to 1e6 bytes) sent as 1e6 one-byte chunks: the right answer."""
    body = SIMPLE_BODY + b" " * (ONE_MILLION - len(SIMPLE_BODY))
    data = chunked_body(body[i : i + 1] for i in range(len(body)))
    head = request_head("POST", "/v2/models/simple/infer", [("Content-Type", "application/json")], chunked=True)
    with guarded(srv, what="1e6 one-byte chunks to infer"):
        status, _, rbody, sent, secs = raw_http(srv, head, data)
        assert status == 200, rbody[:300]
        outs = {o["name"]: o["data"] for o in json.loads(rbody)["outputs"]}
        assert outs["OUTPUT0"] == (A + B).reshape(-1).tolist() and outs["OUTPUT1"] == (A - B).reshape(-1).tolist()
        assert secs < 30, f"{secs:.1f}s"


@pytest.mark.parametrize(
    "path,status,message",
    [
        ("/v2/models/simple/infer", 400, JSON_PARSE + "expected value at line 1 column 1"),
        ("/v2/repository/index", 400, JSON_PARSE + "expected value at line 1 column 1"),
        ("/v2/logging", 400, JSON_PARSE + "expected value at line 1 column 1"),
        ("/v2/trace/setting", 400, JSON_PARSE + "expected value at line 1 column 1"),
        ("/v2/models/simple/trace/setting", 400, JSON_PARSE + "expected value at line 1 column 1"),
        ("/v2/repository/models/simple/load", 503, NO_LOAD),
        ("/v2/repository/models/simple/unload", 503, NO_LOAD),
        ("/v2/systemsharedmemory/region/r0/register", 501, SHM_DISABLED),
    ],
)
def test_cve_2025_23310_http_million_A_chunks(srv, path, status, message):
    """Triton's qa/L0_http/http_request_many_chunks.py: `1\\r\\nA\\r\\n` x 1e6 to every JSON endpoint."""
    data = b"1\r\nA\r\n" * ONE_MILLION + b"0\r\n\r\n"
    head = request_head("POST", path, [("Content-Type", "application/json")], chunked=True)
    with guarded(srv, what=f"1e6 chunks to {path}"):
        st, headers, rbody, _, secs = raw_http(srv, head, data)
        json_error((st, rbody), status, message)
        assert secs < 30, f"{secs:.1f}s"


def test_cve_2026_47476_http_chunk_count_does_not_drive_memory(fresh):
    """3e6 one-byte chunks carry a 3 MB body (18 MB on the wire). Memory must follow the body, not the number of
    chunks: the body is collected frame by frame into one buffer. Peak budget 16 MiB + 2 x body (measured +3.3 MiB,
    1.1 x body). (Before, each chunk cost about 37 bytes until the body was complete -- 3e6 chunks peaked at
    +106 MiB, 8e6 at +300 MiB -- so the 64 MiB body cap allowed about 2.4 GiB; Triton caps a body at 65536
    chunks.)"""
    n = 3_000_000
    data = b"1\r\nA\r\n" * n + b"0\r\n\r\n"
    head = request_head("POST", "/v2/repository/index", [("Content-Type", "application/json")], chunked=True)
    with guarded(fresh, peak=16 * MiB + 2 * n, what="3e6 one-byte chunks"):
        status, _, body, _, _ = raw_http(fresh, head, data)
        json_error((status, body), 400, JSON_PARSE + "expected value at line 1 column 1")


def test_cve_2025_23310_grpc_million_one_byte_data_frames(srv):
    """The HTTP/2 form on the gRPC listener: a 1 MB ModelInfer message as one-byte DATA frames. h2 ends the
    connection with GOAWAY ENHANCE_YOUR_CALM "too_many_data_frames" (or, if it keeps up, answers correctly)."""
    n = 250_000
    x = np.arange(n, dtype=np.float32)
    msg = grpc_request("identity_fp32", [grpc_input("INPUT0", "FP32", [1, n])], [x.tobytes()]).SerializeToString()
    body = b"\x00" + len(msg).to_bytes(4, "big") + msg
    headers = [("content-type", "application/grpc"), ("te", "trailers")]
    with guarded(srv, what="1e6 one-byte DATA frames (gRPC)"):
        data, sent, goaway = h2_tiny_data_frames(srv.host, srv.grpc_port, "/inference.GRPCInferenceService/ModelInfer", headers, body)
        if goaway is not None:
            assert goaway == (11, b"too_many_data_frames"), goaway
        else:
            resp = service_pb2.ModelInferResponse.FromString(data[5:])
            assert resp.raw_output_contents[0] == x.tobytes()


def test_cve_2025_23310_http2_million_one_byte_data_frames(srv):
    """The same on the HTTP listener over h2c (prior knowledge)."""
    body = SIMPLE_BODY + b" " * (ONE_MILLION - len(SIMPLE_BODY))
    with guarded(srv, what="1e6 one-byte DATA frames (HTTP/2)"):
        data, sent, goaway = h2_tiny_data_frames(srv.host, srv.port, "/v2/models/simple/infer", [("content-type", "application/json")], body)
        if goaway is not None:
            assert goaway == (11, b"too_many_data_frames"), goaway
        else:
            assert json.loads(data)["outputs"][0]["data"] == (A + B).reshape(-1).tolist(), data[:300]


# ===============================================================================================================
# CVE-2025-23319 / 23320 / 23334 / 23329 (Wiz chain): reserved shm key prefix and all-slash keys
# ===============================================================================================================

RESERVED_KEYS = [
    "triton_python_backend_shm_region_0b4b2f3c",
    "/triton_python_backend_shm_region_0b4b2f3c",
    "///triton_python_backend_shm_region_",
    "/",
    "//////",
    "",
]


def test_cve_2025_23319_http_reserved_shm_keys_refused(srv):
    with guarded(srv, what="reserved shm keys"):
        for key in RESERVED_KEYS:
            body = json.dumps({"key": key, "offset": 0, "byte_size": 1 << 30}).encode()
            json_error(raw_call(srv, "POST", "/v2/systemsharedmemory/region/wiz/register", body=body), 501, SHM_DISABLED)
        req = {"inputs": [_shm_input(RESERVED_KEYS[0], 0), SIMPLE_JSON["inputs"][1]]}
        assert_http_error(http(srv, "POST", "/v2/models/simple/infer", json=req), 501, SHM_DISABLED)
        # Step 1 of the chain: a too-large request must not leak an internal key in its error.
        r = http(srv, "POST", "/v2/models/simple/infer", data=b" " * (MAX_INPUT + 1))
        assert_http_error(
            r,
            400,
            f"request JSON size of {MAX_INPUT + 1} bytes exceeds the maximum allowed input size of {MAX_INPUT} bytes. Use"
            " --http-max-input-size to increase the limit.",
        )


def test_cve_2025_23319_grpc_reserved_shm_keys_refused(srv):
    stub = srv.grpc_stub()
    with guarded(srv, what="gRPC reserved shm keys"):
        for key in RESERVED_KEYS:
            req = service_pb2.SystemSharedMemoryRegisterRequest(name="wiz", key=key, offset=0, byte_size=1 << 30)
            grpc_error(lambda: stub.SystemSharedMemoryRegister(req), SC.UNIMPLEMENTED, exact=SHM_DISABLED)
        t = grpc_input("INPUT0", "INT32", [1, 16], shared_memory_region=RESERVED_KEYS[0], shared_memory_byte_size=64)
        req = grpc_request("simple", [t, typed_input("INPUT1", "INT32", B)])
        grpc_error(lambda: stub.ModelInfer(req), SC.UNIMPLEMENTED, exact=SHM_DISABLED)


# ===============================================================================================================
# CVE-2025-23321 (divide by zero: classification on BYTES), CVE-2026-24146 (huge / many classification outputs)
# ===============================================================================================================


def test_cve_2025_23321_http_classification_on_bytes_output(srv):
    bytes_req = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}]}
    with guarded(srv, what="classification on BYTES"):
        for count in (1, 2**63, 10**9):
            req = dict(bytes_req, outputs=[{"name": "OUTPUT0", "parameters": {"classification": count}}])
            assert_http_error(http(srv, "POST", "/v2/models/identity_bytes/infer", json=req), 400, CLASS_BYTES)
        for count in (-1, "x", 1.5):
            req = dict(bytes_req, outputs=[{"name": "OUTPUT0", "parameters": {"classification": count}}])
            assert_http_error(
                http(srv, "POST", "/v2/models/identity_bytes/infer", json=req),
                400,
                "Unable to parse 'classification' of output 'OUTPUT0': expected an unsigned integer",
            )
        # 0 asks for no classification: the plain output.
        req = dict(bytes_req, outputs=[{"name": "OUTPUT0", "parameters": {"classification": 0}}])
        r = http(srv, "POST", "/v2/models/identity_bytes/infer", json=req)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["a", "b"], r.text
        # A count far above the element count answers every element, sorted.
        req = dict(SIMPLE_JSON, outputs=[{"name": "OUTPUT0", "parameters": {"classification": 10**9}}])
        r = http(srv, "POST", "/v2/models/simple/infer", json=req)
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["datatype"] == "BYTES" and out["shape"] == [1, 16], out
        assert out["data"] == [f"{A[0, i] + B[0, i]}:{i}" for i in range(15, -1, -1)], out


def test_cve_2026_24146_http_many_classification_outputs(fresh):
    """100000 requested outputs (5.5 MB / 2 MB of JSON) are 100000+ objects: refused by the JSON pre-scan before
    parsing (peak budget 64 MiB + 2 x body, < 64 MiB retained). Under the object cap, the output count limit
    (--max-request-outputs, 1024) answers before the model is looked up; at the limit, the model's duplicate
    output check answers, with or without classification."""
    for count, status_by_kind in (
        (100_000, {"classification": (400, TOO_MANY_VALUES), "same": (400, TOO_MANY_VALUES), "unknown": (400, TOO_MANY_VALUES)}),
        (
            MAX_OUTPUTS + 1,
            {kind: (400, too_many_outputs(MAX_OUTPUTS + 1)) for kind in ("classification", "same", "unknown")},
        ),
        (
            MAX_OUTPUTS,
            {
                "classification": (400, "output 'OUTPUT0' already exists in request"),
                "same": (400, "output 'OUTPUT0' already exists in request"),
                "unknown": (400, "unexpected inference output 'O0' for model 'simple'"),
            },
        ),
    ):
        for kind, (status, message) in status_by_kind.items():
            outputs = {
                "classification": [{"name": "OUTPUT0", "parameters": {"classification": 1}}] * count,
                "same": [{"name": "OUTPUT0"}] * count,
                "unknown": [{"name": f"O{i}"} for i in range(count)],
            }[kind]
            body = json.dumps(dict(SIMPLE_JSON, outputs=outputs)).encode()
            with guarded(fresh, peak=RSS_BUDGET + 2 * len(body), what=f"{count} {kind} outputs ({len(body) >> 10} KiB)"):
                assert_http_error(http(fresh, "POST", "/v2/models/simple/infer", data=body), status, message)


def test_cve_2025_23321_grpc_classification_on_bytes_output(srv):
    stub = srv.grpc_stub()
    with guarded(srv, what="gRPC classification on BYTES"):
        for count, message in (
            (1, CLASS_BYTES),
            (2**62, CLASS_BYTES),
            (-1, "invalid value for 'classification' of output 'OUTPUT0': expected a positive int64_param."),
        ):
            req = grpc_request("identity_bytes", [typed_input("INPUT0", "BYTES", np.array([[b"a", b"b"]], dtype=object))])
            set_grpc_param(req.outputs.add(name="OUTPUT0").parameters, "classification", count)
            grpc_error(lambda: stub.ModelInfer(req), SC.INVALID_ARGUMENT, exact=message)
        # Many classified outputs: the output count limit, then the duplicate check.
        for n, message in ((MAX_OUTPUTS, "output 'OUTPUT0' already exists in request"), (100_000, too_many_outputs(100_000))):
            req = simple_grpc_request()
            for _ in range(n):
                set_grpc_param(req.outputs.add(name="OUTPUT0").parameters, "classification", 1)
            grpc_error(lambda: stub.ModelInfer(req), SC.INVALID_ARGUMENT, exact=message)
        # Unknown outputs: at the limit the model answers; over it, --max-request-outputs before the model lookup.
        for n, message in (
            (MAX_OUTPUTS, "unexpected inference output 'O0' for model 'simple'"),
            (MAX_OUTPUTS + 1, too_many_outputs(MAX_OUTPUTS + 1)),
            (100_000, too_many_outputs(100_000)),
        ):
            req = simple_grpc_request()
            for i in range(n):
                req.outputs.add(name=f"O{i}")
            grpc_error(lambda: stub.ModelInfer(req), SC.INVALID_ARGUMENT, exact=message)


# ===============================================================================================================
# CVE-2025-23322: gRPC stream cancelled before processing (double free in Triton)
# ===============================================================================================================


def test_cve_2025_23322_grpc_stream_cancelled_before_processing(srv):
    stub = srv.grpc_stub()
    with guarded(srv, what="cancelled streams"):
        for i in range(300):
            call = stub.ModelStreamInfer(iter([simple_grpc_request(id=str(i))] * 4))
            call.cancel()
            try:
                list(call)
            except grpc.RpcError as e:
                assert e.code() == SC.CANCELLED, e
            # (No error: the whole stream finished before cancel() ran, which timing allows.)
        for i in range(100):  # cancelled after the first answer, with up to 49 requests still queued
            call = stub.ModelStreamInfer(iter([simple_grpc_request(id=str(j)) for j in range(50)]))
            assert next(call).infer_response.id == "0"
            call.cancel()
        # Concurrent: 16 streams at once, each cancelled right away.
        calls = [stub.ModelStreamInfer(iter([simple_grpc_request()] * 64)) for _ in range(16)]
        for call in calls:
            call.cancel()
        out = list(stub.ModelStreamInfer(iter([simple_grpc_request(id=str(i)) for i in range(10)])))
        assert [o.infer_response.id for o in out] == [str(i) for i in range(10)] and not any(o.error_message for o in out)


def test_cve_2025_23322_http_clients_vanishing_before_the_answer(srv):
    """The HTTP counterpart: 200 clients send an inference and reset the connection at once."""
    data = request_head("POST", "/v2/models/simple/infer", [("Content-Type", "application/json")], len(SIMPLE_BODY)) + SIMPLE_BODY
    with guarded(srv, what="HTTP clients resetting after sending"):
        for _ in range(200):
            s = socket.create_connection((srv.host, srv.port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close -> RST
            s.sendall(data)
            s.close()


# ===============================================================================================================
# CVE-2025-23323 / 23324 / 23326 / 23327, CVE-2026-24210: integer overflow in shapes and sizes
# ===============================================================================================================

OVERFLOW = "causes total element count to exceed maximum size of 9223372036854775807"


def shape_overflow(shape) -> tuple:
    """(HTTP JSON message, HTTP binary / gRPC message): Triton's text; the core paths name the model after it."""
    text = f"invalid shape for input 'INPUT0': shape [{','.join(map(str, shape))}] {OVERFLOW}"
    return text, f"{text} (model 'simple')"


def byte_size_overflow(count: int, size: int, detail: str) -> str:
    return (
        f"byte size overflow for input 'INPUT0': element count ({count}) * data type size ({size}) exceeds maximum allowed"
        f" size (9223372036854775807) ({detail})"
    )


# shape -> (HTTP JSON message, HTTP binary / gRPC message) on `simple` (INT32, dims [-1, 16], max batch 8)
SHAPE_CASES = {
    "16x2^60+2": ([16, 2**60 + 2], *shape_overflow([16, 2**60 + 2])),
    "2^62x4": ([2**62, 4], *shape_overflow([2**62, 4])),
    "2^63-1x16": ([2**63 - 1, 16], *shape_overflow([2**63 - 1, 16])),
    "2^32x2^32": ([2**32, 2**32], *shape_overflow([2**32, 2**32])),
    "1x2^62": (
        [1, 2**62],
        byte_size_overflow(2**62, 4, "INT32"),
        f"unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], got [1,{2**62}]",
    ),
    "2^31x16": (
        [2**31, 16],
        f"Unable to parse 'data' of input 'INPUT0': shape does not match true shape of 'data' field (shape [{2**31}, 16] has {2**35} elements, 'data' has 16)",
        f"input byte size mismatch for input 'INPUT0' for model 'simple'. Expected {2**37}, got 64",
    ),
    "neg_batch": ([-1, 16], "Unable to parse 'shape' of input 'INPUT0': dimension -1 is not a non-negative integer", None),
    "neg_dim": ([1, -16], "Unable to parse 'shape' of input 'INPUT0': dimension -16 is not a non-negative integer", None),
}
GRPC_NEGATIVE = {"neg_batch": "invalid shape for input 'INPUT0': dimension -1 is negative", "neg_dim": "invalid shape for input 'INPUT0': dimension -16 is negative"}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_cve_2025_23323_http_integer_overflow_shapes(srv, case):
    shape, json_msg, binary_msg = SHAPE_CASES[case]
    with guarded(srv, what=f"shape {shape}"):
        req = {"inputs": [dict(SIMPLE_JSON["inputs"][0], shape=shape), SIMPLE_JSON["inputs"][1]]}
        assert_http_error(http(srv, "POST", "/v2/models/simple/infer", json=req), 400, json_msg)
        head = {
            "inputs": [
                {"name": "INPUT0", "datatype": "INT32", "shape": shape, "parameters": {"binary_data_size": 64}},
                {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
            ]
        }
        body, headers = binary_body(head, [A.tobytes(), B.tobytes()])
        r = http(srv, "POST", "/v2/models/simple/infer", data=body, headers=headers)
        assert_http_error(r, 400, binary_msg or json_msg)


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_cve_2025_23323_grpc_integer_overflow_shapes(srv, case):
    shape, _, binary_msg = SHAPE_CASES[case]
    message = GRPC_NEGATIVE.get(case, binary_msg)
    stub = srv.grpc_stub()
    with guarded(srv, what=f"gRPC shape {shape}"):
        raw = grpc_request("simple", [grpc_input("INPUT0", "INT32", shape), grpc_input("INPUT1", "INT32", [1, 16])], [A.tobytes(), B.tobytes()])
        grpc_error(lambda: stub.ModelInfer(raw), SC.INVALID_ARGUMENT, exact=message)
        typed = grpc_request(
            "simple", [grpc_input("INPUT0", "INT32", shape, {"int_contents": A.reshape(-1).tolist()}), typed_input("INPUT1", "INT32", B)]
        )
        grpc_error(lambda: stub.ModelInfer(typed), SC.INVALID_ARGUMENT, exact=message)


def test_cve_2025_23323_grpc_byte_size_overflow_names_the_input(srv):
    """2^62 FP32 elements fit in int64 but their byte size does not. Every path names the input in Triton's text
    ("byte size overflow for input 'INPUT0': ..."), then the datatype; gRPC and the HTTP binary extension also name
    the model, as their other per-input errors do."""
    stub = srv.grpc_stub()
    core = byte_size_overflow(2**62, 4, "FP32, model 'identity_fp32'")
    with guarded(srv, what="gRPC byte size overflow"):
        req = grpc_request("identity_fp32", [grpc_input("INPUT0", "FP32", [1, 2**62])], [bytes(4)])
        grpc_error(lambda: stub.ModelInfer(req), SC.INVALID_ARGUMENT, exact=core)
        head = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2**62], "parameters": {"binary_data_size": 4}}]}
        body, headers = binary_body(head, [bytes(4)])
        r = http(srv, "POST", "/v2/models/identity_fp32/infer", data=body, headers=headers)
        assert_http_error(r, 400, core)
        r = http(srv, "POST", "/v2/models/identity_fp32/infer", json={"inputs": [dict(head["inputs"][0], parameters={}, data=[1.0])]})
        assert_http_error(r, 400, byte_size_overflow(2**62, 4, "FP32"))


# ===============================================================================================================
# CVE-2025-23325 (deep `data` nesting), CVE-2026-47477 (deeply nested JSON anywhere; nested protobuf for gRPC)
# ===============================================================================================================


def _fp32_nested(depth: int) -> bytes:
    return ('{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,1],"data":%s}]}' % ("[" * depth + "1" + "]" * depth)).encode()


def test_cve_2025_23325_http_data_nesting_limit(srv):
    with guarded(srv, what="deep data nesting"):
        for depth in (50, 100):
            r = http(srv, "POST", "/v2/models/identity_fp32/infer", data=_fp32_nested(depth))
            assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1.0], (depth, r.text[:300])
        for depth in (101, 120):
            assert_http_error(http(srv, "POST", "/v2/models/identity_fp32/infer", data=_fp32_nested(depth)), 400, DATA_DEPTH)
        # `simple` with its 16 values nested 50 deep: the right sums.
        nested = "[" * 49 + ",".join(map(str, range(16))) + "]" * 49
        body = json.dumps(SIMPLE_JSON).replace(json.dumps(list(range(16))), nested, 1).encode()
        r = http(srv, "POST", "/v2/models/simple/infer", data=body)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == (A + B).reshape(-1).tolist(), r.text[:300]
        nested = "[" * 119 + ",".join(map(str, range(16))) + "]" * 119
        body = json.dumps(SIMPLE_JSON).replace(json.dumps(list(range(16))), nested, 1).encode()
        assert_http_error(http(srv, "POST", "/v2/models/simple/infer", data=body), 400, DATA_DEPTH)


DEEP = 250_000


@pytest.mark.parametrize(
    "path,body,status,message",
    [
        ("/v2/repository/index", b'{"ready":' + b"[" * DEEP + b"]" * DEEP + b"}", 400, JSON_PARSE + "recursion limit exceeded at line 1 column 136"),
        ("/v2/repository/index", b"[" * DEEP + b"]" * DEEP, 400, JSON_PARSE + "recursion limit exceeded at line 1 column 128"),
        # 250000 nested objects are over the object cap: refused by the pre-scan, before serde's recursion limit.
        ("/v2/repository/index", b'{"a":' * DEEP + b"1" + b"}" * DEEP, 400, TOO_MANY_VALUES),
        # At the object cap (65536 nested objects): serde's recursion limit (128 levels) answers.
        (
            "/v2/repository/index",
            b'{"a":' * MAX_JSON_OBJECTS + b"1" + b"}" * MAX_JSON_OBJECTS,
            400,
            JSON_PARSE + "recursion limit exceeded at line 1 column 636",
        ),
        ("/v2/models/simple/infer", b"[" * DEEP, 400, JSON_PARSE + "recursion limit exceeded at line 1 column 128"),
        ("/v2/models/simple/infer", b'{"parameters":{"p":' + b"[" * DEEP + b"]" * DEEP + b"}}", 400, JSON_PARSE + "recursion limit exceeded at line 1 column 145"),
        ("/v2/logging", b'{"log_file":' + b"[" * DEEP, 400, JSON_PARSE + "recursion limit exceeded at line 1 column 139"),
        ("/v2/trace/setting", b"[" * DEEP, 400, JSON_PARSE + "recursion limit exceeded at line 1 column 128"),
        ("/v2/models/simple/trace/setting", b'{"trace_level":' + b"[" * DEEP + b"]" * DEEP + b"}", 400, JSON_PARSE + "recursion limit exceeded at line 1 column 142"),
        ("/v2/systemsharedmemory/region/r/register", b"[" * DEEP, 501, SHM_DISABLED),
        ("/v2/repository/models/simple/load", b"[" * DEEP, 503, NO_LOAD),
    ],
    ids=["index-ready", "index-array", "index-objects", "index-objects-at-cap", "infer", "infer-parameters", "logging", "trace", "model-trace", "shm", "load"],
)
def test_cve_2026_47477_http_deeply_nested_json_anywhere(srv, path, body, status, message):
    with guarded(srv, what=f"nested JSON to {path}"):
        st, _, rbody, _, secs = raw_http(srv, request_head("POST", path, [("Content-Type", "application/json")], len(body)), body)
        json_error((st, rbody), status, message)
        assert secs < 5


def test_cve_2026_47477_grpc_deeply_nested_protobuf(srv):
    """Protobuf has no JSON, but unknown groups nest: 100000 nested START_GROUPs appended to a ModelInfer message.
    prost stops at its recursion limit (100); 50 levels are skipped as unknown fields."""
    base = simple_grpc_request().SerializeToString()
    with srv.grpc_channel() as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda b: b,
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )
        with guarded(srv, what="nested protobuf groups"):
            resp = call(base + b"\xfb\x07" * 50 + b"\xfc\x07" * 50, timeout=GRPC_TIMEOUT)
            np.testing.assert_array_equal(grpc_result(resp).as_numpy("OUTPUT0"), A + B)
            for depth in (101, 100_000):
                nested = base + b"\xfb\x07" * depth + b"\xfc\x07" * depth
                grpc_error(
                    lambda: call(nested, timeout=GRPC_TIMEOUT),
                    SC.INVALID_ARGUMENT,
                    exact="ModelInfer: the request is not a valid protobuf message: failed to decode Protobuf message: "
                    "recursion limit reached",
                )


# ===============================================================================================================
# CVE-2025-23331: huge shape with tiny data (excessive allocation)
# ===============================================================================================================


def test_cve_2025_23331_http_huge_shape_tiny_data(srv):
    cases = [
        ("identity_fp32", {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2**40], "data": [1.0]}]}, None,
         f"Unable to parse 'data' of input 'INPUT0': shape does not match true shape of 'data' field (shape [1, {2**40}] has {2**40} elements, 'data' has 1)"),
        # (JSON: the data / shape mismatch is found while decoding, before the BYTES element cap.)
        ("identity_bytes", {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [8, 2**31], "data": ["a"]}]}, None,
         f"Unable to parse 'data' of input 'INPUT0': shape does not match true shape of 'data' field (shape [8, {2**31}] has {2**34} elements, 'data' has 1)"),
        ("identity_fp32", {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2**33], "parameters": {"binary_data_size": 4}}]}, [bytes(4)],
         f"input byte size mismatch for input 'INPUT0' for model 'identity_fp32'. Expected {2**35}, got 4"),
        # BYTES over --max-request-bytes-elements: refused from the declared shape before anything else.
        ("identity_bytes", {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2**31], "parameters": {"binary_data_size": 5}}]}, [serialize_bytes([b"a"])],
         too_many_bytes_elements("INPUT0")),
        ("identity_bytes", {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, MAX_BYTES_ELEMENTS + 1], "parameters": {"binary_data_size": 5}}]}, [serialize_bytes([b"a"])],
         too_many_bytes_elements("INPUT0")),
        # At the cap: the element count check against the data.
        ("identity_bytes", {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, MAX_BYTES_ELEMENTS], "parameters": {"binary_data_size": 5}}]}, [serialize_bytes([b"a"])],
         f"input 'INPUT0' for model 'identity_bytes': expected {MAX_BYTES_ELEMENTS} BYTES elements, got 1"),
    ]
    with guarded(srv, what="huge shape, tiny data"):
        for model, head, blobs, message in cases:
            t0 = time.monotonic()
            if blobs is None:
                r = http(srv, "POST", f"/v2/models/{model}/infer", json=head)
            else:
                body, headers = binary_body(head, blobs)
                r = http(srv, "POST", f"/v2/models/{model}/infer", data=body, headers=headers)
            assert time.monotonic() - t0 < 2, "the refusal waited for an allocation"
            assert_http_error(r, 400, message)


def test_cve_2025_23331_grpc_huge_shape_tiny_data(srv):
    stub = srv.grpc_stub()
    with guarded(srv, what="gRPC huge shape, tiny data"):
        cases = [
            (grpc_request("identity_fp32", [grpc_input("INPUT0", "FP32", [1, 2**40])], [bytes(4)]),
             f"input byte size mismatch for input 'INPUT0' for model 'identity_fp32'. Expected {2**42}, got 4"),
            (grpc_request("identity_fp32", [grpc_input("INPUT0", "FP32", [8, 2**33], {"fp32_contents": [1.0]})]), None),
            # BYTES over --max-request-bytes-elements: refused from the declared shape before anything else.
            (grpc_request("identity_bytes", [grpc_input("INPUT0", "BYTES", [1, 2**31], {"bytes_contents": [b"a"]})]),
             too_many_bytes_elements("INPUT0")),
            (grpc_request("identity_bytes", [grpc_input("INPUT0", "BYTES", [1, 2**31])], [serialize_bytes([b"a"])]),
             too_many_bytes_elements("INPUT0")),
            (grpc_request("identity_bytes", [grpc_input("INPUT0", "BYTES", [1, MAX_BYTES_ELEMENTS + 1])], [serialize_bytes([b"a"])]),
             too_many_bytes_elements("INPUT0")),
            # At the cap: the element count check against the data.
            (grpc_request("identity_bytes", [grpc_input("INPUT0", "BYTES", [1, MAX_BYTES_ELEMENTS], {"bytes_contents": [b"a"]})]),
             f"input 'INPUT0' for model 'identity_bytes': expected {MAX_BYTES_ELEMENTS} BYTES elements, got 1"),
            (grpc_request("identity_bytes", [grpc_input("INPUT0", "BYTES", [1, MAX_BYTES_ELEMENTS])], [serialize_bytes([b"a"])]),
             f"input 'INPUT0' for model 'identity_bytes': expected {MAX_BYTES_ELEMENTS} BYTES elements, got 1"),
        ]
        for req, message in cases:
            t0 = time.monotonic()
            msg = grpc_error(lambda: stub.ModelInfer(req), SC.INVALID_ARGUMENT, exact=message)
            assert "INPUT0" in msg and time.monotonic() - t0 < 2, msg


# ===============================================================================================================
# CVE-2026-24158, CVE-2026-24264, CVE-2025-33202, CVE-2026-47482: decompression bombs, failed compressed requests
# ===============================================================================================================

# Inflating up to the 64 MiB cap is allowed (the cap is on the decompressed size): peak budget 64 MiB + the cap.
BOMB_PEAK = RSS_BUDGET + MAX_INPUT


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_cve_2026_24158_http_decompression_bomb(srv, bombs, encoding):
    body = bombs[encoding]
    with guarded(srv, peak=BOMB_PEAK, what=f"{encoding} bomb"):
        for path in ("/v2/models/simple/infer", "/v2/models/identity_bytes/infer"):
            t0 = time.monotonic()
            r = http(srv, "POST", path, data=body, headers={"Content-Encoding": encoding, "Content-Type": "application/json"})
            assert_http_error(r, 400, HTTP_BOMB)
            assert time.monotonic() - t0 < 5
        # A well-formed compressed request still works.
        data = gzip.compress(SIMPLE_BODY) if encoding == "gzip" else zlib.compress(SIMPLE_BODY)
        r = http(srv, "POST", "/v2/models/simple/infer", data=data, headers={"Content-Encoding": encoding})
        assert r.status_code == 200 and r.json()["outputs"][1]["data"] == (A - B).reshape(-1).tolist(), r.text[:300]


def test_cve_2026_24264_http_failed_compressed_requests_do_not_accumulate(srv, bombs):
    """50 failing compressed requests (bombs, a raw-deflate stream sent as zlib, truncated and garbage gzip): each
    with its exact message, and no memory kept between them (CVE-2026-47482)."""
    cases = [
        ("gzip", bombs["gzip"], HTTP_BOMB),
        ("deflate", bombs["deflate"], HTTP_BOMB),
        ("deflate", bombs["raw-deflate"][:65536], "failed to decompress the deflate request body: corrupt deflate stream"),
        ("gzip", bombs["gzip"][:1000], "failed to decompress the gzip request body: incomplete deflate stream"),
        ("gzip", b"garbage", "failed to decompress the gzip request body: unexpected end of file"),
    ]
    with guarded(srv, peak=BOMB_PEAK, what="50 failed compressed requests"), requests.Session() as s:
        for i in range(50):
            encoding, body, message = cases[i % len(cases)]
            r = s.post(srv.base + "/v2/models/simple/infer", data=body, headers={"Content-Encoding": encoding}, timeout=HTTP_TIMEOUT)
            assert_http_error(r, 400, message)


def test_cve_2026_24158_grpc_decompression_bomb(srv):
    """A gzip- or deflate-compressed gRPC message (grpc-encoding) that inflates to 72 MiB: refused while inflating,
    three times over each; small compressed messages are served."""
    n = 72 * MiB // 4
    bomb = grpc_request("identity_fp32", [grpc_input("INPUT0", "FP32", [1, n])], [bytes(4 * n)])
    stub = srv.grpc_stub()
    with guarded(srv, peak=BOMB_PEAK, what="gRPC gzip bomb"):
        for _ in range(3):
            grpc_error(lambda: stub.ModelInfer(bomb, compression=grpc.Compression.Gzip), SC.RESOURCE_EXHAUSTED, exact=GRPC_BOMB)
        small = simple_grpc_request()
        resp = stub.ModelInfer(small, compression=grpc.Compression.Gzip)
        np.testing.assert_array_equal(grpc_result(resp).as_numpy("OUTPUT0"), A + B)
        resp = stub.ModelInfer(small, compression=grpc.Compression.Deflate)
        np.testing.assert_array_equal(grpc_result(resp).as_numpy("OUTPUT0"), A + B)
        for _ in range(3):
            grpc_error(
                lambda: stub.ModelInfer(bomb, compression=grpc.Compression.Deflate),
                SC.RESOURCE_EXHAUSTED,
                exact=GRPC_BOMB,
            )
    del bomb


# ===============================================================================================================
# CVE-2026-24173 / 24174 / 24175, CVE-2026-47480: malformed numeric headers
# ===============================================================================================================


@pytest.mark.parametrize(
    "value", ["gzip;q=1e999", "gzip;q=nan", "deflate;q=99999999999999999999", "gzip;q=-1", "*;q=0", "identity;q=0", "," * 1000, "gzip;q=" + "9" * 4000]
)
def test_cve_2026_24173_http_malformed_accept_encoding(srv, value):
    """Responses are not compressed; any Accept-Encoding gets the identity answer."""
    r = http(srv, "POST", "/v2/models/simple/infer", data=SIMPLE_BODY, headers={"Accept-Encoding": value})
    assert r.status_code == 200 and "Content-Encoding" not in r.headers, (r.status_code, r.headers)
    assert r.json()["outputs"][0]["data"] == (A + B).reshape(-1).tolist()


@pytest.mark.parametrize("value", ["99999999999999999999", "18446744073709551616", "-1", "1e999", "+5", "0x10", "5, 6"])
def test_cve_2026_47480_http_malformed_content_length(srv, value):
    """Refused by the HTTP parser before routing: 400, connection closed (no JSON body: hyper answers these)."""
    with guarded(srv, what=f"Content-Length: {value}"):
        head = request_head("POST", "/v2/models/simple/infer", [("Content-Length", value)])
        status, headers, body, _, _ = raw_http(srv, head, b"{}")
        assert (status, body, headers.get("connection")) == (400, b"", "close"), (status, headers, body)


def test_cve_2026_47480_http_content_length_over_the_cap(srv):
    for value in (MAX_INPUT + 1, 2**32, 2**63 - 1):
        status, headers, body, _, _ = raw_http(srv, request_head("POST", "/v2/models/simple/infer", length=value), b"{}")
        json_error(
            (status, body),
            400,
            f"request JSON size of {value} bytes exceeds the maximum allowed input size of {MAX_INPUT} bytes. Use"
            " --http-max-input-size to increase the limit.",
        )


HEADER_LENGTH_RANGE = "Unable to parse Inference-Header-Content-Length, value is out of range [ -2147483648, 2147483647 ], got: "


@pytest.mark.parametrize(
    "value,message",
    [
        ("-1", "inference header size should be in range (0, {n}), got: -1"),
        ("0x10", "Unable to parse Inference-Header-Content-Length, got: 0x10"),
        ("1e999", "Unable to parse Inference-Header-Content-Length, got: 1e999"),
        ("nan", "Unable to parse Inference-Header-Content-Length, got: nan"),
        ("1.5", "Unable to parse Inference-Header-Content-Length, got: 1.5"),
        ("", "Unable to parse Inference-Header-Content-Length, got: "),
        ("99999999999999999999", f"{HEADER_LENGTH_RANGE}99999999999999999999"),
        ("18446744073709551615", f"{HEADER_LENGTH_RANGE}18446744073709551615"),
        ("9223372036854775807", f"{HEADER_LENGTH_RANGE}9223372036854775807"),
        ("2147483648", f"{HEADER_LENGTH_RANGE}2147483648"),
        ("2147483647", "inference header size should be in range (0, {n}), got: 2147483647"),
    ],
)
def test_cve_2026_47480_http_malformed_inference_header_length(srv, value, message):
    r = http(srv, "POST", "/v2/models/simple/infer", data=SIMPLE_BODY, headers={"Inference-Header-Content-Length": value})
    assert_http_error(r, 400, message.format(n=len(SIMPLE_BODY)))


def test_cve_2026_47480_http_malformed_chunk_sizes(srv):
    with guarded(srv, what="malformed chunk sizes"):
        # (Chunk sizes are hex: "1e999" would be a valid 125337-byte chunk.)
        for chunk in (b"fffffffffffffffffff\r\nA\r\n0\r\n\r\n", b"-1\r\nA\r\n0\r\n\r\n", b"1g\r\nA\r\n0\r\n\r\n", b"+1\r\nA\r\n0\r\n\r\n"):
            head = request_head("POST", "/v2/models/simple/infer", chunked=True)
            status, _, body, _, _ = raw_http(srv, head, chunk)
            json_error((status, body), 400, "failed to read the request body: error reading a body from connection")


def test_cve_2026_47480_grpc_malformed_numeric_metadata(srv):
    """Numeric-looking metadata (whatever the client library lets through) is ignored; typed reserved parameters
    out of range are refused with the parameter's name."""
    stub = srv.grpc_stub()
    with guarded(srv, what="gRPC malformed numeric metadata"):
        for md in (
            [("grpc-accept-encoding", "gzip;q=1e999")],
            [("accept-encoding", "gzip;q=1e999")],
            [("content-length", "99999999999999999999")],
            [("inference-header-content-length", "-1")],
            [("triton_grpc_error", "1e999")],
        ):
            res = grpc_result(stub.ModelInfer(simple_grpc_request(), metadata=md))
            np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), A - B)
        cases = [
            ("priority", -1, "int64", "invalid value type for 'priority' parameter, expected an unsigned integer"),
            ("timeout", -(2**63), "int64", "invalid value type for 'timeout' parameter, expected an unsigned integer"),
            ("sequence_id", -(2**63), "int64", "invalid value type for 'sequence_id' parameter, expected an unsigned integer or a string"),
        ]
        for key, value, kind, message in cases:
            req = simple_grpc_request(parameters={key: (value, kind)})
            grpc_error(lambda: stub.ModelInfer(req), SC.INVALID_ARGUMENT, exact=message)
        assert stub.ModelInfer(simple_grpc_request(parameters={"priority": (2**64 - 1, "uint64")})).model_name == "simple"


def test_cve_2026_47480_http_out_of_range_json_numbers(srv):
    cases = [
        (b'{"parameters":{"priority":1e999},"inputs":[]}', JSON_PARSE + "number out of range at line 1 column 31"),
        (b'{"parameters":{"timeout":-99999999999999999999999},' + SIMPLE_BODY[1:], "invalid value type for 'timeout' parameter, expected an unsigned integer"),
        (b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,1],"data":[1e999]}]}', JSON_PARSE + "number out of range at line 1 column 73"),
    ]
    for body, message in cases:
        assert_http_error(http(srv, "POST", "/v2/models/simple/infer", data=body), 400, message)


# ===============================================================================================================
# CVE-2026-47479 (+ CVE-2026-47476): BYTES inputs made of millions of tiny elements
# ===============================================================================================================



def _empty_bytes_grpc(n: int):
    inp = service_pb2.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="BYTES", shape=[1, n])
    inp.contents.bytes_contents.extend([b""] * n)
    return grpc_request("identity_bytes", [inp])


def test_cve_2026_47479_grpc_millions_of_tiny_bytes_contents(fresh):
    """2e6 empty `bytes_contents` entries: a 4 MB message, well under the 64 MiB cap, over --max-request-bytes-elements
    (1048576): INVALID_ARGUMENT naming INPUT0, retained < 64 MiB. The cap is checked on the decoded request, and tonic
    / prost decode the whole message first: each 2-byte entry becomes a 32-byte `Bytes` (16 x its wire size), plus
    copies of the message in h2 / tonic buffers. Measured peak: 19.2 x the message (+73 MiB for 3.8 MiB; the same
    ratio from 1.1e6 to 33e6 entries, i.e. about 1.2 GiB for one 64 MiB message). Peak budget 8 MiB + 20 x the
    message: that known decoding bound, no more. Then, outside the memory check, the cap itself is accepted."""
    n = 2_000_000
    req = _empty_bytes_grpc(n)
    size = req.ByteSize()
    stub = fresh.grpc_stub()
    with guarded(fresh, peak=8 * MiB + 20 * size, what=f"{n} empty bytes_contents ({size} bytes)"):
        grpc_error(lambda: stub.ModelInfer(req, timeout=120), SC.INVALID_ARGUMENT, exact=too_many_bytes_elements("INPUT0"))
        over = _empty_bytes_grpc(MAX_BYTES_ELEMENTS + 1)
        grpc_error(lambda: stub.ModelInfer(over, timeout=120), SC.INVALID_ARGUMENT, exact=too_many_bytes_elements("INPUT0"))
    del req, over
    # Exactly at the cap: answered (an inference of 2^20 strings; the allocator may keep ~100 MiB of it afterwards,
    # which is why this runs after the guarded attack).
    resp = stub.ModelInfer(_empty_bytes_grpc(MAX_BYTES_ELEMENTS), timeout=120)
    assert list(resp.outputs[0].shape) == [1, MAX_BYTES_ELEMENTS] and resp.raw_output_contents[0] == bytes(4 * MAX_BYTES_ELEMENTS)


def _empty_bytes_binary(n: int) -> tuple[bytes, dict]:
    head = {
        "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, n], "parameters": {"binary_data_size": 4 * n}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
    }
    return binary_body(head, [bytes(4 * n)])


def test_cve_2026_47479_http_millions_of_tiny_bytes_elements(fresh):
    """The HTTP form: 4e6 empty BYTES elements in the binary extension (16 MB), over --max-request-bytes-elements:
    400 naming INPUT0, decided from the declared shape before the data is looked at. Peak budget 16 MiB + 2 x body
    (the body is buffered once; measured +15.3 MiB, 1.0 x body), retained < 64 MiB. Then, outside the memory check,
    the cap itself is accepted."""
    n = 4_000_000
    body, headers = _empty_bytes_binary(n)
    with guarded(fresh, peak=16 * MiB + 2 * len(body), what=f"{n} empty BYTES elements ({len(body)} bytes)"):
        r = http(fresh, "POST", "/v2/models/identity_bytes/infer", data=body, headers=headers, timeout=120)
        assert_http_error(r, 400, too_many_bytes_elements("INPUT0"))
        body, headers = _empty_bytes_binary(MAX_BYTES_ELEMENTS + 1)
        r = http(fresh, "POST", "/v2/models/identity_bytes/infer", data=body, headers=headers, timeout=120)
        assert_http_error(r, 400, too_many_bytes_elements("INPUT0"))
    body, headers = _empty_bytes_binary(MAX_BYTES_ELEMENTS)
    r = http(fresh, "POST", "/v2/models/identity_bytes/infer", data=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text[:300]
    assert json.loads(r.content[: int(r.headers["Inference-Header-Content-Length"])])["outputs"][0]["shape"] == [1, MAX_BYTES_ELEMENTS]


def test_cve_2026_47479_http_millions_of_tiny_bytes_elements_json(fresh):
    """The JSON form: 4e6 empty strings in `data` (11 MB, under the JSON value cap of 4194304). Refused with the
    same message, but only after the JSON document is parsed: the element cap is checked on the decoded request.
    Measured peak +241 MiB (21 x the body, ~60 bytes per element); budget 16 MiB + 22 x body. The value cap bounds
    this at about 250 MiB per request."""
    n = 4_000_000
    body = b'{"inputs":[{"name":"INPUT0","datatype":"BYTES","shape":[1,%d],"data":[' % n + b",".join([b'""'] * n) + b"]}]}"
    with guarded(fresh, peak=16 * MiB + 22 * len(body), what=f"{n} empty BYTES elements in JSON ({len(body)} bytes)"):
        r = http(fresh, "POST", "/v2/models/identity_bytes/infer", data=body, timeout=120)
        assert_http_error(r, 400, too_many_bytes_elements("INPUT0"))


# ===============================================================================================================
# CVE-2026-24266: gRPC stream with `triton_grpc_error: true`, errors, then the client closes
# ===============================================================================================================


def test_cve_2026_24266_grpc_error_mode_stream(srv):
    stub = srv.grpc_stub()
    bad = grpc_request("simple", [grpc_input("INPUT0", "INT32", [1, 16])], [A.tobytes()])
    missing = (
        "expected 2 inputs but got 1 inputs for model 'simple'. Got input(s) ['INPUT0'], but missing required input(s) "
        "['INPUT1']. Please provide all required input(s)."
    )
    md = [("triton_grpc_error", "true")]
    with guarded(srv, what="triton_grpc_error streams"):
        call = stub.ModelStreamInfer(iter([simple_grpc_request(id="a"), bad, simple_grpc_request(id="c")]), metadata=md)
        got = []
        with pytest.raises(grpc.RpcError) as exc:
            for r in call:
                got.append(r.infer_response.id)
        assert got == ["a"] and exc.value.code() == SC.INVALID_ARGUMENT and exc.value.details() == missing, (got, exc.value)
        # Many errors in flight when the stream ends, a hundred times; then streams cancelled mid-way.
        for _ in range(100):
            call = stub.ModelStreamInfer(iter([bad] * 20 + [simple_grpc_request()] * 20), metadata=md)
            with pytest.raises(grpc.RpcError) as exc:
                list(call)
            assert exc.value.code() == SC.INVALID_ARGUMENT, exc.value
        for _ in range(20):
            call = stub.ModelStreamInfer(iter([simple_grpc_request()] * 200 + [bad]), metadata=md)
            next(call)
            call.cancel()
        # Without the metadata the same stream carries the error in-band and goes on.
        out = list(stub.ModelStreamInfer(iter([simple_grpc_request(id="a"), bad, simple_grpc_request(id="c")])))
        assert [(o.infer_response.id, o.error_message) for o in out] == [("a", ""), ("", missing), ("c", "")], out


# ===============================================================================================================
# CVE-2025-23316, CVE-2026-24208 / 24209: hostile model names on every model-named endpoint
# ===============================================================================================================

HOSTILE_NAMES = [
    "a/b",
    "..",
    "../../../../tmp/rampart-cve",
    "simple/../simple",
    "a$(touch${IFS}rampart-cve-pwned)",
    "a`touch rampart-cve-pwned`",
    "a;touch rampart-cve-pwned",
    "a\x00b",
    "simple\x00",
    "a\nb",
    "simple\r\n",
    "\x1b[31mred",
    "a" * 4096,
]
PWNED = REPO_ROOT / "rampart-cve-pwned"  # the server's working directory


def test_invalid_model_name_helper():
    """The expectations the hostile-name tests derive from `invalid_model_name`, spelled out."""
    traversal = "model name must not contain path traversal characters"
    assert [invalid_model_name(n) for n in HOSTILE_NAMES] == [
        f"invalid model name 'a/b', {traversal}",
        f"invalid model name '..', {traversal}",
        f"invalid model name '../../../../tmp/rampart-cve', {traversal}",
        f"invalid model name 'simple/../simple', {traversal}",
        None,
        None,
        None,
        'invalid model name "a\\0b": control characters are not allowed',
        'invalid model name "simple\\0": control characters are not allowed',
        'invalid model name "a\\nb": control characters are not allowed',
        'invalid model name "simple\\r\\n": control characters are not allowed',
        'invalid model name "\\u{1b}[31mred": control characters are not allowed',
        "invalid model name: 4096 bytes long, at most 255 are allowed",
    ]


def test_cve_2025_23316_http_hostile_model_names(srv):
    """Names that fail the model-name check: 400 with its message on every model-named endpoint (load / unload:
    refused by the control mode first); well-formed unknown names (shell metacharacters): 404."""
    with guarded(srv, what="hostile model names (HTTP)"):
        for name in HOSTILE_NAMES:
            enc = quote(name, safe="")
            invalid = invalid_model_name(name)
            status, message = (400, invalid) if invalid else (404, unknown_model(name))
            for method, path, body in (
                ("GET", f"/v2/models/{enc}", b""),
                ("GET", f"/v2/models/{enc}/versions/1", b""),
                ("GET", f"/v2/models/{enc}/ready", b""),
                ("GET", f"/v2/models/{enc}/versions/1/ready", b""),
                ("GET", f"/v2/models/{enc}/config", b""),
                ("GET", f"/v2/models/{enc}/stats", b""),
                ("POST", f"/v2/models/{enc}/infer", SIMPLE_BODY),
                ("POST", f"/v2/models/{enc}/versions/1/infer", SIMPLE_BODY),
                ("GET", f"/v2/models/{enc}/trace/setting", b""),
                ("POST", f"/v2/models/{enc}/trace/setting", b"{}"),
                ("POST", f"/v2/models/{enc}/trace/setting", b'{"trace_rate":"1"}'),
            ):
                json_error(raw_call(srv, method, path, body=body), status, message)
            for action in ("load", "unload"):
                json_error(raw_call(srv, "POST", f"/v2/repository/models/{enc}/{action}", body=b"{}"), 503, NO_LOAD)
        # `..` as a raw path segment (not encoded): not normalized into another route, but taken as the model name.
        json_error(raw_call(srv, "GET", "/v2/models/../config"), 400, invalid_model_name(".."))
        json_error(raw_call(srv, "GET", "/v2/models/./config"), 400, invalid_model_name("."))
        json_error(raw_call(srv, "GET", "/v2/models/simple/../../v2/models/simple/config"), 404, "Not Found")
    assert not PWNED.exists(), f"{PWNED} was created"


def test_cve_2025_23316_http_invalid_utf8_model_name_is_a_json_error(srv):
    """A model name that is not UTF-8 is refused by the router before any handler: 400 with the same JSON
    `{"error": ...}` body (application/json) as every other error, not a text/plain rejection."""
    with guarded(srv, what="invalid UTF-8 in a path segment"):
        for enc in ("%FF", "%C3%28", "a%80b"):
            for method, path in (("GET", f"/v2/models/{enc}/config"), ("POST", f"/v2/models/{enc}/infer"), ("POST", f"/v2/repository/models/{enc}/load")):
                status, headers, body, _, _ = raw_http(srv, request_head(method, path, [("Content-Type", "application/json")], 2), b"{}")
                assert headers.get("content-type") == "application/json", (method, path, headers, body)
                json_error((status, body), 400, "Invalid URL: Invalid UTF-8 in `model`")


def test_cve_2025_23316_grpc_hostile_model_names(srv):
    """As the HTTP test: INVALID_ARGUMENT with the model-name check's message, or NOT_FOUND for well-formed names."""
    stub = srv.grpc_stub()
    with guarded(srv, what="hostile model names (gRPC)"):
        for name in HOSTILE_NAMES:
            invalid = invalid_model_name(name)
            code, msg = (SC.INVALID_ARGUMENT, invalid) if invalid else (SC.NOT_FOUND, unknown_model(name))
            grpc_error(lambda: stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=name)), code, exact=msg)
            grpc_error(lambda: stub.ModelMetadata(service_pb2.ModelMetadataRequest(name=name, version="1")), code, exact=msg)
            grpc_error(lambda: stub.ModelReady(service_pb2.ModelReadyRequest(name=name)), code, exact=msg)
            grpc_error(lambda: stub.ModelConfig(service_pb2.ModelConfigRequest(name=name)), code, exact=msg)
            grpc_error(lambda: stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name=name)), code, exact=msg)
            req = simple_grpc_request()
            req.model_name = name
            grpc_error(lambda: stub.ModelInfer(req), code, exact=msg)
            assert [o.error_message for o in stub.ModelStreamInfer(iter([req]))] == [msg]
            grpc_error(lambda: stub.RepositoryModelLoad(service_pb2.RepositoryModelLoadRequest(model_name=name)), SC.UNAVAILABLE, exact=NO_LOAD)
            grpc_error(lambda: stub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name=name)), SC.UNAVAILABLE, exact=NO_LOAD)
            grpc_error(lambda: stub.TraceSetting(service_pb2.TraceSettingRequest(model_name=name)), code, exact=msg)
            treq = service_pb2.TraceSettingRequest(model_name=name)
            treq.settings["trace_rate"].value.append("1")
            grpc_error(lambda: stub.TraceSetting(treq), code, exact=msg)
    assert not PWNED.exists(), f"{PWNED} was created"


# ===============================================================================================================
# CVE-2026-24206 / 24207, CVE-2026-47481, CVE-2025-33238: Vertex AI / SageMaker routes and the redirect header
# ===============================================================================================================

FOREIGN_ROUTES = [
    ("GET", "/ping"),
    ("POST", "/invocations"),
    ("GET", "/models"),
    ("GET", "/models/simple"),
    ("POST", "/models"),
    ("POST", "/models/simple/invoke"),
    ("DELETE", "/models/simple"),
    ("POST", "/predict"),
    ("GET", "/health"),
    ("POST", "/v1/models/simple:predict"),
    ("POST", "/v1/endpoints/e/deployedModels/d:predict"),
]


def _foreign_body(path: str) -> bytes:
    if path == "/models":
        return json.dumps({"model_name": "x", "url": "/proc/self/cwd/../../../tmp"}).encode()
    return SIMPLE_BODY


def test_cve_2026_24206_foreign_front_end_routes_are_404(srv, restricted):
    """No SageMaker / Vertex AI front end: their routes are unknown URLs on the HTTP listener (404 Not Found),
    with or without restrictions, so they cannot bypass them."""
    for target in (srv, restricted):
        for method, path in FOREIGN_ROUTES:
            json_error(raw_call(target, method, path, [("Content-Type", "application/json")], _foreign_body(path)), 404, "Not Found")


def test_cve_2026_24206_vertex_redirect_header_does_not_reroute(srv, restricted):
    redirect = "X-Vertex-Ai-Triton-Redirect"
    with guarded(srv, what="redirect header"):
        for target in (srv, restricted):
            for header in ("v2/repository/models/simple/load", "v2/systemsharedmemory/region/r/register", "/v2/logging", "../v2/repository/index"):
                r = http(target, "GET", "/v2/health/ready", headers={redirect: header})
                assert (r.status_code, r.json()) == (200, {"ready": True}), (target.label, header, r.text)
                r = http(target, "POST", "/v2/models/simple/infer", data=SIMPLE_BODY, headers={redirect: header})
                assert r.status_code == 200 and r.json()["outputs"][0]["data"] == (A + B).reshape(-1).tolist(), r.text[:300]
                r = http(target, "POST", "/predict", data=SIMPLE_BODY, headers={redirect: header})
                assert_http_error(r, 404, "Not Found")
            # An admin endpoint stays restricted whatever the header names.
            r = http(restricted, "POST", "/v2/repository/index", data=b"{}", headers={redirect: "v2/health/ready"})
            assert (r.status_code, r.json()) == (403, DENIED_HTTP), r.text


def test_cve_2026_24206_foreign_front_end_flags_refused_at_startup(monkeypatch):
    """The SageMaker and Vertex AI front ends exist (tests: test_sagemaker.py, test_vertex_ai.py, which replay this
    CVE against them); what they cannot do safely is refused at startup rather than half-started."""
    base = [f"--model-repository={example_repo()}", "--http-port=0", "--allow-grpc=false", "--allow-metrics=false"]
    proc = run_to_exit([*base, "--allow-sagemaker=true", "--sagemaker-safe-port-range=8000-8100"])
    assert proc.returncode == 1 and proc.stderr.decode().strip().endswith(
        "error: --sagemaker-safe-port-range=8000-8100 is not supported yet (port-range checks of the other listeners); "
        "Rampart refuses it rather than ignoring it"
    ), proc.stderr.decode()[-500:]
    vertex = "error: the Vertex AI front end needs AIP_PREDICT_ROUTE (both AIP_PREDICT_ROUTE and AIP_HEALTH_ROUTE must be set)"
    for var in ("AIP_PREDICT_ROUTE", "AIP_HEALTH_ROUTE"):
        monkeypatch.delenv(var, raising=False)
    proc = run_to_exit([*base, "--allow-vertex-ai=true"])
    assert proc.returncode == 1 and proc.stderr.decode().strip().endswith(vertex), proc.stderr.decode()[-500:]
    monkeypatch.setenv("AIP_MODE", "PREDICTION")
    proc = run_to_exit(base)
    assert proc.returncode == 1 and proc.stderr.decode().strip().endswith(vertex), proc.stderr.decode()[-500:]
    # A route that is not a plain path (axum would read `{x}` as a capture) is refused too.
    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/predict/{x}")
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/health")
    proc = run_to_exit(base)
    assert proc.returncode == 1 and "AIP_PREDICT_ROUTE '/predict/{x}' is not a plain absolute URL path" in proc.stderr.decode()


def test_cve_2026_47481_grpc_alternate_method_paths_are_not_served(restricted):
    """gRPC's alternate paths: case variants, trailing slash, a different package: UNIMPLEMENTED, never the RPC."""
    with restricted.grpc_channel() as channel:
        for method in (
            "/inference.GRPCInferenceService/RepositoryModelLoad/",
            "/Inference.GRPCInferenceService/RepositoryModelLoad",
            "/inference.GRPCInferenceService/repositorymodelload",
            "/inference.grpcinferenceservice/RepositoryModelLoad",
            "/inference.GRPCInferenceService//RepositoryModelLoad",
        ):
            call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            req = service_pb2.RepositoryModelLoadRequest(model_name="simple").SerializeToString()
            grpc_error(lambda: call(req, timeout=GRPC_TIMEOUT), SC.UNIMPLEMENTED)
    assert_serving(restricted)


# ===============================================================================================================
# Restricted admin APIs: every admin attack is refused by the restriction first
# ===============================================================================================================


def _restricted_http_attacks(work: Path, bombs: dict) -> list:
    key = next(iter(traversal_keys(work)))
    load = json.dumps({"parameters": {"config": python_backend_config(work), key: "cHdu"}}).encode()
    deep = b'{"ready":' + b"[" * DEEP + b"]" * DEEP + b"}"
    return [
        # (method, path, headers, body, chunked, answer with the key: (status, message))
        ("POST", "/v2/repository/models/simple/load", [], load, False, (503, NO_LOAD)),
        ("POST", "/v2/repository/models/..%2F..%2Fx/load", [], load, False, (503, NO_LOAD)),
        ("POST", "/v2/repository/models/simple/unload", [], b"{}", False, (503, NO_LOAD)),
        ("POST", "/v2/logging", [], json.dumps({"log_file": str(work / "r-log")}).encode(), False, (501, LOG_FILE_REFUSED)),
        ("POST", "/v2/trace/setting", [], json.dumps({"trace_file": str(work / "r-trace")}).encode(), False, (501, TRACE_FILE_REFUSED)),
        ("POST", "/v2/models/simple/trace/setting", [], json.dumps({"trace_file": str(work / "r-trace")}).encode(), False, (501, TRACE_FILE_REFUSED)),
        ("POST", "/v2/systemsharedmemory/region/r/register", [], json.dumps({"key": RESERVED_KEYS[1], "offset": HUGE_OFFSET, "byte_size": 64}).encode(), False, (501, SHM_DISABLED)),
        ("POST", "/v2/systemsharedmemory/unregister", [], b"", False, (501, SHM_DISABLED)),
        ("POST", "/v2/repository/index", [], deep, False, (400, JSON_PARSE + "recursion limit exceeded at line 1 column 136")),
        ("POST", "/v2/repository/index", [], b"1\r\nA\r\n" * ONE_MILLION + b"0\r\n\r\n", True, (400, JSON_PARSE + "expected value at line 1 column 1")),
        ("POST", "/v2/repository/index", [("Content-Encoding", "gzip")], bombs["gzip"], False, (400, JSON_PARSE + "expected value at line 1 column 1")),
        ("POST", "/v2/repository/models/simple/load", [], b"A" * (100 * MiB), False, (503, NO_LOAD)),
    ]


def test_restricted_http_admin_attacks_refused_first(restricted, work, bombs):
    for with_key in (False, True):
        with guarded(restricted, what=f"restricted admin attacks (key: {with_key})"):
            for method, path, headers, body, chunked, answer in _restricted_http_attacks(work, bombs):
                hdrs = [("Content-Type", "application/json"), *headers] + ([("admin-key", SECRET)] if with_key else [])
                head = request_head(method, path, hdrs, None if chunked else len(body), chunked=chunked)
                status, rheaders, rbody, sent, secs = raw_http(restricted, head, body)
                if with_key:
                    json_error((status, rbody), *answer)
                else:
                    assert (status, json.loads(rbody)) == (403, DENIED_HTTP), (path, status, rbody[:300])
                    assert rheaders.get("connection") == "close" or not body, rheaders
                    assert secs < 5, f"{path}: refusal took {secs:.1f}s"
    for name in ("r-log", "r-trace"):
        assert not (work / name).exists()


def test_restricted_grpc_admin_attacks_refused_first(restricted, work):
    stub = restricted.grpc_stub()
    key = next(iter(traversal_keys(work)))
    load = service_pb2.RepositoryModelLoadRequest(model_name="simple")
    load.parameters["config"].string_param = python_backend_config(work)
    load.parameters[key].bytes_param = b"pwn"
    log = service_pb2.LogSettingsRequest()
    log.settings["log_file"].string_param = str(work / "rg-log")
    trace = service_pb2.TraceSettingRequest(model_name="simple")
    trace.settings["trace_file"].value.append(str(work / "rg-trace"))
    attacks = [
        (lambda md: stub.RepositoryModelLoad(load, metadata=md), SC.UNAVAILABLE, NO_LOAD),
        (lambda md: stub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name="../x"), metadata=md), SC.UNAVAILABLE, NO_LOAD),
        (lambda md: stub.LogSettings(log, metadata=md), SC.UNIMPLEMENTED, LOG_FILE_REFUSED),
        (lambda md: stub.TraceSetting(trace, metadata=md), SC.UNIMPLEMENTED, TRACE_FILE_REFUSED),
        (
            lambda md: stub.SystemSharedMemoryRegister(
                service_pb2.SystemSharedMemoryRegisterRequest(name="r", key=RESERVED_KEYS[0], offset=HUGE_OFFSET, byte_size=64), metadata=md
            ),
            SC.UNIMPLEMENTED,
            SHM_DISABLED,
        ),
        (lambda md: stub.SystemSharedMemoryUnregister(service_pb2.SystemSharedMemoryUnregisterRequest(), metadata=md), SC.UNIMPLEMENTED, SHM_DISABLED),
        (lambda md: stub.CudaSharedMemoryRegister(service_pb2.CudaSharedMemoryRegisterRequest(name="c", raw_handle=b"\0" * 64, byte_size=2**63), metadata=md), SC.INVALID_ARGUMENT, CUDA_SHM),
    ]
    with guarded(restricted, what="restricted gRPC admin attacks"):
        for call, code, message in attacks:
            grpc_error(lambda: call(None), SC.UNAVAILABLE, exact=DENIED_GRPC)
            grpc_error(lambda: call([("triton-grpc-protocol-admin-key", "wrong")]), SC.UNAVAILABLE, exact=DENIED_GRPC)
            grpc_error(lambda: call(ADMIN_MD), code, exact=message)
        index = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), metadata=ADMIN_MD)
        assert "simple" in [m.name for m in index.models]
        grpc_error(lambda: stub.RepositoryIndex(service_pb2.RepositoryIndexRequest()), SC.UNAVAILABLE, exact=DENIED_GRPC)
    for name in ("rg-log", "rg-trace"):
        assert not (work / name).exists()


# ===============================================================================================================
# Whole-run checks: server output and audit logs (CVE-2024-0095)
# ===============================================================================================================

# The default log format: level letter + MMDD, time with microseconds, pid, source file:line, "] ", message.
LOG_LINE = re.compile(r"^[EWIV](\d\d)(\d\d) \d\d:\d\d:\d\d\.\d{6} (\d+) \S+:\d+\] ")


def _forged_lines(srv) -> list[str]:
    """Output lines that are not the server's own: after the startup model table, every line must be a log line
    of the default format written by the server's own pid, contain no CR / ESC / NUL / Unicode line separator, and
    the injected fake lines (pid 1) must never start a line. (Both servers write the audit log to a file, so there
    are no audit JSON lines on stderr.)"""
    bad = []
    text = srv.stderr_text() + srv.stdout_text()
    started = False
    for line in text.split("\n")[:-1]:
        if not started and line.startswith(("+", "|")):
            continue
        if "Started HTTPService" in line:
            started = True
        m = LOG_LINE.match(line)
        if (
            not m
            or int(m.group(3)) != srv.proc.pid
            or any(c in line for c in "\r\x1b\x00\u2028\u2029\x85")
            or line.startswith((FORGED, FORGED_ISO))
        ):
            bad.append(line[:300])
    return bad


def test_server_output_has_no_forged_line(srv, restricted):
    """Runs after the attacks above (module order): nothing a client sent forged or split a log line."""
    status, _ = raw_call(restricted, "POST", "/v2/repository/models/" + quote(INJECTIONS[0], safe="") + "/load")
    assert status == 403
    for target in (srv, restricted):
        bad = _forged_lines(target)
        assert not bad, f"{target.label}: {len(bad)} output line(s) not written as one log line each: {bad[:5]}"
    # With --log-verbose=1 only Rampart's own crates log at DEBUG (no hyper / h2 / tonic lines), and `srv` logs no
    # request data: the attacker-controlled text reaches the output through the restricted server's refusal WARNs.
    warns = [line for line in restricted.stderr_text().split("\n") if "restricted API refused" in line]
    assert any("FORGED-LOG-LINE" in line for line in warns), (
        "the restricted server logged no refusal with an injected path: the log-injection check had nothing to look at"
    )


@pytest.mark.parametrize("name", ["audit.jsonl", "audit-restricted.jsonl"])
def test_audit_log_one_json_object_per_line(srv, restricted, work, name):
    """After the attacks above (plus one refusal per protocol here, so the check never runs on an empty log)."""
    assert raw_call(restricted, "POST", "/v2/repository/models/" + quote(INJECTIONS[1], safe="") + "/load")[0] == 403
    lreq = service_pb2.RepositoryModelLoadRequest(model_name=INJECTIONS[3])
    grpc_error(lambda: restricted.grpc_stub().RepositoryModelLoad(lreq), SC.UNAVAILABLE, exact=DENIED_GRPC)
    text = (work / name).read_text(encoding="utf-8")
    assert text.endswith("\n")
    events = []
    for i, line in enumerate(text.split("\n")[:-1]):
        try:
            event = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"{name} line {i + 1} is not one JSON object ({e}): {line[:300]!r}")
        assert isinstance(event, dict) and {"time", "event", "protocol", "client", "category", "target", "outcome"} <= set(event) or event.get("event") == "startup", event
        assert not any(c in line for c in "\r\x1b\x00"), line[:300]
        events.append(event)
    assert events[0]["event"] == "startup"
    assert SECRET not in text and "wrong " + FORGED not in text
    if name == "audit-restricted.jsonl":
        denied = [e for e in events if e["event"] == "denied"]
        assert any(e["protocol"] == "http" and e["target"].startswith("/v2/repository/models/") for e in denied), denied[:5]
        assert any(e["protocol"] == "grpc" and e["target"] == "/inference.GRPCInferenceService/RepositoryModelLoad" for e in denied)
