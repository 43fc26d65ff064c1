"""A Python model's own readiness check (`is_ready()`, crates/rampart-python/src/readiness.rs): every readiness
request for the model (HTTP `/v2/models/m/ready`, gRPC `ModelReady`, model code's `is_model_ready`) asks it. True is
ready; False, an exception or any other value is not (Triton's rules); a check that takes longer than 5 s is not
ready, and the next request waits for that check's answer instead of starting another. Inference is unaffected.

One fixture (python_models/readiness) serves every variant through its `answer` parameter.
"""

from __future__ import annotations

import time

import pytest
import requests

from conftest import HTTP_TIMEOUT, GrpcClient, finish_server
from test_python_backend import (  # noqa: F401 - worker_python and module_public_dir are fixtures
    copy_repo,
    python_server,
    json_infer,
    module_public_dir,
    worker_python,
)

ANSWERS = {"ready_true": "true", "ready_false": "false", "ready_raise": "raise", "ready_text": "text",
           "ready_async": "async", "ready_slow": "slow"}


@pytest.fixture(scope="module")
def srv(module_public_dir, worker_python):  # noqa: F811
    repo = copy_repo(module_public_dir / "repo", ["readiness"])
    source = repo / "readiness"
    for name, answer in ANSWERS.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.py").write_bytes((source / "1" / "model.py").read_bytes())
        config = (source / "config.pbtxt").read_text().replace('"readiness"', f'"{name}"')
        (repo / name / "config.pbtxt").write_text(config.replace('string_value: "true"', f'string_value: "{answer}"'))
    server = python_server(repo, worker_python, "rampart-python-readiness")
    yield server
    finish_server(server)


def ready(srv, model: str) -> tuple[bool, bool]:
    http = requests.get(f"{srv.base}/v2/models/{model}/ready", timeout=HTTP_TIMEOUT)
    assert http.status_code in (200, 400), http.text
    with GrpcClient(srv.grpc_url) as client:
        grpc = client.is_model_ready(model)
    return http.status_code == 200, grpc


def infers(srv, model: str) -> bool:
    r = srv.infer(model, json_infer("INT32", [1], [7]))
    return r.status_code == 200 and r.json()["outputs"][0]["data"] == [7]


@pytest.mark.parametrize("model,expected", [
    ("ready_true", True), ("ready_async", True), ("ready_false", False), ("ready_raise", False),
    ("ready_text", False),
])
def test_is_ready_decides_model_readiness_over_both_protocols(srv, model, expected):
    for _ in range(3):
        assert ready(srv, model) == (expected, expected)
        assert infers(srv, model), "inference does not depend on the readiness check"
    # The server itself stays ready whatever a model's check says.
    assert requests.get(f"{srv.base}/v2/health/ready", timeout=HTTP_TIMEOUT).status_code == 200


def test_a_check_that_takes_too_long_is_not_ready_and_the_next_request_waits_for_it(srv):
    t0 = time.monotonic()
    http = requests.get(f"{srv.base}/v2/models/ready_slow/ready", timeout=HTTP_TIMEOUT)
    assert http.status_code == 400, "a check that did not answer within 5 s"
    assert 4.5 < time.monotonic() - t0 < 6, time.monotonic() - t0
    assert infers(srv, "ready_slow")
    # The check in flight answers True about 1 s later: the next request waits for it rather than asking again.
    with GrpcClient(srv.grpc_url) as client:
        t1 = time.monotonic()
        assert client.is_model_ready("ready_slow") is True
        assert time.monotonic() - t1 < 4, "a second check was started instead of waiting for the first"


def test_a_version_s_readiness_goes_through_the_check_too(srv):
    with GrpcClient(srv.grpc_url) as client:
        assert client.is_model_ready("ready_false", "1") is False
        assert client.is_model_ready("ready_true", "1") is True
