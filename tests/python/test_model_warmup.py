"""`model_warmup`: samples run through the model before it is READY; statistics start at zero afterwards; a
failing or out-of-bounds sample fails the load with a reason; `input_data_file` stays inside `warmup/`."""

from __future__ import annotations

import re
import shutil

import pytest

from conftest import RampartServer, ServerStartError, base_args, example_repo

SIMPLE_BODY = {
    "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16},
    ]
}


def simple_with_warmup(tmp_path, warmup: str):
    repo = tmp_path / "repo"
    shutil.copytree(example_repo() / "simple", repo / "simple")
    cfg = repo / "simple" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + "\n" + warmup + "\n")
    return repo


def sample(name: str, count: int, batch: int = 2, data0: str = "zero_data: true", data1: str = "random_data: true") -> str:
    return f"""model_warmup [ {{
  name: "{name}" batch_size: {batch} count: {count}
  inputs {{ key: "INPUT0" value: {{ data_type: TYPE_INT32 dims: [ 16 ] {data0} }} }}
  inputs {{ key: "INPUT1" value: {{ data_type: TYPE_INT32 dims: [ 16 ] {data1} }} }}
}} ]"""


def test_warmup_runs_before_ready_and_leaves_no_statistics(tmp_path):
    (tmp_path / "w").mkdir()
    repo = simple_with_warmup(tmp_path, sample("zeros and random", 3))
    srv = RampartServer(base_args(repo, extra=["--log-verbose=0"]), label="warmup").start()
    try:
        log = srv.stderr_text()
        m = re.search(r"model 'simple' version 1: warmup 'zeros and random' ran (\d+) time", log)
        assert m and int(m.group(1)) == 3, log
        assert log.index("warmup 'zeros and random'") < log.index("successfully loaded 'simple' version 1"), log
        stats = srv.get("/v2/models/simple/versions/1/stats").json()["model_stats"][0]
        assert stats["inference_count"] == 0 and stats["execution_count"] == 0, stats
        assert stats["inference_stats"]["success"]["count"] == 0, stats
        assert srv.infer("simple", SIMPLE_BODY).status_code == 200
        stats = srv.get("/v2/models/simple/versions/1/stats").json()["model_stats"][0]
        assert stats["inference_count"] == 1, stats
    finally:
        srv.stop()


def test_warmup_from_file_inside_the_model(tmp_path):
    repo = simple_with_warmup(tmp_path, sample("file", 1, batch=1, data0='input_data_file: "in0.bin"'))
    (repo / "simple" / "warmup").mkdir()
    (repo / "simple" / "warmup" / "in0.bin").write_bytes(bytes(16 * 4))
    srv = RampartServer(base_args(repo), label="warmup-file").start()
    try:
        assert "warmup 'file' ran 1 time" in srv.stderr_text()
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "warmup,reason",
    [
        (sample("too big", 1, batch=9), "batch_size must be in 1..=8"),
        (sample("too many", 1001), "count 1001 is more than 1000"),
        (sample("escape", 1, batch=1, data0='input_data_file: "../config.pbtxt"'), "must stay within the model directory"),
        (sample("absent", 1, batch=1, data0='input_data_file: "nope.bin"'), "cannot read"),
        (sample("short", 1, batch=1, data0='input_data_file: "short.bin"'), "holds 3 bytes, the input needs 64"),
        # A sample the model cannot run: the wrong input name.
        (sample("wrong input", 1).replace('key: "INPUT1"', 'key: "NOPE"'), "model_warmup 'wrong input' failed"),
    ],
)
def test_bad_warmup_fails_the_load(tmp_path, warmup, reason):
    repo = simple_with_warmup(tmp_path, warmup)
    (repo / "simple" / "warmup").mkdir()
    (repo / "simple" / "warmup" / "short.bin").write_bytes(b"abc")
    srv = RampartServer(base_args(repo), label="bad-warmup")
    with pytest.raises(ServerStartError) as e:
        srv.start()
    assert reason in str(e.value), str(e.value)[-3000:]
