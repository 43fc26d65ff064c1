"""Response cache (`--cache-config local,size=N`, deprecated `--response-cache-byte-size`, model config
`response_cache { enable: true }`): hits answer without the engine, statistics count hits and misses as Triton
does (inference and execution counts exclude hits), the cache is shared by HTTP and gRPC, bounded in bytes,
and keyed by everything that changes an answer."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from conftest import base_args, grpc_base_args, run_to_exit, start_server

CACHED = ("identity_fp32", "simple")


def cache_repo(examples_dir: Path, dest: Path) -> Path:
    for name in ("identity_fp32", "simple", "mlp"):
        shutil.copytree(examples_dir / name, dest / name)
        if name in CACHED:
            cfg = dest / name / "config.pbtxt"
            cfg.write_text(cfg.read_text() + "\nresponse_cache { enable: true }\n")
    return dest


@pytest.fixture(scope="module")
def repo(examples_dir, tmp_path_factory):
    return cache_repo(examples_dir, tmp_path_factory.mktemp("cache_repo"))


@pytest.fixture(scope="module")
def cached(engine, repo):
    srv = start_server(grpc_base_args(repo, engine, ["--cache-config=local,size=1048576"]), f"rampart[{engine}, cache]")
    yield srv
    srv.stop()


def stats(srv, model: str) -> dict:
    r = srv.get(f"/v2/models/{model}/stats")
    assert r.status_code == 200, r.text
    s = r.json()["model_stats"][0]
    i = s["inference_stats"]
    return {
        "hit": i["cache_hit"]["count"],
        "miss": i["cache_miss"]["count"],
        "hit_ns": i["cache_hit"]["ns"],
        "miss_ns": i["cache_miss"]["ns"],
        "success": i["success"]["count"],
        "queue": i["queue"]["count"],
        "inference": s["inference_count"],
        "execution": s["execution_count"],
    }


def delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in after if not k.endswith("_ns")}


def identity_body(values: list[float], outputs: list[str] | None = None) -> bytes:
    body: dict = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, len(values)], "data": values}]}
    if outputs is not None:
        body["outputs"] = [{"name": o} for o in outputs]
    return json.dumps(body).encode()


def simple_body(a: int, outputs: list[str] | None = None) -> bytes:
    body: dict = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [a + i for i in range(16)]},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
        ]
    }
    if outputs is not None:
        body["outputs"] = [{"name": o} for o in outputs]
    return json.dumps(body).encode()


def test_second_identical_request_is_a_hit(cached):
    before = stats(cached, "identity_fp32")
    first = cached.post("/v2/models/identity_fp32/infer", data=identity_body([1.5, 2.5, 3.5]))
    second = cached.post("/v2/models/identity_fp32/infer", data=identity_body([1.5, 2.5, 3.5]))
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["outputs"] == second.json()["outputs"]
    assert second.json()["outputs"][0]["data"] == [1.5, 2.5, 3.5]
    after = stats(cached, "identity_fp32")
    assert delta(after, before) == {"hit": 1, "miss": 1, "success": 2, "queue": 2, "inference": 1, "execution": 1}
    assert after["hit_ns"] > before["hit_ns"] and after["miss_ns"] > before["miss_ns"]


def test_grpc_shares_the_cache_with_http(cached):
    values = [7.0, 8.0]
    assert cached.post("/v2/models/identity_fp32/infer", data=identity_body(values)).status_code == 200
    before = stats(cached, "identity_fp32")
    client = grpcclient.InferenceServerClient(url=cached.grpc_url)
    x = np.array([values], dtype=np.float32)
    inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("identity_fp32", [inp])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)
    client.close()
    assert delta(stats(cached, "identity_fp32"), before) == {"hit": 1, "miss": 0, "success": 1, "queue": 1, "inference": 0, "execution": 0}


@pytest.mark.parametrize(
    "first,second",
    [
        (identity_body([11.0, 12.0]), identity_body([11.0, 12.5])),  # data
        (identity_body([21.0, 22.0]), identity_body([21.0, 22.0, 0.0])),  # shape
    ],
    ids=["data", "shape"],
)
def test_a_different_input_is_a_miss(cached, first, second):
    before = stats(cached, "identity_fp32")
    a = cached.post("/v2/models/identity_fp32/infer", data=first)
    b = cached.post("/v2/models/identity_fp32/infer", data=second)
    assert a.status_code == b.status_code == 200
    assert a.json()["outputs"][0] != b.json()["outputs"][0]
    assert b.json()["outputs"][0]["data"] == json.loads(second)["inputs"][0]["data"]
    assert delta(stats(cached, "identity_fp32"), before) == {"hit": 0, "miss": 2, "success": 2, "queue": 2, "inference": 2, "execution": 2}


def test_requested_outputs_are_part_of_the_key(cached):
    before = stats(cached, "simple")
    both = cached.post("/v2/models/simple/infer", data=simple_body(1000)).json()
    only0 = cached.post("/v2/models/simple/infer", data=simple_body(1000, ["OUTPUT0"])).json()
    only0_again = cached.post("/v2/models/simple/infer", data=simple_body(1000, ["OUTPUT0"])).json()
    assert [o["name"] for o in both["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    assert [o["name"] for o in only0["outputs"]] == ["OUTPUT0"] == [o["name"] for o in only0_again["outputs"]]
    assert only0["outputs"][0]["data"] == [1001 + i for i in range(16)]
    assert delta(stats(cached, "simple"), before) == {"hit": 1, "miss": 2, "success": 3, "queue": 3, "inference": 2, "execution": 2}


def test_models_without_response_cache_are_not_cached(cached):
    x = [0.0] * 784
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": x}]}).encode()
    before = stats(cached, "mlp")
    for _ in range(3):
        assert cached.post("/v2/models/mlp/infer", data=body).status_code == 200
    assert delta(stats(cached, "mlp"), before) == {"hit": 0, "miss": 0, "success": 3, "queue": 3, "inference": 3, "execution": 3}


def test_failed_requests_are_not_cached(cached):
    bad = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}]}).encode()
    before = stats(cached, "identity_fp32")
    for _ in range(2):
        r = cached.post("/v2/models/identity_fp32/infer", data=bad)
        assert r.status_code == 400
    d = delta(stats(cached, "identity_fp32"), before)
    assert d["hit"] == 0 and d["miss"] == 0


def test_outputs_larger_than_the_cache_are_never_stored(engine, repo):
    srv = start_server(base_args(repo, engine, ["--cache-config=local,size=256"]), f"rampart[{engine}, tiny cache]")
    try:
        big = [float(i) for i in range(512)]  # 2 KiB of output, more than the whole cache
        before = stats(srv, "identity_fp32")
        for _ in range(3):
            r = srv.post("/v2/models/identity_fp32/infer", data=identity_body(big))
            assert r.status_code == 200 and r.json()["outputs"][0]["data"] == big
        assert delta(stats(srv, "identity_fp32"), before) == {"hit": 0, "miss": 3, "success": 3, "queue": 3, "inference": 3, "execution": 3}
    finally:
        srv.stop()


def test_deprecated_flag_enables_the_cache(repo):
    srv = start_server(base_args(repo, None, ["--response-cache-byte-size=65536"]), "rampart[deprecated cache flag]")
    try:
        for _ in range(2):
            assert srv.post("/v2/models/identity_fp32/infer", data=identity_body([3.0])).status_code == 200
        assert delta(stats(srv, "identity_fp32"), {k: 0 for k in stats(srv, "identity_fp32")})["hit"] == 1
    finally:
        srv.stop()


def test_model_cache_without_server_cache_warns_and_serves(repo):
    srv = start_server(base_args(repo, None), "rampart[no cache]")
    try:
        for _ in range(2):
            assert srv.post("/v2/models/identity_fp32/infer", data=identity_body([4.0])).status_code == 200
        s = stats(srv, "identity_fp32")
        assert s["hit"] == 0 and s["miss"] == 0 and s["execution"] == 2
        assert "enables response_cache but the server has no cache" in srv.output()
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "flags,message",
    [
        (
            ["--cache-config=local,size=1024", "--response-cache-byte-size=1024"],
            "Incompatible flags --response-cache-byte-size and --cache-config both provided. Please provide one or the other.",
        ),
        (["--cache-config=redis,host=x"], "--cache-config: only the 'local' response cache is built into Rampart, got 'redis'"),
        (["--cache-config=local,ways=4"], "--cache-config: the local cache takes only 'size=<bytes>', got 'ways=4'"),
        (["--cache-config=local"], "--cache-config option format is '<cache name>,<setting>=<value>'. Got local"),
        (["--cache-config=local,size=lots"], "the cache size must be a number of bytes, got 'lots'"),
    ],
)
def test_bad_cache_flags_stop_the_server(examples_dir, flags, message):
    proc = run_to_exit(base_args(examples_dir, None, flags))
    out = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
    assert proc.returncode == 1
    assert message in out, out[-2000:]
