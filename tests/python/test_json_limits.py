"""--http-max-json-depth and --http-max-json-values at their boundaries (docs/security.md, Limits)."""

import json

import pytest

from conftest import base_args, run_to_exit, start_server

SIMPLE_INPUT1 = {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}


def nested(depth: int, values: list[int]):
    """`values` wrapped so that the innermost list sits `depth` arrays deep."""
    v = values
    for _ in range(depth - 1):
        v = [v]
    return v


def body_with_input0(data) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": data}, SIMPLE_INPUT1]}
    ).encode()


@pytest.fixture(scope="module")
def limited(examples_dir):
    srv = start_server(
        base_args(examples_dir, None, ["--http-max-json-depth=3", "--http-max-json-values=64"]),
        "rampart[json limits]",
    )
    yield srv
    srv.stop()


def test_depth_at_the_limit_is_accepted(limited):
    r = limited.post("/v2/models/simple/infer", data=body_with_input0(nested(2, [list(range(16))])))
    assert r.status_code == 200, r.text
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert out["OUTPUT0"] == [2 * i for i in range(16)]


def test_depth_over_the_limit_is_refused(limited):
    r = limited.post("/v2/models/simple/infer", data=body_with_input0(nested(3, [list(range(16))])))
    assert r.status_code == 400
    assert r.json() == {
        "error": "Unable to parse 'data' of input 'INPUT0': JSON nesting depth exceeds maximum allowed limit (3)"
    }
    assert limited.post("/v2/models/simple/infer", data=body_with_input0(list(range(16)))).status_code == 200


def count_values(text: bytes) -> int:
    """The server's count: 1 + ',' '[' '{' outside strings (the bodies here have no strings with those)."""
    plain = text.replace(b'"INPUT0"', b"").replace(b'"INPUT1"', b"").replace(b'"INT32"', b"")
    return 1 + sum(plain.count(c) for c in (b",", b"[", b"{"))


def padded_body(total_values: int) -> bytes:
    """A valid `simple` request whose request-level parameters pad the document to `total_values` values."""
    base = body_with_input0(list(range(16)))
    have = count_values(base)
    assert have < total_values
    # Each extra parameter adds one ',' (the first one adds '{' and no ',', counted the same).
    params = {f"p{i}": i for i in range(total_values - have - 1)}
    doc = json.loads(base)
    doc["parameters"] = params
    body = json.dumps(doc).encode()
    assert count_values(body) == total_values, (count_values(body), total_values)
    return body


def test_value_count_at_the_limit_is_accepted(limited):
    r = limited.post("/v2/models/simple/infer", data=padded_body(64))
    assert r.status_code == 200, r.text


def test_value_count_over_the_limit_is_refused(limited):
    r = limited.post("/v2/models/simple/infer", data=padded_body(65))
    assert r.status_code == 400
    assert r.json() == {
        "error": "the request JSON has too many values (at most 64 values and 65536 objects); "
        "send large tensors with the binary tensor extension"
    }


def test_repository_index_body_is_counted_too(limited):
    r = limited.post("/v2/repository/index", data=json.dumps({"ready": True, "x": list(range(70))}).encode())
    assert r.status_code == 400
    assert "too many values (at most 64 values" in r.json()["error"]
    assert limited.post("/v2/repository/index", data=b'{"ready": true}').status_code == 200


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--http-max-json-depth=0", "--http-max-json-depth must be between 1 and 100, got 0"),
        ("--http-max-json-depth=101", "--http-max-json-depth must be between 1 and 100, got 101"),
        ("--http-max-json-values=0", "--http-max-json-values must be greater than 0"),
    ],
)
def test_bad_values_stop_the_server(examples_dir, flag, message):
    proc = run_to_exit(base_args(examples_dir, None, [flag]))
    out = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
    assert proc.returncode == 1
    assert message in out, out[-2000:]
