#!/usr/bin/env python3
"""Cross-check the generated model repositories with Python onnxruntime and Triton's real
ModelConfig schema (tritonclient's model_config_pb2).

Usage: check_models.py [--examples DIR] [--test-repo DIR] [--bad-repo DIR]
Exits non-zero on any mismatch. Needs: onnxruntime, onnx, numpy, tritonclient (see
tests/python/requirements.txt).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

MLP_EXPECTED = np.array([0.4454515, -0.69113296, 0.09195761, -0.7163936], dtype=np.float32)
MLP_SUM_B1 = -1.6489695
MLP_SUM_B32 = -25.24209

NP_TYPES = {"bool": np.bool_, "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32,
            "uint64": np.uint64, "int8": np.int8, "int16": np.int16, "int32": np.int32,
            "int64": np.int64, "fp16": np.float16, "fp32": np.float32, "fp64": np.float64}

failures: list[str] = []


def check(cond: bool, what: str) -> None:
    print(("  ok   " if cond else "  FAIL ") + what)
    if not cond:
        failures.append(what)


def model_config_pb2():
    """Import tritonclient/grpc/model_config_pb2.py without importing tritonclient.grpc (needs grpcio)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "grpc", "model_config_pb2.py")
    mspec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    return mod


PB2 = None


def parse_config(path: str):
    from google.protobuf import text_format
    with open(path, encoding="utf-8") as f:
        return text_format.Parse(f.read(), PB2.ModelConfig())


def session(path: str) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def check_configs(repo: str, expect_bad: set[str] = frozenset()) -> None:
    if PB2 is None:
        print("  (tritonclient not installed: config schema check skipped)")
        return
    for name in sorted(os.listdir(repo)):
        cfg = os.path.join(repo, name, "config.pbtxt")
        if not os.path.exists(cfg):
            continue
        try:
            parse_config(cfg)
            ok = name not in expect_bad
            check(ok, f"{name}/config.pbtxt parses with Triton's ModelConfig schema")
        except Exception as e:  # noqa: BLE001
            check(name in expect_bad, f"{name}/config.pbtxt rejected ({str(e).splitlines()[0][:100]})")


def check_onnx(path: str) -> None:
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    check(m.ir_version == 8 and m.opset_import[0].version == 17, f"{path}: ir 8 / opset 17, checker ok")


def run_simple(path: str, batched: bool) -> None:
    s = session(path)
    a = np.arange(16, dtype=np.int32)
    b = np.full(16, 3, dtype=np.int32)
    if batched:
        a = np.stack([a, a * 2])
        b = np.stack([b, b])
    o0, o1 = s.run(["OUTPUT0", "OUTPUT1"], {"INPUT0": a, "INPUT1": b})
    check(np.array_equal(o0, a + b) and np.array_equal(o1, a - b), f"{path}: add/sub")


def run_mlp(path: str) -> None:
    s = session(path)
    for batch, want_sum in ((1, MLP_SUM_B1), (32, MLP_SUM_B32)):
        i = np.arange(batch)[:, None]
        j = np.arange(784)[None, :]
        x = (((i * 784 + j) % 97) / 97).astype(np.float32)
        y = s.run(["output"], {"input": x})[0]
        print(f"  mlp batch {batch}: out[0,:4] = {y[0, :4].tolist()} sum = {float(y.sum()):.7g}")
        check(np.allclose(y[0, :4], MLP_EXPECTED, atol=1e-5), f"{path}: mlp out[0,:4] (batch {batch})")
        check(abs(float(y.sum()) - want_sum) < 1e-3, f"{path}: mlp sum (batch {batch})")


def run_identity(path: str, suffix: str) -> None:
    s = session(path)
    if suffix == "bf16":
        # numpy has no bfloat16: feed raw uint16 bits through an OrtValue and read the output memory.
        bits = np.array([[0x3F80, 0x4000, 0xC040], [0x0000, 0x7F80, 0x3DCD]], dtype=np.uint16)
        ov = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, onnx.TensorProto.BFLOAT16)
        res = s.run_with_ort_values(None, {"INPUT0": ov})[0]
        buf = (ctypes.c_uint16 * bits.size).from_address(res.data_ptr())
        out = np.frombuffer(buf, dtype=np.uint16).reshape(res.shape())
        check(res.data_type() == "tensor(bfloat16)" and np.array_equal(out, bits), f"{path}: identity bf16")
        return
    if suffix == "bytes":
        # The Python binding returns str for string tensors; use UTF-8 text here.
        x = np.array([["a", "bc", ""], ["é", "xyz", "q"]], dtype=object)
    elif suffix == "bool":
        x = np.array([[True, False, True], [False, False, True]])
    else:
        x = np.arange(6).reshape(2, 3).astype(NP_TYPES[suffix])
    out = s.run(None, {"INPUT0": x})[0]
    check(out.shape == x.shape and np.array_equal(out, x), f"{path}: identity {suffix}")


