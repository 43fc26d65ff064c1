"""How the iterator of `exec(decoupled=True)` behaves, as the MODE input asks; RESULT is four numbers:

- MODE 0: calls the ONNX model `simple` (not decoupled): [responses, responses of a second iteration,
  outputs of the last response, 0];
- MODE 1: calls repeat_decoupled with three values (three responses, then the final flag alone): the same four
  numbers;
- MODE 2: calls repeat_thread with twenty values (one every 50 ms) and cancels the call after the first
  response: [responses, 1 if the last one is a CANCELLED error, milliseconds the iteration took, 0];
- MODE 4: the same, but repeat_thread is asked to ignore the cancellation (parameter `ignore_cancel`): the same
  four numbers, the last one the sum of the values received;
- MODE 3: builds requests as Triton's binding checks them: [how many of four bad constructions raised TypeError,
  flags after set_flags(SEQUENCE_END), 1 if trace() answers an object, 1 if PreferredMemory is accepted].
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils


def call(model, inputs, outputs):
    return pb_utils.InferenceRequest(model_name=model, inputs=inputs, requested_output_names=outputs)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            mode = int(pb_utils.get_input_tensor_by_name(request, "MODE").as_numpy()[0])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("RESULT", self.run(mode))]))
        return responses

    def run(self, mode):
        if mode == 3:
            return self.construct()
        if mode in (2, 4):
            return self.cancel(ignored=mode == 4)
        if mode in (0, 1):
            if mode == 0:
                values = np.arange(16, dtype=np.int32).reshape(1, 16)
                inputs = [pb_utils.Tensor("INPUT0", values), pb_utils.Tensor("INPUT1", values)]
                stream = call("simple", inputs, ["OUTPUT0", "OUTPUT1"]).exec(decoupled=True)
            else:
                inputs = [pb_utils.Tensor("IN", np.array([5, 6, 7], dtype=np.int32))]
                stream = call("repeat_decoupled", inputs, ["OUT", "IDX"]).exec(decoupled=True)
            first = list(stream)
            second = list(stream)
            return np.array([len(first), len(second), len(first[-1].output_tensors()), 0], dtype=np.int32)

    def cancel(self, ignored):
        inputs = [pb_utils.Tensor("IN", np.arange(20, dtype=np.int32))]
        request = pb_utils.InferenceRequest(
            model_name="repeat_thread", inputs=inputs, requested_output_names=["OUT", "IDX"],
            parameters={"ignore_cancel": ignored},
        )
        stream = request.exec(decoupled=True)
        start = time.monotonic()
        received = []
        for response in stream:
            received.append(response)
            if len(received) == 1:
                stream.cancel()
        last = received[-1]
        cancelled = last.has_error() and last.error().code() == pb_utils.TritonError.CANCELLED
        took = int((time.monotonic() - start) * 1000)
        total = sum(int(r.output_tensors()[0].as_numpy()[0]) for r in received if r.output_tensors())
        return np.array([len(received), int(cancelled), took, total], dtype=np.int32)

    def construct(self):
        bad = [
            {"inputs": [], "requested_output_names": ["A"]},
            {"model_name": "m", "requested_output_names": ["A"]},
            {"model_name": "m", "inputs": []},
            {"model_name": None, "inputs": [], "requested_output_names": []},
        ]
        raised = 0
        for kwargs in bad:
            try:
                pb_utils.InferenceRequest(**kwargs)
            except TypeError:
                raised += 1
        memory = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
        request = pb_utils.InferenceRequest(
            model_name="m", inputs=[], requested_output_names=[], preferred_memory=memory
        )
        request.set_flags(pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END)
        return np.array([raised, request.flags(), int(request.trace() is not None), 1], dtype=np.int32)
