"""Answers what a BLS call gave instead of failing: HAS_ERROR (`has_error()`), MESSAGE (the error's message, or "")
and OUTPUT0 (the call's OUTPUT0, flattened; empty on error). ACTION picks the call:
  missing           a model that does not exist ("no_such_model")
  bad_input         `simple` with an input named WRONG instead of INPUT0
  simple            `simple` with ones and twos (OUTPUT0 = 3)
  decoupled_plain   exec() without decoupled=True on `repeat_decoupled`, which sends two responses
"""

import numpy as np
import triton_python_backend_utils as pb_utils


def operands(first="INPUT0"):
    return [
        pb_utils.Tensor(first, np.ones((1, 16), dtype=np.int32)),
        pb_utils.Tensor("INPUT1", np.full((1, 16), 2, dtype=np.int32)),
    ]


CALLS = {
    "missing": lambda: pb_utils.InferenceRequest(
        model_name="no_such_model", requested_output_names=["OUTPUT0"], inputs=operands()
    ),
    "bad_input": lambda: pb_utils.InferenceRequest(
        model_name="simple", requested_output_names=["OUTPUT0"], inputs=operands("WRONG")
    ),
    "simple": lambda: pb_utils.InferenceRequest(
        model_name="simple", requested_output_names=["OUTPUT0"], inputs=operands()
    ),
    "decoupled_plain": lambda: pb_utils.InferenceRequest(
        model_name="repeat_decoupled",
        requested_output_names=["OUT"],
        inputs=[pb_utils.Tensor("IN", np.array([1, 2], dtype=np.int32))],
    ),
}


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            action = pb_utils.get_input_tensor_by_name(request, "ACTION").as_numpy()[0].decode()
            answer = CALLS[action]().exec()
            message = answer.error().message() if answer.has_error() else ""
            out = pb_utils.get_output_tensor_by_name(answer, "OUTPUT0")
            outputs = [
                pb_utils.Tensor("HAS_ERROR", np.array([answer.has_error()], dtype=np.bool_)),
                pb_utils.Tensor("MESSAGE", np.array([message.encode()], dtype=np.object_)),
                pb_utils.Tensor("OUTPUT0", np.zeros(0, np.int32) if out is None else out.as_numpy().reshape(-1)),
            ]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
