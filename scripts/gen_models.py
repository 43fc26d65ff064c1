#!/usr/bin/env python3
"""Generate Rampart's ONNX model repositories (deterministic).

Usage:
    gen_models.py [EXAMPLES_DIR]          # example repository, default: examples/models (committed)
    gen_models.py --test-repo DIR         # test repository (generated at test time, not committed)
    gen_models.py --bad-repo DIR          # repository with broken models (for --exit-on-error=false)

Several options may be combined; EXAMPLES_DIR is only written when given explicitly or when no
--test-repo/--bad-repo option is given.

All models use opset 17 and IR version 8 so that ONNX Runtime 1.32 and tract 0.23 both load them.
Layout per Triton: <repo>/<model>/config.pbtxt + <repo>/<model>/<version>/model.onnx.
Needs: pip install onnx numpy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
PRODUCER = "rampart-gen_models"

# Triton config type -> (ONNX element type, suffix used in model names)
DTYPES = [
    ("TYPE_BOOL", TensorProto.BOOL, "bool"),
    ("TYPE_UINT8", TensorProto.UINT8, "uint8"),
    ("TYPE_UINT16", TensorProto.UINT16, "uint16"),
    ("TYPE_UINT32", TensorProto.UINT32, "uint32"),
    ("TYPE_UINT64", TensorProto.UINT64, "uint64"),
    ("TYPE_INT8", TensorProto.INT8, "int8"),
    ("TYPE_INT16", TensorProto.INT16, "int16"),
    ("TYPE_INT32", TensorProto.INT32, "int32"),
    ("TYPE_INT64", TensorProto.INT64, "int64"),
    ("TYPE_FP16", TensorProto.FLOAT16, "fp16"),
    ("TYPE_FP32", TensorProto.FLOAT, "fp32"),
    ("TYPE_FP64", TensorProto.DOUBLE, "fp64"),
    ("TYPE_STRING", TensorProto.STRING, "bytes"),
    ("TYPE_BF16", TensorProto.BFLOAT16, "bf16"),
]


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def finish_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER)
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def save_model(model: onnx.ModelProto, model_dir: str, version: int = 1) -> None:
    vdir = os.path.join(model_dir, str(version))
    os.makedirs(vdir, exist_ok=True)
    # SerializeToString is deterministic for these models (no map fields); write bytes directly.
    with open(os.path.join(vdir, "model.onnx"), "wb") as f:
        f.write(model.SerializeToString())


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def io_block(kind: str, entries: list[dict]) -> str:
    """Triton-style `input [ { ... }, { ... } ]` block (no colon after the field name)."""
    parts = []
    for e in entries:
        lines = [f'    name: "{e["name"]}"', f'    data_type: {e["data_type"]}',
                 f'    dims: [ {", ".join(str(d) for d in e["dims"])} ]']
        if "reshape" in e:
            lines.append(f'    reshape: {{ shape: [ {", ".join(str(d) for d in e["reshape"])} ] }}')
        if e.get("optional"):
            lines.append("    optional: true")
        parts.append("  {\n" + "\n".join(lines) + "\n  }")
    return f"{kind} [\n" + ",\n".join(parts) + "\n]\n"


def config_text(name: str | None, max_batch_size: int, inputs: list[dict], outputs: list[dict],
                extra: str = "") -> str:
    text = ""
    if name is not None:
        text += f'name: "{name}"\n'
    text += 'platform: "onnxruntime_onnx"\n'
    text += f"max_batch_size: {max_batch_size}\n"
    if extra:
        text += extra.rstrip("\n") + "\n"
    text += io_block("input", inputs)
    text += io_block("output", outputs)
    return text


def fresh(repo: str, name: str) -> str:
    """Return <repo>/<name> after removing whatever was there (only that model's directory)."""
    path = os.path.join(repo, name)
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)
    os.makedirs(path)
    return path


# ----------------------------------------------------------------------------------------------
# ONNX graphs
# ----------------------------------------------------------------------------------------------

def add_sub_model(batched: bool, elem=TensorProto.INT32) -> onnx.ModelProto:
    shape = ["batch", 16] if batched else [16]
    vi = lambda n: helper.make_tensor_value_info(n, elem, shape)  # noqa: E731
    nodes = [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
             helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])]
    g = helper.make_graph(nodes, "simple", [vi("INPUT0"), vi("INPUT1")], [vi("OUTPUT0"), vi("OUTPUT1")])
    return finish_model(g)


def identity_model(elem: int, graph_name: str) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], graph_name,
                          [helper.make_tensor_value_info("INPUT0", elem, ["batch", "n"])],
                          [helper.make_tensor_value_info("OUTPUT0", elem, ["batch", "n"])])
    return finish_model(g)