def check_examples(repo: str) -> None:
    print(f"== example repository {repo}")
    check_configs(repo)
    for name in ("simple", "identity_fp32", "identity_bytes", "mlp"):
        check_onnx(os.path.join(repo, name, "1", "model.onnx"))
    run_simple(os.path.join(repo, "simple", "1", "model.onnx"), batched=True)
    run_identity(os.path.join(repo, "identity_fp32", "1", "model.onnx"), "fp32")
    run_identity(os.path.join(repo, "identity_bytes", "1", "model.onnx"), "bytes")
    run_mlp(os.path.join(repo, "mlp", "1", "model.onnx"))


def check_test_repo(repo: str) -> None:
    print(f"== test repository {repo}")
    check_configs(repo)
    for name in sorted(os.listdir(repo)):
        for v in sorted(os.listdir(os.path.join(repo, name))):
            p = os.path.join(repo, name, v, "model.onnx")
            if os.path.exists(p):
                check_onnx(p)
    for name in sorted(os.listdir(repo)):
        if name.startswith("identity_"):
            run_identity(os.path.join(repo, name, "1", "model.onnx"), name[len("identity_"):])
    for name in ("simple", "simple_autocomplete", "simple_partial", "two_instances"):
        run_simple(os.path.join(repo, name, "1", "model.onnx"), batched=True)
    run_simple(os.path.join(repo, "simple_nobatch", "1", "model.onnx"), batched=False)
    check(not os.path.exists(os.path.join(repo, "simple_autocomplete", "config.pbtxt")),
          "simple_autocomplete has no config.pbtxt")
    run_mlp(os.path.join(repo, "mlp", "1", "model.onnx"))
    x = np.array([[1.0, -2.0, 3.5]], dtype=np.float32)
    for name in ("multi_version", "multi_version_latest", "multi_version_specific"):
        for v in (1, 2, 3):
            y = session(os.path.join(repo, name, str(v), "model.onnx")).run(None, {"INPUT0": x})[0]
            check(np.array_equal(y, x * v), f"{name}/{v}: output = input * {v}")
    # reshape_model: client [b,4] -> model [b,2,2]
    s = session(os.path.join(repo, "reshape_model", "1", "model.onnx"))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    o0, o1 = s.run(["OUTPUT0", "OUTPUT1"], {"INPUT0": x.reshape(2, 2, 2)})
    check(np.array_equal(o0.reshape(2, 4), x + np.array([1, 2, 3, 4], dtype=np.float32))
          and np.array_equal(o1.reshape(2, 4), x), "reshape_model: OUTPUT0 = x + [1,2,3,4], OUTPUT1 = x")
    # optional_input: INPUT1 is an overridable initializer defaulting to ones
    s = session(os.path.join(repo, "optional_input", "1", "model.onnx"))
    req = [i.name for i in s.get_inputs()]
    over = [i.name for i in s.get_overridable_initializers()]
    print(f"  optional_input: ORT inputs={req} overridable_initializers={over}")
    x = np.array([1, 2, 3, 4], dtype=np.float32)
    y0 = s.run(None, {"INPUT0": x})[0]
    y1 = s.run(None, {"INPUT0": x, "INPUT1": np.full(4, 10, dtype=np.float32)})[0]
    check(np.array_equal(y0, x + 1) and np.array_equal(y1, x + 10),
          "optional_input: INPUT1 omitted -> +1, given -> +INPUT1")


def check_bad_repo(repo: str) -> None:
    print(f"== bad repository {repo}")
    check_configs(repo, expect_bad={"broken_config"})
    run_simple(os.path.join(repo, "simple", "1", "model.onnx"), batched=True)
    try:
        session(os.path.join(repo, "broken_model", "1", "model.onnx"))
        check(False, "broken_model fails to load")
    except Exception as e:  # noqa: BLE001
        check(True, f"broken_model fails to load ({type(e).__name__})")
    if PB2 is not None:
        cfg = parse_config(os.path.join(repo, "name_mismatch", "config.pbtxt"))
        check(cfg.name == "other", "name_mismatch: config name is 'other'")


def main() -> int:
    global PB2
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples")
    ap.add_argument("--test-repo")
    ap.add_argument("--bad-repo")
    args = ap.parse_args()
    PB2 = model_config_pb2()
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}")
    if args.examples:
        check_examples(args.examples)
    if args.test_repo:
        check_test_repo(args.test_repo)
    if args.bad_repo:
        check_bad_repo(args.bad_repo)
    print(f"{len(failures)} failed" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
