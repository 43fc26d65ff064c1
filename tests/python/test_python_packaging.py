"""Where a Python model's code comes from (python/rampart_ipc.py `_load_module`, rampart-server backends.rs):

- a model's `model.py` is imported as Triton's stub imports it, as `<version>.model` with the version directory
  and the model directory on the path, so the other files of its version directory can be imported relatively
  (`from . import scale`) or by name (`import offset`);
- `EXECUTION_ENV_PATH`: a model's own environment, a directory or a `.tar.gz` archive the server unpacks
  privately, confined to the model directory (`$$TRITON_MODEL_DIRECTORY`), whose `bin/python3` runs the workers;
- a Python-based backend: `<backend-directory>/<name>/model.py` serves every model whose config says
  `backend: "<name>"`; those models need no `model.py` of their own. The backend directory is the operator's;
  a backend named by no built-in engine and no such directory is refused with the list of those that exist.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import requests

from conftest import HTTP_TIMEOUT, base_args, finish_server, start_server, wait_models_settled
from test_python_backend import (  # noqa: F401 - worker_python and module_public_dir are fixtures
    FIXTURES,
    copy_repo,
    json_infer,
    module_public_dir,
    worker_python,
)

BACKEND_CONFIG = """name: "{name}"
backend: "pyadd"
max_batch_size: 8
input [
  {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }},
  {{ name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] }}
]
output [
  {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }},
  {{ name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] }}
]
"""


ENV_MODEL_PY = '''
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

import envmarker


class TritonPythonModel:
    def execute(self, requests):
        text = f"{envmarker.WHERE} {sys.prefix}".encode()
        out = pb_utils.Tensor("OUT", np.array([text], dtype=np.object_))
        return [pb_utils.InferenceResponse([out]) for _ in requests]
'''

ENV_CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "IN" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [ {{ name: "OUT" data_type: TYPE_STRING dims: [ 1 ] }} ]
parameters {{ key: "EXECUTION_ENV_PATH" value {{ string_value: "{path}" }} }}
"""


def make_env(root: Path, python: str, where: str) -> None:
    """A Python environment at `root` in the layout of a venv: bin/python3 (the workers' interpreter), a
    pyvenv.cfg, and a site-packages holding `envmarker` (WHERE = `where`) and a .pth to that interpreter's numpy."""
    info = subprocess.run(
        [python, "-c", "import os, sys, numpy; print(os.path.dirname(sys.executable)); "
         "print(f'python{sys.version_info[0]}.{sys.version_info[1]}'); "
         "print(os.path.dirname(os.path.dirname(numpy.__file__)))"],
        capture_output=True, text=True, check=True).stdout.split("\n")
    home, version, numpy_dir = info[0], info[1], info[2]
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python3").symlink_to(Path(python).resolve())
    (root / "pyvenv.cfg").write_text(f"home = {home}\ninclude-system-site-packages = false\n")
    site = root / "lib" / version / "site-packages"
    site.mkdir(parents=True)
    (site / "envmarker.py").write_text(f"WHERE = {where!r}\n")
    (site / "numpy_dir.pth").write_text(numpy_dir + "\n")


def env_models(repo: Path, python: str) -> None:
    """env_dir (a directory), env_packed (an archive) and env_escape (a path out of its directory)."""
    for name, path in (("env_dir", "$$TRITON_MODEL_DIRECTORY/env"),
                       ("env_packed", "$$TRITON_MODEL_DIRECTORY/env.tar.gz"),
                       ("env_escape", "$$TRITON_MODEL_DIRECTORY/../multi_file")):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.py").write_text(ENV_MODEL_PY)
        (repo / name / "config.pbtxt").write_text(ENV_CONFIG.format(name=name, path=path))
    make_env(repo / "env_dir" / "env", python, "dir")
    staging = repo.parent / "env_staging"
    make_env(staging, python, "packed")
    with tarfile.open(repo / "env_packed" / "env.tar.gz", "w:gz") as tar:
        for item in sorted(staging.iterdir()):
            tar.add(item, arcname=item.name)


