"""Response parameters set by model code (`pb_utils.InferenceResponse(parameters=…)`, Triton's
qa/L0_backend_python/parameters): they reach the client on the response over HTTP (`parameters` of the JSON
response) and gRPC (integers as `int64_param`, as Triton sends them), on each response of a decoupled model, and
the caller of a BLS call (`response.parameters()`).

response_params echoes the request's parameters; response_params_decoupled (the same model.py, decoupled, written
here) sends IN responses with the request's parameters and the response's index; response_params_bls calls both.
"""

from __future__ import annotations

import json
import queue
import shutil

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient

from conftest import HTTP_TIMEOUT, GrpcClient, finish_server
from test_python_backend import (  # noqa: F401 - worker_python and module_public_dir are fixtures
    copy_repo,
    python_server,
    json_infer,
    module_public_dir,
    worker_python,
)

PARAMETERS = {"text": "x", "count": 3, "flag": True}


@pytest.fixture(scope="module")
def srv(module_public_dir, worker_python):  # noqa: F811
    repo = copy_repo(module_public_dir / "repo", ["response_params", "response_params_bls"])
    decoupled = repo / "response_params_decoupled"
    shutil.copytree(repo / "response_params", decoupled)
    config = (decoupled / "config.pbtxt").read_text().replace('"response_params"', '"response_params_decoupled"')
    (decoupled / "config.pbtxt").write_text(config + "model_transaction_policy { decoupled: true }\n")
    server = python_server(repo, worker_python, "rampart-python-response-parameters")
    yield server
    finish_server(server)


def grpc_parameters(response) -> dict:
    out = {}
    for key, p in response.parameters.items():
        kind = p.WhichOneof("parameter_choice")
        out[key] = (kind, getattr(p, kind))
    return out


def test_http_response_carries_the_parameters_model_code_set(srv):
    body = json_infer("INT32", [1], [5])
    body["parameters"] = PARAMETERS
    r = requests.post(f"{srv.base}/v2/models/response_params/infer", json=body, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["parameters"] == PARAMETERS, r.json()
    assert r.json()["outputs"][0]["data"] == [5]


def test_grpc_response_carries_them_with_triton_s_types(srv):
    t = grpcclient.InferInput("IN", [1], "INT32")
    t.set_data_from_numpy(np.array([5], dtype=np.int32))
    with GrpcClient(srv.grpc_url) as client:
        result = client.infer("response_params", [t], parameters=PARAMETERS)
    assert grpc_parameters(result.get_response()) == {
        "text": ("string_param", "x"),
        "count": ("int64_param", 3),
        "flag": ("bool_param", True),
    }


def test_each_decoupled_response_carries_its_own_and_the_last_one_the_final_flag(srv):
    t = grpcclient.InferInput("IN", [1], "INT32")
    t.set_data_from_numpy(np.array([2], dtype=np.int32))
    items: queue.Queue = queue.Queue()
    with GrpcClient(srv.grpc_url) as client:
        client.start_stream(callback=lambda result, error: items.put((result, error)))
        try:
            client.async_stream_infer("response_params_decoupled", [t], parameters={"text": "y"},
                                      enable_empty_final_response=True)
            got = [items.get(timeout=10) for _ in range(2)]
            with pytest.raises(queue.Empty):
                items.get(timeout=0.5)
        finally:
            client.stop_stream()
    for i, (result, error) in enumerate(got):
        assert error is None, error
        params = grpc_parameters(result.get_response())
        assert params["text"] == ("string_param", "y") and params["index"] == ("int64_param", i), params
        assert params["triton_final_response"] == ("bool_param", i == 1), params
        assert result.as_numpy("OUT").tolist() == [i]


def test_a_bls_caller_reads_the_parameters_of_each_response(srv):
    body = json_infer("INT32", [1], [2])
    body["parameters"] = {"text": "z"}
    r = requests.post(f"{srv.base}/v2/models/response_params_bls/infer", json=body, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    texts = [json.loads(t) for t in r.json()["outputs"][0]["data"]]
    assert texts == [{"text": "z"}, {"text": "z", "index": 0}, {"text": "z", "index": 1}], texts


def test_a_parameter_of_a_type_triton_refuses_is_the_client_s_error(srv):
    body = json_infer("INT32", [1], [5])
    body["parameters"] = {"bad": True}
    r = requests.post(f"{srv.base}/v2/models/response_params/infer", json=body, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400, r.text
    assert "Expect parameters values to have type bool/int/str, found type <class 'float'>" in r.json()["error"]
