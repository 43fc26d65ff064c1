"""perf_analyzer (Triton's own benchmark client, 2.41.0) completes a measurement against Rampart over HTTP.

It first reads the model config over HTTP, then sends binary-tensor requests. This is a compatibility test,
not a benchmark: it asserts completion and zero failed requests, not a rate (see bench/ for numbers).
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


@pytest.mark.parametrize("model,extra", [("simple", []), ("mlp", ["-b", "4"])])
def test_perf_analyzer_http(server, model, extra):
    cmd = [
        str(perf_analyzer_bin()), "-m", model, "-u", server.url, "-i", "http",
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
