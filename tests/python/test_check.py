"""`rampart check <repository>`: the offline linter runs the server's own loading code over a repository, opens no
listener, and reports every seeded problem at once, in text and in JSON, with exit status 0 / 1 / 2.

The repository holds the example models (which load) plus one instance of each problem the check finds: a
misspelled config field; a config whose inputs disagree with the ONNX file; an ONNX file that does not open; an
ensemble whose step names a missing model; a sequence control whose data type is not the model input's; a state
whose initial-state file is missing; a missing label file and one outside the model directory; a warmup file of the
wrong size; a model.py with a syntax error; a misspelled parameter key (a warning); a file every user may write; a
symbolic link that leads out of the repository. A Python model whose interpreter has no numpy has its own
repository, since the interpreter is a server flag; signatures are checked in test_model_signing.py and checksums in
test_repository_agents.py."""

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


SIMPLE_IO = """max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] }, { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] }, { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] } ]
"""
# The simple model with INPUT1 (control or state) and OUTPUT1 (state) left to the sequence batcher.
SEQUENCE_IO = """max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] } ]
"""


def onnx_model(repo: Path, name: str, config: str, model: bytes | None = None) -> Path:
    """A model directory holding the simple model's ONNX file (or `model`) with `config` after its platform."""
    (repo / name / "1").mkdir(parents=True)
    onnx = model if model is not None else (example_repo() / "simple" / "1" / "model.onnx").read_bytes()
    (repo / name / "1" / "model.onnx").write_bytes(onnx)
    (repo / name / "config.pbtxt").write_text(f'platform: "onnxruntime_onnx"\n{config}')
    return repo / name


def seed_model_problems(repo: Path) -> None:
    """One model per problem that loading finds in model files and supporting files (EXPECTED names them)."""
    onnx_model(repo, "io_mismatch", SIMPLE_IO.replace("INPUT1", "INPUT9"))
    onnx_model(repo, "bad_onnx", SIMPLE_IO, model=b"not an ONNX file\n")
    (repo / "ensemble_missing" / "1").mkdir(parents=True)
    (repo / "ensemble_missing" / "config.pbtxt").write_text(
        'platform: "ensemble"\nmax_batch_size: 8\n'
        'input [ { name: "A" data_type: TYPE_INT32 dims: [ 16 ] } ]\n'
        'output [ { name: "B" data_type: TYPE_INT32 dims: [ 16 ] } ]\n'
        'ensemble_scheduling { step [ { model_name: "no_such_model" model_version: -1 '
        'input_map { key: "INPUT0" value: "A" } output_map { key: "OUTPUT0" value: "B" } } ] }\n'
    )
    onnx_model(repo, "sequence_control", SEQUENCE_IO + 'sequence_batching { control_input [ { name: "INPUT1" '
               'control [ { kind: CONTROL_SEQUENCE_START fp32_false_true: [ 0, 1 ] } ] } ] }\n')
    onnx_model(repo, "sequence_state", SEQUENCE_IO + 'sequence_batching { state [ { input_name: "INPUT1" '
               'output_name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] initial_state [ { name: "init" '
               'data_type: TYPE_INT32 dims: [ 16 ] data_file: "init.bin" } ] } ] }\n')
    labelled = SIMPLE_IO.replace('name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ]',
                                 'name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] label_filename: "LABELS"')
    onnx_model(repo, "label_missing", labelled.replace("LABELS", "labels.txt"))
    onnx_model(repo, "label_outside", labelled.replace("LABELS", "../../outside.txt"))
    (repo.parent / "outside.txt").write_text("a\nb\n")
    warm = onnx_model(repo, "warmup_size", SIMPLE_IO + 'model_warmup [ { name: "w" batch_size: 1 '
                      'inputs { key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 16 ] input_data_file: "in0" } } '
                      'inputs { key: "INPUT1" value { data_type: TYPE_INT32 dims: [ 16 ] zero_data: true } } } ]\n')
    (warm / "warmup").mkdir()
    (warm / "warmup" / "in0").write_bytes(b"\0" * 60)  # 16 INT32 are 64 bytes
    onnx_model(repo, "typo_parameter",
               SIMPLE_IO + 'parameters { key: "intra_op_thread_cout" value { string_value: "1" } }\n')


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
    seed_model_problems(repo)
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
    ("load", "io_mismatch/config.pbtxt"): "unexpected inference input 'INPUT9' in config.pbtxt",
    ("load", "bad_onnx/1/model.onnx"): "onnxruntime cannot load",
    ("load", "ensemble_missing/config.pbtxt"): "contains models that are not available or ambiguous: no_such_model",
    ("load", "sequence_control/config.pbtxt"): "sequence control 'INPUT1', the model expects data-type TYPE_INT32 "
                                               "but the model configuration specifies data-type TYPE_FP32",
    ("load", "sequence_state/initial_state/init.bin"): "initial state file",
    ("load", "label_missing/labels.txt"): "label_filename 'labels.txt' of output 'OUTPUT1': cannot open it",
    ("load", "label_outside/config.pbtxt"): "label_filename '../../outside.txt' of output 'OUTPUT1'",
    ("load", "warmup_size/warmup/in0"): "warmup/in0' holds 60 bytes, the input needs 64",
}
WARNINGS = {
    ("typo", "typo_parameter/config.pbtxt"): "parameter 'intra_op_thread_cout' is not one the server reads; "
                                            "did you mean 'intra_op_thread_count'?",
}
LOADED = {"good_py", "typo_parameter"}


