"""Load-time validation of ensembles (`platform: "ensemble"`, docs/compatibility.md, "Ensembles").

Every failing case of Triton's qa/L0_model_config/autofill_noplatform/ensemble is rebuilt here: the broken
ensemble must be UNAVAILABLE in the repository index with Triton's message in its `reason`, and not ready,
while the composing models stay READY. The success cases of autofill_noplatform_success/ensemble (nested
ensembles, a batching producer feeding a non-batching consumer and the reverse, outputs left unmapped) must load,
answer an inference, and show the completed config Triton gives an ensemble (no instance groups, no
backend, a computed `model_transaction_policy.decoupled`).

All models live in ONE repository, served by ONE server in the default (non-explicit) control mode, so
every model loads at startup. The composing models use the built-in `identity` backend (INPUT<k> is echoed
as OUTPUT<k>) and the decoupled `repeat` backend with Triton's repeat_int32 config: the repository is made
only of `config.pbtxt` files and empty version folders.
"""

from __future__ import annotations

import pytest

from conftest import assert_error, base_args, finish_server, start_server, wait_models_settled, write_repo
from decoupled_configs import REPEAT_INT32

FP32, INT32, UINT32 = "TYPE_FP32", "TYPE_INT32", "TYPE_UINT32"

# Triton's composing models (all identity, max_batch_size 4, FP32 [16] unless the name says otherwise).
B4 = "fp32_dim1_batch4"
OUT3 = "fp32_dim1_batch4_output3"
IN4 = "fp32_dim1_batch4_input4"
B2 = "fp32_dim1_batch2"
INT_B4 = "int32_dim1_batch4"
DIM3 = "fp32_dim3_batch4"
NOBATCH = "fp32_dim2_nobatch"
INT_NOBATCH2 = "int32_dim1_nobatch_output2"
REPEAT = "repeat_int32"
SIMPLE = "simple"


# ---------------------------------------------------------------------------------------
# Config text builders
# ---------------------------------------------------------------------------------------


def tensor_list(kind: str, specs) -> str:
    """`input [ ... ]` / `output [ ... ]` from (name, data_type, dims) triples."""
    entries = ", ".join(
        f'{{ name: "{n}" data_type: {t} dims: [ {", ".join(map(str, dims))} ] }}' for n, t, dims in specs
    )
    return f"{kind} [ {entries} ]"


def identity(name: str, n: int = 1, dtype: str = FP32, dims=(16,), batch: int = 4, extra: str = "") -> str:
    """An identity model with INPUT0..n-1 / OUTPUT0..n-1, all `dtype` x `dims`."""
    ins = [(f"INPUT{i}", dtype, dims) for i in range(n)]
    outs = [(f"OUTPUT{i}", dtype, dims) for i in range(n)]
    return (
        f'name: "{name}"\nbackend: "identity"\nmax_batch_size: {batch}\n'
        f"{tensor_list('input', ins)}\n{tensor_list('output', outs)}\n{extra}\n"
    )


def positional(prefix: str, tensors) -> list[tuple[str, str]]:
    """(`<prefix><i>`, the i-th tensor) pairs."""
    return [(f"{prefix}{i}", t) for i, t in enumerate(tensors)]


def _map(field: str, prefix: str, mapping) -> str:
    """A step's input_map / output_map entries. `mapping`: a dict (key -> tensor); a list of tensor names
    (see `positional`); a list of (key, tensor) pairs, where a key may repeat; or None (the field is left
    out)."""
    if mapping is None:
        return ""
    if isinstance(mapping, dict):
        pairs = list(mapping.items())
    elif all(isinstance(m, tuple) for m in mapping):
        pairs = list(mapping)
    else:
        pairs = positional(prefix, mapping)
    return " ".join(f'{field} {{ key: "{k}" value: "{v}" }}' for k, v in pairs)


def step(model: str | None, inputs=None, outputs=None, version: int = -1) -> str:
    """One ensemble step; `model=None` leaves `model_name` out."""
    name = f'model_name: "{model}" ' if model is not None else ""
    ins = _map("input_map", "INPUT", inputs)
    outs = _map("output_map", "OUTPUT", outputs)
    return f"{{ {name}model_version: {version} {ins} {outs} }}"


