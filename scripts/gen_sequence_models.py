#!/usr/bin/env python3
"""Generate Rampart's stateful (sequence-batching) ONNX test models (deterministic).

Usage:
    gen_sequence_models.py DIR        # writes the repository into DIR

Models (each <DIR>/<name>/config.pbtxt + 1/model.onnx; all tensors INT32 [batch, 1] unless noted):
- simple_sequence: Triton's example model. OUTPUT = READY * (INPUT + START); direct strategy,
  controls START and READY.
- simple_dyna_sequence: Triton's example model. OUTPUT = READY * ((INPUT + START) + END * CORRID);
  oldest strategy, CORRID TYPE_UINT64, two instances.
- simple_string_dyna_sequence: equivalent of Triton's `dyna_sequence` test backend with a TYPE_STRING
  CORRID: a real accumulator kept as implicit state, START sets it to INPUT, END adds int(CORRID)
  (ONNX Cast from string; ONNX Runtime only).
- sequence_accumulator: a running sum kept as implicit state (STATE_IN/STATE_OUT), controls START,
  END, READY; direct strategy, max_batch_size 4. Runs on both engines.
- sequence_accumulator_oldest: the same model with the oldest strategy.
- sequence_nobatch: the running sum without a batch dimension (max_batch_size 0), state starting
  from initial_state/data_file (the int32 100).
Needs: pip install onnx numpy.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_models import finish_model, fresh, save_model, write_text  # noqa: E402

INT32 = TensorProto.INT32


def vi(name: str, elem: int, batched: bool):
    return helper.make_tensor_value_info(name, elem, ["batch", 1] if batched else [1])


def graph(name: str, nodes, inputs, outputs, consts: dict[str, int] | None = None):
    inits = [numpy_helper.from_array(np.array([v], dtype=np.int32), k) for k, v in (consts or {}).items()]
    return finish_model(helper.make_graph(nodes, name, inputs, outputs, initializer=inits))


def simple_sequence_model():
    nodes = [helper.make_node("Add", ["INPUT", "START"], ["sum"]),
             helper.make_node("Mul", ["READY", "sum"], ["OUTPUT"])]
    ins = [vi(n, INT32, True) for n in ("INPUT", "START", "READY")]
    return graph("simple_sequence", nodes, ins, [vi("OUTPUT", INT32, True)])


def simple_dyna_sequence_model():
    nodes = [helper.make_node("Add", ["INPUT", "START"], ["sum"]),
             helper.make_node("Cast", ["CORRID"], ["corrid"], to=INT32),
             helper.make_node("Mul", ["END", "corrid"], ["tail"]),
             helper.make_node("Add", ["sum", "tail"], ["total"]),
             helper.make_node("Mul", ["READY", "total"], ["OUTPUT"])]
    ins = [vi(n, INT32, True) for n in ("INPUT", "START", "END", "READY")]
    ins.append(vi("CORRID", TensorProto.UINT64, True))
    return graph("simple_dyna_sequence", nodes, ins, [vi("OUTPUT", INT32, True)])


def accumulator_model(batched: bool, corrid: int | None, gated_start: bool = True):
    """X = READY * (INPUT + keep * STATE_IN [+ END * int(CORRID)]); OUTPUT = STATE_OUT = X.

    keep = 1 - START when `gated_start` (the state restarts at START), else 1 (initial_state decides)."""
    nodes = []
    if gated_start:
        nodes += [helper.make_node("Sub", ["one", "START"], ["keep"]),
                  helper.make_node("Mul", ["keep", "STATE_IN"], ["kept"])]
        kept = "kept"
    else:
        kept = "STATE_IN"
    nodes.append(helper.make_node("Add", ["INPUT", kept], ["acc"]))
    last = "acc"
    if corrid is not None:
        nodes += [helper.make_node("Cast", ["CORRID"], ["corrid"], to=INT32),
                  helper.make_node("Mul", ["END", "corrid"], ["tail"]),
                  helper.make_node("Add", ["acc", "tail"], ["acc_end"])]
        last = "acc_end"
    nodes += [helper.make_node("Mul", ["READY", last], ["OUTPUT"]),
              helper.make_node("Identity", ["OUTPUT"], ["STATE_OUT"])]
    # END: used with a CORRID; otherwise an input the graph takes and ignores (the config names it).
    names = ["INPUT", "STATE_IN", "READY"] + (["START", "END"] if gated_start else [])
    ins = [vi(n, INT32, batched) for n in names]
    if corrid is not None:
        ins.append(vi("CORRID", corrid, batched))
    outs = [vi("OUTPUT", INT32, batched), vi("STATE_OUT", INT32, batched)]
    return graph("accumulator", nodes, ins, outs, {"one": 1})


def control(name: str, kind: str, data_type: str | None = None) -> str:
    if data_type:
        return f'{{ name: "{name}" control [ {{ kind: {kind} data_type: {data_type} }} ] }}'
    return f'{{ name: "{name}" control [ {{ kind: {kind} int32_false_true: [ 0, 1 ] }} ] }}'


STATE = ('state [ { input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [ 1 ]%s } ]')


def config(name: str, max_batch: int, controls: list[str], strategy: str = "", state: str = "",
           extra: str = "") -> str:
    io = ('input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
          'output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]\n')
    return (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch}\n'
            f"sequence_batching {{\n  {strategy}\n  control_input [\n    " + ",\n    ".join(controls)
            + f"\n  ]\n  {state}\n}}\n{io}{extra}")


def write(repo: str, name: str, text: str, model) -> str:
    d = fresh(repo, name)
    write_text(os.path.join(d, "config.pbtxt"), text)
    save_model(model, d)
    return d


START = control("START", "CONTROL_SEQUENCE_START")
END = control("END", "CONTROL_SEQUENCE_END")
READY = control("READY", "CONTROL_SEQUENCE_READY")
OLDEST = "oldest { max_candidate_sequences: 1024 max_queue_delay_microseconds: 10000 }"


def gen_sequence_repo(repo: str) -> None:
    write(repo, "simple_sequence", config("simple_sequence", 8, [START, READY]), simple_sequence_model())
    write(repo, "simple_dyna_sequence",
          config("simple_dyna_sequence", 8,
                 [START, END, READY, control("CORRID", "CONTROL_SEQUENCE_CORRID", "TYPE_UINT64")],
                 "max_sequence_idle_microseconds: 10000000\n  " + OLDEST,
                 extra='instance_group [ { count: 2 kind: KIND_CPU } ]\n'),
          simple_dyna_sequence_model())
    write(repo, "simple_string_dyna_sequence",
          config("simple_string_dyna_sequence", 8,
                 [START, END, READY, control("CORRID", "CONTROL_SEQUENCE_CORRID", "TYPE_STRING")],
                 "max_sequence_idle_microseconds: 10000000\n  " + OLDEST, STATE % ""),
          accumulator_model(True, TensorProto.STRING))
    acc = accumulator_model(True, None)
    write(repo, "sequence_accumulator",
          config("sequence_accumulator", 4, [START, END, READY],
                 "max_sequence_idle_microseconds: 2000000", STATE % ""), acc)
    write(repo, "sequence_accumulator_oldest",
          config("sequence_accumulator_oldest", 4, [START, END, READY],
                 "max_sequence_idle_microseconds: 2000000\n  oldest { max_candidate_sequences: 8 "
                 "preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 100000 }", STATE % ""), acc)
    init = ' initial_state [ { name: "hundred" data_type: TYPE_INT32 dims: [ 1 ] data_file: "input_state_data" } ]'
    d = write(repo, "sequence_nobatch",
              config("sequence_nobatch", 0, [READY], "max_sequence_idle_microseconds: 2000000", STATE % init),
              accumulator_model(False, None, gated_start=False))
    os.makedirs(os.path.join(d, "initial_state"), exist_ok=True)
    with open(os.path.join(d, "initial_state", "input_state_data"), "wb") as f:
        f.write(np.array([100], dtype=np.int32).tobytes())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    gen_sequence_repo(sys.argv[1])
    print(f"sequence repository: {sys.argv[1]}")
