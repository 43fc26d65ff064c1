"""perf_analyzer (Triton's own benchmark client, 2.41.0) completes a measurement against Rampart over HTTP
and over gRPC.

It first reads the model config over the chosen protocol, then sends binary-tensor (HTTP) or raw_input_contents
(gRPC) requests. This is a compatibility test, not a benchmark: it asserts completion and zero failed requests,
not a rate (see bench/ for numbers).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time

import pytest
import requests

from conftest import RampartServer, _from_env_path, base_args, example_repo


def perf_analyzer_bin():
    path = _from_env_path("PERF_ANALYZER", "third_party/perf_analyzer/perf_analyzer")
    if not path.is_file():
        pytest.fail(f"perf_analyzer not found at {path}: run scripts/install-perf-analyzer.sh", pytrace=False)
    return path


def run_perf_analyzer(url: str, protocol: str, model: str, extra: list[str]) -> None:
    cmd = [
        str(perf_analyzer_bin()), "-m", model, "-u", url, "-i", protocol,
        "--concurrency-range", "2", "--measurement-mode", "count_windows",
        "--measurement-request-count", "300", "-s", "1000", "--max-trials", "10", *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    m = re.search(r"Throughput: ([0-9.]+) infer/sec", out)
    assert m and float(m.group(1)) > 0, out
    # The server-side section comes from Rampart's statistics API.
    ok = re.search(r"Successful request count: (\d+)", out)
    assert ok and int(ok.group(1)) > 0, out
    assert "error" not in out.lower(), out


@pytest.mark.parametrize("model,extra", [("simple", []), ("mlp", ["-b", "4"])])
def test_perf_analyzer_http(server, model, extra):
    run_perf_analyzer(server.url, "http", model, extra)


@pytest.mark.parametrize("model,extra", [("simple", []), ("mlp", ["-b", "4"])])
def test_perf_analyzer_grpc(grpc_server, model, extra):
    run_perf_analyzer(grpc_server.grpc_url, "grpc", model, extra)


def test_hot_swap_under_perf_analyzer_load(tmp_path):
    """Poll mode: `simple` is changed three times (config edit, new version folder, replaced model file)
    while perf_analyzer drives it at concurrency 4 — perf_analyzer fails on any failed request, so a clean
    exit means zero failures; the server must have swapped every change in meanwhile."""
    repo = tmp_path / "repo"
    shutil.copytree(example_repo() / "simple", repo / "simple")
    srv = RampartServer(base_args(repo, extra=["--model-control-mode=poll", "--repository-poll-secs=1"]), label="hot-swap").start()
    try:
        cmd = [
            str(perf_analyzer_bin()), "-m", "simple", "-u", srv.url, "-i", "http",
            "--concurrency-range", "4", "--measurement-mode", "time_windows", "--measurement-interval", "2500",
            "-s", "1000", "--max-trials", "4",
        ]
        pa = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        config = repo / "simple" / "config.pbtxt"
        original = config.read_text()

        def index():
            return {(e["name"], e.get("version")): e for e in srv.index()}

        def wait_for(what, check, timeout=15.0):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if check():
                    return
                time.sleep(0.1)
            raise AssertionError(f"the server did not pick up {what}: {srv.index()}")

        swaps = []

        def change():
            time.sleep(1.5)
            # 1. config edit: two instances instead of one.
            config.write_text(original + "\ninstance_group [ { count: 2 kind: KIND_CPU } ]\n")
            wait_for("the config edit", lambda: len(srv.get("/v2/models/simple/config").json()["instance_group"]) == 1
                     and srv.get("/v2/models/simple/config").json()["instance_group"][0]["count"] == 2)
            swaps.append("config")
            time.sleep(1.5)
            # 2. a new version folder: "latest" serves version 2.
            shutil.copytree(repo / "simple" / "1", repo / "simple" / "2")
            wait_for("version 2", lambda: index().get(("simple", "2"), {}).get("state") == "READY"
                     and ("simple", "1") not in index())
            swaps.append("version")
            time.sleep(1.5)
            # 3. the model file of version 2 replaced (same graph, new file).
            loaded = lambda: srv.stderr_text().count("successfully loaded 'simple' version 2")
            before = loaded()
            data = (repo / "simple" / "2" / "model.onnx").read_bytes()
            tmp = repo / "simple" / "2" / "model.onnx.new"
            tmp.write_bytes(data)
            time.sleep(0.05)
            tmp.replace(repo / "simple" / "2" / "model.onnx")
            wait_for("the new model file", lambda: loaded() > before)
            swaps.append("file")
            still_measuring.append(pa.poll() is None)

        errors = []
        still_measuring = []

        def run_changes():
            try:
                change()
            except BaseException as e:  # reported below
                errors.append(e)

        t = threading.Thread(target=run_changes, daemon=True)
        t.start()
        out, _ = pa.communicate(timeout=180)
        t.join(timeout=60)
        print(out)  # shown with `pytest -s`: the perf_analyzer report of the run
        assert not errors, errors
        assert swaps == ["config", "version", "file"], (swaps, out)
        assert pa.returncode == 0, out
        assert "error" not in out.lower(), out
        m = re.search(r"Throughput: ([0-9.]+) infer/sec", out)
        assert m and float(m.group(1)) > 0, out
        assert srv.get("/v2/health/ready").status_code == 200
        assert still_measuring == [True], "perf_analyzer finished before the last swap: make its run longer"
        assert srv.alive()
        assert requests.codes.ok == srv.get("/v2/models/simple/versions/2/ready").status_code
    finally:
        srv.stop()