def scheduling(*steps: str) -> str:
    return "ensemble_scheduling { step [ " + ", ".join(steps) + " ] }"


DATA = [("data", FP32, (16,))]
PROB = [("prob", FP32, (16,))]
PROB_2 = [("prob_2", FP32, (16,))]
REPEAT_IO = [("IN", INT32, (-1,)), ("DELAY", UINT32, (-1,)), ("WAIT", UINT32, (1,))]


def ensemble(name: str, body: str, inputs=DATA, outputs=PROB, batch: int = 2, extra: str = "") -> str:
    """An ensemble config; `body` is its `ensemble_scheduling` block (see `scheduling`), or anything else."""
    return (
        f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {batch}\n{body}\n'
        f"{tensor_list('input', inputs)}\n{tensor_list('output', outputs)}\n{extra}\n"
    )


T1, T2, T3, T4, T5 = (f"temp_tensor_{i}" for i in range(1, 6))
# Triton's usual pipeline: data -> B4 -> t4; data -> OUT3 -> t1, t2, t3; (t1, t2, t3, t4) -> IN4 -> prob.
STANDARD = [
    dict(model=B4, inputs=["data"], outputs=[T4]),
    dict(model=OUT3, inputs=["data"] * 3, outputs=[T1, T2, T3]),
    dict(model=IN4, inputs=[T1, T2, T3, T4], outputs=["prob"]),
]


def standard(changes: dict[int, dict] | None = None, extra_steps=()) -> str:
    """The scheduling of the standard pipeline, with step i's arguments overridden by `changes[i]` and
    `extra_steps` appended."""
    changes = changes or {}
    steps = [step(**{**s, **changes.get(i, {})}) for i, s in enumerate(STANDARD)]
    return scheduling(*steps, *extra_steps)


def repeat_step(outputs: dict) -> str:
    return step(REPEAT, {n: n for n, _, _ in REPEAT_IO}, outputs)


SIMPLE_IN = [("INPUT0", INT32, (16,)), ("INPUT1", INT32, (16,))]


def pinned_versions(name: str, versions: list[int]) -> str:
    """One `simple` step per version in `versions`; every tensor they write is an ensemble output."""
    written = [[f"sum_{i}", f"diff_{i}"] for i in range(len(versions))]
    steps = [step(SIMPLE, ["INPUT0", "INPUT1"], w, version=v) for w, v in zip(written, versions)]
    outputs = [(t, INT32, (16,)) for w in written for t in w]
    return ensemble(name, scheduling(*steps), inputs=SIMPLE_IN, outputs=outputs, batch=8)


# ---------------------------------------------------------------------------------------
# The repository
# ---------------------------------------------------------------------------------------

COMPOSING = {
    B4: identity(B4),
    OUT3: identity(OUT3, n=3),
    IN4: identity(IN4, n=4),
    B2: identity(B2, batch=2),
    INT_B4: identity(INT_B4, dtype=INT32),
    DIM3: identity(DIM3, dims=(16, 16, 16)),
    NOBATCH: identity(NOBATCH, dims=(-1, 16), batch=0),
    INT_NOBATCH2: identity(INT_NOBATCH2, n=2, dtype=INT32, dims=(1,), batch=0),
    # Every version is wanted, but only version folder 1 exists (write_repo makes just that one).
    SIMPLE: identity(SIMPLE, n=2, dtype=INT32, batch=8, extra="version_policy: { all { } }"),
    REPEAT: REPEAT_INT32,
}

CIRCULAR = ["circular_dependency", "circular_dependency_2"]


def circular(name: str, other: str) -> str:
    return ensemble(name, scheduling(step(other, {"data": "data"}, {"prob": "prob"})))


def circular_messages() -> tuple[str, ...]:
    """Either ensemble of the cycle may be reported first (Triton's expected and expected_2)."""
    a, b = CIRCULAR
    return tuple(f"circular dependency between ensembles: {x} -> ... -> {y} -> {x}" for x, y in ((a, b), (b, a)))


# name -> (config, expected reason substrings; any one of them must match)
BROKEN: dict[str, tuple[str, tuple[str, ...]]] = {}


def broken(name: str, config: str, *expected: str) -> None:
    assert name not in BROKEN and expected
    BROKEN[name] = (config, expected)


