"""Restricted APIs (`--http-restricted-api`) and protocols (`--grpc-restricted-protocol`), docs/protocol.md,
"Restricted APIs".

Flags (repeatable): `<category>[,<category>...]:<key>=<value>`; the value may also be `@/path/file` (file content,
one trailing newline removed) or `env:NAME`. HTTP checks the header `<key>` (name case-insensitive, value
byte-exact, first occurrence wins) and answers 403 `{"error":"This API is restricted, expecting header '<key>'"}`;
gRPC checks the metadata `triton-grpc-protocol-<key>` and answers UNAVAILABLE "This protocol is restricted,
expecting header 'triton-grpc-protocol-<key>'". The check runs before routing (wrong method + no key ⇒ 403, not
405); URLs / RPCs without a category are not restricted.

Servers (the default engine; restriction does not depend on it):
- `each_server`: every category restricted on both listeners, each with its own key. Values come from literals
  (some with ':' and '='), `@file` (health) and `env:` (inference); one HTTP key and one gRPC key are configured
  in mixed case. `--log-verbose=1`, so that the final log check also covers debug output. Its readiness polls
  carry the health credential (conftest's `health_headers` / `grpc_health_metadata`).
- `qa_server`: Triton's qa/L0_http example (`model-repository:admin-key=admin-value`,
  `inference,metadata:infer-key=infer-value`) on HTTP, and a different set on gRPC
  (`model-repository,statistics:admin-key=admin-value`), so the listeners are seen to be independent.
- short-lived servers: the non-loopback exposure warning, startup errors (`run_to_exit`).

Matrix: every category × {no credential, wrong values (other, case-swapped, truncated, extended, empty), the
other categories' credentials, right value, right value second of two duplicate headers (HTTP: refused, the first
wins), right value first of two, upper/lower-case header name (HTTP: accepted), gRPC key without the
`triton-grpc-protocol-` prefix} × HTTP and gRPC on one representative endpoint / RPC per category, plus further
endpoints / RPCs per category (refused without the key, the normal handler's answer with it), wrong methods,
unknown URLs, percent-encoded paths. Finally no credential value (right or wrong) may appear in any server output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import pytest
import requests
from tritonclient.grpc import service_pb2

from conftest import (
    GRPC_TIMEOUT,
    HTTP_TIMEOUT,
    base_args,
    finish_server,
    grpc_base_args,
    parse_raw_response,
    raw_exchange,
    run_to_exit,
    simple_grpc_request,
    start_server,
)

CATEGORIES = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
ADMIN = ("shared-memory", "model-config", "model-repository", "statistics", "trace", "logging")

# Every credential value contains MARK and every wrong value WRONG, so the final log check can look for both.
MARK = "Sekr3t"
WRONG = "Wr0ng"
GRPC_PREFIX = "triton-grpc-protocol-"

# --- each_server's credentials --------------------------------------------------------------------------------
# HTTP: header name as configured -> value. model-config's name is configured in mixed case.
HTTP_KEYS = {c: f"{c}-key" for c in CATEGORIES}
HTTP_KEYS["model-config"] = "X-Model-Config-Key"
HTTP_VALUES = {c: f"h-{MARK}-{c}-v4lue" for c in CATEGORIES}
HTTP_VALUES["metadata"] = f"h-{MARK}:meta=da:ta=="  # ':' and '=' inside the value
HTTP_VALUES["health"] = f"h-{MARK}-health-from-file"  # given as @file (written with a trailing newline)
HTTP_VALUES["inference"] = f"@h-{MARK}-inference-from-env"  # given as env:, starts with '@' (not a file)
# gRPC: key as configured (the wire key is triton-grpc-protocol-<key>, lower case) -> value.
GRPC_KEYS = {c: f"g-{c}" for c in CATEGORIES}
GRPC_KEYS["trace"] = "G-Trace"
GRPC_VALUES = {c: f"g-{MARK}-{c}-V4LUE" for c in CATEGORIES}
GRPC_VALUES["model-repository"] = f"g-{MARK}=repo:x=y"
GRPC_VALUES["health"] = f"g-{MARK}-health-from-file"  # @file
GRPC_VALUES["inference"] = f"g-{MARK}-inference-from-env"  # env:

HTTP_ENV = "RAMPART_TEST_RESTRICTED_HTTP_INFER"
GRPC_ENV = "RAMPART_TEST_RESTRICTED_GRPC_INFER"

# --- qa_server's credentials (Triton's qa/L0_http example) -----------------------------------------------------
QA_HTTP = [
    "--http-restricted-api=model-repository:admin-key=admin-value",
    "--http-restricted-api=inference,metadata:infer-key=infer-value",
]
QA_GRPC = ["--grpc-restricted-protocol=model-repository,statistics:admin-key=admin-value"]
ADMIN_HDR = {"admin-key": "admin-value"}
INFER_HDR = {"infer-key": "infer-value"}
GRPC_ADMIN_MD = [(GRPC_PREFIX + "admin-key", "admin-value")]

MODE_MESSAGE = "explicit model load / unload is not allowed if polling is enabled"
SHM_DISABLED = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."

SIMPLE_BODY = json.dumps(
    {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [3] * 16},
        ]
    }
).encode()
JSON_HDR = {"Content-Type": "application/json"}


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def denied_body(key: str) -> bytes:
    return json.dumps({"error": f"This API is restricted, expecting header '{key}'"}, separators=(",", ":")).encode()


def grpc_denied_message(key: str) -> str:
    return f"This protocol is restricted, expecting header '{GRPC_PREFIX}{key}'"


def assert_denied(status: int, body: bytes, key: str, what: str = "") -> None:
    assert (status, body) == (403, denied_body(key)), f"{what}: expected 403 {denied_body(key)!r}, got {status} {body!r}"


def assert_passed(status: int, body: bytes, expected: int, what: str = "", contains: str | None = None) -> None:
    assert status == expected, f"{what}: expected {expected} from the normal handler, got {status} {body[:500]!r}"
    if contains is not None:
        assert contains in body.decode(errors="replace"), f"{what}: {body[:500]!r} lacks {contains!r}"


def http_call(srv, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    """(status, body) of one request with requests, on a fresh connection (see
    test_http_refusal_before_the_body_keeps_the_connection_usable for why not a pooled one).
    Note: requests/urllib3 normalize percent-encoded unreserved characters (%31 -> 1): use raw_call for those."""
    hdrs = dict(headers or {})
    if body is not None:
        hdrs.update(JSON_HDR)
    r = requests.request(method, srv.base + path, headers=hdrs, data=body, timeout=HTTP_TIMEOUT)
    return r.status_code, r.content


def raw_call(srv, method: str, path: str, header_lines: list[tuple[str, str]], body: bytes | None = None):
    """(status, body) of a hand-written HTTP/1.1 request: headers sent exactly as given, duplicates included."""
    body = body or b""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{srv.port}"]
    lines += [f"{k}: {v}" for k, v in header_lines]
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close", "", ""]
    raw = raw_exchange(srv.host, srv.port, "\r\n".join(lines).encode("latin-1") + body, timeout=HTTP_TIMEOUT)
    status, _, resp_body = parse_raw_response(raw)
    return status, resp_body


def grpc_outcome(fn):
    """('ok', response) or (grpc.StatusCode, details)."""
    try:
        return "ok", fn()
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def wrong_values(value: str) -> dict[str, str]:
    swapped = value.swapcase()
    assert swapped != value
    return {
        "other": f"{WRONG}-{value[::-1]}",
        "swapcase": swapped,
        "truncated": value[:-1],
        "extended": value + "x",
        "empty": "",
    }


def exposure_line(srv, service: str) -> list[str]:
    """The categories named by '<service>: categories answering without credentials: …'."""
    pattern = re.compile(rf"{service}: categories answering without credentials: (.*)$", re.M)
    found = pattern.findall(srv.stderr_text() + srv.stdout_text())
    assert len(found) == 1, f"expected one exposure line for {service}, got {found}\n{srv.output()}"
    text = found[0].strip()
    return [] if text == "none" else [c.strip() for c in text.split(",")]


def exposure_warnings(srv) -> list[tuple[str, list[str]]]:
    out = srv.stderr_text() + srv.stdout_text()
    # Triton's default log line: W<MMDD> <hh:mm:ss.uuuuuu> <pid> <file>:<line>] <message>
    found = re.findall(
        r"^W\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ \S+:\d+\] (\w+) on (\S+) serves admin categories without credentials \(([^)]*)\)",
        out,
        re.M,
    )
    return [(svc, [c.strip() for c in cats.split(",")]) for svc, _addr, cats in found]


# ---------------------------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secret_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("restricted")
    http_file = d / "http-health.txt"
    http_file.write_text(HTTP_VALUES["health"] + "\n")  # one trailing newline is removed
    grpc_file = d / "grpc-health.txt"
    grpc_file.write_text(GRPC_VALUES["health"])  # no trailing newline
    return {"http": http_file, "grpc": grpc_file}


@pytest.fixture(scope="module")
def each_server(examples_dir, secret_files):
    extra = ["--log-verbose=1"]
    for c in CATEGORIES:
        hv = {"health": f"@{secret_files['http']}", "inference": f"env:{HTTP_ENV}"}.get(c, HTTP_VALUES[c])
        gv = {"health": f"@{secret_files['grpc']}", "inference": f"env:{GRPC_ENV}"}.get(c, GRPC_VALUES[c])
        extra.append(f"--http-restricted-api={c}:{HTTP_KEYS[c]}={hv}")
        extra.append(f"--grpc-restricted-protocol={c}:{GRPC_KEYS[c]}={gv}")
    with pytest.MonkeyPatch.context() as mp:  # the child inherits the environment at start
        mp.setenv(HTTP_ENV, HTTP_VALUES["inference"])
        mp.setenv(GRPC_ENV, GRPC_VALUES["inference"])
        srv = start_server(
            grpc_base_args(examples_dir, extra=extra),
            "rampart[restricted: each category]",
            health_headers={HTTP_KEYS["health"]: HTTP_VALUES["health"]},
            grpc_health_metadata=[(GRPC_PREFIX + GRPC_KEYS["health"].lower(), GRPC_VALUES["health"])],
        )
    yield srv
    finish_server(srv)


@pytest.fixture(scope="module")
def qa_server(examples_dir):
    srv = start_server(grpc_base_args(examples_dir, extra=QA_HTTP + QA_GRPC), "rampart[restricted: qa groups]")
    yield srv
    finish_server(srv)


def http_all_but(cat: str) -> dict:
    return {HTTP_KEYS[c]: HTTP_VALUES[c] for c in CATEGORIES if c != cat}


def grpc_md(cat: str, value: str | None = None) -> list[tuple[str, str]]:
    return [(GRPC_PREFIX + GRPC_KEYS[cat].lower(), GRPC_VALUES[cat] if value is None else value)]


def grpc_all_but(cat: str) -> list[tuple[str, str]]:
    return [md for c in CATEGORIES if c != cat for md in grpc_md(c)]


# ---------------------------------------------------------------------------------------------------------------
# HTTP: one representative endpoint per category, the full credential matrix
# ---------------------------------------------------------------------------------------------------------------

# category -> (method, path, body, status with the key, substring of the answer with the key, wrong method)
HTTP_REPR = {
    "health": ("GET", "/v2/health/live", None, 200, None, "POST"),
    "metadata": ("GET", "/v2", None, 200, '"name"', "POST"),
    "inference": ("POST", "/v2/models/simple/infer", SIMPLE_BODY, 200, '"OUTPUT0"', "GET"),
    "shared-memory": ("GET", "/v2/systemsharedmemory/status", None, 200, None, "POST"),
    "model-config": ("GET", "/v2/models/simple/config", None, 200, '"name":"simple"', "POST"),
    "model-repository": ("POST", "/v2/repository/index", b"{}", 200, '"simple"', "GET"),
    "statistics": ("GET", "/v2/models/stats", None, 200, '"model_stats"', "POST"),
    "trace": ("GET", "/v2/trace/setting", None, 200, '"trace_mode":"triton"', "DELETE"),
    "logging": ("GET", "/v2/logging", None, 200, '"log_format":"default"', "PUT"),
}

HTTP_VARIANTS = [
    "none",
    "wrong-other",
    "wrong-swapcase",
    "wrong-truncated",
    "wrong-extended",
    "wrong-empty",
    "other-categories-keys",
    "grpc-style-name",
    "right",
    "right-upper-name",
    "right-lower-name",
    "duplicate-right-second",
    "duplicate-right-first",
    "wrong-method-none",
    "wrong-method-right",
]


@pytest.mark.parametrize("variant", HTTP_VARIANTS)
@pytest.mark.parametrize("cat", CATEGORIES)
def test_http_matrix(each_server, cat, variant):
    method, path, body, ok_status, contains, bad_method = HTTP_REPR[cat]
    key, value = HTTP_KEYS[cat], HTTP_VALUES[cat]
    what = f"{cat}/{variant}: {method} {path}"
    if variant == "none":
        status, resp = http_call(each_server, method, path, {}, body)
        assert_denied(status, resp, key, what)
    elif variant.startswith("wrong-") and not variant.startswith("wrong-method"):
        wrong = wrong_values(value)[variant.removeprefix("wrong-")]
        status, resp = http_call(each_server, method, path, {key: wrong}, body)
        assert_denied(status, resp, key, what)
    elif variant == "other-categories-keys":
        status, resp = http_call(each_server, method, path, http_all_but(cat), body)
        assert_denied(status, resp, key, what)
    elif variant == "grpc-style-name":
        status, resp = http_call(each_server, method, path, {GRPC_PREFIX + key: value}, body)
        assert_denied(status, resp, key, what)
    elif variant == "right":
        status, resp = http_call(each_server, method, path, {key: value}, body)
        assert_passed(status, resp, ok_status, what, contains)
    elif variant == "right-upper-name":
        status, resp = raw_call(each_server, method, path, [(key.upper(), value)], body)
        assert_passed(status, resp, ok_status, what, contains)
    elif variant == "right-lower-name":
        status, resp = raw_call(each_server, method, path, [(key.lower(), value)], body)
        assert_passed(status, resp, ok_status, what, contains)
    elif variant == "duplicate-right-second":
        # The first occurrence wins: a wrong first value is refused even though the second is right.
        status, resp = raw_call(each_server, method, path, [(key, f"{WRONG}-dup"), (key.upper(), value)], body)
        assert_denied(status, resp, key, what)
    elif variant == "duplicate-right-first":
        status, resp = raw_call(each_server, method, path, [(key.lower(), value), (key, f"{WRONG}-dup")], body)
        assert_passed(status, resp, ok_status, what, contains)
    elif variant == "wrong-method-none":
        # The restriction check runs before method dispatch: 403, not 405.
        status, resp = http_call(each_server, bad_method, path, {})
        assert_denied(status, resp, key, f"{cat}: {bad_method} {path} without key")
    elif variant == "wrong-method-right":
        status, resp = http_call(each_server, bad_method, path, {key: value})
        assert (status, json.loads(resp)) == (405, {"error": "Method Not Allowed"}), (
            f"{cat}: {bad_method} {path} with key: {status} {resp!r}"
        )
    else:  # pragma: no cover
        raise AssertionError(variant)


# ---------------------------------------------------------------------------------------------------------------
# HTTP: further endpoints per category (the mapping of docs/protocol.md, "HTTP endpoints")
# ---------------------------------------------------------------------------------------------------------------

# (category, method, path, body, status with the key, substring of the answer with the key)
HTTP_MAPPING = [
    ("health", "GET", "/v2/health/ready", None, 200, None),
    ("health", "GET", "/v2/models/simple/ready", None, 200, None),
    ("health", "GET", "/v2/models/simple/versions/1/ready", None, 200, None),
    ("health", "GET", "/v2/models/nosuchmodel/ready", None, 404, None),
    ("health", "GET", "/v2/health/live?x=1", None, 200, None),
    ("metadata", "GET", "/v2/models/simple", None, 200, '"versions"'),
    ("metadata", "GET", "/v2/models/simple/versions/1", None, 200, '"versions"'),
    ("metadata", "GET", "/v2/models/nosuchmodel", None, 404, None),
    ("inference", "POST", "/v2/models/simple/versions/1/infer", SIMPLE_BODY, 200, '"OUTPUT0"'),
    ("inference", "POST", "/v2/models/nosuchmodel/infer", SIMPLE_BODY, 404, None),
    ("inference", "POST", "/v2/models/simple/generate", b"{}", 400, "expected 2 inputs"),
    ("inference", "POST", "/v2/models/simple/generate_stream", b"{}", 400, "expected 2 inputs"),
    ("inference", "POST", "/v2/models/simple/versions/1/generate", b"{}", 400, "expected 2 inputs"),
    ("shared-memory", "GET", "/v2/systemsharedmemory/region/r0/status", None, 404, None),
    ("shared-memory", "POST", "/v2/systemsharedmemory/region/r0/register", b'{"key":"/k","byte_size":64}', 501, SHM_DISABLED),
    ("shared-memory", "POST", "/v2/systemsharedmemory/unregister", b"{}", 501, SHM_DISABLED),
    ("shared-memory", "POST", "/v2/systemsharedmemory/region/r0/unregister", b"{}", 501, SHM_DISABLED),
    ("shared-memory", "GET", "/v2/cudasharedmemory/status", None, 200, None),
    ("shared-memory", "POST", "/v2/cudasharedmemory/region/r0/register", b"{}", 400, None),
    ("model-config", "GET", "/v2/models/simple/versions/1/config", None, 200, '"name":"simple"'),
    ("model-config", "GET", "/v2/models/nosuchmodel/config", None, 404, None),
    ("model-repository", "POST", "/v2/repository/models/simple/load", b"{}", 503, MODE_MESSAGE),
    ("model-repository", "POST", "/v2/repository/models/simple/unload", b"{}", 503, MODE_MESSAGE),
    ("model-repository", "POST", "/v2/repository/myrepo/index", b"{}", 200, '"simple"'),
    ("model-repository", "POST", "/v2/repository/myrepo/models/simple/load", b"{}", 501, "repository_name"),
    ("statistics", "GET", "/v2/models/simple/stats", None, 200, '"model_stats"'),
    ("statistics", "GET", "/v2/models/simple/versions/1/stats", None, 200, '"model_stats"'),
    ("statistics", "GET", "/v2/models/nosuchmodel/stats", None, 404, None),
    ("trace", "POST", "/v2/trace/setting", b"{}", 200, '"trace_level":["OFF"]'),
    ("trace", "GET", "/v2/models/simple/trace/setting", None, 200, '"trace_mode":"triton"'),
    ("trace", "POST", "/v2/models/simple/trace/setting", b"{}", 200, '"trace_level":["OFF"]'),
    ("trace", "GET", "/v2/models/nosuchmodel/trace/setting", None, 404, "nosuchmodel"),
    ("logging", "POST", "/v2/logging", b"{}", 200, '"log_info":true'),
]


@pytest.mark.parametrize(
    "cat,method,path,body,ok_status,contains", HTTP_MAPPING, ids=[f"{c}-{m}-{p}" for c, m, p, *_ in HTTP_MAPPING]
)
def test_http_endpoint_category(each_server, cat, method, path, body, ok_status, contains):
    key, value = HTTP_KEYS[cat], HTTP_VALUES[cat]
    what = f"{method} {path} ({cat})"
    status, resp = http_call(each_server, method, path, {}, body)
    assert_denied(status, resp, key, what + " without key")
    # All the other categories' credentials do not open it: the endpoint is exactly in `cat`.
    status, resp = http_call(each_server, method, path, http_all_but(cat), body)
    assert_denied(status, resp, key, what + " with the other categories' keys")
    status, resp = http_call(each_server, method, path, {key: value}, body)
    assert_passed(status, resp, ok_status, what + " with key", contains)


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/"),
        ("POST", "/"),
        ("GET", "/v2/"),
        ("GET", "/v2/health"),
        ("GET", "/v2/health/live/"),
        ("GET", "/v2/health/alive"),
        ("POST", "/v2/nothing"),
        ("GET", "/v1/models/simple"),
        ("GET", "/metrics"),
        ("GET", "/v2/models/simple/bogus"),
        ("GET", "/v2/models/simple/versions/1/"),
        ("POST", "/v2/models/simple/versions/x/infer"),
        ("GET", "/v2/models/simple/versions/-1/config"),
        ("GET", "/V2/health/live"),
    ],
)
def test_http_unknown_url_is_404_without_credentials(each_server, method, path):
    status, resp = http_call(each_server, method, path, {})
    assert status == 404, f"{method} {path}: {status} {resp!r}"
    assert json.loads(resp) == {"error": "Not Found"}, f"{method} {path}: {resp!r}"


@pytest.mark.parametrize(
    "path", ["/v2/repository/foo", "/v2/repository", "/v2/systemsharedmemory/foo", "/v2/cudasharedmemory"]
)
def test_http_unknown_url_under_a_category_prefix_is_404(each_server, path):
    """Triton decides the category by the same regexes that route (docs/protocol.md, "HTTP endpoints",
    dispatch order): a path matching no endpoint has no category and answers 404 without credentials."""
    status, resp = http_call(each_server, "GET", path, {})
    assert status == 404, f"GET {path}: {status} {resp!r}"


@pytest.mark.parametrize(
    "cat,method,path,body,status",
    [
        ("metadata", "GET", "/v2/models/simple/versions/%31", None, 404),
        ("health", "GET", "/v2/models/simple/versions/%31/ready", None, 404),
        ("model-config", "GET", "/v2/models/simple/versions/%31/config", None, 404),
        ("model-config", "GET", "/v2/models/simple/versions/%30%31/config", None, 404),
        ("statistics", "GET", "/v2/models/simple/versions/%31/stats", None, 404),
        ("inference", "POST", "/v2/models/simple/versions/%31/infer", SIMPLE_BODY, 404),
        ("model-config", "GET", "/v2/models/%73imple/config", None, 403),
        ("model-config", "GET", "/v2/models/simple/versions/1/config?x=%2F", None, 403),
    ],
)
def test_http_percent_encoded_paths_stay_restricted(each_server, cat, method, path, body, status):
    """A path the router serves must never be served without the credential, however it is encoded. A
    percent-encoded version is an unknown URL, 404 `Not Found`, as in Triton (its regex takes [0-9]+ from the raw
    path); an encoded model name or query is the endpoint itself, refused for lack of the credential."""
    got, resp = raw_call(each_server, method, path, [], body)  # sent as written, no normalization
    if status == 404:
        assert (got, json.loads(resp)) == (404, {"error": "Not Found"}), f"{method} {path}: {got} {resp[:300]!r}"
    else:
        assert_denied(got, resp, HTTP_KEYS[cat], f"{method} {path}")


def test_http_header_value_is_case_sensitive_and_exact(each_server):
    key, value = HTTP_KEYS["model-config"], HTTP_VALUES["model-config"]
    for candidate in (value.upper(), value.lower(), f"{value};", f"{value},{value}", value[1:]):
        status, resp = http_call(each_server, "GET", "/v2/models/simple/config", {key: candidate})
        assert_denied(status, resp, key, f"value {candidate!r}")
    # Mixed-case name as configured, any case on the wire; the message names it as configured.
    for name in (key, key.lower(), key.upper(), "x-MODEL-config-KEY"):
        status, resp = raw_call(each_server, "GET", "/v2/models/simple/config", [(name, value)])
        assert_passed(status, resp, 200, f"header name {name!r}")


def test_http_value_from_file_and_env(each_server):
    # health: @file written with one trailing newline, which is not part of the value.
    key = HTTP_KEYS["health"]
    assert http_call(each_server, "GET", "/v2/health/ready", {key: HTTP_VALUES["health"]})[0] == 200
    assert_denied(*http_call(each_server, "GET", "/v2/health/ready", {key: HTTP_VALUES["health"] + " x"}), key)
    # inference: env:NAME whose value starts with '@' (taken literally, not read as a file).
    key = HTTP_KEYS["inference"]
    status, resp = http_call(each_server, "POST", "/v2/models/simple/infer", {key: HTTP_VALUES["inference"]}, SIMPLE_BODY)
    assert_passed(status, resp, 200, "env value", '"OUTPUT0"')
    status, resp = http_call(each_server, "POST", "/v2/models/simple/infer", {key: f"env:{HTTP_ENV}"}, SIMPLE_BODY)
    assert_denied(status, resp, key, "the flag text is not the value")


def test_http_keepalive_connection_checks_every_request(each_server):
    """On one connection, a request with the key does not authorize the next one without it."""
    import http.client

    conn = http.client.HTTPConnection(each_server.host, each_server.port, timeout=HTTP_TIMEOUT)
    try:
        key, value = HTTP_KEYS["statistics"], HTTP_VALUES["statistics"]
        for headers, expected in (({key: value}, 200), ({}, 403), ({key: value}, 200), ({key: "x"}, 403)):
            conn.request("GET", "/v2/models/stats", headers=headers)
            r = conn.getresponse()
            body = r.read()
            assert r.status == expected, (headers, r.status, body)
            if expected == 403:
                assert body == denied_body(key)
    finally:
        conn.close()


def test_http_duplicate_headers_with_http_client(each_server):
    """http.client can send a header twice (putheader): the first occurrence decides."""
    import http.client

    key, value = HTTP_KEYS["metadata"], HTTP_VALUES["metadata"]
    for first, second, expected in ((f"{WRONG}-a", value, 403), (value, f"{WRONG}-b", 200), (value, value, 200)):
        conn = http.client.HTTPConnection(each_server.host, each_server.port, timeout=HTTP_TIMEOUT)
        try:
            conn.putrequest("GET", "/v2/models/simple")
            conn.putheader(key, first)
            conn.putheader(key, second)
            conn.endheaders()
            r = conn.getresponse()
            body = r.read()
        finally:
            conn.close()
        assert r.status == expected, (first, second, r.status, body)


def test_http_compressed_body_is_checked_first(each_server):
    """Content-Encoding does not change the order: the credential is checked before the body is inflated."""
    import gzip

    key, value = HTTP_KEYS["inference"], HTTP_VALUES["inference"]
    hdrs = {"Content-Encoding": "gzip"}
    body = gzip.compress(SIMPLE_BODY)
    assert_denied(*http_call(each_server, "POST", "/v2/models/simple/infer", hdrs, body), key, "gzip without key")
    assert_denied(*http_call(each_server, "POST", "/v2/models/simple/infer", hdrs, b"not gzip"), key, "bad gzip without key")
    status, resp = http_call(each_server, "POST", "/v2/models/simple/infer", {**hdrs, key: value}, body)
    assert_passed(status, resp, 200, "gzip with key", '"OUTPUT0"')


def test_http_refusal_before_the_body_keeps_the_connection_usable(each_server):
    """A 403 is answered before the request body is read. The client (http.client here, as requests / urllib3
    do) sends the body after the headers; if the server then closes the connection it must say so with
    `Connection: close`, else a keep-alive client reuses a dead connection and its next request fails
    (RemoteDisconnected / BrokenPipe)."""
    import socket
    import time

    key = HTTP_KEYS["inference"]
    with socket.create_connection((each_server.host, each_server.port), timeout=HTTP_TIMEOUT) as s:
        s.sendall(
            (
                f"POST /v2/models/simple/infer HTTP/1.1\r\nHost: 127.0.0.1:{each_server.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(SIMPLE_BODY)}\r\n\r\n"
            ).encode()
        )
        first = b""
        while b"\r\n\r\n" not in first or not first.endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk, f"connection closed before the 403: {first!r}"
            first += chunk
        status, headers, body = parse_raw_response(first)
        assert_denied(status, body, key, "late body")
        if headers.get("connection", "").lower() == "close":
            return  # announced: a client will not reuse the connection
        # Not announced: the connection must still work (body consumed, next request answered).
        try:
            s.sendall(SIMPLE_BODY)
            time.sleep(0.2)
            s.sendall(f"GET /v2/models/stats HTTP/1.1\r\nHost: 127.0.0.1:{each_server.port}\r\n\r\n".encode())
            second = s.recv(65536)
        except OSError as e:
            second = repr(e).encode()
    assert second.startswith(b"HTTP/1.1 403"), (
        "403 sent before the body without 'Connection: close', then the connection was dropped: "
        f"the client's next request on it got {second[:200]!r}"
    )


# ---------------------------------------------------------------------------------------------------------------
# gRPC: one representative RPC per category, the credential matrix
# ---------------------------------------------------------------------------------------------------------------


def _health_check(srv, metadata):
    with srv.grpc_channel() as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        return check(b"", timeout=GRPC_TIMEOUT, metadata=metadata)


def _stream_infer(srv, metadata):
    stub = srv.grpc_stub()
    responses = stub.ModelStreamInfer(iter([simple_grpc_request()]), timeout=GRPC_TIMEOUT, metadata=metadata)
    out = list(responses)
    assert len(out) == 1 and not out[0].error_message, out
    return out[0]


# name -> (category, call(srv, metadata), check of the response with the key | (code, substring) expected with it)
GRPC_RPCS = {
    "ServerLive": ("health", lambda s, md: s.grpc_stub().ServerLive(service_pb2.ServerLiveRequest(), metadata=md), lambda r: r.live is True),
    "ServerReady": ("health", lambda s, md: s.grpc_stub().ServerReady(service_pb2.ServerReadyRequest(), metadata=md), lambda r: r.ready is True),
    "ModelReady": ("health", lambda s, md: s.grpc_stub().ModelReady(service_pb2.ModelReadyRequest(name="simple"), metadata=md), lambda r: r.ready is True),
    "Health/Check": ("health", _health_check, lambda r: r == b"\x08\x01"),
    "ServerMetadata": ("metadata", lambda s, md: s.grpc_stub().ServerMetadata(service_pb2.ServerMetadataRequest(), metadata=md), lambda r: bool(r.name)),
    "ModelMetadata": ("metadata", lambda s, md: s.grpc_stub().ModelMetadata(service_pb2.ModelMetadataRequest(name="simple"), metadata=md), lambda r: r.name == "simple"),
    "ModelMetadata(unknown)": ("metadata", lambda s, md: s.grpc_stub().ModelMetadata(service_pb2.ModelMetadataRequest(name="nosuchmodel"), metadata=md), (grpc.StatusCode.NOT_FOUND, "nosuchmodel")),
    "ModelInfer": ("inference", lambda s, md: s.grpc_stub().ModelInfer(simple_grpc_request(), metadata=md), lambda r: r.model_name == "simple" and len(r.raw_output_contents) == 2),
    "ModelStreamInfer": ("inference", _stream_infer, lambda r: r.infer_response.model_name == "simple"),
    "SystemSharedMemoryStatus": ("shared-memory", lambda s, md: s.grpc_stub().SystemSharedMemoryStatus(service_pb2.SystemSharedMemoryStatusRequest(), metadata=md), lambda r: len(r.regions) == 0),
    "SystemSharedMemoryRegister": ("shared-memory", lambda s, md: s.grpc_stub().SystemSharedMemoryRegister(service_pb2.SystemSharedMemoryRegisterRequest(name="r0", key="/k", byte_size=64), metadata=md), (grpc.StatusCode.UNIMPLEMENTED, SHM_DISABLED)),
    "SystemSharedMemoryUnregister": ("shared-memory", lambda s, md: s.grpc_stub().SystemSharedMemoryUnregister(service_pb2.SystemSharedMemoryUnregisterRequest(), metadata=md), (grpc.StatusCode.UNIMPLEMENTED, SHM_DISABLED)),
    "CudaSharedMemoryStatus": ("shared-memory", lambda s, md: s.grpc_stub().CudaSharedMemoryStatus(service_pb2.CudaSharedMemoryStatusRequest(), metadata=md), lambda r: len(r.regions) == 0),
    "CudaSharedMemoryRegister": ("shared-memory", lambda s, md: s.grpc_stub().CudaSharedMemoryRegister(service_pb2.CudaSharedMemoryRegisterRequest(name="r0", byte_size=64), metadata=md), (grpc.StatusCode.INVALID_ARGUMENT, "CUDA")),
    "ModelConfig": ("model-config", lambda s, md: s.grpc_stub().ModelConfig(service_pb2.ModelConfigRequest(name="simple"), metadata=md), lambda r: r.config.name == "simple"),
    "ModelConfig(unknown)": ("model-config", lambda s, md: s.grpc_stub().ModelConfig(service_pb2.ModelConfigRequest(name="nosuchmodel"), metadata=md), (grpc.StatusCode.NOT_FOUND, "nosuchmodel")),
    "RepositoryIndex": ("model-repository", lambda s, md: s.grpc_stub().RepositoryIndex(service_pb2.RepositoryIndexRequest(), metadata=md), lambda r: "simple" in [m.name for m in r.models]),
    "RepositoryModelLoad": ("model-repository", lambda s, md: s.grpc_stub().RepositoryModelLoad(service_pb2.RepositoryModelLoadRequest(model_name="simple"), metadata=md), (grpc.StatusCode.UNAVAILABLE, MODE_MESSAGE)),
    "RepositoryModelUnload": ("model-repository", lambda s, md: s.grpc_stub().RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name="simple"), metadata=md), (grpc.StatusCode.UNAVAILABLE, MODE_MESSAGE)),
    "ModelStatistics": ("statistics", lambda s, md: s.grpc_stub().ModelStatistics(service_pb2.ModelStatisticsRequest(name="simple"), metadata=md), lambda r: [m.name for m in r.model_stats] == ["simple"]),
    "ModelStatistics(all)": ("statistics", lambda s, md: s.grpc_stub().ModelStatistics(service_pb2.ModelStatisticsRequest(), metadata=md), lambda r: "simple" in [m.name for m in r.model_stats]),
    "TraceSetting": ("trace", lambda s, md: s.grpc_stub().TraceSetting(service_pb2.TraceSettingRequest(), metadata=md), lambda r: list(r.settings["trace_mode"].value) == ["triton"]),
    "TraceSetting(model)": ("trace", lambda s, md: s.grpc_stub().TraceSetting(service_pb2.TraceSettingRequest(model_name="simple"), metadata=md), lambda r: list(r.settings["trace_level"].value) == ["OFF"]),
    "TraceSetting(unknown)": ("trace", lambda s, md: s.grpc_stub().TraceSetting(service_pb2.TraceSettingRequest(model_name="nosuchmodel"), metadata=md), (grpc.StatusCode.NOT_FOUND, "nosuchmodel")),
    "LogSettings": ("logging", lambda s, md: s.grpc_stub().LogSettings(service_pb2.LogSettingsRequest(), metadata=md), lambda r: r.settings["log_format"].string_param == "default"),
}
GRPC_REPR = {
    "health": "ServerLive",
    "metadata": "ServerMetadata",
    "inference": "ModelInfer",
    "shared-memory": "SystemSharedMemoryStatus",
    "model-config": "ModelConfig",
    "model-repository": "RepositoryIndex",
    "statistics": "ModelStatistics",
    "trace": "TraceSetting",
    "logging": "LogSettings",
}


def assert_grpc_denied(outcome, key: str, what: str) -> None:
    code, detail = outcome
    assert code == grpc.StatusCode.UNAVAILABLE and detail == grpc_denied_message(key), (
        f"{what}: expected UNAVAILABLE {grpc_denied_message(key)!r}, got {code} {str(detail)[:300]!r}"
    )


def assert_grpc_passed(outcome, expect, what: str) -> None:
    code, result = outcome
    if callable(expect):
        assert code == "ok", f"{what}: expected a response, got {code} {result!r}"
        assert expect(result), f"{what}: unexpected response {str(result)[:500]!r}"
    else:
        want_code, want_text = expect
        assert code == want_code and want_text in result, f"{what}: expected {want_code} ~{want_text!r}, got {code} {result!r}"


GRPC_VARIANTS = [
    "none",
    "wrong-other",
    "wrong-swapcase",
    "wrong-truncated",
    "wrong-extended",
    "wrong-empty",
    "other-categories-keys",
    "key-without-prefix",
    "http-style-key",
    "right",
]


@pytest.mark.parametrize("variant", GRPC_VARIANTS)
@pytest.mark.parametrize("cat", CATEGORIES)
def test_grpc_matrix(each_server, cat, variant):
    rpc = GRPC_REPR[cat]
    _, call, expect = GRPC_RPCS[rpc]
    key, value = GRPC_KEYS[cat], GRPC_VALUES[cat]
    what = f"{cat}/{variant}: {rpc}"
    if variant == "none":
        assert_grpc_denied(grpc_outcome(lambda: call(each_server, None)), key, what)
    elif variant.startswith("wrong-"):
        wrong = wrong_values(value)[variant.removeprefix("wrong-")]
        assert_grpc_denied(grpc_outcome(lambda: call(each_server, grpc_md(cat, wrong))), key, what)
    elif variant == "other-categories-keys":
        assert_grpc_denied(grpc_outcome(lambda: call(each_server, grpc_all_but(cat))), key, what)
    elif variant == "key-without-prefix":
        assert_grpc_denied(grpc_outcome(lambda: call(each_server, [(key.lower(), value)])), key, what)
    elif variant == "http-style-key":
        # The HTTP credential of the same category does not open the gRPC API.
        md = [(HTTP_KEYS[cat].lower(), HTTP_VALUES[cat])]
        assert_grpc_denied(grpc_outcome(lambda: call(each_server, md)), key, what)
    elif variant == "right":
        assert_grpc_passed(grpc_outcome(lambda: call(each_server, grpc_md(cat))), expect, what)
    else:  # pragma: no cover
        raise AssertionError(variant)


@pytest.mark.parametrize("rpc", [r for r in GRPC_RPCS if r not in GRPC_REPR.values()])
def test_grpc_rpc_category(each_server, rpc):
    cat, call, expect = GRPC_RPCS[rpc]
    key = GRPC_KEYS[cat]
    assert_grpc_denied(grpc_outcome(lambda: call(each_server, None)), key, f"{rpc} without key")
    assert_grpc_denied(grpc_outcome(lambda: call(each_server, grpc_all_but(cat))), key, f"{rpc} with other keys")
    assert_grpc_passed(grpc_outcome(lambda: call(each_server, grpc_md(cat))), expect, f"{rpc} with key")


def test_grpc_stream_refused_with_restriction_status(each_server):
    """A stream without the key fails with the restriction status; with a wrong key too; one stream with the key
    serves several requests."""
    stub = each_server.grpc_stub()
    for md in (None, grpc_md("inference", f"{WRONG}-stream")):
        responses = stub.ModelStreamInfer(iter([simple_grpc_request(), simple_grpc_request()]), timeout=GRPC_TIMEOUT, metadata=md)
        outcome = grpc_outcome(lambda: list(responses))
        assert_grpc_denied(outcome, GRPC_KEYS["inference"], f"stream with metadata {md}")
    responses = stub.ModelStreamInfer(iter([simple_grpc_request(id=str(i)) for i in range(3)]), timeout=GRPC_TIMEOUT, metadata=grpc_md("inference"))
    out = list(responses)
    assert sorted(r.infer_response.id for r in out) == ["0", "1", "2"], out
    assert all(not r.error_message for r in out), out


def test_grpc_mixed_case_key_message_and_wire_key(each_server):
    """gRPC keys are lower-case on the wire; the message names the key as configured."""
    _, call, expect = GRPC_RPCS["TraceSetting"]
    assert GRPC_KEYS["trace"] != GRPC_KEYS["trace"].lower()
    outcome = grpc_outcome(lambda: call(each_server, None))
    assert outcome[1] == f"This protocol is restricted, expecting header 'triton-grpc-protocol-{GRPC_KEYS['trace']}'"
    assert_grpc_passed(grpc_outcome(lambda: call(each_server, grpc_md("trace"))), expect, "lower-case wire key")


def test_grpc_unknown_method_is_not_restricted(each_server):
    with each_server.grpc_channel() as channel:
        for path in ("/inference.GRPCInferenceService/NoSuchMethod", "/no.such.Service/Method"):
            method = channel.unary_unary(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            code, detail = grpc_outcome(lambda: method(b"", timeout=GRPC_TIMEOUT))
            assert code == grpc.StatusCode.UNIMPLEMENTED, (path, code, detail)


def test_grpc_values_from_file_and_env(each_server):
    _, call, expect = GRPC_RPCS["ServerReady"]
    assert_grpc_passed(grpc_outcome(lambda: call(each_server, grpc_md("health"))), expect, "@file value")
    _, call, expect = GRPC_RPCS["ModelInfer"]
    assert_grpc_passed(grpc_outcome(lambda: call(each_server, grpc_md("inference"))), expect, "env value")
    outcome = grpc_outcome(lambda: call(each_server, grpc_md("inference", f"env:{GRPC_ENV}")))
    assert_grpc_denied(outcome, GRPC_KEYS["inference"], "the flag text is not the value")


# ---------------------------------------------------------------------------------------------------------------
# Startup report
# ---------------------------------------------------------------------------------------------------------------


def test_exposure_report_all_restricted(each_server):
    assert exposure_line(each_server, "HTTPService") == []
    assert exposure_line(each_server, "GRPCInferenceService") == []
    assert exposure_warnings(each_server) == []


def test_exposure_report_groups_on_loopback(qa_server):
    assert exposure_line(qa_server, "HTTPService") == [
        c for c in CATEGORIES if c not in ("model-repository", "inference", "metadata")
    ]
    assert exposure_line(qa_server, "GRPCInferenceService") == [
        c for c in CATEGORIES if c not in ("model-repository", "statistics")
    ]
    # Admin categories are open, but only on 127.0.0.1: no warning.
    assert exposure_warnings(qa_server) == [], qa_server.output()


def test_exposure_warning_on_non_loopback_address(examples_dir):
    args = grpc_base_args(
        examples_dir,
        extra=[
            "--http-restricted-api=model-repository,trace:adm=x",
            "--grpc-restricted-protocol=shared-memory,model-config,model-repository,statistics,trace,logging:adm=y",
        ],
    )
    args = [
        "--http-address=0.0.0.0" if a == "--http-address=127.0.0.1" else "--grpc-address=0.0.0.0" if a == "--grpc-address=127.0.0.1" else a
        for a in args
    ]
    assert "--http-address=0.0.0.0" in args and "--grpc-address=0.0.0.0" in args
    srv = start_server(args, "rampart[restricted: 0.0.0.0]")
    try:
        assert exposure_line(srv, "HTTPService") == [c for c in CATEGORIES if c not in ("model-repository", "trace")]
        assert exposure_line(srv, "GRPCInferenceService") == ["health", "metadata", "inference"]
        warnings = exposure_warnings(srv)
        assert warnings == [("HTTPService", ["shared-memory", "model-config", "statistics", "logging"])], (
            f"{warnings}\n{srv.output()}"
        )
    finally:
        finish_server(srv)


# ---------------------------------------------------------------------------------------------------------------
# Groups: Triton's qa/L0_http example, independence of the listeners
# ---------------------------------------------------------------------------------------------------------------


def test_qa_unload_needs_the_admin_key(qa_server):
    for action in ("unload", "load"):
        path = f"/v2/repository/models/simple/{action}"
        assert_denied(*http_call(qa_server, "POST", path, INFER_HDR, b"{}"), "admin-key", f"{action} with infer key")
        assert_denied(*http_call(qa_server, "POST", path, {}, b"{}"), "admin-key", f"{action} without key")
        status, resp = http_call(qa_server, "POST", path, ADMIN_HDR, b"{}")
        assert status == 503 and json.loads(resp) == {"error": MODE_MESSAGE}, (action, status, resp)
        # Both keys: the admin one is what counts.
        status, resp = http_call(qa_server, "POST", path, {**INFER_HDR, **ADMIN_HDR}, b"{}")
        assert status == 503, (action, status, resp)


def test_qa_one_key_for_a_group(qa_server):
    assert http_call(qa_server, "POST", "/v2/models/simple/infer", INFER_HDR, SIMPLE_BODY)[0] == 200
    assert http_call(qa_server, "GET", "/v2", INFER_HDR)[0] == 200
    assert http_call(qa_server, "GET", "/v2/models/simple", INFER_HDR)[0] == 200
    assert_denied(*http_call(qa_server, "GET", "/v2", ADMIN_HDR), "infer-key", "metadata with admin key")
    assert_denied(*http_call(qa_server, "POST", "/v2/models/simple/infer", ADMIN_HDR, SIMPLE_BODY), "infer-key", "infer with admin key")
    assert_denied(*http_call(qa_server, "POST", "/v2/models/simple/infer", {"infer-key": "admin-value"}, SIMPLE_BODY), "infer-key", "infer with the other group's value")
    assert_denied(*http_call(qa_server, "POST", "/v2/repository/index", {"admin-key": "infer-value"}, b"{}"), "admin-key", "index with the other group's value")
    assert http_call(qa_server, "POST", "/v2/repository/index", ADMIN_HDR, b"{}")[0] == 200


@pytest.mark.parametrize(
    "method,path,body,expected",
    [
        ("GET", "/v2/health/live", None, 200),
        ("GET", "/v2/health/ready", None, 200),
        ("GET", "/v2/models/simple/ready", None, 200),
        ("GET", "/v2/models/simple/config", None, 200),
        ("GET", "/v2/models/stats", None, 200),
        ("GET", "/v2/models/simple/stats", None, 200),
        ("GET", "/v2/systemsharedmemory/status", None, 200),
        ("POST", "/v2/systemsharedmemory/region/r0/register", b'{"key":"/k","byte_size":64}', 501),
        ("GET", "/v2/trace/setting", None, 200),
        ("GET", "/v2/logging", None, 200),
        ("POST", "/v2/health/live", None, 405),
    ],
)
def test_qa_open_categories_need_nothing(qa_server, method, path, body, expected):
    status, resp = http_call(qa_server, method, path, {}, body)
    assert status == expected, (method, path, status, resp)


def test_qa_listeners_are_independent(qa_server):
    stub = qa_server.grpc_stub()
    # HTTP restricts inference and metadata; gRPC does not.
    assert stub.ModelInfer(simple_grpc_request()).model_name == "simple"
    assert stub.ServerMetadata(service_pb2.ServerMetadataRequest()).name
    # gRPC restricts statistics; HTTP does not.
    assert_grpc_denied(
        grpc_outcome(lambda: stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name="simple"))), "admin-key", "stats"
    )
    assert stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name="simple"), metadata=GRPC_ADMIN_MD).model_stats
    assert http_call(qa_server, "GET", "/v2/models/simple/stats", {})[0] == 200
    # gRPC model-repository: the bare HTTP header name is not the gRPC key.
    unload = lambda md: stub.RepositoryModelUnload(service_pb2.RepositoryModelUnloadRequest(model_name="simple"), metadata=md)
    assert_grpc_denied(grpc_outcome(lambda: unload([("admin-key", "admin-value")])), "admin-key", "bare key")
    assert_grpc_passed(grpc_outcome(lambda: unload(GRPC_ADMIN_MD)), (grpc.StatusCode.UNAVAILABLE, MODE_MESSAGE), "unload")
    # HTTP: the gRPC-style header name is not the HTTP key.
    status, resp = http_call(qa_server, "POST", "/v2/repository/models/simple/unload", {GRPC_PREFIX + "admin-key": "admin-value"}, b"{}")
    assert_denied(status, resp, "admin-key", "gRPC-style name on HTTP")


# ---------------------------------------------------------------------------------------------------------------
# Startup errors
# ---------------------------------------------------------------------------------------------------------------

FLAGS = {"http": ("--http-restricted-api", "api"), "grpc": ("--grpc-restricted-protocol", "protocol")}
SECRET = f"St4rtup{MARK}Value"


def startup_failure(examples_dir, flags: list[str]) -> str:
    proc = run_to_exit(grpc_base_args(examples_dir, extra=flags), timeout=60)
    out = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
    assert proc.returncode == 1, f"{flags} started (exit {proc.returncode}):\n{out[-3000:]}"
    assert "Started HTTPService" not in out
    assert SECRET not in out and MARK not in out, f"a credential value leaked into the output:\n{out[-3000:]}"
    return out


@pytest.mark.parametrize("proto", ["http", "grpc"])
@pytest.mark.parametrize(
    "spec",
    [
        "health",
        "health:k",
        f":k={SECRET}",
        f"health:={SECRET}",
        "health:k=",
        f"k={SECRET}",
        f"health=k={SECRET}",
        "",
    ],
)
def test_startup_format_error(examples_dir, proto, spec):
    flag, _ = FLAGS[proto]
    out = startup_failure(examples_dir, [f"{flag}={spec}"])
    assert f"{flag} option format is '<config name>:<setting>=<value>'. Got" in out, out[-2000:]
    if "=" in spec:
        assert "<redacted>" in out, out[-2000:]


@pytest.mark.parametrize("proto", ["http", "grpc"])
@pytest.mark.parametrize(
    "cats,bad",
    [("bogus", "bogus"), ("health,Metadata", "Metadata"), ("health,inference,sharedmemory", "sharedmemory"), ("health, trace", " trace"), ("metrics", "metrics")],
)
def test_startup_unknown_category(examples_dir, proto, cats, bad):
    flag, noun = FLAGS[proto]
    out = startup_failure(examples_dir, [f"{flag}={cats}:k={SECRET}"])
    assert f"unknown restricted {noun} '{bad}'" in out, out[-2000:]


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_startup_category_in_two_groups(examples_dir, proto):
    flag, noun = FLAGS[proto]
    out = startup_failure(examples_dir, [f"{flag}=health,trace:a={SECRET}", f"{flag}=metadata,trace:b={SECRET}2"])
    assert f"restricted {noun} 'trace' can not be specified in multiple config groups" in out, out[-2000:]


def test_startup_same_category_on_both_listeners_is_fine(examples_dir):
    srv = start_server(
        grpc_base_args(
            examples_dir,
            extra=["--http-restricted-api=trace,logging:k=v1", "--grpc-restricted-protocol=trace,logging:k=v2"],
        ),
        "rampart[restricted: same category on both]",
    )
    try:
        assert_denied(*http_call(srv, "GET", "/v2/logging", {"k": "v2"}), "k", "gRPC value on HTTP")
        status, body = http_call(srv, "GET", "/v2/logging", {"k": "v1"})
        assert status == 200 and json.loads(body)["log_info"] is True, (status, body)
        call = lambda md: srv.grpc_stub().LogSettings(service_pb2.LogSettingsRequest(), metadata=md)
        assert_grpc_denied(grpc_outcome(lambda: call([(GRPC_PREFIX + "k", "v1")])), "k", "HTTP value on gRPC")
        assert_grpc_passed(grpc_outcome(lambda: call([(GRPC_PREFIX + "k", "v2")])), lambda r: r.settings["log_info"].bool_param, "gRPC")
    finally:
        finish_server(srv)


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_startup_missing_value_file(examples_dir, tmp_path, proto):
    flag, _ = FLAGS[proto]
    missing = tmp_path / "no-such-secret-file"
    out = startup_failure(examples_dir, [f"{flag}=model-repository:adm={SECRET}", f"{flag}=inference:k=@{missing}"])
    assert str(missing) in out, out[-2000:]


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_startup_unset_value_variable(examples_dir, monkeypatch, proto):
    flag, _ = FLAGS[proto]
    var = "RAMPART_TEST_RESTRICTED_UNSET_VARIABLE"
    monkeypatch.delenv(var, raising=False)
    out = startup_failure(examples_dir, [f"{flag}=model-repository:adm={SECRET}", f"{flag}=inference:k=env:{var}"])
    assert var in out, out[-2000:]


@pytest.mark.parametrize("proto", ["http", "grpc"])
@pytest.mark.parametrize("content", ["", "\n"])
def test_startup_empty_value_file(examples_dir, tmp_path, proto, content):
    """An empty credential would let a request with an empty header in: refused at startup (Rampart's own)."""
    flag, _ = FLAGS[proto]
    f = tmp_path / "empty"
    f.write_text(content)
    startup_failure(examples_dir, [f"{flag}=model-repository:adm={SECRET}", f"{flag}=inference:k=@{f}"])


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_startup_empty_value_variable(examples_dir, monkeypatch, proto):
    flag, _ = FLAGS[proto]
    var = "RAMPART_TEST_RESTRICTED_EMPTY_VARIABLE"
    monkeypatch.setenv(var, "")
    startup_failure(examples_dir, [f"{flag}=model-repository:adm={SECRET}", f"{flag}=inference:k=env:{var}"])


def test_startup_error_from_a_later_flag_hides_earlier_values(examples_dir):
    """The HTTP flags are fine, the gRPC one is malformed: no value of either appears."""
    out = startup_failure(
        examples_dir,
        [f"--http-restricted-api=inference:k={SECRET}", f"--grpc-restricted-protocol=inference:={SECRET}2"],
    )
    assert "--grpc-restricted-protocol option format is" in out, out[-2000:]


# ---------------------------------------------------------------------------------------------------------------
# Last: no credential value, right or wrong, reached any output of the running servers
# ---------------------------------------------------------------------------------------------------------------


def test_no_value_in_server_output(each_server, qa_server):
    out = each_server.stderr_text() + each_server.stdout_text()
    assert "categories answering without credentials" in out  # the log was captured
    assert len(out.splitlines()) > 50, "--log-verbose=1 output expected"
    values = list(HTTP_VALUES.values()) + list(GRPC_VALUES.values())
    for v in values:
        for w in (v, *wrong_values(v).values()):
            if w:
                assert w not in out, f"credential value {w!r} appears in the server output"
    for marker in (MARK, WRONG):
        assert marker.lower() not in out.lower(), f"{marker!r} appears in the server output"
    qa_out = qa_server.stderr_text() + qa_server.stdout_text()
    for v in ("admin-value", "infer-value"):
        assert v not in qa_out, f"{v!r} appears in the qa server output"
