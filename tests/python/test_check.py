"""`rampart check <repository>`: the offline linter runs the server's own loading code over a repository, opens no
listener, and reports every seeded problem at once, in text and in JSON, with exit status 0 / 1 / 2.

The repository holds the example models (which load) plus one instance of each problem the check finds today: a
misspelled config field, a model.py with a syntax error, a Python model whose interpreter has no numpy (its own
repository, since the interpreter is a server flag), a file every user may write, and a symbolic link that leads
out of the repository."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import example_repo, ort_dir, require_binary

PY_CONFIG = """backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""
PY_OK = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "IN")]) for r in requests]
"""


def python_flags(interpreter: str) -> list[str]:
    # As root the workers would run as nobody, who cannot read this venv: they keep root here.
    user = ["--backend-config=python,user=0"] if os.geteuid() == 0 else []
    return [f"--backend-config=python,interpreter={interpreter}", *user]


def check(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(require_binary()), "check", *args], capture_output=True, text=True, timeout=timeout
    )


def python_model(repo: Path, name: str, source: str) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(PY_CONFIG)
    (repo / name / "1" / "model.py").write_text(source)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("seeded") / "models"
    shutil.copytree(example_repo(), repo)
    for path in repo.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    python_model(repo, "good_py", PY_OK)
    python_model(repo, "syntax_py", PY_OK.replace("def execute(self, requests):", "def execute(self, requests)"))
    (repo / "typo" / "1").mkdir(parents=True)
    (repo / "typo" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_sise: 8\n')
    (repo / "simple" / "config.pbtxt").chmod(0o646)
    (repo / "typo" / "1" / "labels.txt").symlink_to("/etc/passwd")
    return repo


@pytest.fixture(scope="module")
def seeded_json(seeded) -> tuple[int, dict]:
    r = check(str(seeded), "--format", "json", f"--backend-directory={ort_dir()}", *python_flags(sys.executable))
    return r.returncode, json.loads(r.stdout)


EXPECTED = {
    # (check, file) -> words the message holds
    ("permissions", "simple/config.pbtxt"): "writable by every user (mode 646)",
    ("symlink", "typo/1/labels.txt"): "symbolic link to '/etc/passwd' leads outside the repository",
    ("load", "typo/config.pbtxt"): "field 'max_batch_sise' not found for message 'inference.ModelConfig'; did you mean 'max_batch_size'?",
    ("load", "syntax_py/1/model.py"): "SyntaxError: expected ':'",
}


def test_every_seeded_problem_is_found_once_and_nothing_else(seeded_json):
    code, report = seeded_json
    assert code == 1, report
    found = {(f["check"], f["file"]): f for f in report["findings"]}
    assert len(found) == len(report["findings"]), "one finding per problem"
    assert set(found) == set(EXPECTED), report["findings"]
    for key, words in EXPECTED.items():
        f = found[key]
        assert words in f["message"], f
        assert f["severity"] == "error" and f["fix"], f
        assert f["model"] == key[1].split("/")[0], f
    assert (report["ok"], report["errors"], report["warnings"]) == (False, 4, 0)


def test_the_json_report_lists_every_model_version_with_its_state(seeded_json):
    _, report = seeded_json
    assert list(report) == ["repository", "ok", "errors", "warnings", "models", "findings"]
    states = {m["name"]: m["state"] for m in report["models"]}
    examples = {p.name for p in example_repo().iterdir() if p.is_dir()}
    assert states == {**{n: "READY" for n in examples}, "good_py": "READY", "syntax_py": "UNAVAILABLE",
                      "typo": "UNAVAILABLE"}
    syntax = next(f for f in report["findings"] if f["model"] == "syntax_py")
    assert "rampart_ipc.py" not in syntax["message"], "the traceback shows the model's lines, not the runtime's"
    assert syntax["version"] == "1"


def test_the_text_report_says_the_same(seeded):
    r = check(str(seeded), f"--backend-directory={ort_dir()}", *python_flags(sys.executable))
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    heads = [line for line in lines if line.startswith("error [")]
    assert len(heads) == len(EXPECTED), r.stdout
    for check_name, file in EXPECTED:
        assert any(h.startswith(f"error [{check_name}] {file}") for h in heads), (check_name, file, r.stdout)
    assert sum(line.startswith("    fix: ") for line in lines) == len(EXPECTED)
    assert lines[-1] == f"{seeded}: 5 of 7 model versions load; 4 errors, 0 warnings"


def test_a_clean_repository_passes_and_no_port_is_opened(tmp_path):
    repo = tmp_path / "models"
    shutil.copytree(example_repo(), repo)
    python_model(repo, "good_py", PY_OK)
    # The server's ports are taken: a check that tried to serve would fail.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 8000))
        r = check(str(repo), f"--backend-directory={ort_dir()}", *python_flags(sys.executable))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("0 errors, 0 warnings"), r.stdout


def test_an_interpreter_without_numpy_is_one_line_naming_what_is_missing(tmp_path):
    repo = tmp_path / "models"
    python_model(repo, "good_py", PY_OK)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    (bindir / "python3").chmod(0o755)
    r = check(str(repo), "--format=json", *python_flags(str(bindir / "python3")))
    assert r.returncode == 1, r.stderr
    (finding,) = json.loads(r.stdout)["findings"]
    assert "cannot import numpy" in finding["message"] and "\n" not in finding["message"], finding
    assert "numpy" in finding["fix"], finding


@pytest.mark.parametrize(
    "args",
    [[], ["a", "b"], ["--format", "xml", "x"], ["x", "--backend-directory"], ["/nonexistent/repository"],
     ["x", "--no-such-flag=1"]],
)
def test_bad_usage_exits_2_with_the_usage(args, tmp_path):
    args = [str(tmp_path) if a == "x" else a for a in args]
    r = check(*args)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "usage: rampart check <repository>" in r.stderr
