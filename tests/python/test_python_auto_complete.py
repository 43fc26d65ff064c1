"""`auto_complete_config` errors with Triton's words (qa/L0_model_config/autofill_noplatform/python): a model whose
auto-complete contradicts its config file, or returns no config, fails to load with the message Triton's
expected-output files hold. The models are written here: each a config file and a model.py whose
auto_complete_config adds INPUT0/INPUT1/OUTPUT0 (FP32, dims [4])."""

from __future__ import annotations

import pytest

from conftest import base_args, finish_server, start_server, wait_models_settled
from test_python_backend import module_public_dir, worker_python  # noqa: F401 - fixtures

MODEL_PY = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(config):
        for name in ("INPUT0", "INPUT1"):
            config.add_input({"name": name, "data_type": "TYPE_FP32", "dims": [4]})
        config.add_output({"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]})
        return {RETURN}

    def execute(self, requests):
        return [pb_utils.InferenceResponse([]) for _ in requests]
'''

# name: (config body after name/backend, what auto_complete_config returns, the message expected)
CASES = {
    "input_mismatch_datatype": (
        'input [ { name: "INPUT1" data_type: TYPE_INT32 dims: [ 4 ] } ]', "config",
        "unable to load model 'input_mismatch_datatype', configuration expects datatype TYPE_INT32 for input "
        "'INPUT1', model provides TYPE_FP32"),
    "output_mismatch_dims": (
        'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]', "config",
        "model 'output_mismatch_dims', tensor 'OUTPUT0': the model expects dims [4] but the model configuration "
        "specifies dims [16]"),
    "no_return": (
        "", "None",
        "auto_complete_config function in model 'no_return' must return a valid pb.ModelConfig object."),
    "completes": ("", "config", None),
}


@pytest.fixture(scope="module")
def index(module_public_dir, worker_python):  # noqa: F811
    repo = module_public_dir / "autocomplete"
    for name, (body, returned, _) in CASES.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n{body}\n')
        (repo / name / "1" / "model.py").write_text(MODEL_PY.replace("{RETURN}", returned))
    for path in [repo, *repo.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    python, more = worker_python
    extra = ["--exit-on-error=false", f"--backend-config=python,interpreter={python}", *more]
    server = start_server(base_args(repo, extra=extra), "rampart-python-autocomplete", wait="live")
    entries = {e["name"]: e for e in wait_models_settled(server)}
    yield entries
    finish_server(server)


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case[2]])
def test_auto_complete_errors_carry_triton_s_message(index, name):
    entry = index[name]
    assert entry["state"] == "UNAVAILABLE", entry
    assert CASES[name][2] in entry["reason"], entry["reason"]


def test_a_consistent_auto_complete_loads(index):
    assert index["completes"]["state"] == "READY", index["completes"]
