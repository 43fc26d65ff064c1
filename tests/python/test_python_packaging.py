"""Where a Python model's code comes from (python/rampart_ipc.py `_load_module`, rampart-server backends.rs):

- a model's `model.py` is imported as Triton's stub imports it, as `<version>.model` with the version directory
  and the model directory on the path, so the other files of its version directory can be imported relatively
  (`from . import scale`) or by name (`import offset`);
- a Python-based backend: `<backend-directory>/<name>/model.py` serves every model whose config says
  `backend: "<name>"`; those models need no `model.py` of their own. The backend directory is the operator's;
  a backend named by no built-in engine and no such directory is refused with the list of those that exist.
"""

from __future__ import annotations

import shutil

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
    for path in [*repo.rglob("*"), *backends.rglob("*"), backends]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    python, more = worker_python
    extra = ["--exit-on-error=false", f"--backend-config=python,interpreter={python}", *more]
    args = [a for a in base_args(repo, extra=extra) if not a.startswith("--backend-directory")]
    server = start_server([*args, f"--backend-directory={backends}"], "rampart-python-packaging", wait="live")
    index = wait_models_settled(server)
    assert all(e["state"] == "READY" for e in index if e["name"] != "unknown_backend"), index
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
    assert "python models: 3, every one in the default sandbox" in srv.stderr_text()
