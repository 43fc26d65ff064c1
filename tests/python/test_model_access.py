"""Per-model inference access (`--model-access`), client-certificate access (`--client-cert-access`), the audit
records of both, the per-request count limits (`--max-request-inputs/-outputs/-parameters`) and
`--grpc-max-concurrent-streams`: all Rampart's own, beyond Triton.

Semantics under test (crates/rampart-core/src/access.rs, `rampart --help`, group "Access"):
- `--model-access=<globs>:<key>=<value>` (repeatable; globs comma-separated, `*` and `?`): applies to inference
  only (HTTP POST /v2/models/<m>[/versions/<v>]/infer, gRPC ModelInfer and every message of ModelStreamInfer),
  after the category check (--http-restricted-api / --grpc-restricted-protocol). A model no rule names passes;
  a named model needs the credential of one of the rules naming it. HTTP: header `<key>` (name
  case-insensitive, value exact); gRPC: metadata `triton-grpc-protocol-<key>`. Values may be `@file` / `env:`.
  Refusal: HTTP 403 `{"error":"access to model '<m>' is restricted, expecting header '<key>'"}`, gRPC
  PERMISSION_DENIED with `... expecting header 'triton-grpc-protocol-<key>'` (the first key rule naming the
  model), or `... expecting a verified client certificate` when only certificate rules name it. Refusals come
  before the model lookup (an unknown model named by a rule is refused too) and before the body is read.
- `--model-access=<globs>:client-cert=<kind>:<name>` (cn, dns, uri, email, ip; DNS case-insensitive, the rest
  exact): the verified client certificate of a mutual-TLS connection must carry the name.
- `--client-cert-access=<categories>:<kind>:<name>`: such a certificate may call the categories instead of
  presenting their key. Certificate-only categories refuse others with HTTP 403 / gRPC UNAVAILABLE
  "This API|protocol is restricted, expecting a verified client certificate".
- Audit (`--audit-log-file`): every refusal is a "denied" line (with "model" for model refusals and
  "tls_identity" on mTLS connections); admin calls over mTLS carry tls_identity too.

Certificates are made here with `cryptography`: a CA, a server certificate (SAN IP:127.0.0.1) and client
certificates alice (CN=alice, DNS:alice.example, URI:spiffe://example/alice), bob (CN=bob), upper (CN=Alice,
DNS:ALICE.EXAMPLE, URI:spiffe://example/Alice: same DNS name in other case, CN and URI differing in case only),
carol (CN=carol, email:carol@example.com) and dave (CN=dave, IP:10.0.0.7).

Servers (module-scoped, default engine, examples/models: simple, identity_fp32, identity_bytes, mlp):
- `access_server`: HTTP and gRPC with mutual TLS, the RULES below, model-repository restricted by key or
  CN=bob, statistics and logging by certificate only (dns:alice.example), audit log to a file.
- `mixed_server` (4 params): one listener without mutual TLS (plaintext or server-only TLS), the other with
  it; the same rules. On the non-mutual listener no certificate rule can match.
- `keyed_server`: plaintext, inference restricted by a key on both listeners plus two key-only model rules,
  audit log: category-before-model order, body not read, header details, audit fields, default limits.
- `limits_server`: plaintext, --max-request-inputs/outputs/parameters=2, --grpc-max-concurrent-streams=1.
Short-lived processes for startup errors.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from cryptography import x509
from tritonclient.grpc import service_pb2

from certs import Issued, issue
from conftest import (
    GRPC_CHANNEL_OPTIONS,
    GRPC_TIMEOUT,
    HTTP_TIMEOUT,
    GrpcStub,
    TlsClient,
    assert_live,
    example_repo,
    finish_server,
    grpc_base_args,
    grpc_input,
    grpc_request,
    parse_raw_response,
    raw_bytes,
    raw_exchange,
    run_to_exit,
    simple_grpc_request,
    start_server,
)

HOST = "127.0.0.1"
GRPC_PREFIX = "triton-grpc-protocol-"

# Every secret contains MARK, so the final output / audit checks can look for it.
MARK = "M0delAcc3ss"
TENANT_KEY = "tenant-key"
TENANT_VALUE = f"t-{MARK}:v=1"  # given as env: (':' and '=' inside)
OTHER_KEY = "Other-Key"  # configured in mixed case: messages name it so, the gRPC wire key is lower-case
OTHER_VALUE = f"o-{MARK}-from-file"  # given as @file (written with a trailing newline)
ADMIN_KEY = "admin-key"
ADMIN_VALUE = f"a-{MARK}-admin"
INFER_KEY = "infer-key"
INFER_VALUE = f"i-{MARK}-infer"
TENANT_ENV = "RAMPART_TEST_MODEL_ACCESS_TENANT"

# (globs, credential): ("key", header, value) or ("cert", "<kind>:<name>"), in flag order.
RULES = [
    (("simp?e", "vault-*"), ("key", TENANT_KEY, TENANT_VALUE)),
    (("simple",), ("cert", "uri:spiffe://example/alice")),
    (("identity_fp*",), ("key", OTHER_KEY, OTHER_VALUE)),
    (("identity_fp32",), ("cert", "cn:alice")),
    (("mlp", "cert-only-*"), ("cert", "dns:ALICE.Example")),
    (("mlp",), ("cert", "email:carol@example.com")),
    (("mlp",), ("cert", "ip:10.0.0.7")),
]
# identity_bytes is named by no rule; vault-x and cert-only-x do not exist.
MODELS = ("simple", "identity_fp32", "identity_bytes", "mlp", "vault-x", "cert-only-x")
UNKNOWN = ("vault-x", "cert-only-x")

CLIENTS = {
    "alice": {"cn": "alice", "dns": ["alice.example"], "uri": ["spiffe://example/alice"]},
    "bob": {"cn": "bob"},
    "upper": {"cn": "Alice", "dns": ["ALICE.EXAMPLE"], "uri": ["spiffe://example/Alice"]},
    "carol": {"cn": "carol", "email": ["carol@example.com"]},
    "dave": {"cn": "dave", "ip": ["10.0.0.7"]},
}

# Credential variants: header name as configured -> value (gRPC sends triton-grpc-protocol-<name lower-case>).
CREDS = {
    "none": {},
    "wrong": {TENANT_KEY: TENANT_VALUE.swapcase(), OTHER_KEY: OTHER_VALUE[:-1]},
    "tenant": {TENANT_KEY: TENANT_VALUE},
    "other": {OTHER_KEY: OTHER_VALUE},
}

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)
FP = np.array([[1.5, -2.0, 3.25, 0.0]], dtype=np.float32)
TEXT = [b"ab", b"cd"]
MLP_IN = np.linspace(0.0, 1.0, 784, dtype=np.float32).reshape(1, 784)


# =======================================================================================================
# Certificates
# =======================================================================================================


def client_sans(spec: dict) -> list:
    return (
        [x509.DNSName(v) for v in spec.get("dns", [])]
        + [x509.UniformResourceIdentifier(v) for v in spec.get("uri", [])]
        + [x509.RFC822Name(v) for v in spec.get("email", [])]
        + [x509.IPAddress(ipaddress.ip_address(v)) for v in spec.get("ip", [])]
    )


def names_of(spec: dict) -> frozenset[str]:
    """The identity names a certificate made from `spec` carries (as the server normalizes them)."""
    names = {f"cn:{spec['cn']}"}
    names |= {f"dns:{v.lower()}" for v in spec.get("dns", [])}
    names |= {f"{k}:{v}" for k in ("uri", "email", "ip") for v in spec.get(k, [])}
    return frozenset(names)


@dataclass
class Certs:
    dir: Path
    ca: Issued
    server: Issued
    clients: dict[str, Issued]

    def tls(self, client: str | None = None) -> TlsClient:
        if client is None:
            return TlsClient(str(self.ca.crt))
        c = self.clients[client]
        return TlsClient(str(self.ca.crt), str(c.crt), str(c.key_path))


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    d = tmp_path_factory.mktemp("model_access_certs")
    ca = issue(d, "ca", "Model Access Test CA", role="ca")
    server = issue(d, "server", "rampart-server", ca, role="server")
    clients = {name: issue(d, name, spec["cn"], ca, role="client", sans=client_sans(spec)) for name, spec in CLIENTS.items()}
    return Certs(d, ca, server, clients)


# =======================================================================================================
# Expected behaviour (the oracle) and request helpers
# =======================================================================================================


def normalize_identity(text: str) -> str:
    kind, _, value = text.partition(":")
    return f"dns:{value.lower()}" if kind == "dns" else text


def expected_refusal(model: str, headers: dict, names: frozenset) -> tuple[bool, str | None]:
    """(refused, header): whether RULES refuse `model` for these credentials, and the header the refusal
    names (the first key rule naming the model; None when only certificate rules name it)."""
    lower = {k.lower(): v for k, v in headers.items()}
    matched = [cred for globs, cred in RULES if any(fnmatch.fnmatchcase(model, g) for g in globs)]
    if not matched:
        return False, None
    first_header = None
    for cred in matched:
        if cred[0] == "key":
            first_header = first_header or cred[1]
            if lower.get(cred[1].lower()) == cred[2]:
                return False, None
        elif normalize_identity(cred[1]) in names:
            return False, None
    return True, first_header


def refusal_message(model: str, header: str | None, proto: str) -> str:
    if header is None:
        return f"access to model '{model}' is restricted, expecting a verified client certificate"
    wire = header if proto == "http" else GRPC_PREFIX + header
    return f"access to model '{model}' is restricted, expecting header '{wire}'"


def compact(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def unknown_model_message(model: str) -> str:
    return f"Request for unknown model: '{model}' is not found"


def http_body(model: str, **extra) -> bytes:
    if model == "identity_fp32":
        inputs = [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": FP.reshape(-1).tolist()}]
    elif model == "identity_bytes":
        inputs = [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2], "data": [t.decode() for t in TEXT]}]
    elif model == "mlp":
        inputs = [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": MLP_IN.reshape(-1).tolist()}]
    else:  # simple and the unknown models
        inputs = [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": A.reshape(-1).tolist()},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": B.reshape(-1).tolist()},
        ]
    return json.dumps({"inputs": inputs, **extra}).encode()


def check_http_ok(model: str, status: int, content: bytes, what: str) -> None:
    assert status == 200, f"{what}: expected 200, got {status} {content[:500]!r}"
    out = {o["name"]: o for o in json.loads(content)["outputs"]}
    if model == "simple":
        assert out["OUTPUT0"]["data"] == (A + B).reshape(-1).tolist(), (what, out)
        assert out["OUTPUT1"]["data"] == (A - B).reshape(-1).tolist(), (what, out)
    elif model == "identity_fp32":
        assert out["OUTPUT0"]["data"] == FP.reshape(-1).tolist(), (what, out)
    elif model == "identity_bytes":
        assert out["OUTPUT0"]["data"] == [t.decode() for t in TEXT], (what, out)
    elif model == "mlp":
        assert out["output"]["shape"] == [1, 10], (what, out)
    else:
        raise AssertionError(model)


def grpc_req(model: str, id: str = ""):
    if model == "identity_fp32":
        return grpc_request(model, [grpc_input("INPUT0", "FP32", FP.shape)], [raw_bytes(FP, "FP32")], id=id)
    if model == "identity_bytes":
        return grpc_request(model, [grpc_input("INPUT0", "BYTES", [1, 2])], [raw_bytes(np.array(TEXT, dtype=object), "BYTES")], id=id)
    if model == "mlp":
        return grpc_request(model, [grpc_input("input", "FP32", MLP_IN.shape)], [raw_bytes(MLP_IN, "FP32")], id=id)
    req = simple_grpc_request(A, B, id=id)
    req.model_name = model
    return req


def check_grpc_ok(model: str, resp, what: str) -> None:
    from tritonclient.grpc import InferResult

    assert resp.model_name == model, (what, resp.model_name)
    r = InferResult(resp)
    if model == "simple":
        np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), A + B, err_msg=what)
        np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), A - B, err_msg=what)
    elif model == "identity_fp32":
        np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), FP, err_msg=what)
    elif model == "identity_bytes":
        assert list(r.as_numpy("OUTPUT0").reshape(-1)) == TEXT, what
    elif model == "mlp":
        assert r.as_numpy("output").shape == (1, 10), what
    else:
        raise AssertionError(model)


def grpc_md(headers: dict) -> list[tuple[str, str]]:
    return [(GRPC_PREFIX + k.lower(), v) for k, v in headers.items()]


def grpc_outcome(fn):
    """('ok', response) or (grpc.StatusCode, details)."""
    try:
        return "ok", fn()
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


class HttpEndpoint:
    """One HTTP listener as seen by one client (plaintext, TLS, or mTLS with a client certificate)."""

    def __init__(self, srv, tls: TlsClient | None):
        self.srv = srv
        self.base = f"{'https' if tls else 'http'}://{HOST}:{srv.port}"
        self.kwargs = tls.requests_kwargs() if tls else {}

    def call(self, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
        hdrs = dict(headers or {})
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        r = requests.request(method, self.base + path, headers=hdrs, data=body, timeout=HTTP_TIMEOUT, **self.kwargs)
        return r.status_code, r.content

    def infer(self, model: str, headers: dict, version: str | None = None, body: bytes | None = None):
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        return self.call("POST", path, headers, http_body(model) if body is None else body)


def grpc_channel_for(srv, tls: TlsClient | None):
    if tls is None:
        return grpc.insecure_channel(srv.grpc_url, options=GRPC_CHANNEL_OPTIONS)
    return grpc.secure_channel(srv.grpc_url, tls.grpc_credentials(), options=GRPC_CHANNEL_OPTIONS)


def check_http_model(ep: HttpEndpoint, model: str, headers: dict, names: frozenset, what: str) -> None:
    status, content = ep.infer(model, headers)
    refused, header = expected_refusal(model, headers, names)
    what = f"{what}: HTTP {model} with {sorted(headers)}"
    if refused:
        want = compact({"error": refusal_message(model, header, "http")})
        assert (status, content) == (403, want), f"{what}: expected 403 {want!r}, got {status} {content[:500]!r}"
    elif model in UNKNOWN:
        want = compact({"error": unknown_model_message(model)})
        assert (status, content) == (404, want), f"{what}: expected 404 {want!r}, got {status} {content[:500]!r}"
    else:
        check_http_ok(model, status, content, what)


def check_grpc_model(stub, model: str, headers: dict, names: frozenset, what: str) -> None:
    code, got = grpc_outcome(lambda: stub.ModelInfer(grpc_req(model), metadata=grpc_md(headers)))
    refused, header = expected_refusal(model, headers, names)
    what = f"{what}: gRPC {model} with {sorted(headers)}"
    if refused:
        want = (grpc.StatusCode.PERMISSION_DENIED, refusal_message(model, header, "grpc"))
        assert (code, got) == want, f"{what}: expected {want}, got {code} {str(got)[:500]!r}"
    elif model in UNKNOWN:
        want = (grpc.StatusCode.NOT_FOUND, unknown_model_message(model))
        assert (code, got) == want, f"{what}: expected {want}, got {code} {str(got)[:500]!r}"
    else:
        assert code == "ok", f"{what}: expected success, got {code} {got!r}"
        check_grpc_ok(model, got, what)


class Audit:
    """Reads the lines an audit log file gained since `mark()`."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def since(self, settle: float = 0.2) -> list[dict]:
        time.sleep(settle)  # records are written as the request is answered; give the writer a moment
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def find(events: list[dict], **kw) -> list[dict]:
    return [e for e in events if all(e.get(k) == v for k, v in kw.items())]