def scale_model(factor: float) -> onnx.ModelProto:
    """OUTPUT0 = INPUT0 * factor (FP32, [batch, n])."""
    k = numpy_helper.from_array(np.array(factor, dtype=np.float32), "factor")
    g = helper.make_graph([helper.make_node("Mul", ["INPUT0", "factor"], ["OUTPUT0"])], "scale",
                          [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", "n"])],
                          [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["batch", "n"])],
                          [k])
    return finish_model(g)


def mlp_model() -> onnx.ModelProto:
    """784 -> 256 -> ReLU -> 10 with seeded random weights (the `mlp` example model)."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((784, 256)) * 0.05).astype(np.float32)
    b1 = (rng.standard_normal(256) * 0.01).astype(np.float32)
    w2 = (rng.standard_normal((256, 10)) * 0.05).astype(np.float32)
    b2 = (rng.standard_normal(10) * 0.01).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "W1"), (b1, "b1"), (w2, "W2"), (b2, "b2"))]
    nodes = [helper.make_node("MatMul", ["input", "W1"], ["h0"]),
             helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["h2"]),
             helper.make_node("MatMul", ["h2", "W2"], ["h3"]),
             helper.make_node("Add", ["h3", "b2"], ["output"])]
    g = helper.make_graph(nodes, "mlp",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 784])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
                          inits)
    return finish_model(g)


def reshape_onnx_model() -> onnx.ModelProto:
    """INPUT0 [batch,2,2] FP32 -> OUTPUT0 = INPUT0 + [[1,2],[3,4]], OUTPUT1 = INPUT0."""
    c = numpy_helper.from_array(np.array([[1, 2], [3, 4]], dtype=np.float32), "C")
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 2, 2])  # noqa: E731
    nodes = [helper.make_node("Add", ["INPUT0", "C"], ["OUTPUT0"]),
             helper.make_node("Identity", ["INPUT0"], ["OUTPUT1"])]
    g = helper.make_graph(nodes, "reshape", [vi("INPUT0")], [vi("OUTPUT0"), vi("OUTPUT1")], [c])
    return finish_model(g)


def optional_input_model() -> onnx.ModelProto:
    """OUTPUT0 = INPUT0 + INPUT1, INPUT1 is a graph input that also has an initializer (default
    [1,1,1,1]). ONNX Runtime lists it as an *overridable initializer*: a request may feed it or
    leave it out. This is how Triton's onnxruntime backend tests `optional: true` inputs."""
    default = numpy_helper.from_array(np.ones(4, dtype=np.float32), "INPUT1")
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [4])  # noqa: E731
    g = helper.make_graph([helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"])], "optional_input",
                          [vi("INPUT0"), vi("INPUT1")], [vi("OUTPUT0")], [default])
    return finish_model(g)


# ----------------------------------------------------------------------------------------------
# model directories
# ----------------------------------------------------------------------------------------------

def simple_io(batched: bool):
    d = [16]
    ins = [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": d},
           {"name": "INPUT1", "data_type": "TYPE_INT32", "dims": d}]
    outs = [{"name": "OUTPUT0", "data_type": "TYPE_INT32", "dims": d},
            {"name": "OUTPUT1", "data_type": "TYPE_INT32", "dims": d}]
    return ins, outs


def write_simple(repo: str, name: str = "simple", extra: str = "") -> None:
    d = fresh(repo, name)
    ins, outs = simple_io(True)
    write_text(os.path.join(d, "config.pbtxt"), config_text(name, 8, ins, outs, extra))
    save_model(add_sub_model(batched=True), d)


def write_identity(repo: str, name: str, triton_type: str, elem: int) -> None:
    d = fresh(repo, name)
    ins = [{"name": "INPUT0", "data_type": triton_type, "dims": [-1]}]
    outs = [{"name": "OUTPUT0", "data_type": triton_type, "dims": [-1]}]
    write_text(os.path.join(d, "config.pbtxt"), config_text(name, 8, ins, outs))
    save_model(identity_model(elem, name), d)


def write_mlp(repo: str) -> None:
    d = fresh(repo, "mlp")
    ins = [{"name": "input", "data_type": "TYPE_FP32", "dims": [784]}]
    outs = [{"name": "output", "data_type": "TYPE_FP32", "dims": [10]}]
    write_text(os.path.join(d, "config.pbtxt"), config_text("mlp", 32, ins, outs))
    save_model(mlp_model(), d)


def gen_examples(repo: str) -> None:
    os.makedirs(repo, exist_ok=True)
    write_simple(repo)
    write_identity(repo, "identity_fp32", "TYPE_FP32", TensorProto.FLOAT)
    write_identity(repo, "identity_bytes", "TYPE_STRING", TensorProto.STRING)
    write_mlp(repo)


def gen_test_repo(repo: str) -> None:
    os.makedirs(repo, exist_ok=True)
    # The example models, so that one repository serves every test.
    write_simple(repo)
    write_mlp(repo)

    # identity_<dtype> for every ONNX-representable Triton type.
    for triton_type, elem, suffix in DTYPES:
        write_identity(repo, f"identity_{suffix}", triton_type, elem)

    # simple without batching: ONNX shape [16], max_batch_size 0.
    d = fresh(repo, "simple_nobatch")
    ins, outs = simple_io(False)
    write_text(os.path.join(d, "config.pbtxt"), config_text("simple_nobatch", 0, ins, outs))
    save_model(add_sub_model(batched=False), d)

    # simple with no config.pbtxt at all: auto-complete must derive everything.
    save_model(add_sub_model(batched=True), fresh(repo, "simple_autocomplete"))

    # simple with only platform and max_batch_size: inputs/outputs auto-completed.
    d = fresh(repo, "simple_partial")
    write_text(os.path.join(d, "config.pbtxt"), 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n')
    save_model(add_sub_model(batched=True), d)

    # Versioned models: version v returns INPUT0 * v.
    io_in = [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [-1]}]
    io_out = [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]}]
    policies = {
        "multi_version": "version_policy: { all { } }",
        "multi_version_latest": "",
        "multi_version_specific": "version_policy: { specific { versions: [ 1, 3 ] } }",
    }
    for name, policy in policies.items():
        d = fresh(repo, name)
        write_text(os.path.join(d, "config.pbtxt"), config_text(name, 8, io_in, io_out, policy))
        for v in (1, 2, 3):
            save_model(scale_model(float(v)), d, version=v)

    # reshape: the client sees [4], the model sees [2,2].
    d = fresh(repo, "reshape_model")
    ins = [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4], "reshape": [2, 2]}]
    outs = [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4], "reshape": [2, 2]},
            {"name": "OUTPUT1", "data_type": "TYPE_FP32", "dims": [2, 2]}]
    write_text(os.path.join(d, "config.pbtxt"), config_text("reshape_model", 8, ins, outs))
    save_model(reshape_onnx_model(), d)

    # optional input via an overridable initializer (INPUT1 defaults to ones).
    d = fresh(repo, "optional_input")
    ins = [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]},
           {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [4], "optional": True}]
    outs = [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]}]
    write_text(os.path.join(d, "config.pbtxt"), config_text("optional_input", 0, ins, outs))
    save_model(optional_input_model(), d)

    # two CPU instances of simple.
    write_simple(repo, "two_instances", "instance_group [\n  {\n    count: 2\n    kind: KIND_CPU\n  }\n]")