# Static checks: fields an ensemble may not have, or must have.
broken(
    "has_backend",
    ensemble("has_backend", standard(), extra='backend: "onnxruntime"'),
    "Ensemble model 'has_backend' must have platform type 'ensemble' and empty backend type",
)
broken(
    "ensemble_scheduling_not_set",
    ensemble("ensemble_scheduling_not_set", ""),
    "ensemble scheduling must be set for ensemble ensemble_scheduling_not_set whose platform is ensemble",
)
broken(
    "ensemble_scheduling_set",
    identity("ensemble_scheduling_set", extra=scheduling(step(B4, ["INPUT0"], ["OUTPUT0"]))),
    "ensemble scheduling cannot be set for model 'ensemble_scheduling_set' whose platform is not ensemble",
)
broken(
    "instance_group_set",
    ensemble("instance_group_set", standard(), extra="instance_group [ { kind: KIND_GPU gpus: [ 42 ] } ]"),
    "instance group should not be specified for ensemble 'instance_group_set'",
)
broken(
    "optimization_set",
    ensemble("optimization_set", standard(), extra="optimization { priority: PRIORITY_MAX }"),
    "optimization should not be specified for ensemble 'optimization_set'",
)
broken(
    "model_warmup_set",
    ensemble("model_warmup_set", standard(), extra="model_warmup [ { } ]"),
    "model_warmup can not be specified for ensemble 'model_warmup_set'",
)
broken("no_step", ensemble("no_step", "ensemble_scheduling { step [ ] }"), "must specify 'step' for ensemble 'no_step'")
broken("no_step_2", ensemble("no_step_2", "ensemble_scheduling { }"), "must specify 'step' for ensemble 'no_step_2'")

# Static checks of each step (the index in the message is 0-based).
for _field, _arg in (("model_name", "model"), ("input_map", "inputs"), ("output_map", "outputs")):
    _name = f"no_{_field}"
    broken(
        _name,
        ensemble(_name, standard({1: {_arg: None}})),
        f"must specify '{_field}' in step 1 of ensemble '{_name}'",
    )
broken(
    "output_to_tensor_overmapped",
    ensemble(
        "output_to_tensor_overmapped",
        standard({1: dict(outputs=[T1, T2, T2])}),
    ),
    "ensemble tensor 'temp_tensor_2' can appear in an output map only once for ensemble "
    "'output_to_tensor_overmapped' step 1",
)

# Static checks of the data flow.
broken(
    "unreachable_input",
    ensemble("unreachable_input", standard(), inputs=DATA + [("data_2", FP32, (16,))]),
    "ensemble input 'data_2' for ensemble unreachable_input' is not used",
)
broken(
    "unreachable_output",
    ensemble("unreachable_output", standard(), outputs=PROB + PROB_2),
    "ensemble output 'prob_2' for ensemble unreachable_output' is not used",
)
broken(
    "unreachable_output_2",
    ensemble("unreachable_output_2", standard(extra_steps=[step(B4, ["prob_2"], ["prob_2"])]), outputs=PROB + PROB_2),
    "output 'prob_2' for ensemble 'unreachable_output_2' is not written",
)
broken(
    "unreachable_output_3",
    ensemble(
        "unreachable_output_3",
        standard(extra_steps=[step(B4, ["not_written_tensor"], ["prob_2"])]),
        outputs=PROB + PROB_2,
    ),
    "output 'prob_2' for ensemble 'unreachable_output_3' is not written: at least one of its depending tensors, "
    "'not_written_tensor', is not connected",
)
broken(
    "redundant_tensor_as_output",
    ensemble("redundant_tensor_as_output", standard({2: dict(inputs=[T1, T1, T3, T4])})),
    "ensemble tensor 'temp_tensor_2' is unused in ensemble 'redundant_tensor_as_output'",
)
broken(
    "redundant_tensor_as_input",
    ensemble("redundant_tensor_as_input", standard(extra_steps=[step(B4, [T5], ["temp_tensor_6"])])),
    # Either dangling tensor may be reported (Triton's expected and expected_2).
    "ensemble tensor 'temp_tensor_6' is unused in ensemble 'redundant_tensor_as_input'",
    "ensemble tensor 'temp_tensor_5' is unused in ensemble 'redundant_tensor_as_input'",
)
broken(
    "tensor_to_input_overmapped",
    # INPUT3 is mapped twice: in a text-proto map the last entry wins, so temp_tensor_5 is read by no one.
    ensemble(
        "tensor_to_input_overmapped",
        standard(
            {2: dict(inputs=[*positional("INPUT", [T1, T2, T3]), ("INPUT3", T5), ("INPUT3", T4)])},
            extra_steps=[step(B4, [T4], [T5])],
        ),
    ),
    "ensemble tensor 'temp_tensor_5' is unused in ensemble 'tensor_to_input_overmapped'",
)