# =======================================================================================================
# Servers
# =======================================================================================================


@pytest.fixture(scope="module")
def secret_file(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("model_access_secrets") / "other-key.txt"
    f.write_text(OTHER_VALUE + "\n")  # one trailing newline is removed
    return f


def rule_flags(secret_file: Path) -> list[str]:
    flags = []
    for globs, cred in RULES:
        g = ",".join(globs)
        if cred[0] == "cert":
            flags.append(f"--model-access={g}:client-cert={cred[1]}")
        elif cred[1] == TENANT_KEY:
            flags.append(f"--model-access={g}:{TENANT_KEY}=env:{TENANT_ENV}")
        else:
            flags.append(f"--model-access={g}:{OTHER_KEY}=@{secret_file}")
    return flags


def tls_flags(proto: str, certs: Certs, mode: str) -> list[str]:
    """mode: plain, tls (server-authenticated) or mtls (client certificates signed by the test CA)."""
    if mode == "plain":
        return []
    files = [f"--{proto}-server-cert={certs.server.crt}", f"--{proto}-server-key={certs.server.key_path}"]
    if mode == "tls":
        return [f"--{proto}-use-ssl=true", *files]
    return [f"--{proto}-use-ssl-mutual=true", *files, f"--{proto}-root-cert={certs.ca.crt}"]


def start_with_env(args: list[str], label: str, **kw):
    with pytest.MonkeyPatch.context() as mp:  # the child inherits the environment at start
        mp.setenv(TENANT_ENV, TENANT_VALUE)
        return start_server(args, label, **kw)


@pytest.fixture(scope="module")
def access_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model_access_audit") / "access.jsonl"


@pytest.fixture(scope="module")
def access_server(certs, secret_file, access_log):
    extra = [
        *tls_flags("http", certs, "mtls"),
        *tls_flags("grpc", certs, "mtls"),
        *rule_flags(secret_file),
        f"--http-restricted-api=model-repository:{ADMIN_KEY}={ADMIN_VALUE}",
        f"--grpc-restricted-protocol=model-repository:{ADMIN_KEY}={ADMIN_VALUE}",
        "--client-cert-access=model-repository:cn:bob",
        "--client-cert-access=statistics,logging:dns:alice.example",
        f"--audit-log-file={access_log}",
        "--log-verbose=1",
    ]
    tls = certs.tls("alice")
    srv = start_with_env(grpc_base_args(example_repo(), None, extra), "rampart[model access, mTLS]", http_tls=tls, grpc_tls=tls)
    yield srv
    finish_server(srv)


MIXED = ("http-plain", "http-tls", "grpc-plain", "grpc-tls")


@pytest.fixture(scope="module", params=MIXED)
def mixed_server(request, certs, secret_file):
    """The listener named by the param has no mutual TLS; the other one has."""
    proto, mode = request.param.split("-")
    other = "grpc" if proto == "http" else "http"
    extra = [
        *tls_flags(proto, certs, mode),
        *tls_flags(other, certs, "mtls"),
        *rule_flags(secret_file),
        "--client-cert-access=statistics:cn:alice",
    ]
    alice = certs.tls("alice")
    open_tls = None if mode == "plain" else certs.tls()
    tls = {proto: open_tls, other: alice}
    srv = start_with_env(
        grpc_base_args(example_repo(), None, extra), f"rampart[model access, {request.param}]",
        http_tls=tls["http"], grpc_tls=tls["grpc"],
    )
    srv.open_proto, srv.open_tls, srv.mutual_proto = proto, open_tls, other
    yield srv
    finish_server(srv)


@pytest.fixture(scope="module")
def keyed_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model_access_keyed_audit") / "keyed.jsonl"


@pytest.fixture(scope="module")
def keyed_server(keyed_log):
    extra = [
        f"--http-restricted-api=inference:{INFER_KEY}={INFER_VALUE}",
        f"--grpc-restricted-protocol=inference:{INFER_KEY}={INFER_VALUE}",
        f"--model-access=simple,vault-*:{TENANT_KEY}={TENANT_VALUE}",
        f"--model-access=identity_fp32:{OTHER_KEY}={OTHER_VALUE}",
        f"--audit-log-file={keyed_log}",
    ]
    srv = start_server(grpc_base_args(example_repo(), None, extra), "rampart[model access, keys]")
    yield srv
    finish_server(srv)


@pytest.fixture(scope="module")
def limits_server():
    extra = [
        "--max-request-inputs=2",
        "--max-request-outputs=2",
        "--max-request-parameters=2",
        "--grpc-max-concurrent-streams=1",
    ]
    srv = start_server(grpc_base_args(example_repo(), None, extra), "rampart[request limits]")
    yield srv
    finish_server(srv)


MODULE_SERVERS = ("access_server", "mixed_server", "keyed_server", "limits_server")


@pytest.fixture(autouse=True)
def _module_servers_still_serving(request):
    servers = [request.getfixturevalue(n) for n in request.fixturenames if n in MODULE_SERVERS]
    for srv in servers:
        assert srv.alive(), f"{srv.label} had already died before this test\n{srv.output()}"
    yield
    for srv in servers:
        assert_live(srv)


@pytest.fixture(scope="module")
def channels():
    """Shared gRPC channels, keyed by (server label, client); closed at the end of the module."""
    cache: dict = {}
    yield cache
    for ch in cache.values():
        ch.close()


def stub_for(channels, srv, tls: TlsClient | None, who: str) -> GrpcStub:
    key = (srv.label, srv.grpc_port, who)
    if key not in channels:
        channels[key] = grpc_channel_for(srv, tls)
    return GrpcStub(channels[key], GRPC_TIMEOUT)


# =======================================================================================================
# The matrix on mutual TLS: client certificate × credentials × model, both protocols
# =======================================================================================================


def test_oracle_sanity():
    """The expectations the matrix is built from, spelled out for the main cases."""
    none = frozenset()
    alice, bob, upper = (names_of(CLIENTS[c]) for c in ("alice", "bob", "upper"))
    assert expected_refusal("identity_bytes", {}, none) == (False, None)
    assert expected_refusal("simple", {}, none) == (True, TENANT_KEY)
    assert expected_refusal("simple", {"TENANT-KEY": TENANT_VALUE}, none) == (False, None)
    assert expected_refusal("simple", {OTHER_KEY: OTHER_VALUE}, bob) == (True, TENANT_KEY)
    assert expected_refusal("simple", {}, alice) == (False, None)
    assert expected_refusal("simple", {}, upper) == (True, TENANT_KEY)
    assert expected_refusal("identity_fp32", {TENANT_KEY: TENANT_VALUE}, bob) == (True, OTHER_KEY)
    assert expected_refusal("identity_fp32", {}, upper) == (True, OTHER_KEY)
    assert expected_refusal("mlp", {TENANT_KEY: TENANT_VALUE, OTHER_KEY: OTHER_VALUE}, bob) == (True, None)
    assert expected_refusal("mlp", {}, upper) == (False, None)
    assert expected_refusal("vault-x", {}, alice) == (True, TENANT_KEY)
    assert expected_refusal("cert-only-x", {}, alice) == (False, None)


@pytest.mark.parametrize("cred", list(CREDS))
@pytest.mark.parametrize("client", list(CLIENTS))
def test_http_mtls_matrix(access_server, certs, client, cred):
    ep = HttpEndpoint(access_server, certs.tls(client))
    for model in MODELS:
        check_http_model(ep, model, CREDS[cred], names_of(CLIENTS[client]), f"mTLS {client}/{cred}")


@pytest.mark.parametrize("cred", list(CREDS))
@pytest.mark.parametrize("client", list(CLIENTS))
def test_grpc_mtls_matrix(access_server, certs, channels, client, cred):
    stub = stub_for(channels, access_server, certs.tls(client), client)
    for model in MODELS:
        check_grpc_model(stub, model, CREDS[cred], names_of(CLIENTS[client]), f"mTLS {client}/{cred}")


# =======================================================================================================
# The matrix without mutual TLS (plaintext, server-only TLS): no certificate rule can match
# =======================================================================================================


def test_matrix_without_mutual_tls(mixed_server, certs, channels):
    srv = mixed_server
    label = f"{srv.open_proto} without mTLS ({srv.label})"
    for cred, headers in CREDS.items():
        for model in MODELS:
            if srv.open_proto == "http":
                check_http_model(HttpEndpoint(srv, srv.open_tls), model, headers, frozenset(), f"{label} {cred}")
            else:
                stub = stub_for(channels, srv, srv.open_tls, "no client certificate")
                check_grpc_model(stub, model, headers, frozenset(), f"{label} {cred}")
    # Both keys at once open every key-named model, never a certificate-only one.
    both = {**CREDS["tenant"], **CREDS["other"]}
    for model in ("simple", "identity_fp32", "identity_bytes"):
        assert expected_refusal(model, both, frozenset()) == (False, None)
    assert expected_refusal("mlp", both, frozenset()) == (True, None)


def test_mutual_listener_of_mixed_server_sees_the_certificate(mixed_server, certs, channels):
    """The same server's mTLS listener: alice's certificate opens simple, identity_fp32 and mlp without keys."""
    srv = mixed_server
    alice = names_of(CLIENTS["alice"])
    for model in ("simple", "identity_fp32", "mlp", "cert-only-x"):
        if srv.mutual_proto == "http":
            check_http_model(HttpEndpoint(srv, certs.tls("alice")), model, {}, alice, "mutual listener")
        else:
            check_grpc_model(stub_for(channels, srv, certs.tls("alice"), "alice"), model, {}, alice, "mutual listener")


def test_certificate_only_category_without_mutual_tls(mixed_server, certs, channels):
    """statistics is open to CN=alice only: on the non-mutual listener nobody passes, with any header."""
    srv = mixed_server
    hdrs = {ADMIN_KEY: ADMIN_VALUE, **CREDS["tenant"]}
    if srv.open_proto == "http":
        ep = HttpEndpoint(srv, srv.open_tls)
        for h in ({}, hdrs):
            status, body = ep.call("GET", "/v2/models/stats", h)
            want = compact({"error": "This API is restricted, expecting a verified client certificate"})
            assert (status, body) == (403, want), (status, body)
        status, _ = HttpEndpoint(srv, srv.open_tls).call("GET", "/v2/models/simple/config")
        assert status == 200  # other categories stay open
        stub = stub_for(channels, srv, certs.tls("alice"), "alice")
        assert stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name="simple")).model_stats
    else:
        stub = stub_for(channels, srv, srv.open_tls, "no client certificate")
        for h in ({}, hdrs):
            outcome = grpc_outcome(lambda: stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name="simple"), metadata=grpc_md(h)))
            assert outcome == (grpc.StatusCode.UNAVAILABLE, "This protocol is restricted, expecting a verified client certificate"), outcome
        status, _ = HttpEndpoint(srv, certs.tls("alice")).call("GET", "/v2/models/stats")
        assert status == 200


