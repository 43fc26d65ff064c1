"""TLS and mutual TLS on the HTTP and gRPC listeners (rustls).

Flags: tritonserver's `--grpc-use-ssl`, `--grpc-use-ssl-mutual` (implies ssl), `--grpc-server-cert`,
`--grpc-server-key`, `--grpc-root-cert`; Rampart's own `--http-use-ssl`, `--http-use-ssl-mutual`,
`--http-server-cert`, `--http-server-key`, `--http-root-cert` with the same meaning; and
`--tls-reload-interval-secs` (how often the certificate / key / root files are re-read; 1 here).

Certificates are made here (session-scoped, `cryptography`): a CA, a server certificate (SAN DNS:localhost,
IP:127.0.0.1), a client certificate from the CA, one from a second (untrusted) CA, an expired one from the
CA, plus variants (intermediate-CA chain, RSA PKCS#1 / PKCS#8 and EC SEC1 keys, a key that matches nothing).

Servers: `tls_server` (HTTP+gRPC with TLS) and `mtls_server` (HTTP+gRPC with mutual TLS, enabled by the
`-mutual` flags alone) live for the module; startup errors, key formats, rotation and root rotation use
short-lived servers. The default engine is used throughout: TLS does not depend on it.

Covered: good clients (requests, http.client, tritonclient.http and .grpc incl. streaming, raw grpc channels,
HTTP/2 via h2, perf_analyzer over gRPC and HTTPS), ALPN, TLS 1.2 / 1.3 accepted and TLS 1.0 / 1.1 refused,
plaintext clients against TLS ports, stalled handshakes not blocking others, mutual-TLS rejections (no client
certificate, untrusted CA, expired), startup errors naming the flag or file, certificate rotation (os.replace
and Kubernetes-style symlink swap) with established connections kept, broken replacements ignored, root
certificate rotation. After every test each module server must still answer health checks.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from cryptography import x509
from tritonclient.grpc import service_pb2

from certs import Issued, issue, now
from conftest import (
    GRPC_PORT_RE,
    PORT_RE,
    TlsClient,
    _from_env_path,
    base_args,
    example_repo,
    finish_server,
    grpc_base_args,
    run_to_exit,
    simple_grpc_request,
    start_server,
)

HOST = "127.0.0.1"
# Socket / HTTP / gRPC timeout for every network call in this module (seconds).
NET_TIMEOUT = 10.0
RELOAD_INTERVAL = 1
# A new certificate must be served within this long after the files change (contract: ~3 s at a 1 s interval).
ROTATE_DEADLINE = 6.0
# How long a broken replacement is watched to make sure the old certificate stays (3 reload intervals).
BROKEN_WATCH = 3.0 * RELOAD_INTERVAL

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


# =======================================================================================================
# Certificates
# =======================================================================================================


@dataclass
class Certs:
    dir: Path
    ca: Issued
    server: Issued
    client: Issued
    other_ca: Issued
    other_client: Issued  # signed by other_ca: untrusted by servers whose root is `ca`
    expired_client: Issued  # signed by ca, not_after in the past
    intermediate: Issued  # CA signed by `ca`
    chained_server: Issued  # signed by `intermediate`; its .crt holds leaf + intermediate
    stray_key: Path  # a key that matches no certificate
    garbage: Path  # not PEM at all
    empty: Path  # zero bytes

    def tls(self, client: Issued | None = None) -> TlsClient:
        """Client settings trusting `ca`, optionally presenting `client`."""
        if client is None:
            return TlsClient(str(self.ca.crt))
        return TlsClient(str(self.ca.crt), str(client.crt), str(client.key_path))


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    d = tmp_path_factory.mktemp("tls_certs")
    ca = issue(d, "ca", "Rampart Test CA", role="ca")
    other_ca = issue(d, "other_ca", "Rampart Untrusted CA", role="ca")
    intermediate = issue(d, "intermediate", "Rampart Test Intermediate CA", ca, role="ca")
    stray = issue(d, "stray", "stray", ca, role="client")
    garbage = d / "garbage.pem"
    garbage.write_bytes(b"this is not a PEM file\n\x00\x01\x02 just garbage\n")
    empty = d / "empty.pem"
    empty.write_bytes(b"")
    return Certs(
        dir=d,
        ca=ca,
        server=issue(d, "server", "rampart-server", ca, role="server"),
        client=issue(d, "client", "rampart-client", ca, role="client"),
        other_ca=other_ca,
        other_client=issue(d, "other_client", "rampart-untrusted-client", other_ca, role="client"),
        expired_client=issue(
            d, "expired_client", "rampart-expired-client", ca, role="client",
            not_before=now() - datetime.timedelta(days=30), not_after=now() - datetime.timedelta(days=1),
        ),
        intermediate=intermediate,
        chained_server=issue(d, "chained_server", "rampart-chained-server", intermediate, role="server", chain=(intermediate,)),
        stray_key=stray.key_path,
        garbage=garbage,
        empty=empty,
    )


def describe(der: bytes | None) -> str:
    if der is None:
        return "<no certificate>"
    c = x509.load_der_x509_certificate(der)
    return f"{c.subject.rfc4514_string()} serial={c.serial_number:x}"


# =======================================================================================================
# Flags and servers
# =======================================================================================================


def tls_flags(proto: str, server: Issued, mutual: bool = False, root: Path | None = None) -> list[str]:
    """--<proto>-use-ssl=true (or only --<proto>-use-ssl-mutual=true, which implies it) with cert/key/root."""
    flags = [f"--{proto}-use-ssl-mutual=true"] if mutual else [f"--{proto}-use-ssl=true"]
    flags += [f"--{proto}-server-cert={server.crt}", f"--{proto}-server-key={server.key_path}"]
    if root is not None:
        flags.append(f"--{proto}-root-cert={root}")
    return flags


def both_tls_args(server: Issued, mutual: bool = False, root: Path | None = None, extra=()) -> list[str]:
    return grpc_base_args(
        example_repo(), None, [*tls_flags("http", server, mutual, root), *tls_flags("grpc", server, mutual, root), *extra]
    )


@pytest.fixture(scope="module")
def tls_server(certs):
    """HTTP and gRPC, both with (server-authenticated) TLS."""
    tls = certs.tls()
    srv = start_server(both_tls_args(certs.server), "rampart[tls]", http_tls=tls, grpc_tls=tls)
    yield srv
    finish_server(srv)


@pytest.fixture(scope="module")
def mtls_server(certs):
    """HTTP and gRPC, both with mutual TLS (root = the test CA), enabled by the -mutual flags alone."""
    tls = certs.tls(certs.client)
    srv = start_server(both_tls_args(certs.server, mutual=True, root=certs.ca.crt), "rampart[mtls]", http_tls=tls, grpc_tls=tls)
    yield srv
    finish_server(srv)


@contextlib.contextmanager
def running(args, label, http_tls=None, grpc_tls=None):
    """A short-lived server; on exit it must still be running and exit 0 on SIGTERM."""
    srv = start_server(args, label, http_tls=http_tls, grpc_tls=grpc_tls)
    try:
        yield srv
    finally:
        finish_server(srv)


def port_of(srv, listener: str) -> int:
    return srv.port if listener == "http" else srv.grpc_port


# =======================================================================================================
# Client helpers
# =======================================================================================================


@contextlib.contextmanager
def tls_connect(port: int, ctx: ssl.SSLContext, server_hostname: str | None = HOST):
    """A completed TLS handshake to 127.0.0.1:port (every socket operation has NET_TIMEOUT)."""
    raw = socket.create_connection((HOST, port), timeout=NET_TIMEOUT)
    try:
        s = ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise
    try:
        yield s
    finally:
        s.close()


def alpn_for(listener: str) -> list[str]:
    return ["h2", "http/1.1"] if listener == "http" else ["h2"]


def served_der(port: int, tls: TlsClient, alpn: list[str] | None = None) -> bytes:
    """DER of the certificate the server presents on a new connection (verified against the CA)."""
    with tls_connect(port, tls.ssl_context(alpn)) as s:
        return s.getpeercert(binary_form=True)


def unverified_context(alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def read_http1_response(s) -> bytes:
    """Read one Content-Length / chunked HTTP/1.1 response (or until EOF)."""
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return buf
        buf += chunk
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode("latin-1")
            m = re.search(r"(?im)^content-length:\s*(\d+)\s*$", head)
            if m and len(buf) - head_end - 4 >= int(m.group(1)):
                return buf
            if re.search(r"(?im)^transfer-encoding:\s*chunked", head) and buf.endswith(b"0\r\n\r\n"):
                return buf


def http1_get(s, path: str, port: int) -> bytes:
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    return read_http1_response(s)


def expect_handshake_refused(port: int, ctx: ssl.SSLContext, probe: bytes) -> str:
    """The server must refuse this client at the TLS level: the handshake fails, or (TLS 1.3, where the client
    finishes first and the server rejects its certificate afterwards) the first read fails / hits EOF without
    any application data. A timeout is a hang, not a refusal. Returns a description of how it failed."""
    try:
        with tls_connect(port, ctx) as s:
            s.sendall(probe)
            data = s.recv(65536)
    except TimeoutError:
        raise AssertionError(f"no answer within {NET_TIMEOUT}s: the server neither refused nor served the client")
    except (ssl.SSLError, OSError) as e:
        return f"{type(e).__name__}: {e}"
    assert data == b"", f"the server answered a client it must refuse: {data[:300]!r}"
    return "EOF"


def simple_http_inputs(binary: bool = True):
    import tritonclient.http as httpclient

    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(A, binary_data=binary)
    inputs[1].set_data_from_numpy(B, binary_data=binary)
    return inputs


def simple_grpc_inputs():
    import tritonclient.grpc as grpcclient

    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(A)
    inputs[1].set_data_from_numpy(B)
    return inputs


def check_simple(result) -> None:
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def simple_json_body() -> bytes:
    return json.dumps(
        {
            "inputs": [
                {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": A.reshape(-1).tolist()},
                {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": B.reshape(-1).tolist()},
            ]
        }
    ).encode()


def check_simple_json(body: bytes) -> None:
    out = {o["name"]: o for o in json.loads(body)["outputs"]}
    assert out["OUTPUT0"]["data"] == (A + B).reshape(-1).tolist(), out
    assert out["OUTPUT1"]["data"] == (A - B).reshape(-1).tolist(), out


def grpc_live(channel) -> bool:
    from tritonclient.grpc import service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    return stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=NET_TIMEOUT).live


def grpc_infer_simple(channel) -> None:
    from tritonclient.grpc import InferResult, service_pb2_grpc

    resp = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(simple_grpc_request(A, B), timeout=NET_TIMEOUT)
    check_simple(InferResult(resp))


def secure_channel(srv, tls: TlsClient):
    return grpc.secure_channel(srv.grpc_url, tls.grpc_credentials())


def expect_grpc_refused(channel) -> str:
    """ServerLive on `channel` must fail (not succeed, not hang until the deadline)."""
    try:
        live = grpc_live(channel)
    except grpc.RpcError as e:
        assert e.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"hung until the deadline instead of failing: {e.details()}"
        return f"{e.code()}: {e.details()}"
    raise AssertionError(f"ServerLive answered ({live}) on a channel the server must refuse")


# ---- HTTP/2 (h2) -------------------------------------------------------------------------------------


class H2Client:
    """Minimal HTTP/2 client over an established TLS socket that negotiated ALPN h2."""

    def __init__(self, sock, port: int):
        import h2.config
        import h2.connection

        self.sock, self.port = sock, port
        self.conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, dict, bytes]:
        import h2.events

        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "https"), (":authority", f"{HOST}:{self.port}")]
        hdrs += list((headers or {}).items())
        if body:
            hdrs.append(("content-length", str(len(body))))
        self.conn.send_headers(sid, hdrs, end_stream=not body)
        if body:
            self.conn.send_data(sid, body, end_stream=True)  # bodies here are far below the initial window
        self.sock.sendall(self.conn.data_to_send())
        status, resp_headers, data = None, {}, b""
        deadline = time.monotonic() + NET_TIMEOUT
        while time.monotonic() < deadline:
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed before stream {sid} ended"
            for ev in self.conn.receive_data(chunk):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    resp_headers = dict(ev.headers)
                    status = int(resp_headers[":status"])
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    data += ev.data
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise AssertionError(f"stream {sid} reset by the server (error code {ev.error_code})")
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    self.sock.sendall(self.conn.data_to_send())
                    return status, resp_headers, data
            self.sock.sendall(self.conn.data_to_send())
        raise AssertionError(f"stream {sid} did not end within {NET_TIMEOUT}s")


# =======================================================================================================
# Log lines
# =======================================================================================================


def test_started_line_regexes_tolerate_a_suffix():
    m = PORT_RE.search("I1126 12:00:00.000 Started HTTPService at 127.0.0.1:8443 with TLS")
    assert m and m.groups() == ("127.0.0.1", "8443")
    m = GRPC_PORT_RE.search("Started GRPCInferenceService at 0.0.0.0:8001 with mutual TLS\n")
    assert m and m.groups() == ("0.0.0.0", "8001")


def test_started_lines_for_tls_listeners(tls_server):
    err = tls_server.stderr_text() + tls_server.stdout_text()
    for regex, port in ((PORT_RE, tls_server.port), (GRPC_PORT_RE, tls_server.grpc_port)):
        m = regex.search(err)
        assert m and int(m.group(2)) == port and m.group(1).startswith(HOST), err[-3000:]


# =======================================================================================================
# Server-authenticated TLS: good clients
# =======================================================================================================


def test_requests_https_health_and_metadata(tls_server, certs):
    kw = certs.tls().requests_kwargs()
    r = requests.get(f"https://{HOST}:{tls_server.port}/v2/health/ready", timeout=NET_TIMEOUT, **kw)
    assert r.status_code == 200, r.text
    r = requests.get(f"https://{HOST}:{tls_server.port}/v2/models/simple", timeout=NET_TIMEOUT, **kw)
    assert r.status_code == 200 and r.json()["name"] == "simple", r.text


def test_requests_https_json_infer(tls_server):
    r = tls_server.post("/v2/models/simple/infer", data=simple_json_body(), timeout=NET_TIMEOUT)
    assert r.status_code == 200, r.text
    check_simple_json(r.content)


def test_requests_refuses_server_without_the_ca(tls_server):
    """Sanity check of the setup: the server presents a chain from the test CA, which the system store lacks."""
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://{HOST}:{tls_server.port}/v2/health/live", timeout=NET_TIMEOUT)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_infer(tls_server, certs, binary):
    import tritonclient.http as httpclient

    # ssl=True + ssl_options (ca_certs / certfile / keyfile); the default ssl_context_factory
    # (gevent.ssl.create_default_context) verifies the server certificate and the host name (IP SAN).
    with httpclient.InferenceServerClient(
        url=tls_server.url, ssl=True, ssl_options={"ca_certs": str(certs.ca.crt)},
        connection_timeout=NET_TIMEOUT, network_timeout=NET_TIMEOUT,
    ) as c:
        assert c.is_server_live() and c.is_model_ready("simple")
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
        check_simple(c.infer("simple", simple_http_inputs(binary), outputs=outputs))


def test_tritonclient_http_infer_with_context_factory(tls_server, certs):
    """The other documented way: an explicit ssl_context_factory (gevent's secure defaults) plus ssl_options."""
    import gevent.ssl
    import tritonclient.http as httpclient

    with httpclient.InferenceServerClient(
        url=tls_server.url, ssl=True, ssl_options={"ca_certs": str(certs.ca.crt)},
        ssl_context_factory=gevent.ssl.create_default_context,
        connection_timeout=NET_TIMEOUT, network_timeout=NET_TIMEOUT,
    ) as c:
        check_simple(c.infer("simple", simple_http_inputs()))


def test_http_keepalive_connection_serves_many_requests(tls_server, certs):
    conn = http.client.HTTPSConnection(HOST, tls_server.port, context=certs.tls().ssl_context(), timeout=NET_TIMEOUT)
    try:
        for i in range(5):
            conn.request("POST", "/v2/models/simple/infer", body=simple_json_body(), headers={"Content-Type": "application/json"})
            if i == 0:
                sock = conn.sock
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, body
            check_simple_json(body)
            assert conn.sock is sock, "the server closed the keep-alive TLS connection between requests"
    finally:
        conn.close()


def test_tritonclient_grpc_infer(tls_server, certs):
    import tritonclient.grpc as grpcclient

    # ssl=True + root_certificates (a file path; the client reads it). Target 127.0.0.1 -> IP SAN check.
    with grpcclient.InferenceServerClient(url=tls_server.grpc_url, ssl=True, root_certificates=str(certs.ca.crt)) as c:
        assert c.is_server_live(client_timeout=NET_TIMEOUT)
        check_simple(c.infer("simple", simple_grpc_inputs(), client_timeout=NET_TIMEOUT))


def test_tritonclient_grpc_stream_infer(tls_server):
    import queue

    results = queue.Queue()
    with tls_server.grpc_client(timeout=NET_TIMEOUT) as c:
        c.start_stream(lambda result, error: results.put((result, error)))
        try:
            c.async_stream_infer("simple", simple_grpc_inputs(), request_id="tls-stream-1")
            result, error = results.get(timeout=NET_TIMEOUT)
        finally:
            c.stop_stream()
    assert error is None, error
    check_simple(result)


def test_raw_grpc_secure_channel(tls_server, certs):
    with secure_channel(tls_server, certs.tls()) as ch:
        assert grpc_live(ch) is True
        grpc_infer_simple(ch)


def test_grpc_channel_refuses_server_without_the_ca(tls_server, certs):
    """Sanity check of the setup (client side): trusting only another CA, the gRPC handshake fails."""
    with grpc.secure_channel(tls_server.grpc_url, TlsClient(str(certs.other_ca.crt)).grpc_credentials()) as ch:
        expect_grpc_refused(ch)


# =======================================================================================================
# Certificate served, ALPN, protocol versions
# =======================================================================================================


@pytest.mark.parametrize("listener", ["http", "grpc"])
@pytest.mark.parametrize("sni", [HOST, "localhost"], ids=["ip", "sni-localhost"])
def test_served_certificate_is_the_configured_one(tls_server, certs, listener, sni):
    with tls_connect(port_of(tls_server, listener), certs.tls().ssl_context(alpn_for(listener)), server_hostname=sni) as s:
        der = s.getpeercert(binary_form=True)
    assert der == certs.server.der, f"served {describe(der)}, configured {describe(certs.server.der)}"


@pytest.mark.parametrize(
    "offer,expected",
    [(["h2", "http/1.1"], "h2"), (["http/1.1", "h2"], "h2"), (["http/1.1"], "http/1.1"), (None, None)],
    ids=["h2+http1.1", "http1.1+h2", "http1.1-only", "no-alpn"],
)
def test_http_alpn(tls_server, certs, offer, expected):
    """HTTP with TLS serves HTTP/2 and HTTP/1.1 (ALPN h2, http/1.1; the server's preference is h2)."""
    with tls_connect(tls_server.port, certs.tls().ssl_context(offer)) as s:
        assert s.selected_alpn_protocol() == expected
        if expected != "h2":
            resp = http1_get(s, "/v2/health/ready", tls_server.port)
            assert resp.startswith(b"HTTP/1.1 200"), resp[:300]


def test_grpc_alpn_is_h2(tls_server, certs):
    with tls_connect(tls_server.grpc_port, certs.tls().ssl_context(["h2"])) as s:
        assert s.selected_alpn_protocol() == "h2"


def test_http2_over_tls(tls_server, certs):
    with tls_connect(tls_server.port, certs.tls().ssl_context(["h2", "http/1.1"])) as s:
        assert s.selected_alpn_protocol() == "h2"
        client = H2Client(s, tls_server.port)
        status, _, body = client.request("GET", "/v2/health/ready")
        assert status == 200, body
        status, _, body = client.request("GET", "/v2/models/simple")
        assert status == 200 and json.loads(body)["name"] == "simple", body
        status, _, body = client.request("POST", "/v2/models/simple/infer", simple_json_body(), {"content-type": "application/json"})
        assert status == 200, body
        check_simple_json(body)


@pytest.mark.parametrize("listener", ["http", "grpc"])
@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls12_and_tls13_accepted(tls_server, certs, listener, version):
    ctx = certs.tls().ssl_context(alpn_for(listener))
    v = getattr(ssl.TLSVersion, version)
    ctx.minimum_version = ctx.maximum_version = v
    with tls_connect(port_of(tls_server, listener), ctx) as s:
        assert s.version() == version.replace("_", "."), s.version()
        assert s.selected_alpn_protocol() == "h2"
        if listener == "http":
            status, _, _ = H2Client(s, tls_server.port).request("GET", "/v2/health/live")
            assert status == 200
    if listener == "grpc":
        # A full gRPC call over each version: grpc's own TLS stack cannot be pinned to one version, so the
        # handshake above is the version check; this only shows the listener serves after it.
        with secure_channel(tls_server, certs.tls()) as ch:
            assert grpc_live(ch) is True


@pytest.mark.parametrize("listener", ["http", "grpc"])
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_versions_refused(tls_server, listener, version):
    """A TLS 1.0 / 1.1 client cannot complete a handshake (whichever side refuses: the local OpenSSL may not
    even offer these versions; SECLEVEL=0 lets it try where it can)."""
    ctx = unverified_context(alpn_for(listener))
    v = getattr(ssl.TLSVersion, version)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # ssl.TLSVersion.TLSv1 / TLSv1_1 are deprecated
            ctx.minimum_version = v
            ctx.maximum_version = v
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pass  # the local OpenSSL cannot even be configured for it: the handshake below fails client-side
    try:
        with tls_connect(port_of(tls_server, listener), ctx, server_hostname=None) as s:
            negotiated = s.version()
    except TimeoutError:
        raise AssertionError(f"{version} handshake hung for {NET_TIMEOUT}s instead of failing")
    except (ssl.SSLError, OSError):
        return
    raise AssertionError(f"a {version}-only client completed a handshake ({negotiated})")


# =======================================================================================================
# Plaintext and hostile clients against TLS ports
# =======================================================================================================


def test_plain_http_against_https_port(tls_server):
    """A plaintext HTTP request to the TLS port fails cleanly: the TLS layer refuses the bytes (it sends no HTTP
    answer) and closes, so the client sees a connection error; never a response and never a hang."""
    t0 = time.monotonic()
    try:
        r = requests.get(f"http://{HOST}:{tls_server.port}/v2/health/live", timeout=NET_TIMEOUT)
    except requests.exceptions.Timeout:
        raise AssertionError(f"plaintext request hung for {NET_TIMEOUT}s")
    except requests.exceptions.ConnectionError:
        pass
    else:
        raise AssertionError(f"plaintext request to the TLS port answered {r.status_code}: {r.text[:300]!r}")
    assert time.monotonic() - t0 < NET_TIMEOUT


def test_insecure_grpc_channel_against_tls_port(tls_server):
    with grpc.insecure_channel(tls_server.grpc_url) as ch:
        t0 = time.monotonic()
        expect_grpc_refused(ch)
        assert time.monotonic() - t0 < NET_TIMEOUT


@pytest.mark.parametrize("listener", ["http", "grpc"])
@pytest.mark.parametrize(
    "payload",
    [b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", b"\x00" * 64, b"\x16\x03\x03\xff\xff" + b"A" * 512, H2_PREFACE],
    ids=["truncated-clienthello", "zeros", "oversized-record", "h2-preface"],
)
def test_garbage_handshakes_are_dropped(tls_server, listener, payload):
    """Garbage instead of a ClientHello: the server closes (or alerts) without hanging and keeps serving."""
    with socket.create_connection((HOST, port_of(tls_server, listener)), timeout=NET_TIMEOUT) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except TimeoutError:
            raise AssertionError(f"the server kept the connection open for {NET_TIMEOUT}s after garbage + EOF")
        except OSError:
            pass  # reset / already closed by the server: dropped


def test_stalled_handshakes_do_not_block_other_clients(tls_server, certs):
    """Connections that never finish their handshake (silent, or a partial ClientHello) must not stop the
    listeners from accepting and serving others."""
    stalled = []
    try:
        for port in (tls_server.port, tls_server.grpc_port):
            for i in range(6):
                s = socket.create_connection((HOST, port), timeout=NET_TIMEOUT)
                if i % 2:
                    s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # first bytes of a 512-byte record
                stalled.append(s)
        t0 = time.monotonic()
        r = requests.get(f"https://{HOST}:{tls_server.port}/v2/health/ready", timeout=NET_TIMEOUT, **certs.tls().requests_kwargs())
        assert r.status_code == 200
        with secure_channel(tls_server, certs.tls()) as ch:
            assert grpc_live(ch) is True
        assert time.monotonic() - t0 < NET_TIMEOUT
    finally:
        for s in stalled:
            s.close()


# =======================================================================================================
# Mutual TLS
# =======================================================================================================


def test_mtls_requests_with_client_cert(mtls_server, certs):
    r = requests.get(f"https://{HOST}:{mtls_server.port}/v2/health/ready", timeout=NET_TIMEOUT, **certs.tls(certs.client).requests_kwargs())
    assert r.status_code == 200, r.text
    r = mtls_server.post("/v2/models/simple/infer", data=simple_json_body(), timeout=NET_TIMEOUT)
    assert r.status_code == 200, r.text
    check_simple_json(r.content)


def test_mtls_tritonclient_http_infer(mtls_server, certs):
    import tritonclient.http as httpclient

    # ssl_options certfile + keyfile present the client certificate (geventhttpclient loads them only as a pair).
    options = {"ca_certs": str(certs.ca.crt), "certfile": str(certs.client.crt), "keyfile": str(certs.client.key_path)}
    with httpclient.InferenceServerClient(
        url=mtls_server.url, ssl=True, ssl_options=options, connection_timeout=NET_TIMEOUT, network_timeout=NET_TIMEOUT
    ) as c:
        assert c.is_server_ready()
        check_simple(c.infer("simple", simple_http_inputs()))


def test_mtls_tritonclient_grpc_infer(mtls_server, certs):
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(
        url=mtls_server.grpc_url, ssl=True, root_certificates=str(certs.ca.crt),
        private_key=str(certs.client.key_path), certificate_chain=str(certs.client.crt),
    ) as c:
        assert c.is_server_ready(client_timeout=NET_TIMEOUT)
        check_simple(c.infer("simple", simple_grpc_inputs(), client_timeout=NET_TIMEOUT))


def test_mtls_http2(mtls_server, certs):
    with tls_connect(mtls_server.port, certs.tls(certs.client).ssl_context(["h2", "http/1.1"])) as s:
        assert s.selected_alpn_protocol() == "h2"
        status, _, body = H2Client(s, mtls_server.port).request("POST", "/v2/models/simple/infer", simple_json_body())
        assert status == 200, body
        check_simple_json(body)


BAD_CLIENTS = ["no-client-cert", "untrusted-ca", "expired"]


def bad_client(certs: Certs, kind: str) -> TlsClient:
    return {
        "no-client-cert": certs.tls(),
        "untrusted-ca": certs.tls(certs.other_client),
        "expired": certs.tls(certs.expired_client),
    }[kind]


@pytest.mark.parametrize("kind", BAD_CLIENTS)
def test_mtls_http_refuses_bad_client(mtls_server, certs, kind):
    tls = bad_client(certs, kind)
    url = f"https://{HOST}:{mtls_server.port}/v2/health/live"
    try:
        r = requests.get(url, timeout=NET_TIMEOUT, **tls.requests_kwargs())
    except requests.exceptions.Timeout:
        raise AssertionError(f"{kind}: request hung instead of failing the handshake")
    except requests.exceptions.ConnectionError:
        pass
    else:
        raise AssertionError(f"{kind}: the server answered {r.status_code} to a client it must refuse")
    port = mtls_server.port
    expect_handshake_refused(port, tls.ssl_context(["http/1.1"]), f"GET /v2/health/live HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    # ... and a good client is served right after.
    r = requests.get(url, timeout=NET_TIMEOUT, **certs.tls(certs.client).requests_kwargs())
    assert r.status_code == 200


@pytest.mark.parametrize("kind", BAD_CLIENTS)
def test_mtls_grpc_refuses_bad_client(mtls_server, certs, kind):
    tls = bad_client(certs, kind)
    with secure_channel(mtls_server, tls) as ch:
        expect_grpc_refused(ch)
    expect_handshake_refused(mtls_server.grpc_port, tls.ssl_context(["h2"]), H2_PREFACE)
    with secure_channel(mtls_server, certs.tls(certs.client)) as ch:
        assert grpc_live(ch) is True


@pytest.mark.parametrize("listener", ["http", "grpc"])
def test_mtls_plaintext_client_refused(mtls_server, listener):
    if listener == "http":
        try:
            r = requests.get(f"http://{HOST}:{mtls_server.port}/v2/health/live", timeout=NET_TIMEOUT)
        except requests.exceptions.Timeout:
            raise AssertionError("plaintext request hung")
        except requests.exceptions.ConnectionError:
            return  # the TLS layer refused the bytes and closed: no HTTP answer
        raise AssertionError(f"plaintext request to the mutual-TLS port answered {r.status_code}: {r.text[:300]!r}")
    else:
        with grpc.insecure_channel(mtls_server.grpc_url) as ch:
            expect_grpc_refused(ch)


# =======================================================================================================
# One listener with TLS, the other without; certificate chains; key formats
# =======================================================================================================


@pytest.mark.parametrize("tls_on", ["http", "grpc"])
def test_tls_on_one_listener_only(certs, tls_on):
    tls = certs.tls()
    args = grpc_base_args(example_repo(), None, tls_flags(tls_on, certs.server))
    with running(args, f"rampart[tls on {tls_on} only]", **{f"{tls_on}_tls": tls}) as srv:
        if tls_on == "grpc":
            assert requests.get(f"http://{HOST}:{srv.port}/v2/health/ready", timeout=NET_TIMEOUT).status_code == 200
        else:
            with grpc.insecure_channel(srv.grpc_url) as ch:
                assert grpc_live(ch) is True
        assert served_der(port_of(srv, tls_on), tls, alpn_for(tls_on)) == certs.server.der


def test_server_certificate_chain_with_intermediate(certs):
    """--*-server-cert holds leaf + intermediate; a client trusting only the root verifies the chain."""
    tls = certs.tls()
    with running(both_tls_args(certs.chained_server), "rampart[tls chain]", http_tls=tls, grpc_tls=tls) as srv:
        assert served_der(srv.port, tls) == certs.chained_server.der
        r = requests.get(f"https://{HOST}:{srv.port}/v2/health/ready", timeout=NET_TIMEOUT, **tls.requests_kwargs())
        assert r.status_code == 200
        with secure_channel(srv, tls) as ch:
            grpc_infer_simple(ch)


@pytest.mark.parametrize(
    "key_kind,key_format",
    [("rsa", "traditional"), ("rsa", "pkcs8"), ("ec", "traditional")],
    ids=["rsa-pkcs1", "rsa-pkcs8", "ec-sec1"],
)
def test_server_key_formats(certs, tmp_path, key_kind, key_format):
    """Besides EC PKCS#8 (used everywhere else): RSA PKCS#1 ("BEGIN RSA PRIVATE KEY", cert-manager's default),
    RSA PKCS#8 and EC SEC1 ("BEGIN EC PRIVATE KEY") keys."""
    server = issue(tmp_path, "server", f"rampart-{key_kind}-{key_format}", certs.ca, role="server", key_kind=key_kind, key_format=key_format)
    tls = certs.tls()
    with running(both_tls_args(server), f"rampart[tls {key_kind} {key_format}]", http_tls=tls, grpc_tls=tls) as srv:
        for listener in ("http", "grpc"):
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                ctx = tls.ssl_context(alpn_for(listener))
                ctx.minimum_version = ctx.maximum_version = version
                with tls_connect(port_of(srv, listener), ctx) as s:
                    assert s.getpeercert(binary_form=True) == server.der
        with secure_channel(srv, tls) as ch:
            grpc_infer_simple(ch)


# =======================================================================================================
# Startup errors
# =======================================================================================================


def _startup_cases():
    """(id, flags(proto, certs, tmp) -> list, names(proto, certs, tmp) -> list): the process must exit non-zero
    and its output must contain at least one of `names` (the flag, without dashes, or the file)."""

    def fl(p, n):
        return f"{p}-{n}"

    return [
        ("ssl-without-cert-and-key", lambda p, c, t: [f"--{p}-use-ssl=true"], lambda p, c, t: [fl(p, "server-cert"), fl(p, "server-key")]),
        ("ssl-without-key", lambda p, c, t: [f"--{p}-use-ssl=true", f"--{p}-server-cert={c.server.crt}"], lambda p, c, t: [fl(p, "server-key")]),
        ("ssl-without-cert", lambda p, c, t: [f"--{p}-use-ssl=true", f"--{p}-server-key={c.server.key_path}"], lambda p, c, t: [fl(p, "server-cert")]),
        (
            "mutual-without-cert-and-key",
            lambda p, c, t: [f"--{p}-use-ssl-mutual=true", f"--{p}-root-cert={c.ca.crt}"],
            lambda p, c, t: [fl(p, "server-cert"), fl(p, "server-key")],
        ),
        (
            "missing-cert-file",
            lambda p, c, t: [f"--{p}-use-ssl=true", f"--{p}-server-cert={t / 'nope.crt'}", f"--{p}-server-key={c.server.key_path}"],
            lambda p, c, t: [fl(p, "server-cert"), str(t / "nope.crt")],
        ),
        (
            "missing-key-file",
            lambda p, c, t: [f"--{p}-use-ssl=true", f"--{p}-server-cert={c.server.crt}", f"--{p}-server-key={t / 'nope.key'}"],
            lambda p, c, t: [fl(p, "server-key"), str(t / "nope.key")],
        ),
        (
            "cert-is-a-directory",
            lambda p, c, t: [f"--{p}-use-ssl=true", f"--{p}-server-cert={t}", f"--{p}-server-key={c.server.key_path}"],
            lambda p, c, t: [fl(p, "server-cert"), str(t)],
        ),
        (
            "garbage-cert",
            lambda p, c, t: [f"--{p}-use-ssl=true", f"--{p}-server-cert={c.garbage}", f"--{p}-server-key={c.server.key_path}"],
            lambda p, c, t: [fl(p, "server-cert"), str(c.garbage)],
        ),
        (
            "empty-cert",
            lambda p, c, t: [f"--{p}-use-ssl=true", f"--{p}-server-cert={c.empty}", f"--{p}-server-key={c.server.key_path}"],
            lambda p, c, t: [fl(p, "server-cert"), str(c.empty)],
        ),
        (
            "cert-file-holds-a-key",
            lambda p, c, t: [f"--{p}-use-ssl=true", f"--{p}-server-cert={c.server.key_path}", f"--{p}-server-key={c.server.key_path}"],
            lambda p, c, t: [fl(p, "server-cert")],
        ),
        (
            "garbage-key",
            lambda p, c, t: [f"--{p}-use-ssl=true", f"--{p}-server-cert={c.server.crt}", f"--{p}-server-key={c.garbage}"],
            lambda p, c, t: [fl(p, "server-key"), str(c.garbage)],
        ),
        (
            "key-file-holds-a-cert",
            lambda p, c, t: [f"--{p}-use-ssl=true", f"--{p}-server-cert={c.server.crt}", f"--{p}-server-key={c.server.crt}"],
            lambda p, c, t: [fl(p, "server-key"), str(c.server.crt)],
        ),
        (
            "key-does-not-match-cert",
            lambda p, c, t: [f"--{p}-use-ssl=true", f"--{p}-server-cert={c.server.crt}", f"--{p}-server-key={c.stray_key}"],
            lambda p, c, t: [fl(p, "server-key"), fl(p, "server-cert"), str(c.stray_key), str(c.server.crt)],
        ),
        (
            "mutual-without-root",
            lambda p, c, t: tls_flags(p, c.server, mutual=True),
            lambda p, c, t: [fl(p, "root-cert")],
        ),
        (
            "mutual-root-missing-file",
            lambda p, c, t: tls_flags(p, c.server, mutual=True, root=t / "nope-ca.crt"),
            lambda p, c, t: [fl(p, "root-cert"), str(t / "nope-ca.crt")],
        ),
        (
            "mutual-root-garbage",
            lambda p, c, t: tls_flags(p, c.server, mutual=True, root=c.garbage),
            lambda p, c, t: [fl(p, "root-cert"), str(c.garbage)],
        ),
        (
            "mutual-root-empty",
            lambda p, c, t: tls_flags(p, c.server, mutual=True, root=c.empty),
            lambda p, c, t: [fl(p, "root-cert"), str(c.empty)],
        ),
    ]


STARTUP_CASES = _startup_cases()


@pytest.mark.parametrize("proto", ["http", "grpc"])
@pytest.mark.parametrize("case", STARTUP_CASES, ids=[c[0] for c in STARTUP_CASES])
def test_startup_error(certs, tmp_path, proto, case):
    _, flags, names = case
    extra = flags(proto, certs, tmp_path)
    args = grpc_base_args(example_repo(), None, extra) if proto == "grpc" else base_args(example_repo(), None, extra)
    proc = run_to_exit(args, timeout=60)
    out = proc.stderr.decode("utf-8", errors="replace") + proc.stdout.decode("utf-8", errors="replace")
    assert proc.returncode > 0, f"expected a non-zero exit (not a signal), got {proc.returncode}; flags {extra}\n{out[-3000:]}"
    wanted = names(proto, certs, tmp_path)
    assert any(n in out for n in wanted), f"the error names none of {wanted}; flags {extra}\n{out[-3000:]}"
    assert not PORT_RE.search(out) and not GRPC_PORT_RE.search(out), f"a listener was started despite the error\n{out[-3000:]}"


# =======================================================================================================
# Rotation
# =======================================================================================================


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same directory, then rename over `path` (one atomic replace)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class SymlinkDir:
    """Kubernetes secret-volume layout: tls.crt -> ..data/tls.crt, ..data -> ..<version>/; an update writes a
    new version directory and swaps the ..data symlink atomically (cert and key change together)."""

    def __init__(self, root: Path, cert: bytes, key: bytes):
        self.root, self.n = root, 0
        root.mkdir(parents=True, exist_ok=True)
        self._write_version(cert, key)
        (root / "..data").symlink_to(f"..v{self.n}")
        (root / "tls.crt").symlink_to("..data/tls.crt")
        (root / "tls.key").symlink_to("..data/tls.key")

    def _write_version(self, cert: bytes, key: bytes) -> str:
        self.n += 1
        d = self.root / f"..v{self.n}"
        d.mkdir()
        (d / "tls.crt").write_bytes(cert)
        (d / "tls.key").write_bytes(key)
        return d.name

    def swap(self, cert: bytes, key: bytes) -> None:
        old = self.root / f"..v{self.n}"
        name = self._write_version(cert, key)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(name)
        os.replace(tmp, self.root / "..data")
        shutil.rmtree(old)  # as the kubelet does: the old version disappears

    @property
    def crt(self) -> Path:
        return self.root / "tls.crt"

    @property
    def key(self) -> Path:
        return self.root / "tls.key"


def live_flags(crt: Path, key: Path) -> list[str]:
    return [
        "--http-use-ssl=true", f"--http-server-cert={crt}", f"--http-server-key={key}",
        "--grpc-use-ssl=true", f"--grpc-server-cert={crt}", f"--grpc-server-key={key}",
        f"--tls-reload-interval-secs={RELOAD_INTERVAL}",
    ]


def wait_for_served(srv, tls: TlsClient, want: bytes, deadline_s: float) -> None:
    """Poll new connections on both listeners until each presents `want` (or fail after deadline_s)."""
    deadline = time.monotonic() + deadline_s
    for listener in ("http", "grpc"):
        while True:
            der = served_der(port_of(srv, listener), tls, alpn_for(listener))
            if der == want:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{listener}: new connections still get {describe(der)} {deadline_s}s after the files changed; "
                    f"expected {describe(want)}\n{srv.output()}"
                )
            time.sleep(0.2)


def watch_still_served(srv, tls: TlsClient, want: bytes, duration: float) -> None:
    """For `duration` seconds, every new connection on both listeners presents `want`."""
    end = time.monotonic() + duration
    while time.monotonic() < end:
        for listener in ("http", "grpc"):
            der = served_der(port_of(srv, listener), tls, alpn_for(listener))
            assert der == want, f"{listener}: serves {describe(der)}, expected the old {describe(want)}\n{srv.output()}"
        time.sleep(0.25)
    assert srv.alive(), f"server died after a broken replacement\n{srv.output()}"


class Established:
    """An HTTP/1.1 keep-alive TLS connection and a gRPC channel, both opened (and used) now; `check()` later
    asserts they still work on the same connections."""

    def __init__(self, srv, tls: TlsClient):
        self.srv = srv
        self.http = http.client.HTTPSConnection(HOST, srv.port, context=tls.ssl_context(["http/1.1"]), timeout=NET_TIMEOUT)
        self._http_get()
        self.sock = self.http.sock
        self.http_der = self.sock.getpeercert(binary_form=True)
        self.channel = secure_channel(srv, tls)
        self.states: list = []
        self._lock = threading.Lock()
        self.channel.subscribe(self._on_state, try_to_connect=True)
        grpc_infer_simple(self.channel)
        self.mark = None

    def _on_state(self, state):
        with self._lock:
            self.states.append(state)

    def _http_get(self):
        self.http.request("GET", "/v2/health/ready")
        r = self.http.getresponse()
        body = r.read()
        assert r.status == 200, (r.status, body)

    def start_watch(self):
        """Call right before the files change: channel state changes from here on are disconnects."""
        deadline = time.monotonic() + NET_TIMEOUT  # state callbacks arrive asynchronously
        while True:
            with self._lock:
                if self.states and self.states[-1] == grpc.ChannelConnectivity.READY:
                    self.mark = len(self.states)
                    return
            assert time.monotonic() < deadline, f"gRPC channel not READY before the change: {self.states}"
            time.sleep(0.05)

    def check(self):
        self._http_get()
        assert self.http.sock is self.sock, "the established HTTP/1.1 connection was closed (client reconnected)"
        assert self.sock.getpeercert(binary_form=True) == self.http_der
        grpc_infer_simple(self.channel)
        with self._lock:
            after = self.states[self.mark :]
        assert all(s == grpc.ChannelConnectivity.READY for s in after), (
            f"the established gRPC connection dropped after the certificate change: states {after}"
        )

    def close(self):
        self.http.close()
        self.channel.unsubscribe(self._on_state)
        self.channel.close()


def test_rotation_by_atomic_replace(certs, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    crt, key = live / "tls.crt", live / "tls.key"
    shutil.copy(certs.server.crt, crt)
    shutil.copy(certs.server.key_path, key)
    new = issue(tmp_path, "rotated", "rampart-rotated", certs.ca, role="server")
    assert new.serial != certs.server.serial
    tls = certs.tls()
    with running(grpc_base_args(example_repo(), None, live_flags(crt, key)), "rampart[tls rotation]", http_tls=tls, grpc_tls=tls) as srv:
        wait_for_served(srv, tls, certs.server.der, 0)
        est = Established(srv, tls)
        try:
            est.start_watch()
            write_atomically(key, new.key_path.read_bytes())
            write_atomically(crt, new.crt.read_bytes())
            wait_for_served(srv, tls, new.der, ROTATE_DEADLINE)
            est.check()
            r = srv.get("/v2/health/ready", timeout=NET_TIMEOUT)
            assert r.status_code == 200
            with srv.grpc_client(timeout=NET_TIMEOUT) as c:
                check_simple(c.infer("simple", simple_grpc_inputs()))
        finally:
            est.close()


def test_rotation_by_symlink_swap(certs, tmp_path):
    """cert-manager / kubelet style: both files change at once through an atomic ..data symlink swap."""
    vol = SymlinkDir(tmp_path / "secret", certs.server.crt.read_bytes(), certs.server.key_path.read_bytes())
    tls = certs.tls()
    with running(grpc_base_args(example_repo(), None, live_flags(vol.crt, vol.key)), "rampart[tls symlink rotation]", http_tls=tls, grpc_tls=tls) as srv:
        wait_for_served(srv, tls, certs.server.der, 0)
        est = Established(srv, tls)
        try:
            for i in range(2):  # two swaps: the second one replaces the first rotated version
                new = issue(tmp_path, f"rotated{i}", f"rampart-rotated-{i}", certs.ca, role="server")
                est.start_watch()
                vol.swap(new.crt.read_bytes(), new.key_path.read_bytes())
                wait_for_served(srv, tls, new.der, ROTATE_DEADLINE)
                est.check()
        finally:
            est.close()


def test_broken_replacement_keeps_old_certificate(certs, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    crt, key = live / "tls.crt", live / "tls.key"
    shutil.copy(certs.server.crt, crt)
    shutil.copy(certs.server.key_path, key)
    new = issue(tmp_path, "rotated", "rampart-rotated", certs.ca, role="server")
    tls = certs.tls()
    with running(grpc_base_args(example_repo(), None, live_flags(crt, key)), "rampart[tls broken rotation]", http_tls=tls, grpc_tls=tls) as srv:
        wait_for_served(srv, tls, certs.server.der, 0)
        est = Established(srv, tls)
        try:
            est.start_watch()
            # 1. garbage certificate file: the old certificate stays.
            write_atomically(crt, b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n")
            watch_still_served(srv, tls, certs.server.der, BROKEN_WATCH)
            # 2. a valid new certificate but the old key (mismatch): the old certificate stays.
            write_atomically(crt, new.crt.read_bytes())
            watch_still_served(srv, tls, certs.server.der, BROKEN_WATCH)
            est.check()
            # 3. the matching key arrives: the new certificate is served.
            write_atomically(key, new.key_path.read_bytes())
            wait_for_served(srv, tls, new.der, ROTATE_DEADLINE)
            est.check()
            # 4. the key file vanishes (deleted, not replaced): the new certificate stays.
            key.unlink()
            watch_still_served(srv, tls, new.der, BROKEN_WATCH)
        finally:
            est.close()


def test_root_certificate_rotation(certs, tmp_path):
    """Mutual TLS: replacing the root file changes which client certificates new handshakes accept; an
    established connection of a client from the old root keeps working."""
    root = tmp_path / "root.crt"
    shutil.copy(certs.ca.crt, root)
    good, other = certs.tls(certs.client), TlsClient(str(certs.ca.crt), str(certs.other_client.crt), str(certs.other_client.key_path))
    args = grpc_base_args(
        example_repo(), None,
        [*tls_flags("http", certs.server, True, root), *tls_flags("grpc", certs.server, True, root), f"--tls-reload-interval-secs={RELOAD_INTERVAL}"],
    )
    with running(args, "rampart[mtls root rotation]", http_tls=good, grpc_tls=good) as srv:
        est = Established(srv, good)
        try:
            est.start_watch()
            with secure_channel(srv, other) as ch:
                expect_grpc_refused(ch)
            write_atomically(root, certs.other_ca.crt.read_bytes())
            deadline = time.monotonic() + ROTATE_DEADLINE
            while True:  # a client of the new root is accepted on both listeners
                try:
                    r = requests.get(f"https://{HOST}:{srv.port}/v2/health/live", timeout=NET_TIMEOUT, **other.requests_kwargs())
                    with secure_channel(srv, other) as ch:
                        grpc_live(ch)
                    if r.status_code == 200:
                        break
                except (requests.exceptions.ConnectionError, grpc.RpcError):
                    pass
                assert time.monotonic() < deadline, f"a client of the new root is still refused {ROTATE_DEADLINE}s after the swap\n{srv.output()}"
                time.sleep(0.3)
            # ... and one of the old root is refused on new connections,
            port = srv.port
            expect_handshake_refused(port, good.ssl_context(["http/1.1"]), f"GET /v2/health/live HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
            with secure_channel(srv, good) as ch:
                expect_grpc_refused(ch)
            # ... while its established connections keep working.
            est.check()
            # The harness's own liveness checks use the old client: switch them over.
            srv.http_tls = srv.grpc_tls = other
            srv.close_grpc()
        finally:
            est.close()


# =======================================================================================================
# perf_analyzer
# =======================================================================================================


def perf_analyzer_bin() -> Path:
    path = _from_env_path("PERF_ANALYZER", "third_party/perf_analyzer/perf_analyzer")
    if not path.is_file():
        pytest.fail(f"perf_analyzer not found at {path}: run scripts/install-perf-analyzer.sh", pytrace=False)
    return path


def run_perf_analyzer(url: str, protocol: str, extra: list[str]) -> str:
    cmd = [
        str(perf_analyzer_bin()), "-m", "simple", "-u", url, "-i", protocol,
        "--concurrency-range", "2", "--measurement-mode", "count_windows",
        "--measurement-request-count", "100", "-s", "1000", "--max-trials", "10", *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{out}"
    m = re.search(r"Throughput: ([0-9.]+) infer/sec", out)
    assert m and float(m.group(1)) > 0, out
    ok = re.search(r"Successful request count: (\d+)", out)
    assert ok and int(ok.group(1)) > 0, out
    assert "error" not in out.lower(), out
    return out


def test_perf_analyzer_grpc_tls(tls_server, certs):
    run_perf_analyzer(
        tls_server.grpc_url, "grpc", ["--ssl-grpc-use-ssl", "true", "--ssl-grpc-root-certifications-file", str(certs.ca.crt)]
    )


def test_perf_analyzer_grpc_mtls(mtls_server, certs):
    run_perf_analyzer(
        mtls_server.grpc_url, "grpc",
        [
            "--ssl-grpc-use-ssl", "true", "--ssl-grpc-root-certifications-file", str(certs.ca.crt),
            "--ssl-grpc-private-key-file", str(certs.client.key_path),
            "--ssl-grpc-certificate-chain-file", str(certs.client.crt),
        ],
    )


def test_perf_analyzer_https(tls_server, certs):
    run_perf_analyzer(
        f"https://{tls_server.url}", "http",
        ["--ssl-https-verify-peer", "1", "--ssl-https-verify-host", "2", "--ssl-https-ca-certificates-file", str(certs.ca.crt)],
    )


def test_perf_analyzer_https_mtls(mtls_server, certs):
    run_perf_analyzer(
        f"https://{mtls_server.url}", "http",
        [
            "--ssl-https-verify-peer", "1", "--ssl-https-verify-host", "2",
            "--ssl-https-ca-certificates-file", str(certs.ca.crt),
            "--ssl-https-client-certificate-file", str(certs.client.crt), "--ssl-https-client-certificate-type", "PEM",
            "--ssl-https-private-key-file", str(certs.client.key_path), "--ssl-https-private-key-type", "PEM",
        ],
    )