# Dependency-graph checks.
broken(
    "non_existing_model",
    ensemble("non_existing_model", standard({2: dict(model="no_such_model")})),
    "ensemble non_existing_model contains models that are not available or ambiguous: no_such_model",
)
# Deliberate difference (docs/compatibility.md, "Ensembles"): Triton (core ConnectDependencyGraph) names
# only the FIRST missing step's model; Rampart lists every missing model in step order, joined with ", ".
broken(
    "two_non_existing_models",
    ensemble(
        "two_non_existing_models",
        standard({0: dict(model="no_such_model_b"), 2: dict(model="no_such_model_a")}),
    ),
    "ensemble two_non_existing_models contains models that are not available or ambiguous: "
    "no_such_model_b, no_such_model_a",
)
for _name, _other in zip(CIRCULAR, reversed(CIRCULAR)):
    broken(_name, circular(_name, _other), *circular_messages())
broken(
    "self_circular_dependency",
    ensemble(
        "self_circular_dependency",
        standard(
            {2: dict(outputs=[T5])},
            extra_steps=[step("self_circular_dependency", {"data": T5}, {"prob": "prob"})],
        ),
    ),
    "circular dependency between ensembles: self_circular_dependency -> ... -> self_circular_dependency -> "
    "self_circular_dependency",
)
for _name, _versions in (
    ("no_required_version", [2]),
    ("no_required_version_2", [-1, 2]),
    ("no_required_version_3", [2, -1]),
):
    broken(
        _name,
        pinned_versions(_name, _versions),
        f"ensemble '{_name}' depends on 'simple' whose required version 2 is not loaded.",
    )