# =======================================================================================================
# Details on mutual TLS
# =======================================================================================================


def test_http_versioned_path_and_tritonclient(access_server, certs):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    bob = HttpEndpoint(access_server, certs.tls("bob"))
    status, body = bob.infer("simple", {}, version="1")
    assert (status, body) == (403, compact({"error": refusal_message("simple", TENANT_KEY, "http")}))
    check_http_ok("simple", *bob.infer("simple", CREDS["tenant"], version="1"), "versioned, with key")
    status, body = bob.infer("identity_fp32", CREDS["tenant"], version="1")
    assert (status, body) == (403, compact({"error": refusal_message("identity_fp32", OTHER_KEY, "http")}))

    c = httpclient.InferenceServerClient(url=access_server.url, connection_timeout=10.0, network_timeout=HTTP_TIMEOUT, **certs.tls("bob").http_client_kwargs())
    try:
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(A, binary_data=True)
        inputs[1].set_data_from_numpy(B, binary_data=True)
        with pytest.raises(InferenceServerException) as e:
            c.infer("simple", inputs)
        assert refusal_message("simple", TENANT_KEY, "http") in str(e.value), str(e.value)
        r = c.infer("simple", inputs, headers=dict(CREDS["tenant"]))  # a copy: tritonclient adds its own headers to it
        np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), A + B)
    finally:
        c.close()


