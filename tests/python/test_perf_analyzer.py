"""perf_analyzer (Triton's own benchmark client, 2.41.0) completes a measurement against Rampart over HTTP
and over gRPC.

It first reads the model config over the chosen protocol, then sends binary-tensor (HTTP) or raw_input_contents
(gRPC) requests. This is a compatibility test, not a benchmark: it asserts completion and zero failed requests,
not a rate (see bench/ for numbers).
"""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import _from_env_path


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