# Checks against the composing models' configs.
broken(
    "invalid_batch_size",
    ensemble(
        "invalid_batch_size",
        scheduling(step(B4, ["data"], ["temp_tensor"]), step(B2, ["temp_tensor"], ["prob"])),
        batch=3,
    ),
    "ensemble invalid_batch_size allows maximum batch size 3, but it contains model fp32_dim1_batch2 which only "
    "allows maximum batch size to be 2",
)
broken(
    "invalid_input_map",
    ensemble(
        "invalid_input_map",
        standard(
            {2: dict(inputs=[*positional("INPUT", [T1, T2, T3, T4]), ("invalid_input", T5)])},
            extra_steps=[step(B4, [T4], [T5])],
        ),
    ),
    "in ensemble invalid_input_map, ensemble tensor temp_tensor_5 is mapping to non-existing input invalid_input "
    "in model fp32_dim1_batch4_input4",
)
broken(
    "invalid_output_map",
    ensemble(
        "invalid_output_map",
        standard({1: dict(outputs={"OUTPUT0": T1, "invalid_output": T2}), 2: dict(inputs=[T1, T2, T1, T4])}),
    ),
    "in ensemble invalid_output_map, ensemble tensor temp_tensor_2 is mapped from non-existing output "
    "invalid_output in model fp32_dim1_batch4_output3",
)
broken(
    "unmapped_input",
    ensemble(
        "unmapped_input",
        scheduling(
            step(OUT3, ["data"] * 3, [T2, T3, T4]),
            step(IN4, {"INPUT1": T2, "INPUT2": T3, "INPUT3": T4}, ["prob"]),
        ),
    ),
    "in ensemble unmapped_input, input INPUT0 in model fp32_dim1_batch4_input4 is not mapped to any ensemble tensors",
)
broken(
    "inconsistent_data_type",
    ensemble(
        "inconsistent_data_type",
        scheduling(step(INT_B4, ["data"], ["temp_tensor"]), step(B2, ["temp_tensor"], ["prob"])),
    ),
    "in ensemble inconsistent_data_type, ensemble tensor data: inconsistent data type: TYPE_FP32 is inferred from "
    "model inconsistent_data_type while TYPE_INT32 is inferred from model int32_dim1_batch4",
)
broken(
    "inconsistent_shape",
    ensemble(
        "inconsistent_shape",
        scheduling(step(B4, ["data"], ["temp_tensor"]), step(DIM3, ["temp_tensor"], ["prob"])),
    ),
    # Full shapes (the batch dimension as -1); either side may come first (Triton's expected and expected_2).
    "in ensemble inconsistent_shape, ensemble tensor temp_tensor: inconsistent shape: [-1,16] is inferred from "
    "model fp32_dim1_batch4 while [-1,16,16,16] is inferred from model fp32_dim3_batch4",
    "in ensemble inconsistent_shape, ensemble tensor temp_tensor: inconsistent shape: [-1,16,16,16] is inferred "
    "from model fp32_dim3_batch4 while [-1,16] is inferred from model fp32_dim1_batch4",
)
broken(
    "invalid_decoupled_branching",
    ensemble(
        "invalid_decoupled_branching",
        scheduling(
            repeat_step({"OUT": "repeat_1_out"}),
            repeat_step({"OUT": "repeat_2_out"}),
            step(INT_NOBATCH2, ["repeat_1_out", "repeat_2_out"], ["identity_0", "identity_1"]),
            step(INT_NOBATCH2, ["identity_0", "identity_1"], {"OUTPUT0": "OUT"}),
        ),
        inputs=REPEAT_IO,
        outputs=[("OUT", INT32, (1,))],
        batch=0,
    ),
    "in ensemble invalid_decoupled_branching, step of model 'int32_dim1_nobatch_output2' receives inputs "
    "originated from different decoupled models",
)
broken(
    "invalid_decoupled_branching_2",
    ensemble(
        "invalid_decoupled_branching_2",
        scheduling(repeat_step({"OUT": "OUT"}), repeat_step({"IDX": "IDX"})),
        inputs=REPEAT_IO,
        outputs=[("OUT", INT32, (1,)), ("IDX", UINT32, (1,))],
        batch=0,
    ),
    # The ensemble's outputs are joined by a "sink" step that carries the ensemble's own name.
    "in ensemble invalid_decoupled_branching_2, step of model 'invalid_decoupled_branching_2' receives inputs "
    "originated from different decoupled models",
)