def test_grpc_tritonclient_unary(access_server, certs):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    c = grpcclient.InferenceServerClient(url=access_server.grpc_url, **certs.tls("bob").grpc_client_kwargs())
    try:
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(A)
        inputs[1].set_data_from_numpy(B)
        with pytest.raises(InferenceServerException) as e:
            c.infer("simple", inputs, client_timeout=GRPC_TIMEOUT)
        assert e.value.status() == "StatusCode.PERMISSION_DENIED", e.value
        assert e.value.message() == refusal_message("simple", TENANT_KEY, "grpc"), e.value.message()
        r = c.infer("simple", inputs, headers={GRPC_PREFIX + TENANT_KEY: TENANT_VALUE}, client_timeout=GRPC_TIMEOUT)
        np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), A - B)
    finally:
        c.close()


def test_grpc_stream_refusals_per_message(access_server, certs, channels):
    """Without triton_grpc_error, each refused message gets the refusal as its error and the stream goes on;
    the stream's metadata is the credential of every message."""
    stub = stub_for(channels, access_server, certs.tls("bob"), "bob")
    bob = names_of(CLIENTS["bob"])
    order = ["simple", "identity_fp32", "identity_bytes", "mlp", "vault-x", "cert-only-x", "simple"]
    for cred in ("none", "tenant", "other"):
        headers = CREDS[cred]
        reqs = [grpc_req(m, id=f"{cred}-{i}") for i, m in enumerate(order)]
        out = list(stub.ModelStreamInfer(iter(reqs), metadata=grpc_md(headers)))
        assert len(out) == len(order), out
        for i, (model, r) in enumerate(zip(order, out)):
            refused, header = expected_refusal(model, headers, bob)
            what = f"stream {cred} #{i} {model}"
            if refused:
                assert r.error_message == refusal_message(model, header, "grpc"), (what, r)
            elif model in UNKNOWN:
                assert r.error_message == unknown_model_message(model), (what, r)
            else:
                assert r.error_message == "", (what, r.error_message)
                assert r.infer_response.id == f"{cred}-{i}", (what, r.infer_response.id)
                check_grpc_ok(model, r.infer_response, what)


def test_grpc_stream_with_triton_grpc_error_ends_on_refusal(access_server, certs, channels):
    stub = stub_for(channels, access_server, certs.tls("bob"), "bob")
    md = [("triton_grpc_error", "true"), *grpc_md(CREDS["tenant"])]
    responses = stub.ModelStreamInfer(iter([grpc_req("simple", id="a"), grpc_req("identity_fp32", id="b"), grpc_req("simple", id="c")]), metadata=md)
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for r in responses:
            got.append(r)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, (e.value.code(), e.value.details())
    assert e.value.details() == refusal_message("identity_fp32", OTHER_KEY, "grpc")
    assert [r.infer_response.id for r in got] == ["a"], got


def test_grpc_stream_with_tritonclient_callbacks(access_server, certs):
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(url=access_server.grpc_url, **certs.tls("carol").grpc_client_kwargs())
    results: queue.Queue = queue.Queue()
    try:
        c.start_stream(callback=lambda result, error: results.put((result, error)), stream_timeout=GRPC_TIMEOUT,
                       headers={GRPC_PREFIX + OTHER_KEY.lower(): OTHER_VALUE})
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(A)
        inputs[1].set_data_from_numpy(B)
        fp = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        fp.set_data_from_numpy(FP)
        mlp = grpcclient.InferInput("input", [1, 784], "FP32")
        mlp.set_data_from_numpy(MLP_IN)
        c.async_stream_infer("simple", inputs, request_id="1")  # carol has no tenant key nor alice's URI
        c.async_stream_infer("identity_fp32", [fp], request_id="2")  # Other-Key
        c.async_stream_infer("mlp", [mlp], request_id="3")  # email:carol@example.com
        got = [results.get(timeout=GRPC_TIMEOUT) for _ in range(3)]
    finally:
        c.stop_stream()
        c.close()
    (r1, e1), (r2, e2), (r3, e3) = got
    assert r1 is None and e1 is not None and e1.message() == refusal_message("simple", TENANT_KEY, "grpc"), (r1, e1)
    assert e2 is None and r2.get_response().id == "2", e2
    np.testing.assert_array_equal(r2.as_numpy("OUTPUT0"), FP)
    assert e3 is None and r3.as_numpy("output").shape == (1, 10), e3


def test_http_header_name_case_and_exact_value(access_server, certs, secret_file):
    bob = HttpEndpoint(access_server, certs.tls("bob"))
    for name in (TENANT_KEY.upper(), "Tenant-Key", TENANT_KEY):
        check_http_ok("simple", *bob.infer("simple", {name: TENANT_VALUE}), f"header name {name}")
    check_http_ok("identity_fp32", *bob.infer("identity_fp32", {OTHER_KEY.lower(): OTHER_VALUE}), "lower-case Other-Key")
    denied = (403, compact({"error": refusal_message("simple", TENANT_KEY, "http")}))
    for bad in (TENANT_VALUE.swapcase(), TENANT_VALUE[:-1], TENANT_VALUE + "x", TENANT_VALUE + TENANT_VALUE, f"env:{TENANT_ENV}"):
        assert bob.infer("simple", {TENANT_KEY: bad}) == denied, bad
    # The gRPC wire name is not the HTTP header.
    assert bob.infer("simple", {GRPC_PREFIX + TENANT_KEY: TENANT_VALUE}) == denied
    # The @file content without its trailing newline, not the flag text, nor the content with the newline.
    check_http_ok("identity_fp32", *bob.infer("identity_fp32", {OTHER_KEY: OTHER_VALUE}), "@file value")
    denied = (403, compact({"error": refusal_message("identity_fp32", OTHER_KEY, "http")}))
    assert bob.infer("identity_fp32", {OTHER_KEY: f"@{secret_file}"}) == denied


def test_grpc_metadata_key_needs_the_prefix(access_server, certs, channels):
    stub = stub_for(channels, access_server, certs.tls("bob"), "bob")
    want = (grpc.StatusCode.PERMISSION_DENIED, refusal_message("simple", TENANT_KEY, "grpc"))
    for md in ([(TENANT_KEY, TENANT_VALUE)], [(GRPC_PREFIX + TENANT_KEY, TENANT_VALUE.swapcase())], [(GRPC_PREFIX + TENANT_KEY, TENANT_VALUE + "x")]):
        assert grpc_outcome(lambda: stub.ModelInfer(grpc_req("simple"), metadata=md)) == want, md
    code, resp = grpc_outcome(lambda: stub.ModelInfer(grpc_req("identity_fp32"), metadata=[(GRPC_PREFIX + "other-key", OTHER_VALUE)]))
    assert code == "ok", (code, resp)
    outcome = grpc_outcome(lambda: stub.ModelInfer(grpc_req("identity_fp32"), metadata=[("other-key", OTHER_VALUE)]))
    assert outcome == (grpc.StatusCode.PERMISSION_DENIED, refusal_message("identity_fp32", OTHER_KEY, "grpc")), outcome