@pytest.fixture(scope="module")
def srv(module_public_dir, worker_python):  # noqa: F811
    """multi_file, and two models of the Python-based backend `pyadd` (add_sub's model.py, installed in the
    backend directory), one of which has an empty version directory."""
    root = module_public_dir
    repo = copy_repo(root / "repo", ["multi_file"])
    backends = root / "backends"
    (backends / "pyadd").mkdir(parents=True)
    shutil.copy(FIXTURES / "add_sub" / "1" / "model.py", backends / "pyadd" / "model.py")
    for name in ("adder_a", "adder_b", "unknown_backend"):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(BACKEND_CONFIG.format(name=name))
    unknown = repo / "unknown_backend" / "config.pbtxt"
    unknown.write_text(unknown.read_text().replace('backend: "pyadd"', 'backend: "nosuch"'))
    env_models(repo, worker_python[0])
    for path in [*repo.rglob("*"), *backends.rglob("*"), backends]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    python, more = worker_python
    extra = ["--exit-on-error=false", f"--backend-config=python,interpreter={python}", *more]
    args = [a for a in base_args(repo, extra=extra) if not a.startswith("--backend-directory")]
    server = start_server([*args, f"--backend-directory={backends}"], "rampart-python-packaging", wait="live")
    index = wait_models_settled(server)
    refused = ("unknown_backend", "env_escape")
    assert all(e["state"] == "READY" for e in index if e["name"] not in refused), index
    yield server
    finish_server(server)


def test_a_model_imports_the_files_of_its_version_directory_relatively_and_by_name(srv):
    r = srv.infer("multi_file", json_infer("INT32", [3], [1, 2, 3]))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [3, 5, 7]


@pytest.mark.parametrize("model", ["adder_a", "adder_b"])
def test_a_python_based_backend_serves_the_models_that_name_it(srv, model):
    a, b = [1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": a},
                       {"name": "INPUT1", "datatype": "FP32", "shape": [1, 4], "data": b}]}
    r = srv.infer(model, body)
    assert r.status_code == 200, r.text
    out = {o["name"]: o["data"] for o in r.json()["outputs"]}
    np.testing.assert_allclose(out["OUTPUT0"], np.add(a, b))
    np.testing.assert_allclose(out["OUTPUT1"], np.subtract(a, b))
    config = requests.get(f"{srv.base}/v2/models/{model}/config", timeout=HTTP_TIMEOUT).json()
    assert config["backend"] == "pyadd", config


def test_an_unknown_backend_is_refused_naming_the_python_based_ones(srv):
    index = requests.post(f"{srv.base}/v2/repository/index", json={}, timeout=HTTP_TIMEOUT).json()
    [entry] = [e for e in index if e["name"] == "unknown_backend"]
    assert entry["state"] == "UNAVAILABLE", entry
    assert "backend 'nosuch' is not supported" in entry["reason"] and "pyadd" in entry["reason"], entry


def test_the_startup_report_counts_python_models_including_python_based_backends(srv):
    assert "python models: 5, every one in the default sandbox" in srv.stderr_text()


@pytest.mark.parametrize("model,where", [("env_dir", "dir"), ("env_packed", "packed")])
def test_execution_env_path_runs_the_model_s_own_environment(srv, model, where):
    r = srv.infer(model, json_infer("INT32", [1], [0]))
    assert r.status_code == 200, r.text
    marker, prefix = r.json()["outputs"][0]["data"][0].split(" ", 1)
    assert marker == where, r.json()
    if where == "dir":
        assert prefix.endswith("/env_dir/env"), prefix
    else:
        # Unpacked by the server into a private directory of its own, outside the repository.
        assert "rampart-python-env-" in prefix, prefix


def test_execution_env_path_must_stay_within_the_model_directory(srv):
    index = requests.post(f"{srv.base}/v2/repository/index", json={}, timeout=HTTP_TIMEOUT).json()
    [entry] = [e for e in index if e["name"] == "env_escape"]
    assert entry["state"] == "UNAVAILABLE", entry
    assert "parameter EXECUTION_ENV_PATH" in entry["reason"] and "must stay within the model directory" in entry[
        "reason"], entry