def test_every_seeded_problem_is_found_once_and_nothing_else(seeded_json):
    code, report = seeded_json
    assert code == 1, report
    found = {(f["check"], f["file"]): f for f in report["findings"]}
    assert len(found) == len(report["findings"]), "one finding per problem"
    assert set(found) == set(EXPECTED) | set(WARNINGS), report["findings"]
    for severity, expected in (("error", EXPECTED), ("warning", WARNINGS)):
        for key, words in expected.items():
            f = found[key]
            assert words in f["message"], f
            assert f["severity"] == severity and f["fix"], f
            assert f["model"] == key[1].split("/")[0], f
    assert (report["ok"], report["errors"], report["warnings"]) == (False, len(EXPECTED), len(WARNINGS))


def test_the_json_report_lists_every_model_version_with_its_state(seeded_json):
    _, report = seeded_json
    assert list(report) == ["repository", "ok", "errors", "warnings", "models", "findings"]
    states = {m["name"]: m["state"] for m in report["models"]}
    examples = {p.name for p in example_repo().iterdir() if p.is_dir()}
    failing = {key[1].split("/")[0] for key in EXPECTED} - examples
    assert states == {**{n: "READY" for n in examples | LOADED}, **{n: "UNAVAILABLE" for n in failing}}
    syntax = next(f for f in report["findings"] if f["model"] == "syntax_py")
    assert "rampart_ipc.py" not in syntax["message"], "the traceback shows the model's lines, not the runtime's"
    assert syntax["version"] == "1"


def test_the_text_report_says_the_same(seeded):
    r = check(str(seeded), f"--backend-directory={ort_dir()}", *python_flags(sys.executable))
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    for severity, expected in (("error", EXPECTED), ("warning", WARNINGS)):
        heads = [line for line in lines if line.startswith(f"{severity} [")]
        assert len(heads) == len(expected), r.stdout
        for check_name, file in expected:
            assert any(h.startswith(f"{severity} [{check_name}] {file}") for h in heads), (file, r.stdout)
    assert sum(line.startswith("    fix: ") for line in lines) == len(EXPECTED) + len(WARNINGS)
    loaded = len(list(example_repo().iterdir())) + len(LOADED)
    total = loaded + len({key[1].split("/")[0] for key in EXPECTED} - {"simple"})
    assert lines[-1] == f"{seeded}: {loaded} of {total} model versions load; {len(EXPECTED)} errors, 1 warnings"


def test_warnings_fail_only_with_strict(tmp_path):
    repo = tmp_path / "models"
    onnx_model(repo, "typo_parameter",
               SIMPLE_IO + 'parameters { key: "intra_op_thread_cout" value { string_value: "1" } }\n')
    relaxed = check(str(repo), f"--backend-directory={ort_dir()}")
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert relaxed.stdout.strip().endswith("0 errors, 1 warnings"), relaxed.stdout
    strict = check(str(repo), "--strict", "--format=json", f"--backend-directory={ort_dir()}")
    assert strict.returncode == 1, strict.stdout + strict.stderr
    report = json.loads(strict.stdout)
    assert (report["ok"], report["errors"], report["warnings"]) == (False, 0, 1), report


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


def test_tract_alone_needs_no_onnx_runtime(tmp_path):
    """With every ONNX model on tract, the check runs where no ONNX Runtime library exists."""
    empty = tmp_path / "no_backends"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DYLIB_PATH"}
    r = subprocess.run([str(require_binary()), "check", str(example_repo()), "--format=json",
                        "--backend-config=onnxruntime,engine=tract", f"--backend-directory={empty}"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["findings"] == [] and all(m["state"] == "READY" for m in report["models"]), report
    assert len(report["models"]) == len([p for p in example_repo().iterdir() if p.is_dir()])


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