GLOB_CASES = [
    # (model, refused, header): `?` is exactly one character, `*` any run (also empty), case matters.
    ("simpXe", True, TENANT_KEY),
    ("simpe", False, None),
    ("simplee", False, None),
    ("Simple", False, None),
    ("vault-", True, TENANT_KEY),
    ("vault-a-b", True, TENANT_KEY),
    ("Vault-x", False, None),
    ("xvault-1", False, None),
    ("identity_fp", True, OTHER_KEY),
    ("identity_fp64", True, OTHER_KEY),
    ("cert-only-", True, None),
    ("cert-only", False, None),
]


def test_glob_semantics(access_server, certs, channels):
    """Unknown models probe the globs: a named one is refused, an unnamed one reaches the lookup (404)."""
    bob = names_of(CLIENTS["bob"])
    ep = HttpEndpoint(access_server, certs.tls("bob"))
    stub = stub_for(channels, access_server, certs.tls("bob"), "bob")
    for model, refused, header in GLOB_CASES:
        assert expected_refusal(model, {}, bob) == (refused, header), model
        status, body = ep.infer(model, {})
        want = (403, refusal_message(model, header, "http")) if refused else (404, unknown_model_message(model))
        assert (status, json.loads(body)) == (want[0], {"error": want[1]}), (model, status, body)
        outcome = grpc_outcome(lambda: stub.ModelInfer(grpc_req(model)))
        want = (grpc.StatusCode.PERMISSION_DENIED, refusal_message(model, header, "grpc")) if refused else (grpc.StatusCode.NOT_FOUND, unknown_model_message(model))
        assert outcome == want, (model, outcome)
    # A version in the request changes nothing.
    req = grpc_req("simple")
    req.model_version = "1"
    assert grpc_outcome(lambda: stub.ModelInfer(req)) == (grpc.StatusCode.PERMISSION_DENIED, refusal_message("simple", TENANT_KEY, "grpc"))
    req.model_version = "1"
    code, resp = grpc_outcome(lambda: stub.ModelInfer(req, metadata=grpc_md(CREDS["tenant"])))
    assert code == "ok", (code, resp)


def test_model_access_does_not_touch_other_categories(access_server, certs, channels):
    """Metadata, readiness and config of a protected model answer without its credential."""
    bob = HttpEndpoint(access_server, certs.tls("bob"))
    for path in ("/v2/models/simple", "/v2/models/simple/ready", "/v2/models/simple/config", "/v2/models/mlp/config"):
        status, body = bob.call("GET", path)
        assert status == 200, (path, status, body)
    stub = stub_for(channels, access_server, certs.tls("bob"), "bob")
    assert stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="mlp")).name == "mlp"
    assert stub.ModelReady(service_pb2.ModelReadyRequest(name="simple")).ready
    assert stub.ModelConfig(service_pb2.ModelConfigRequest(name="identity_fp32")).config.name == "identity_fp32"


# =======================================================================================================
# --client-cert-access on mutual TLS
# =======================================================================================================


def test_http_client_cert_access(access_server, certs):
    ep = {c: HttpEndpoint(access_server, certs.tls(c)) for c in ("alice", "bob", "upper", "carol")}
    key_denied = (403, compact({"error": f"This API is restricted, expecting header '{ADMIN_KEY}'"}))
    cert_denied = (403, compact({"error": "This API is restricted, expecting a verified client certificate"}))
    # model-repository: admin key or CN=bob.
    assert ep["bob"].call("POST", "/v2/repository/index", {}, b"{}")[0] == 200
    assert ep["bob"].call("POST", "/v2/repository/index", {ADMIN_KEY: "wrong"}, b"{}")[0] == 200
    assert ep["alice"].call("POST", "/v2/repository/index", {}, b"{}") == key_denied
    assert ep["alice"].call("POST", "/v2/repository/index", {ADMIN_KEY: ADMIN_VALUE}, b"{}")[0] == 200
    assert ep["carol"].call("POST", "/v2/repository/index", {ADMIN_KEY: ADMIN_VALUE.upper()}, b"{}") == key_denied
    # statistics and logging: dns:alice.example only (DNS compared case-insensitively).
    for who in ("alice", "upper"):
        status, body = ep[who].call("GET", "/v2/models/stats")
        assert status == 200 and b"model_stats" in body, (who, status, body)
        status, body = ep[who].call("GET", "/v2/logging")
        assert status == 200 and json.loads(body)["log_format"] == "default", (who, status, body)  # the normal handler
    for who in ("bob", "carol"):
        assert ep[who].call("GET", "/v2/models/stats") == cert_denied, who
        assert ep[who].call("GET", "/v2/models/simple/stats", {ADMIN_KEY: ADMIN_VALUE}) == cert_denied, who
        assert ep[who].call("GET", "/v2/logging") == cert_denied, who
    # A category certificate is not a model credential: bob may administer, not infer on simple.
    assert ep["bob"].infer("simple", {})[0] == 403


def test_grpc_client_cert_access(access_server, certs, channels):
    stubs = {c: stub_for(channels, access_server, certs.tls(c), c) for c in ("alice", "bob", "upper", "carol")}
    index = lambda who, md=(): grpc_outcome(lambda: stubs[who].RepositoryIndex(service_pb2.RepositoryIndexRequest(), metadata=list(md)))
    stats = lambda who, md=(): grpc_outcome(lambda: stubs[who].ModelStatistics(service_pb2.ModelStatisticsRequest(name="simple"), metadata=list(md)))
    logs = lambda who: grpc_outcome(lambda: stubs[who].LogSettings(service_pb2.LogSettingsRequest()))
    key_denied = (grpc.StatusCode.UNAVAILABLE, f"This protocol is restricted, expecting header '{GRPC_PREFIX}{ADMIN_KEY}'")
    cert_denied = (grpc.StatusCode.UNAVAILABLE, "This protocol is restricted, expecting a verified client certificate")
    admin_md = [(GRPC_PREFIX + ADMIN_KEY, ADMIN_VALUE)]
    assert index("bob")[0] == "ok"
    assert index("bob", [(GRPC_PREFIX + ADMIN_KEY, "wrong")])[0] == "ok"
    assert index("alice") == key_denied
    assert index("alice", admin_md)[0] == "ok"
    assert index("carol", [(ADMIN_KEY, ADMIN_VALUE)]) == key_denied
    for who in ("alice", "upper"):
        code, resp = stats(who)
        assert code == "ok" and resp.model_stats, (who, code, resp)
        code, resp = logs(who)
        assert code == "ok" and resp.settings["log_format"].string_param == "default", (who, code, resp)  # the normal handler
    for who in ("bob", "carol"):
        assert stats(who) == cert_denied, who
        assert stats(who, admin_md) == cert_denied, who
        assert logs(who) == cert_denied, who


# =======================================================================================================
# Category check first, refusal before the body, unknown models (plaintext, keys only)
# =======================================================================================================

INFER_HDR = {INFER_KEY: INFER_VALUE}


def test_http_category_check_runs_first(keyed_server):
    ep = HttpEndpoint(keyed_server, None)
    cat_denied = (403, compact({"error": f"This API is restricted, expecting header '{INFER_KEY}'"}))
    assert ep.infer("simple", {}) == cat_denied
    assert ep.infer("simple", CREDS["tenant"]) == cat_denied  # the model key does not stand in for the category's
    assert ep.infer("identity_bytes", {}) == cat_denied
    assert ep.infer("simple", INFER_HDR) == (403, compact({"error": refusal_message("simple", TENANT_KEY, "http")}))
    check_http_ok("simple", *ep.infer("simple", {**INFER_HDR, **CREDS["tenant"]}), "both keys")
    check_http_ok("identity_bytes", *ep.infer("identity_bytes", INFER_HDR), "unnamed model, category key")
    assert ep.infer("identity_fp32", {**INFER_HDR, **CREDS["tenant"]}) == (403, compact({"error": refusal_message("identity_fp32", OTHER_KEY, "http")}))
    check_http_ok("identity_fp32", *ep.infer("identity_fp32", {**INFER_HDR, **CREDS["other"]}), "other key")
    # mlp is named by no rule here.
    check_http_ok("mlp", *ep.infer("mlp", INFER_HDR), "mlp")


