"""Secure by default: serving the example models (ONNX Runtime engine) writes nothing outside the model
repository — in particular not ONNX Runtime's usage database and device id, which ONNX Runtime 1.32 keeps
under `$HOME/.cache/Microsoft/DeveloperTools/.onnxruntime/` unless `ORT_DISABLE_TELEMETRY` is set.

ONNX Runtime skips those files by itself when it sees a CI system's variable (`CI`, `GITHUB_ACTIONS`, …), so
the server here runs without them: otherwise these tests would pass vacuously in CI."""

# Variables by which ONNX Runtime recognises a CI system (strings in libonnxruntime 1.32, plus plain `CI`).
CI_VARIABLES = (
    "CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL", "CODEBUILD_BUILD_ID",
    "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER",
)

import os
import re
import subprocess
import time

import pytest
import requests

from conftest import REPO_ROOT, example_repo, ort_dir, require_binary

pytestmark = pytest.mark.skipif(
    "onnxruntime" not in os.environ.get("RAMPART_ENGINES", "onnxruntime,tract"), reason="ONNX Runtime engine test"
)


def serve_once(home, extra_env=None) -> None:
    """Start rampart with HOME=`home`, wait until ready, run one inference, stop it."""
    drop = {"ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", *CI_VARIABLES}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["HOME"] = str(home)
    env.update(extra_env or {})
    args = [
        str(require_binary()),
        f"--model-repository={example_repo()}",
        f"--backend-directory={ort_dir()}",
        "--http-address=127.0.0.1",
        "--http-port=0",
        "--allow-grpc=false",
        "--allow-metrics=false",
    ]
    proc = subprocess.Popen(args, env=env, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"Started HTTPService at \S+:(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port, "rampart did not start"
        base = f"http://127.0.0.1:{port}"
        while requests.get(f"{base}/v2/health/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "not ready"
            time.sleep(0.05)
        body = {"inputs": [{"name": n, "datatype": "INT32", "shape": [1, 16], "data": list(range(16))} for n in ("INPUT0", "INPUT1")]}
        r = requests.post(f"{base}/v2/models/simple/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.wait(30)


def files_under(root) -> list:
    return sorted(str(os.path.relpath(os.path.join(d, f), root)) for d, _, fs in os.walk(root) for f in fs)


def test_serving_writes_nothing_into_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    serve_once(home)
    assert files_under(home) == []


def test_the_operator_may_turn_onnxruntimes_database_back_on(tmp_path):
    # Proves the check above can fail: with the variable set to 0 ONNX Runtime writes its files again.
    home = tmp_path / "home"
    home.mkdir()
    serve_once(home, {"ORT_DISABLE_TELEMETRY": "0"})
    written = files_under(home)
    assert any("onnxruntime" in f for f in written), written
