"""Ensembles and the models around them (docs/compatibility.md, "Ensembles"; docs/security.md for access;
Triton's qa/L0_lifecycle
test_model_control / test_model_control_ensemble and its trace format): explicit model control loads an ensemble's
composing models with it, follows them when they go and come back, and `unload_dependents` takes along those loaded
only for it; a traced ensemble request writes one trace per step, each naming the ensemble's trace as its parent.

The repository is test_ensembles.py's (`simple` with versions 1 and 2 under Triton's ensemble_add_sub, built-in
decoupled models under Triton's L0_decoupled ensembles).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import grpc_base_args, running
from test_ensembles import ADD_SUB, MODELS, add_sub_operands, ensemble, infer_add_sub, step, write_simple_repo

EXPLICIT = ["--model-control-mode=explicit"]
NOT_AVAILABLE = f"ensemble {ADD_SUB} contains models that are not available or ambiguous: simple"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return write_simple_repo(tmp_path_factory.mktemp("ensemble_lifecycle"), MODELS)


@pytest.fixture
def explicit(repo):
    """A server in explicit model-control mode that has loaded nothing."""
    with running(grpc_base_args(repo, extra=EXPLICIT), "rampart[ensembles, explicit]") as srv:
        client = srv.client()
        yield srv, client
        client.close()


def states(srv, model: str) -> dict[str, tuple[str, str]]:
    """version -> (state, reason) of `model` in the repository index (versions it has not loaded: absent)."""
    entries = [e for e in srv.index() if e["name"] == model and "version" in e]
    return {e["version"]: (e["state"], e.get("reason", "")) for e in entries}


def ready(srv, model: str, versions=("1",)) -> bool:
    return {v: s for v, (s, _) in states(srv, model).items()} == {v: "READY" for v in versions}


def eventually(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        time.sleep(0.1)


def assert_add_sub_works(client) -> None:
    a, b = add_sub_operands(2)
    result = infer_add_sub(client, httpclient, a, b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


# ---------------------------------------------------------------------------------------------------------------
# Explicit model control
# ---------------------------------------------------------------------------------------------------------------


def test_loading_an_ensemble_loads_its_composing_models(explicit):
    srv, client = explicit
    assert not ready(srv, "simple", ("1", "2")), "nothing is loaded at startup"
    client.load_model(ADD_SUB)
    assert ready(srv, ADD_SUB) and ready(srv, "simple", ("1", "2")), srv.index()
    assert client.is_model_ready("simple", "1") and client.is_model_ready("simple", "2")
    assert_add_sub_works(client)
    assert not ready(srv, "repeat_int32"), "models no loaded ensemble uses stay unloaded"


def test_an_ensemble_follows_its_composing_model_out_and_back(explicit):
    """Unloading `simple` unloads the ensemble (UNAVAILABLE, with Triton's reason) and requests to it fail; loading
    `simple` again brings the ensemble back by itself."""
    srv, client = explicit
    client.load_model(ADD_SUB)
    client.unload_model("simple")
    eventually(lambda: not client.is_model_ready(ADD_SUB), "ensemble unready after its composing model unloaded")
    [(state, reason)] = states(srv, ADD_SUB).values()
    assert state == "UNAVAILABLE" and NOT_AVAILABLE in reason, (state, reason)
    with pytest.raises(InferenceServerException) as e:
        infer_add_sub(client, httpclient, *add_sub_operands(1))
    assert ADD_SUB in e.value.message(), e.value.message()
    client.load_model("simple")
    eventually(lambda: ready(srv, ADD_SUB), "ensemble READY again after its composing model loaded")
    assert client.is_model_ready(ADD_SUB)
    assert_add_sub_works(client)


def test_an_explicitly_unloaded_ensemble_stays_unloaded_when_its_model_returns(explicit):
    """Triton's test_model_control: an ensemble unloaded on request is not reloaded by its composing model's return."""
    srv, client = explicit
    client.load_model(ADD_SUB)
    client.unload_model(ADD_SUB)
    client.unload_model("simple")
    client.load_model("simple")
    time.sleep(0.3)
    assert ready(srv, "simple", ("1", "2"))
    assert not client.is_model_ready(ADD_SUB), srv.index()


def test_unload_dependents_takes_only_the_models_loaded_for_the_ensemble(explicit):
    """Triton's test_model_control_ensemble: unload_dependents unloads the composing models the ensemble loaded,
    a plain unload leaves them loaded, and a model loaded on request is never taken along."""
    srv, client = explicit
    client.load_model(ADD_SUB)
    client.unload_model(ADD_SUB, unload_dependents=True)
    assert not client.is_model_ready(ADD_SUB)
    assert not client.is_model_ready("simple", "1") and not client.is_model_ready("simple", "2"), srv.index()

    client.load_model(ADD_SUB)
    client.unload_model(ADD_SUB)
    assert not client.is_model_ready(ADD_SUB)
    assert ready(srv, "simple", ("1", "2")), srv.index()

    client.load_model("simple")
    client.load_model(ADD_SUB)
    client.unload_model(ADD_SUB, unload_dependents=True)
    assert not client.is_model_ready(ADD_SUB)
    assert ready(srv, "simple", ("1", "2")), "loaded on request, so not the ensemble's to unload"


def test_unload_dependents_follows_nested_ensembles(explicit):
    """nested_square -> simple_repeat (an ensemble) -> repeat_int32, and square_int32: all loaded with it, all
    unloaded with it."""
    srv, client = explicit
    client.load_model("nested_square")
    taken = ("simple_repeat", "repeat_int32", "square_int32")
    assert all(client.is_model_ready(m) for m in ("nested_square", *taken)), srv.index()
    client.unload_model("nested_square", unload_dependents=True)
    assert not any(client.is_model_ready(m) for m in ("nested_square", *taken)), srv.index()


# ---------------------------------------------------------------------------------------------------------------
# Tracing
# ---------------------------------------------------------------------------------------------------------------


def test_a_traced_ensemble_request_has_one_child_trace_per_step(repo, tmp_path):
    trace_file = tmp_path / "trace.json"
    flags = [f"--trace-config=triton,file={trace_file}", "--trace-config=rate=1", "--trace-config=level=TIMESTAMPS"]
    with running(grpc_base_args(repo, extra=flags), "rampart[ensembles, traced]") as srv:
        client = srv.client()
        assert_add_sub_works(client)
        client.close()
        time.sleep(0.5)  # a trace is written when the front end lets go of the request
    records = json.loads(trace_file.read_text())
    heads = [r for r in records if "model_name" in r]
    stamps = {r["id"]: r["timestamps"] for r in records if "timestamps" in r}
    [parent] = [h for h in heads if h["model_name"] == ADD_SUB]
    assert "parent_id" not in parent, parent
    children = [h for h in heads if h is not parent]
    assert len(heads) == 7 and len(records) == 14, records
    assert [(h["model_name"], h.get("parent_id")) for h in children] == [("simple", parent["id"])] * 6, children
    assert sorted(h["model_version"] for h in children) == [1, 1, 1, 2, 2, 2], children
    assert len({h["id"] for h in heads}) == 7, "every trace has its own id"
    for h in children:
        names = [s["name"] for s in stamps[h["id"]]]
        assert "COMPUTE_START" in names and "COMPUTE_END" in names, (h, names)


def loop_repo(root):
    """Ensembles that call themselves, directly or through another (refused at load), over `simple`."""
    io = [("INPUT0", "TYPE_INT32", "16"), ("INPUT1", "TYPE_INT32", "16")], [("OUTPUT0", "TYPE_INT32", "16")]
    through = {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}

    def calling(name: str, other: str) -> str:
        return ensemble(name, 8, *io, [step(other, through, {"OUTPUT0": "OUTPUT0"})])

    return write_simple_repo(root, {
        "loop_self": calling("loop_self", "loop_self"),
        "loop_a": calling("loop_a", "loop_b"),
        "loop_b": calling("loop_b", "loop_a"),
        "calls_simple": ensemble("calls_simple", 8, *io, [step("simple", through, {"OUTPUT0": "OUTPUT0"})]),
    })


def test_loading_circular_ensembles_fails_cleanly_and_the_server_keeps_serving(tmp_path):
    """Each load names the cycle (Triton's message); loading and unloading `simple` afterwards rebuilds the
    ensembles that depend on it without looping, and the server keeps answering."""
    with running(grpc_base_args(loop_repo(tmp_path), extra=EXPLICIT), "rampart[ensemble loops]") as srv:
        client = srv.client()
        for name, cycle in [("loop_self", "loop_self -> ... -> loop_self -> loop_self"),
                            ("loop_a", "circular dependency between ensembles: loop_")]:
            with pytest.raises(InferenceServerException) as e:
                client.load_model(name)
            assert cycle in str(e.value), e.value
        client.load_model("calls_simple")
        client.unload_model("simple")
        client.load_model("simple")
        eventually(lambda: ready(srv, "calls_simple"), "calls_simple READY again")
        assert srv.alive()
        assert client.is_server_live()
        client.close()


def test_model_access_covers_the_models_an_ensemble_reaches(tmp_path):
    """docs/security.md, "Ensembles and --model-access": a rule on a composing model applies when it runs as a
    step, so an ensemble never lets a client run a model it could not call directly."""
    extra = [*EXPLICIT, "--load-model=calls_simple", "--model-access=simple:tenant=s3cret"]
    with running(grpc_base_args(loop_repo(tmp_path), extra=extra), "rampart[ensemble access]") as srv:
        a, b = add_sub_operands(1)
        body = {"inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a.flatten().tolist()},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": b.flatten().tolist()},
        ]}
        refused = srv.infer("calls_simple", body)
        assert refused.status_code == 403, refused.text
        assert "access to model 'simple' is restricted" in refused.json()["error"], refused.text
        allowed = srv.infer("calls_simple", body, headers={"tenant": "s3cret"})
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["outputs"][0]["data"] == (a + b).flatten().tolist()
        # The same rule, the same answer over gRPC.
        with srv.grpc_client() as g:
            inputs = [tensor_of("INPUT0", a), tensor_of("INPUT1", b)]
            with pytest.raises(InferenceServerException) as e:
                g.infer("calls_simple", inputs)
            assert "access to model 'simple' is restricted" in str(e.value)
            ok = g.infer("calls_simple", inputs, headers={"triton-grpc-protocol-tenant": "s3cret"})
            assert (ok.as_numpy("OUTPUT0") == a + b).all()


def tensor_of(name: str, array):
    t = grpcclient.InferInput(name, list(array.shape), "INT32")
    t.set_data_from_numpy(array)
    return t