def test_grpc_category_check_runs_first(keyed_server, channels):
    stub = stub_for(channels, keyed_server, None, "plain")
    call = lambda model, h: grpc_outcome(lambda: stub.ModelInfer(grpc_req(model), metadata=grpc_md(h)))
    cat_denied = (grpc.StatusCode.UNAVAILABLE, f"This protocol is restricted, expecting header '{GRPC_PREFIX}{INFER_KEY}'")
    assert call("simple", {}) == cat_denied
    assert call("simple", CREDS["tenant"]) == cat_denied
    assert call("identity_bytes", {}) == cat_denied
    assert call("simple", INFER_HDR) == (grpc.StatusCode.PERMISSION_DENIED, refusal_message("simple", TENANT_KEY, "grpc"))
    code, resp = call("simple", {**INFER_HDR, **CREDS["tenant"]})
    assert code == "ok", (code, resp)
    check_grpc_ok("simple", resp, "both keys")
    code, resp = call("identity_bytes", INFER_HDR)
    assert code == "ok", (code, resp)
    # Streams: without the category key the whole stream is refused; with it, per message.
    reqs = lambda: iter([grpc_req("simple", id="0"), grpc_req("identity_bytes", id="1")])
    outcome = grpc_outcome(lambda: list(stub.ModelStreamInfer(reqs(), metadata=grpc_md(CREDS["tenant"]))))
    assert outcome == cat_denied, outcome
    out = list(stub.ModelStreamInfer(reqs(), metadata=grpc_md(INFER_HDR)))
    assert [r.error_message for r in out] == [refusal_message("simple", TENANT_KEY, "grpc"), ""], out
    assert out[1].infer_response.id == "1"


def test_unknown_model_named_by_a_rule_is_refused_first(keyed_server, channels):
    """No existence oracle: without the key, vault-x (absent) looks like simple (present); with it, 404."""
    ep = HttpEndpoint(keyed_server, None)
    assert ep.infer("vault-x", INFER_HDR) == (403, compact({"error": refusal_message("vault-x", TENANT_KEY, "http")}))
    assert ep.infer("vault-does-not-exist", INFER_HDR, version="7") == (
        403, compact({"error": refusal_message("vault-does-not-exist", TENANT_KEY, "http")})
    )
    assert ep.infer("vault-x", {**INFER_HDR, **CREDS["tenant"]}) == (404, compact({"error": unknown_model_message("vault-x")}))
    # A model no rule names: the lookup answers without a model key.
    assert ep.infer("nothere", INFER_HDR) == (404, compact({"error": unknown_model_message("nothere")}))
    stub = stub_for(channels, keyed_server, None, "plain")
    call = lambda model, h: grpc_outcome(lambda: stub.ModelInfer(grpc_req(model), metadata=grpc_md(h)))
    assert call("vault-x", INFER_HDR) == (grpc.StatusCode.PERMISSION_DENIED, refusal_message("vault-x", TENANT_KEY, "grpc"))
    assert call("vault-x", {**INFER_HDR, **CREDS["tenant"]}) == (grpc.StatusCode.NOT_FOUND, unknown_model_message("vault-x"))
    assert call("nothere", INFER_HDR) == (grpc.StatusCode.NOT_FOUND, unknown_model_message("nothere"))


def raw_infer(srv, path: str, header_lines: list[tuple[str, str]], body: bytes, content_length: int | None = None, timeout: float = HTTP_TIMEOUT):
    """A hand-written request; `content_length` may announce more than `body` (the rest is never sent)."""
    n = len(body) if content_length is None else content_length
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{srv.port}", *(f"{k}: {v}" for k, v in header_lines)]
    lines += ["Content-Type: application/json", f"Content-Length: {n}", "", ""]
    raw = raw_exchange(srv.host, srv.port, "\r\n".join(lines).encode("latin-1") + body, timeout=timeout)
    return parse_raw_response(raw)


def test_http_refusal_before_the_body(keyed_server):
    denied = compact({"error": refusal_message("simple", TENANT_KEY, "http")})
    infer = [(INFER_KEY, INFER_VALUE)]
    # The body never arrives: the refusal must not wait for it (well within the 60 s body timeout).
    t0 = time.monotonic()
    status, headers, body = raw_infer(keyed_server, "/v2/models/simple/infer", infer, b'{"inputs": [', content_length=1_000_000, timeout=10)
    assert (status, body) == (403, denied), (status, headers, body)
    assert headers.get("connection", "").lower() == "close", headers
    assert time.monotonic() - t0 < 5
    # More than --http-max-input-size (64 MiB) announced: refused for the model, not for the size.
    status, _, body = raw_infer(keyed_server, "/v2/models/simple/infer", infer, b"", content_length=200 << 20, timeout=10)
    assert (status, body) == (403, denied), (status, body)
    # A malformed body is never parsed.
    status, _, body = raw_infer(keyed_server, "/v2/models/simple/infer", infer, b"\x00not json{{")
    assert (status, body) == (403, denied), (status, body)
    # With the key, the same malformed body reaches the parser.
    status, _, body = raw_infer(keyed_server, "/v2/models/simple/infer", infer + [(TENANT_KEY, TENANT_VALUE)], b"\x00not json{{")
    assert status == 400, (status, body)


def test_http_percent_encoded_model_name_is_still_checked(keyed_server):
    """The check sees the decoded name: /v2/models/simpl%65/infer is simple."""
    infer = [(INFER_KEY, INFER_VALUE)]
    status, _, body = raw_infer(keyed_server, "/v2/models/simpl%65/infer", infer, http_body("simple"))
    assert (status, body) == (403, compact({"error": refusal_message("simple", TENANT_KEY, "http")})), (status, body)
    status, _, body = raw_infer(keyed_server, "/v2/models/vault%2Dx/versions/1/infer", infer, http_body("simple"))
    assert (status, body) == (403, compact({"error": refusal_message("vault-x", TENANT_KEY, "http")})), (status, body)
    status, _, body = raw_infer(keyed_server, "/v2/models/simpl%65/infer", infer + [(TENANT_KEY, TENANT_VALUE)], http_body("simple"))
    check_http_ok("simple", status, body, "percent-encoded, with key")


# =======================================================================================================
# Audit records
# =======================================================================================================


def test_audit_model_and_category_refusals_plaintext(keyed_server, keyed_log, channels):
    audit = Audit(keyed_log)
    audit.mark()
    ep = HttpEndpoint(keyed_server, None)
    assert ep.infer("simple", INFER_HDR)[0] == 403  # model refusal
    assert ep.infer("vault-x", INFER_HDR, version="2")[0] == 403  # model refusal, unknown model
    assert ep.infer("simple", {})[0] == 403  # category refusal
    assert ep.infer("simple", {**INFER_HDR, **CREDS["tenant"]})[0] == 200  # inference: not audited
    stub = stub_for(channels, keyed_server, None, "plain")
    assert grpc_outcome(lambda: stub.ModelInfer(grpc_req("identity_fp32"), metadata=grpc_md({**INFER_HDR, **CREDS["tenant"]})))[0] == grpc.StatusCode.PERMISSION_DENIED
    list(stub.ModelStreamInfer(iter([grpc_req("simple")]), metadata=grpc_md(INFER_HDR)))
    assert grpc_outcome(lambda: stub.ModelInfer(grpc_req("simple")))[0] == grpc.StatusCode.UNAVAILABLE
    events = audit.since()
    text = json.dumps(events)
    assert MARK not in text, "a credential value reached the audit log"

    def one(**kw) -> dict:
        found = find(events, **kw)
        assert len(found) == 1, f"expected one record {kw}, got {found}\nall: {events}"
        e = found[0]
        assert e["outcome"] == "denied" and e["category"] == "inference", e
        assert e["client"].startswith("127.0.0.1:"), e
        assert "tls_identity" not in e, e
        assert "time" in e, e
        return e

    one(event="denied", protocol="http", target="/v2/models/simple/infer", model="simple")
    one(event="denied", protocol="http", target="/v2/models/vault-x/versions/2/infer", model="vault-x")
    e = one(event="denied", protocol="http", target="/v2/models/simple/infer", model=None)
    assert "model" not in e, e  # a category refusal names no model
    one(event="denied", protocol="grpc", target="/inference.GRPCInferenceService/ModelInfer", model="identity_fp32")
    one(event="denied", protocol="grpc", target="/inference.GRPCInferenceService/ModelStreamInfer", model="simple")
    e = one(event="denied", protocol="grpc", target="/inference.GRPCInferenceService/ModelInfer", model=None)
    assert "model" not in e, e
    assert len(events) == 6, events  # nothing for the allowed inference


