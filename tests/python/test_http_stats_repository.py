"""Statistics (docs/protocol.md, "Statistics"; endpoints 10-11 of "HTTP endpoints") and the repository index
(endpoint 15) on examples/models."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import assert_error

EXAMPLES = {"simple", "identity_fp32", "identity_bytes", "mlp"}
DURATION_KEYS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


def _stats(server, model: str, version: str | None = None) -> dict:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/stats"
    r = server.get(path)
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["model_stats"], body
    entries = [e for e in body["model_stats"] if e["name"] == model]
    assert len(entries) == 1, body
    return entries[0]


def _count(entry: dict, key: str) -> int:
    return int(entry["inference_stats"][key]["count"])


def _fp32_request(batch: int, width: int = 3) -> dict:
    data = np.arange(batch * width, dtype=np.float32).tolist()
    return {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [batch, width], "data": data}]}


# --------------------------------------------------------------------------------------- statistics


def test_stats_entry_shape(server):
    e = _stats(server, "simple")
    assert e["name"] == "simple"
    assert e["version"] == "1"
    for key in ("last_inference", "inference_count", "execution_count", "inference_stats", "batch_stats"):
        assert key in e, f"{key} missing from {e}"
    for key in DURATION_KEYS:
        d = e["inference_stats"][key]
        assert set(d) >= {"count", "ns"}, f"inference_stats.{key} must be {{count, ns}}: {d}"
        assert int(d["count"]) >= 0 and int(d["ns"]) >= 0
    assert isinstance(e["batch_stats"], list)


def test_all_models_stats(server):
    r = server.get("/v2/models/stats")
    assert r.status_code == 200, r.text
    entries = r.json()["model_stats"]
    names = {(e["name"], e["version"]) for e in entries}
    for m in EXAMPLES:
        assert (m, "1") in names, f"{m} missing from /v2/models/stats: {names}"


def test_versioned_stats(server):
    e = _stats(server, "simple", "1")
    assert e["version"] == "1"


def test_stats_change_after_inference(server):
    before = _stats(server, "identity_fp32")
    t0_ms = int(time.time() * 1000)
    for batch in (1, 2, 3):
        r = server.infer("identity_fp32", _fp32_request(batch))
        assert r.status_code == 200, r.text
    after = _stats(server, "identity_fp32")

    assert int(after["inference_count"]) - int(before["inference_count"]) == 6, "inference_count counts batch items"
    exec_delta = int(after["execution_count"]) - int(before["execution_count"])
    assert 1 <= exec_delta <= 3, f"execution_count delta {exec_delta}"
    assert _count(after, "success") - _count(before, "success") == 3, "success counts requests"
    assert _count(after, "fail") == _count(before, "fail")
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert _count(after, key) > _count(before, key), f"inference_stats.{key}.count did not increase"
        assert int(after["inference_stats"][key]["ns"]) >= int(before["inference_stats"][key]["ns"])
    assert int(after["inference_stats"]["success"]["ns"]) > int(before["inference_stats"]["success"]["ns"])
    last = int(after["last_inference"])
    assert t0_ms - 5_000 <= last <= int(time.time() * 1000) + 5_000, f"last_inference {last} is not ms since epoch"
    sizes = {int(b["batch_size"]) for b in after["batch_stats"]}
    assert sizes, "batch_stats must record executed batch sizes"
    # One response per request, at index "0": its success count and durations follow the request ones.
    resp = after["response_stats"]["0"]
    assert resp["success"] == after["inference_stats"]["success"], resp
    assert resp["fail"] == after["inference_stats"]["fail"], resp
    assert resp["compute_infer"] == after["inference_stats"]["compute_infer"], resp
    assert resp["empty_response"] == {"count": 0, "ns": 0} and resp["cancel"] == {"count": 0, "ns": 0}, resp


def test_failed_inference_counts_as_fail(server):
    before = _stats(server, "identity_fp32")
    r = server.infer("identity_fp32", _fp32_request(9))  # max_batch_size is 8
    assert_error(r, 400, "inference request batch-size must be <= 8 for 'identity_fp32'")
    after = _stats(server, "identity_fp32")
    assert _count(after, "fail") - _count(before, "fail") == 1
    assert _count(after, "success") == _count(before, "success")
    assert int(after["inference_count"]) == int(before["inference_count"])


def test_tritonclient_statistics(client):
    before = client.get_inference_statistics("simple")["model_stats"][0]
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    in0 = httpclient.InferInput("INPUT0", [1, 16], "INT32")
    in0.set_data_from_numpy(a)
    in1 = httpclient.InferInput("INPUT1", [1, 16], "INT32")
    in1.set_data_from_numpy(a)
    client.infer("simple", [in0, in1])
    after = client.get_inference_statistics("simple", "1")["model_stats"][0]
    assert int(after["inference_count"]) == int(before["inference_count"]) + 1
    assert int(after["execution_count"]) == int(before["execution_count"]) + 1
    all_stats = client.get_inference_statistics()
    assert {e["name"] for e in all_stats["model_stats"]} >= EXAMPLES


def test_stats_unknown_model(server):
    assert_error(server.get("/v2/models/nope/stats"), 404, exact="Request for unknown model: 'nope' is not found")


# --------------------------------------------------------------------------------------- repository index


def _check_index(entries):
    assert isinstance(entries, list)
    by_name = {}
    for e in entries:
        assert {"name", "state"} <= set(e), e
        by_name.setdefault(e["name"], []).append(e)
    for m in EXAMPLES:
        assert m in by_name, f"{m} missing from index {entries}"
        (e,) = by_name[m]
        assert e["version"] == "1", e
        assert e["state"] == "READY", e
        assert e.get("reason", "") == "", f"READY model with a reason: {e}"


def test_repository_index(server):
    _check_index(server.index())


def test_repository_index_named_repository(server):
    # '/v2/repository/{repo}/index' is accepted; the repository name is ignored.
    r = server.post("/v2/repository/anything/index")
    assert r.status_code == 200, r.text
    _check_index(r.json())


def test_repository_index_with_ready_filter(server):
    r = server.post("/v2/repository/index", json={"ready": True})
    assert r.status_code == 200, r.text
    _check_index(r.json())


def test_tritonclient_repository_index(client):
    _check_index(client.get_model_repository_index())


@pytest.mark.parametrize("body", [b'{"ready": "yes"}', b"{not json"])
def test_repository_index_bad_body(server, body):
    r = server.post("/v2/repository/index", data=body)
    assert_error(r, 400)
