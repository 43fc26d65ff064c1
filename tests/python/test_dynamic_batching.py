"""Dynamic batching (docs/protocol.md, "Model repository"): concurrent requests to a model with `dynamic_batching`
are executed together, each gets exactly its own rows back, and the statistics show the batches. Both engines, real
ONNX models."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import base_args, concurrently, grpc_base_args, run_to_exit, start_server

ROWS = [1, 2, 1, 3, 1, 1, 2, 1] * 4  # 32 requests, 48 rows


def batched_repo(examples_dir: Path, dest: Path, dynamic: str, models=("mlp", "identity_bytes")) -> Path:
    """`mlp` (FP32 [-1, 784] → [-1, 10], max_batch_size 32) and `identity_bytes` (BYTES, max_batch_size 8)
    with the given `dynamic_batching { … }` body."""
    for name in models:
        shutil.copytree(examples_dir / name, dest / name)
        cfg = dest / name / "config.pbtxt"
        cfg.write_text(cfg.read_text() + f"\ndynamic_batching {{ {dynamic} }}\n")
    return dest


@pytest.fixture(scope="module")
def batching_server(engine, examples_dir, tmp_path_factory):
    repo = batched_repo(examples_dir, tmp_path_factory.mktemp("batching"), "max_queue_delay_microseconds: 50000")
    srv = start_server(base_args(repo, engine), f"rampart[{engine}, dynamic batching]")
    yield srv
    srv.stop()


def mlp_body(x: np.ndarray) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.flatten().tolist()}]}
    ).encode()


def stats(srv, model: str) -> dict:
    r = srv.get(f"/v2/models/{model}/stats")
    assert r.status_code == 200, r.text
    return r.json()["model_stats"][0]


def test_concurrent_requests_are_batched_and_each_gets_its_rows(batching_server, server):
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal((rows, 784), dtype=np.float32) for rows in ROWS]
    before = stats(batching_server, "mlp")
    answers = concurrently(lambda i: batching_server.post("/v2/models/mlp/infer", data=mlp_body(inputs[i])), len(ROWS))
    for i, r in enumerate(answers):
        assert r is not None and r.status_code == 200, getattr(r, "text", r)
        out = r.json()["outputs"][0]
        assert out["shape"] == [ROWS[i], 10]
        # The same request alone, on the examples server (no dynamic batching), gives the same rows.
        alone = server.post("/v2/models/mlp/infer", data=mlp_body(inputs[i])).json()["outputs"][0]["data"]
        np.testing.assert_allclose(out["data"], alone, rtol=1e-4, atol=1e-5)
    after = stats(batching_server, "mlp")
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == sum(ROWS)
    assert executions < len(ROWS), f"{executions} executions for {len(ROWS)} concurrent requests: nothing batched"
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == len(ROWS)
    assert after["inference_stats"]["queue"]["count"] - before["inference_stats"]["queue"]["count"] == len(ROWS)
    sizes = {int(b["batch_size"]) for b in after["batch_stats"]}
    assert max(sizes) > 1 and max(sizes) <= 32, sizes


def test_bytes_rows_are_scattered_back_exactly(batching_server):
    def one(i):
        elems = [f"req{i}-elem{k}-" + "x" * ((i + k) % 7) for k in range(2)]
        body = {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, len(elems)], "data": elems}]}
        return elems, batching_server.post("/v2/models/identity_bytes/infer", data=json.dumps(body).encode())

    before = stats(batching_server, "identity_bytes")
    results = concurrently(one, 16)
    for elems, r in results:
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["shape"] == [1, len(elems)] and out["data"] == elems
    after = stats(batching_server, "identity_bytes")
    assert after["inference_count"] - before["inference_count"] == 16
    assert after["execution_count"] - before["execution_count"] < 16


def test_a_lone_request_waits_at_most_the_queue_delay(batching_server):
    x = np.ones((1, 784), dtype=np.float32)
    before = stats(batching_server, "mlp")
    r = batching_server.post("/v2/models/mlp/infer", data=mlp_body(x))
    assert r.status_code == 200
    after = stats(batching_server, "mlp")
    queue_ns = after["inference_stats"]["queue"]["ns"] - before["inference_stats"]["queue"]["ns"]
    assert 0 < queue_ns < 2_000_000_000, queue_ns  # 50 ms configured; generous bound for a loaded CI machine


@pytest.mark.parametrize(
    "dynamic,message",
    [
        ("preferred_batch_size: [ 64 ]", "dynamic batching preferred size must be <= max batch size for mlp"),
        ("preferred_batch_size: [ 0 ]", "dynamic batching preferred size must be positive for mlp"),
    ],
)
def test_invalid_preferred_sizes_fail_the_load(examples_dir, tmp_path, dynamic, message):
    assert_load_fails(examples_dir, tmp_path, dynamic, message)


def assert_load_fails(examples_dir, tmp_path, dynamic: str, message: str) -> None:
    """`mlp` with `dynamic_batching { <dynamic> }` makes the server exit with `message`."""
    repo = batched_repo(examples_dir, tmp_path, dynamic, models=("mlp",))
    proc = run_to_exit(base_args(repo))
    out = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
    assert proc.returncode == 1
    assert message in out, out[-2000:]


# ---- default_queue_policy: timeouts (REJECT / DELAY, allow_timeout_override) ----------------------------

QUEUE_POLICIES = {
    # Every request times out: 1 µs is less than any hand-over to an instance thread.
    "reject_1us": "default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 1 }",
    "delay_1us": "default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 1 }",
    "override": "default_queue_policy { default_timeout_microseconds: 10000000 allow_timeout_override: true }",
    "no_override": "default_queue_policy { default_timeout_microseconds: 10000000 allow_timeout_override: false }",
    "bounded": "default_queue_policy { max_queue_size: 4 }",
    # Level 1 rejects everything that waits (1 µs); level 2, the default, has no timeout.
    "priorities": "priority_levels: 2 default_priority_level: 2 "
    "priority_queue_policy { key: 1 value: { timeout_action: REJECT default_timeout_microseconds: 1 } }",
    # The default policy rejects; level 3's own policy does not.
    # priority_queue_policy means nothing without priority_levels (Triton ignores it): the default applies.
    "no_levels": "default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 1 } "
    "priority_queue_policy { key: 1 value: { max_queue_size: 100 } }",
    "priority_override": "priority_levels: 3 default_priority_level: 1 "
    "default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 1 } "
    "priority_queue_policy { key: 3 value: { max_queue_size: 100 } }",
}


@pytest.fixture(scope="module")
def policy_server(examples_dir, tmp_path_factory):
    repo = tmp_path_factory.mktemp("queue_policy")
    for name, policy in QUEUE_POLICIES.items():
        shutil.copytree(examples_dir / "mlp", repo / name)
        cfg = repo / name / "config.pbtxt"
        text = cfg.read_text().replace('name: "mlp"', f'name: "{name}"')
        cfg.write_text(text + f"\ndynamic_batching {{ {policy} }}\n")
    srv = start_server(grpc_base_args(repo), "rampart[queue policy]")
    yield srv
    srv.stop()


def infer_with(srv, model: str, parameters: dict | None = None):
    body = json.loads(mlp_body(np.ones((1, 784), dtype=np.float32)))
    if parameters:
        body["parameters"] = parameters
    return srv.post(f"/v2/models/{model}/infer", data=json.dumps(body).encode())


def test_reject_policy_answers_request_timeout_expired(policy_server):
    before = stats(policy_server, "reject_1us")
    r = infer_with(policy_server, "reject_1us")
    assert r.status_code == 503 and r.json() == {"error": "Request timeout expired"}, r.text
    after = stats(policy_server, "reject_1us")
    assert after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"] == 1
    assert after["execution_count"] == before["execution_count"]


def test_reject_policy_over_grpc(policy_server):
    client = grpcclient.InferenceServerClient(url=policy_server.grpc_url)
    x = np.ones((1, 784), dtype=np.float32)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as e:
        client.infer("reject_1us", [inp])
    assert e.value.status() == "StatusCode.UNAVAILABLE"
    assert e.value.message() == "Request timeout expired"
    client.close()


def test_delay_policy_still_runs_expired_requests(policy_server):
    r = infer_with(policy_server, "delay_1us")
    assert r.status_code == 200, r.text


def test_request_timeout_may_shorten_the_default_when_allowed(policy_server):
    assert infer_with(policy_server, "override").status_code == 200
    r = infer_with(policy_server, "override", {"timeout": 1})
    assert r.status_code == 503 and r.json() == {"error": "Request timeout expired"}
    assert infer_with(policy_server, "override", {"timeout": 60_000_000}).status_code == 200, "cannot lengthen, but 10 s is plenty"


def test_request_timeout_is_ignored_without_override(policy_server):
    assert infer_with(policy_server, "no_override", {"timeout": 1}).status_code == 200


def test_bounded_queue_serves_normal_traffic(policy_server):
    results = concurrently(lambda i: infer_with(policy_server, "bounded"), 16)
    codes = [r.status_code for r in results]
    # How many of the 16 concurrent requests find the bounded queue full depends on thread timing.
    assert set(codes) <= {200, 503}, codes
    for r in results:
        if r.status_code == 503:
            assert r.json() == {"error": "Exceeds maximum queue size"}
    assert codes.count(200) >= 1


# ---- priority levels: the `priority` parameter selects a level, each level has its own queue policy ----------


@pytest.mark.parametrize("priority", [None, 0, 2, 3, 99])
def test_priority_outside_level_one_uses_the_default_level(policy_server, priority):
    params = None if priority is None else {"priority": priority}
    r = infer_with(policy_server, "priorities", params)
    assert r.status_code == 200, (priority, r.text)


def test_priority_one_gets_level_ones_queue_policy(policy_server):
    r = infer_with(policy_server, "priorities", {"priority": 1})
    assert r.status_code == 503 and r.json() == {"error": "Request timeout expired"}, r.text


def test_priority_queue_policy_replaces_the_default_policy_for_its_level(policy_server):
    assert infer_with(policy_server, "priority_override", {"priority": 3}).status_code == 200
    for priority in (None, 1, 2):
        params = None if priority is None else {"priority": priority}
        r = infer_with(policy_server, "priority_override", params)
        assert r.status_code == 503 and r.json() == {"error": "Request timeout expired"}, (priority, r.text)


def test_priority_queue_policy_without_levels_is_ignored(policy_server):
    for priority in (None, 1):
        params = None if priority is None else {"priority": priority}
        r = infer_with(policy_server, "no_levels", params)
        assert r.status_code == 503 and r.json() == {"error": "Request timeout expired"}, (priority, r.text)


def test_priority_over_grpc(policy_server):
    client = grpcclient.InferenceServerClient(url=policy_server.grpc_url)
    x = np.ones((1, 784), dtype=np.float32)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    try:
        out = client.infer("priorities", [inp], priority=2).as_numpy("output")
        assert out.shape == (1, 10)
        with pytest.raises(InferenceServerException) as e:
            client.infer("priorities", [inp], priority=1)
        assert e.value.status() == "StatusCode.UNAVAILABLE"
        assert e.value.message() == "Request timeout expired"
    finally:
        client.close()


@pytest.mark.parametrize(
    "dynamic,message",
    [
        ("priority_levels: 2 default_priority_level: 3", "default priority level must be in range [1, 2] for mlp"),
        ("priority_levels: 2", "default priority level must be in range [1, 2] for mlp"),
        (
            "priority_levels: 2 default_priority_level: 1 priority_queue_policy { key: 5 value: { max_queue_size: 1 } }",
            "priority queue policy must have priority level in range [1, 2] for mlp",
        ),
        (
            "priority_levels: 2 default_priority_level: 1 preserve_ordering: true",
            "Only one priority level is allowed when 'preserve_ordering' is true for mlp",
        ),
        (
            "preserve_ordering: true default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 5 }",
            "Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true for mlp",
        ),
    ],
)
def test_invalid_priority_settings_fail_the_load(examples_dir, tmp_path, dynamic, message):
    assert_load_fails(examples_dir, tmp_path, dynamic, message)