def test_audit_tls_identity_on_mutual_tls(access_server, access_log, certs, channels):
    audit = Audit(access_log)
    audit.mark()
    HttpEndpoint(access_server, certs.tls("bob")).infer("simple", {})  # model refusal, CN=bob
    HttpEndpoint(access_server, certs.tls("alice")).infer("vault-x", {})  # model refusal, CN=alice
    HttpEndpoint(access_server, certs.tls("alice")).call("POST", "/v2/repository/index", {}, b"{}")  # category refusal
    HttpEndpoint(access_server, certs.tls("bob")).call("POST", "/v2/repository/index", {}, b"{}")  # admin call, by certificate
    stub_bob = stub_for(channels, access_server, certs.tls("bob"), "bob")
    stub_alice = stub_for(channels, access_server, certs.tls("alice"), "alice")
    grpc_outcome(lambda: stub_bob.ModelInfer(grpc_req("mlp")))  # model refusal, certificate-only
    list(stub_alice.ModelStreamInfer(iter([grpc_req("vault-x")])))  # model refusal in a stream
    grpc_outcome(lambda: stub_bob.ModelStatistics(service_pb2.ModelStatisticsRequest()))  # category refusal
    assert grpc_outcome(lambda: stub_bob.RepositoryIndex(service_pb2.RepositoryIndexRequest()))[0] == "ok"  # admin
    assert grpc_outcome(lambda: stub_alice.ModelStatistics(service_pb2.ModelStatisticsRequest()))[0] == "ok"  # admin
    events = audit.since()
    assert MARK not in json.dumps(events), "a credential value reached the audit log"

    def one(cn: str, **kw) -> dict:
        found = find(events, **kw)
        assert len(found) == 1, f"expected one record {kw}, got {found}\nall: {events}"
        e = found[0]
        assert f"CN={cn}" in e.get("tls_identity", ""), e
        assert e["client"].startswith("127.0.0.1:"), e
        return e

    for e in (
        one("bob", event="denied", protocol="http", model="simple", target="/v2/models/simple/infer"),
        one("alice", event="denied", protocol="http", model="vault-x", target="/v2/models/vault-x/infer"),
        one("bob", event="denied", protocol="grpc", model="mlp", target="/inference.GRPCInferenceService/ModelInfer"),
        one("alice", event="denied", protocol="grpc", model="vault-x", target="/inference.GRPCInferenceService/ModelStreamInfer"),
    ):
        assert e["category"] == "inference" and e["outcome"] == "denied", e
    e = one("alice", event="denied", protocol="http", category="model-repository", target="/v2/repository/index")
    assert e["outcome"] == "denied" and "model" not in e, e
    e = one("bob", event="denied", protocol="grpc", category="statistics")
    assert e["target"] == "/inference.GRPCInferenceService/ModelStatistics" and "model" not in e, e
    e = one("bob", event="admin", protocol="http", category="model-repository", target="/v2/repository/index")
    assert e["outcome"] == "200", e
    e = one("bob", event="admin", protocol="grpc", category="model-repository")
    assert e["outcome"] == "allowed" and e["target"] == "/inference.GRPCInferenceService/RepositoryIndex", e
    e = one("alice", event="admin", protocol="grpc", category="statistics")
    assert e["outcome"] == "allowed", e


# =======================================================================================================
# Request limits
# =======================================================================================================


def limit_message(n: int, what: str, maximum: int) -> str:
    return f"request has {n} {what}, more than the maximum of {maximum} (--max-request-{what})"


def json_input(name: str) -> dict:
    data = B if name == "INPUT1" else A
    return {"name": name, "datatype": "INT32", "shape": [1, 16], "data": data.reshape(-1).tolist()}


def http_limit_body(inputs: int = 2, outputs: int = 0, parameters: int = 0) -> bytes:
    """simple's two inputs plus extra ones; `outputs` requested outputs (OUTPUT0, OUTPUT1, OUTPUT2…);
    `parameters` custom request parameters."""
    names = ["INPUT0", "INPUT1"] + [f"INPUT{i}" for i in range(2, inputs)]
    body: dict = {"inputs": [json_input(n) for n in names[:inputs]]}
    if outputs:
        body["outputs"] = [{"name": f"OUTPUT{i}"} for i in range(outputs)]
    if parameters:
        body["parameters"] = {f"custom_{i}": i for i in range(parameters)}
    return json.dumps(body).encode()


def grpc_limit_request(model: str = "simple", inputs: int = 2, outputs: int = 0, parameters: int = 0):
    names = ["INPUT0", "INPUT1"] + [f"INPUT{i}" for i in range(2, inputs)]
    names = names[:inputs]
    req = grpc_request(
        model,
        [grpc_input(n, "INT32", A.shape) for n in names],
        [raw_bytes(B if n == "INPUT1" else A, "INT32") for n in names],
        outputs=[f"OUTPUT{i}" for i in range(outputs)],
        parameters={f"custom_{i}": i for i in range(parameters)},
    )
    return req


LIMIT_CASES = [
    # (what, within kwargs, over kwargs)
    ("inputs", dict(inputs=2), dict(inputs=3)),
    ("outputs", dict(outputs=2), dict(outputs=3)),
    ("parameters", dict(parameters=2), dict(parameters=3)),
]


