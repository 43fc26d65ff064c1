"""ONNX Runtime session tuning (issue 5): the model-config keys of Triton's ONNX Runtime backend
(`intra_op_thread_count`, `inter_op_thread_count`, `execution_mode`, `enable_mem_pattern`,
`optimization { graph { level } }`) and `--backend-config=onnxruntime,...` (thread counts, global thread pool).

Thread counts are checked where they show: ONNX Runtime starts `intra_op_thread_count - 1` worker threads per
session, so the server's thread count (/proc/PID/task) grows with them. Results are checked against numpy."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import base_args, run_to_exit, start_server

pytestmark = pytest.mark.skipif(
    "onnxruntime" not in os.environ.get("RAMPART_ENGINES", "onnxruntime,tract"), reason="ONNX Runtime engine tests"
)


def simple_repo(examples_dir: Path, dest: Path, extra: str = "", copies: int = 1) -> Path:
    """`copies` copies of the `simple` add/sub model (simple_0, simple_1, ...) with `extra` config text."""
    for i in range(copies):
        name = f"simple_{i}"
        shutil.copytree(examples_dir / "simple", dest / name)
        cfg = dest / name / "config.pbtxt"
        cfg.write_text(cfg.read_text().replace('name: "simple"', f'name: "{name}"') + "\n" + extra + "\n")
    return dest


def param(key: str, value: str) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'


def check_add_sub(srv, model: str) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a.flatten().tolist()},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b.flatten().tolist()},
        ]
    }
    r = srv.post(f"/v2/models/{model}/infer", data=json.dumps(body).encode())
    assert r.status_code == 200, r.text
    outs = {o["name"]: o["data"] for o in r.json()["outputs"]}
    assert outs["OUTPUT0"] == (a + b).flatten().tolist()
    assert outs["OUTPUT1"] == (a - b).flatten().tolist()


def threads(srv) -> int:
    return len(os.listdir(f"/proc/{srv.proc.pid}/task"))


def serve(repo: Path, label: str, extra: tuple = ()):
    return start_server(base_args(repo, "onnxruntime", extra), label)


COPIES = 3


@pytest.mark.parametrize(
    "extra",
    [
        param("execution_mode", "1") + " " + param("inter_op_thread_count", "2"),
        param("execution_mode", "0"),
        param("enable_mem_pattern", "0"),
        "optimization { graph { level: -1 } }",
        "optimization { graph { level: 1 } }",
        "optimization { graph { level: 2 } }",
    ],
    ids=["parallel", "sequential", "no-mem-pattern", "graph-basic", "graph-extended", "graph-none"],
)
def test_session_settings_load_and_compute_the_same(examples_dir, tmp_path, extra):
    srv = serve(simple_repo(examples_dir, tmp_path, extra), f"rampart[{extra}]")
    try:
        check_add_sub(srv, "simple_0")
    finally:
        srv.stop()


def test_intra_op_thread_count_starts_worker_threads(examples_dir, tmp_path):
    one = serve(simple_repo(examples_dir, tmp_path / "one", param("intra_op_thread_count", "1"), COPIES), "rampart[intra 1]")
    try:
        base = threads(one)
        check_add_sub(one, "simple_0")
    finally:
        one.stop()
    four = serve(simple_repo(examples_dir, tmp_path / "four", param("intra_op_thread_count", "4"), COPIES), "rampart[intra 4]")
    try:
        grown = threads(four)
        check_add_sub(four, "simple_2")
    finally:
        four.stop()
    # 3 extra ONNX Runtime workers per session, one session per model.
    assert grown - base >= 3 * COPIES, (base, grown)


def test_backend_config_sets_the_default_and_the_model_overrides_it(examples_dir, tmp_path):
    repo = simple_repo(examples_dir, tmp_path / "r", "", COPIES)
    default = serve(repo, "rampart[default]")
    try:
        base = threads(default)
    finally:
        default.stop()
    tuned = serve(repo, "rampart[backend-config intra 3]", ("--backend-config=onnxruntime,intra_op_thread_count=3",))
    try:
        grown = threads(tuned)
        check_add_sub(tuned, "simple_1")
    finally:
        tuned.stop()
    assert grown - base >= 2 * COPIES, (base, grown)
    overridden = simple_repo(examples_dir, tmp_path / "o", param("intra_op_thread_count", "1"), COPIES)
    srv = serve(overridden, "rampart[model overrides]", ("--backend-config=onnxruntime,intra_op_thread_count=3",))
    try:
        assert threads(srv) - base < 2, "the model's intra_op_thread_count 1 wins over the backend default"
    finally:
        srv.stop()


def test_global_thread_pool_is_shared_by_every_session(examples_dir, tmp_path):
    repo = simple_repo(examples_dir, tmp_path, param("intra_op_thread_count", "4"), COPIES)
    per_session = serve(repo, "rampart[per-session pools]")
    try:
        separate = threads(per_session)
    finally:
        per_session.stop()
    shared = serve(
        repo,
        "rampart[global pool]",
        ("--backend-config=onnxruntime,enable-global-threadpool=1", "--backend-config=onnxruntime,intra_op_thread_count=4"),
    )
    try:
        pooled = threads(shared)
        for i in range(COPIES):
            check_add_sub(shared, f"simple_{i}")
    finally:
        shared.stop()
    # One pool of 3 workers instead of 3 per session; the model's own count is ignored under the global pool.
    assert separate - pooled >= 3 * (COPIES - 1), (separate, pooled)


@pytest.mark.parametrize(
    "extra,message",
    [
        (param("intra_op_thread_count", "many"), "'intra_op_thread_count' must be an integer from 0 to 1024, got 'many'"),
        (param("inter_op_thread_count", "-1"), "'inter_op_thread_count' must be an integer from 0 to 1024, got '-1'"),
        (param("intra_op_thread_count", "100000"), "'intra_op_thread_count' must be an integer from 0 to 1024"),
        (param("execution_mode", "2"), "parameter 'execution_mode' must be 0 (sequential) or 1 (parallel), got '2'"),
        (param("enable_mem_pattern", "yes please"), "'enable_mem_pattern' must be 0 or 1, got 'yes please'"),
    ],
)
def test_bad_session_parameters_fail_the_load_with_a_clear_message(examples_dir, tmp_path, extra, message):
    proc = run_to_exit(base_args(simple_repo(examples_dir, tmp_path, extra), "onnxruntime"))
    out = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
    assert proc.returncode == 1
    assert f"failed to load 'simple_0': model 'simple_0' version 1: {message}" in out, out[-2000:]


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--backend-config=onnxruntime,intra_op_thread_count=x", "intra_op_thread_count' must be an integer from 0 to 1024, got 'x'"),
        ("--backend-config=onnxruntime,enable-global-threadpool=2", "'enable-global-threadpool' must be 0 or 1, got '2'"),
        ("--backend-config=onnxruntime,no_such_key=1", "is not supported yet"),
    ],
)
def test_bad_backend_config_refuses_to_start(examples_dir, flag, message):
    proc = run_to_exit(base_args(examples_dir, "onnxruntime", (flag,)))
    out = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
    assert proc.returncode == 1
    assert message in out, out[-2000:]