def gen_bad_repo(repo: str) -> None:
    os.makedirs(repo, exist_ok=True)
    # One good model, so a server started with --exit-on-error=false still has something to serve.
    write_simple(repo)

    ins, outs = simple_io(True)

    d = fresh(repo, "broken_config")
    text = config_text("broken_config", 8, ins, outs).replace("max_batch_size: 8", 'max_batch_size: "eight"')
    write_text(os.path.join(d, "config.pbtxt"), text)
    save_model(add_sub_model(batched=True), d)

    d = fresh(repo, "broken_model")
    write_text(os.path.join(d, "config.pbtxt"), config_text("broken_model", 8, ins, outs))
    os.makedirs(os.path.join(d, "1"), exist_ok=True)
    garbage = np.random.default_rng(1234).integers(0, 256, size=512, dtype=np.uint8).tobytes()
    with open(os.path.join(d, "1", "model.onnx"), "wb") as f:
        f.write(b"this is not an onnx model\n" + garbage)

    d = fresh(repo, "name_mismatch")
    write_text(os.path.join(d, "config.pbtxt"), config_text("other", 8, ins, outs))
    save_model(add_sub_model(batched=True), d)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("examples_dir", nargs="?", default=None,
                    help="example repository to (re)generate (default: examples/models)")
    ap.add_argument("--test-repo", metavar="DIR", help="generate the test repository into DIR")
    ap.add_argument("--bad-repo", metavar="DIR", help="generate the broken-model repository into DIR")
    args = ap.parse_args(argv)

    examples = args.examples_dir
    if examples is None and not args.test_repo and not args.bad_repo:
        examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples", "models")
    if examples:
        gen_examples(examples)
        print(f"example repository: {examples}")
    if args.test_repo:
        gen_test_repo(args.test_repo)
        print(f"test repository: {args.test_repo}")
    if args.bad_repo:
        gen_bad_repo(args.bad_repo)
        print(f"bad repository: {args.bad_repo}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