@pytest.mark.parametrize("what,within,over", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_http_request_limits_at_the_boundary(limits_server, what, within, over):
    ep = HttpEndpoint(limits_server, None)
    status, body = ep.infer("simple", {}, body=http_limit_body(**within))
    check_http_ok("simple", status, body, f"{within}")  # simple accepts exactly 2 inputs / 2 outputs / custom parameters
    n = next(iter(over.values()))
    status, body = ep.infer("simple", {}, body=http_limit_body(**over))
    assert (status, body) == (400, compact({"error": limit_message(n, what, 2)})), (status, body)


@pytest.mark.parametrize("what,within,over", LIMIT_CASES, ids=[c[0] for c in LIMIT_CASES])
def test_grpc_request_limits_at_the_boundary(limits_server, channels, what, within, over):
    stub = stub_for(channels, limits_server, None, "plain")
    code, resp = grpc_outcome(lambda: stub.ModelInfer(grpc_limit_request(**within)))
    assert code == "ok", (within, code, resp)
    check_grpc_ok("simple", resp, f"{within}")
    n = next(iter(over.values()))
    outcome = grpc_outcome(lambda: stub.ModelInfer(grpc_limit_request(**over)))
    assert outcome == (grpc.StatusCode.INVALID_ARGUMENT, limit_message(n, what, 2)), outcome
    # In a stream the limit is that message's error; the stream goes on.
    out = list(stub.ModelStreamInfer(iter([grpc_limit_request(**over), grpc_limit_request(**within)])))
    assert [r.error_message for r in out] == [limit_message(n, what, 2), ""], out


def test_request_within_the_limit_may_fail_other_validation(limits_server, channels):
    """At the limit the request goes on to normal validation: a wrong input name is refused, but not by the limit."""
    ep = HttpEndpoint(limits_server, None)
    body = json.dumps({"inputs": [json_input("INPUT0"), json_input("BOGUS")]}).encode()
    status, content = ep.infer("simple", {}, body=body)
    assert status == 400 and b"--max-request-" not in content, (status, content)
    stub = stub_for(channels, limits_server, None, "plain")
    req = grpc_request("simple", [grpc_input("INPUT0", "INT32", A.shape), grpc_input("BOGUS", "INT32", A.shape)], [raw_bytes(A, "INT32")] * 2)
    code, msg = grpc_outcome(lambda: stub.ModelInfer(req))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "--max-request-" not in msg, (code, msg)


def test_default_request_limits(keyed_server, channels):
    """Defaults 1024 inputs, 1024 outputs, 64 parameters (identity_bytes: named by no model rule)."""
    ep = HttpEndpoint(keyed_server, None)
    stub = stub_for(channels, keyed_server, None, "plain")

    def bytes_input(i):
        return {"name": f"IN{i}", "datatype": "BYTES", "shape": [1, 1], "data": ["x"]}

    def http_body_n(inputs=1, outputs=0, parameters=0):
        body = {"inputs": [bytes_input(i) if i else {"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "data": ["x"]} for i in range(inputs)]}
        if outputs:
            body["outputs"] = [{"name": "OUTPUT0" if i == 0 else f"OUT{i}"} for i in range(outputs)]
        if parameters:
            body["parameters"] = {f"custom_{i}": i for i in range(parameters)}
        return json.dumps(body).encode()

    def grpc_req_n(inputs=1, outputs=0, parameters=0):
        names = ["INPUT0"] + [f"IN{i}" for i in range(1, inputs)]
        return grpc_request(
            "identity_bytes", [grpc_input(n, "BYTES", [1, 1]) for n in names], [raw_bytes(np.array([b"x"], dtype=object), "BYTES")] * inputs,
            outputs=["OUTPUT0"] + [f"OUT{i}" for i in range(1, outputs)] if outputs else (),
            parameters={f"custom_{i}": i for i in range(parameters)},
        )

    for what, at, over in (("inputs", 1024, 1025), ("outputs", 1024, 1025), ("parameters", 64, 65)):
        status, content = ep.infer("identity_bytes", INFER_HDR, body=http_body_n(**{what: at}))
        assert b"--max-request-" not in content, (what, at, status, content[:300])
        if what == "parameters":
            assert status == 200, (status, content[:300])
        status, content = ep.infer("identity_bytes", INFER_HDR, body=http_body_n(**{what: over}))
        assert (status, content) == (400, compact({"error": limit_message(over, what, at)})), (what, status, content[:300])
        code, got = grpc_outcome(lambda: stub.ModelInfer(grpc_req_n(**{what: at}), metadata=grpc_md(INFER_HDR)))
        if what == "parameters":
            assert code == "ok", (what, at, code, str(got)[:300])
        else:
            assert code != "ok" and "--max-request-" not in got, (what, at, code, str(got)[:300])
        outcome = grpc_outcome(lambda: stub.ModelInfer(grpc_req_n(**{what: over}), metadata=grpc_md(INFER_HDR)))
        assert outcome == (grpc.StatusCode.INVALID_ARGUMENT, limit_message(over, what, at)), (what, str(outcome)[:300])


# =======================================================================================================
# --grpc-max-concurrent-streams
# =======================================================================================================


def test_grpc_max_concurrent_streams_one_queues_the_second_stream(limits_server):
    """With 1 stream per connection, a second stream on the same channel waits for the first to end, then
    runs; other connections are served meanwhile."""
    # Own subchannel pools: channels with equal arguments would otherwise share one connection (and its limit).
    options = [*GRPC_CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    channel = grpc.insecure_channel(limits_server.grpc_url, options=options)
    try:
        stub = GrpcStub(channel, GRPC_TIMEOUT)
        q1: queue.Queue = queue.Queue()

        def feed(q):
            while (item := q.get()) is not None:
                yield item

        s1 = stub.ModelStreamInfer(feed(q1))
        q1.put(simple_grpc_request(A, B, id="s1-0"))
        first = next(s1)
        assert first.error_message == "" and first.infer_response.id == "s1-0", first

        result: dict = {}
        done = threading.Event()

        def second():
            try:
                result["out"] = list(stub.ModelStreamInfer(iter([simple_grpc_request(A, B, id="s2-0")])))
            except grpc.RpcError as e:
                result["err"] = (e.code(), e.details())
            done.set()

        t = threading.Thread(target=second, daemon=True)
        t.start()
        finished_early = done.wait(1.5)
        assert "err" not in result, f"the second stream failed instead of waiting: {result['err']}"
        assert not finished_early, f"the second stream ran while the first was open (limit 1): {result}"
        # Another connection is served while this one is at its limit.
        with grpc.insecure_channel(limits_server.grpc_url, options=options) as other:
            resp = GrpcStub(other, GRPC_TIMEOUT).ModelInfer(simple_grpc_request(A, B))
            check_grpc_ok("simple", resp, "other connection")
        # The first stream still works, then ends; the second one runs.
        q1.put(simple_grpc_request(A, B, id="s1-1"))
        assert next(s1).infer_response.id == "s1-1"
        q1.put(None)
        assert list(s1) == []
        assert done.wait(GRPC_TIMEOUT), "the second stream did not run after the first ended"
        assert "err" not in result, result
        assert [r.infer_response.id for r in result["out"]] == ["s2-0"], result
        assert all(not r.error_message for r in result["out"]), result
        t.join(5)
    finally:
        channel.close()


# =======================================================================================================
# Startup errors
# =======================================================================================================

SECRET = f"St4rtup-{MARK}-Value"


def startup_failure(flags: list[str], env: dict | None = None) -> str:
    with pytest.MonkeyPatch.context() as mp:
        for k, v in (env or {}).items():
            if v is None:
                mp.delenv(k, raising=False)
            else:
                mp.setenv(k, v)
        proc = run_to_exit(grpc_base_args(example_repo(), None, flags), timeout=60)
    out = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
    assert proc.returncode > 0, f"{flags} started or was killed (exit {proc.returncode}):\n{out[-3000:]}"
    assert "Started HTTPService" not in out and "Started GRPCInferenceService" not in out, out[-3000:]
    assert SECRET not in out and MARK not in out, f"a credential value leaked into the output:\n{out[-3000:]}"
    return out


# A valid key rule with a secret accompanies each bad flag: its value must not appear either.
GOOD_RULE = f"--model-access=simple:{TENANT_KEY}={SECRET}"


@pytest.mark.parametrize(
    "flags",
    [
        ["--model-access=simple:client-cert=cn:alice"],
        ["--client-cert-access=logging:cn:alice"],
        ["--model-access=simple:client-cert=dns:alice.example", "--client-cert-access=statistics:cn:bob"],
    ],
    ids=["model-access", "client-cert-access", "both"],
)
@pytest.mark.parametrize("tls", ["plain", "tls"])
def test_startup_client_cert_rules_need_mutual_tls(certs, flags, tls):
    extra = [*tls_flags("http", certs, tls), *tls_flags("grpc", certs, tls)]
    out = startup_failure([GOOD_RULE, *extra, *flags])
    assert "--http-use-ssl-mutual" in out and "--grpc-use-ssl-mutual" in out, out[-2000:]


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_startup_client_cert_rules_with_one_mutual_listener(certs, proto):
    """One mutual listener is enough (the server starts)."""
    srv = start_server(
        grpc_base_args(example_repo(), None, [*tls_flags(proto, certs, "mtls"), "--model-access=mlp:client-cert=cn:alice", "--client-cert-access=logging:cn:alice"]),
        f"rampart[one mutual listener: {proto}]",
        http_tls=certs.tls("alice") if proto == "http" else None,
        grpc_tls=certs.tls("alice") if proto == "grpc" else None,
    )
    finish_server(srv)


@pytest.mark.parametrize(
    "bad",
    [
        "--model-access=simple:client-cert=cn:",
        "--model-access=simple:client-cert=host:x",
        "--model-access=simple:client-cert=alice",
        "--model-access=simple:client-cert=CN:alice",
        "--model-access=simple:client-cert=",
        "--client-cert-access=logging:cn:",
        "--client-cert-access=logging:host:x",
        "--client-cert-access=logging:alice",
        "--client-cert-access=logging",
        "--client-cert-access=:cn:alice",
        "--client-cert-access=bogus:cn:alice",
        "--client-cert-access=",
    ],
)
def test_startup_malformed_identity(certs, bad):
    """With mutual TLS configured, so the identity is the only fault."""
    out = startup_failure([GOOD_RULE, *tls_flags("http", certs, "mtls"), *tls_flags("grpc", certs, "mtls"), bad])
    flag = bad.split("=", 1)[0]
    assert flag in out, out[-2000:]
    assert "need mutual TLS" not in out, out[-2000:]
    assert any(m in out for m in ("client identity", "option format is", "unknown category")), out[-2000:]


@pytest.mark.parametrize(
    "value",
    [
        "simple",
        "simple:k",
        f":k={SECRET}",
        f"simple:={SECRET}",
        "simple:k=",
        f"simple,:k={SECRET}",
        f",simple:k={SECRET}",
        f"simple:k:{SECRET}",
        f"simple={SECRET}",
        f"k={SECRET}",
        "",
    ],
)
def test_startup_malformed_model_access(value):
    out = startup_failure([GOOD_RULE, f"--model-access={value}"])
    assert "--model-access option format is" in out, out[-2000:]


def test_startup_model_access_value_sources(tmp_path):
    missing = tmp_path / "no-such-secret"
    out = startup_failure([GOOD_RULE, f"--model-access=mlp:k=@{missing}"])
    assert str(missing) in out, out[-2000:]
    var = "RAMPART_TEST_MODEL_ACCESS_UNSET"
    out = startup_failure([GOOD_RULE, f"--model-access=mlp:k=env:{var}"], env={var: None})
    assert var in out, out[-2000:]
    empty = tmp_path / "empty"
    empty.write_text("\n")
    startup_failure([GOOD_RULE, f"--model-access=mlp:k=@{empty}"])
    startup_failure([GOOD_RULE, f"--model-access=mlp:k=env:{var}"], env={var: ""})


@pytest.mark.parametrize(
    "flag", ["--max-request-inputs", "--max-request-outputs", "--max-request-parameters", "--grpc-max-concurrent-streams"]
)
def test_startup_zero_limits(flag):
    out = startup_failure([GOOD_RULE, f"{flag}=0"])
    assert f"{flag} must be greater than 0" in out, out[-2000:]


# =======================================================================================================
# Last: no credential value reached any output of the module's servers
# =======================================================================================================


def test_no_secret_in_server_output_or_audit(access_server, keyed_server, access_log, keyed_log):
    for srv in (access_server, keyed_server):
        out = srv.stderr_text() + srv.stdout_text()
        assert "model access refused" in out, f"{srv.label}: the refusals were not logged\n{srv.output()}"
        for v in (TENANT_VALUE, OTHER_VALUE, ADMIN_VALUE, INFER_VALUE, TENANT_VALUE.swapcase(), OTHER_VALUE[:-1]):
            assert v not in out, f"{srv.label}: credential value {v!r} in the server output"
        assert MARK.lower() not in out.lower(), f"{srv.label}: {MARK!r} in the server output"
    for log in (access_log, keyed_log):
        text = log.read_text()
        assert text.count('"event":"denied"') > 5, text[-2000:]
        assert MARK.lower() not in text.lower(), f"a credential value reached {log}"