# Ensembles that must load (autofill_noplatform_success/ensemble, plus a decoupled one).
WORKING = {
    "inner_ensemble": ensemble("inner_ensemble", scheduling(step(B4, ["data"], ["prob"]))),
    "embedded_ensemble": ensemble(
        "embedded_ensemble", scheduling(step("inner_ensemble", {"data": "data"}, {"prob": "prob"}))
    ),
    # A batching [16] producer feeding a non-batching [-1,16] consumer: the full shapes [-1,16] agree.
    "batch_to_nobatch": ensemble(
        "batch_to_nobatch",
        scheduling(step(B4, ["data"], ["temp_tensor"]), step(NOBATCH, ["temp_tensor"], ["prob"])),
    ),
    "nobatch_to_batch": ensemble(
        "nobatch_to_batch",
        scheduling(step(NOBATCH, ["data"], ["temp_tensor"]), step(B4, ["temp_tensor"], ["prob"])),
        inputs=[("data", FP32, (4, 16))],
        outputs=[("prob", FP32, (4, 16))],
        batch=0,
    ),
    # OUTPUT1 and OUTPUT2 of the three-output model are left unmapped.
    "unmapped_output": ensemble("unmapped_output", scheduling(step(OUT3, ["data"] * 3, {"OUTPUT0": "prob"}))),
    "simple_repeat": ensemble(
        "simple_repeat",
        scheduling(repeat_step({"OUT": "OUT", "IDX": "IDX"})),
        inputs=REPEAT_IO,
        outputs=[("OUT", INT32, (1,)), ("IDX", UINT32, (1,))],
        batch=0,
    ),
    # The decoupled flag of an ensemble is computed from its steps, whatever the config says.
    "claims_decoupled": ensemble(
        "claims_decoupled",
        scheduling(step(B4, ["data"], ["prob"])),
        extra="model_transaction_policy { decoupled: true }",
    ),
}
# Ensembles that answer an FP32 inference with their input: name -> the shape of the request's input.
ECHOING = {
    "embedded_ensemble": [2, 16],
    "batch_to_nobatch": [1, 16],
    "nobatch_to_batch": [4, 16],
    "unmapped_output": [2, 16],
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    models = {**COMPOSING, **{n: c for n, (c, _) in BROKEN.items()}, **WORKING}
    repo = write_repo(tmp_path_factory.mktemp("ensembles"), models)
    # Broken models must not stop the server; /v2/health/ready stays false while any model failed.
    server = start_server(base_args(repo, extra=["--exit-on-error=false"]), "rampart-ensembles", wait="live")
    try:
        wait_models_settled(server)
        yield server
    finally:
        finish_server(server)


def index_entry(srv, name: str) -> dict:
    entries = [e for e in srv.index() if e["name"] == name]
    assert len(entries) == 1, f"expected one index entry for {name}, got {entries}"
    return entries[0]


def assert_not_ready(srv, name: str) -> None:
    r = srv.get(f"/v2/models/{name}/ready")
    assert r.status_code == 400, f"{name}: ready -> {r.status_code} {r.text!r}"


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_ensemble_is_unavailable_with_tritons_message(srv, name):
    _, expected = BROKEN[name]
    entry = index_entry(srv, name)
    assert entry["state"] == "UNAVAILABLE", entry
    reason = entry.get("reason", "")
    assert any(e in reason for e in expected), f"{name}: reason {reason!r} contains none of {expected}"
    assert_not_ready(srv, name)


def test_composing_and_valid_ensembles_stay_ready(srv):
    states = {e["name"]: e["state"] for e in srv.index()}
    wanted = [*COMPOSING, *WORKING]
    assert {n: states.get(n) for n in wanted} == {n: "READY" for n in wanted}
    for name in wanted:
        assert srv.get(f"/v2/models/{name}/ready").status_code == 200, name


@pytest.mark.parametrize("name", list(ECHOING))
def test_valid_ensemble_echoes_its_input(srv, name):
    shape = ECHOING[name]
    count = shape[0] * shape[1]
    data = [float(i) / 4 - 3 for i in range(count)]
    body = {"inputs": [{"name": "data", "shape": shape, "datatype": "FP32", "data": data}]}
    r = srv.infer(name, body)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert list(outputs) == ["prob"], outputs
    assert outputs["prob"]["datatype"] == "FP32"
    assert outputs["prob"]["shape"] == shape
    assert outputs["prob"]["data"] == data


@pytest.mark.parametrize(
    "name, step_model, decoupled",
    [("embedded_ensemble", "inner_ensemble", False), ("simple_repeat", REPEAT, True), ("claims_decoupled", B4, False)],
)
def test_ensemble_config_gets_no_backend_defaults_and_a_computed_decoupled_flag(srv, name, step_model, decoupled):
    r = srv.get(f"/v2/models/{name}/config")
    assert r.status_code == 200, r.text
    cfg = r.json()
    assert (cfg["platform"], cfg["backend"], cfg["instance_group"]) == ("ensemble", "", []), cfg
    assert cfg["model_transaction_policy"] == {"decoupled": decoupled}, cfg
    # Only the version policy is filled in; no scheduler, optimization or warmup defaults.
    assert cfg["version_policy"] == {"latest": {"num_versions": 1}}
    assert not {"optimization", "dynamic_batching", "sequence_batching"} & set(cfg), cfg
    assert cfg["model_warmup"] == []
    assert [s["model_name"] for s in cfg["ensemble_scheduling"]["step"]] == [step_model]


def test_decoupled_ensemble_refuses_unary_http_inference(srv):
    """A repeat step makes the ensemble decoupled, so HTTP inference is refused as for the bare model."""
    body = {
        "inputs": [
            {"name": "IN", "shape": [1], "datatype": "INT32", "data": [7]},
            {"name": "DELAY", "shape": [1], "datatype": "UINT32", "data": [0]},
            {"name": "WAIT", "shape": [1], "datatype": "UINT32", "data": [0]},
        ]
    }
    # UNSUPPORTED, which Triton's HTTP front end maps to 501.
    msg = "HTTP end point doesn't support models with decoupled transaction policy"
    assert_error(srv.infer("simple_repeat", body), 501, exact=msg)
