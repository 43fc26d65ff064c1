"""mock_llm: echoes PROMPT as TEXT.

Decoupled (the configuration given): with STREAM true, REPETITION responses (each after DELAY seconds, stopping
early once the request is cancelled), then the final flag alone, or with FAIL_LAST an error response carrying
the final flag; with STREAM false, one response carrying the final flag. Not decoupled: one response whose TEXT
is PROMPT repeated REPETITION times along axis 1 (STREAM true is an error there).
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)

    def execute(self, requests):
        if not self.decoupled:
            return [self._single(request) for request in requests]
        for request in requests:
            self._stream(request)
        return None

    @staticmethod
    def _options(request):
        params = json.loads(request.parameters() or "{}")
        return (
            int(params.get("REPETITION", 1)),
            params.get("DELAY"),
            bool(params.get("FAIL_LAST", False)),
            bool(params.get("OUTPUT_0_DIM", False)),
        )

    @staticmethod
    def _inputs(request):
        prompt = pb_utils.get_input_tensor_by_name(request, "PROMPT").as_numpy()
        stream = pb_utils.get_input_tensor_by_name(request, "STREAM").as_numpy()
        return prompt, bool(stream.flatten()[0])

    def _single(self, request):
        prompt, stream = self._inputs(request)
        repetition, _, _, _ = self._options(request)
        if stream:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError("STREAM only supported in decoupled mode"))
        return pb_utils.InferenceResponse([pb_utils.Tensor("TEXT", np.repeat(prompt, repetition, axis=1))])

    def _stream(self, request):
        sender = request.get_response_sender()
        prompt, stream = self._inputs(request)
        repetition, delay, fail_last, empty = self._options(request)
        text = np.array([], dtype=np.object_) if empty else prompt
        response = pb_utils.InferenceResponse([pb_utils.Tensor("TEXT", text)])
        if not stream:
            sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            return
        sent = 0
        for _ in range(repetition):
            if delay is not None:
                time.sleep(float(delay))
            if sender.is_cancelled():
                pb_utils.Logger.log_info(f"mock_llm: request cancelled after {sent} of {repetition} responses")
                break
            sender.send(response)
            sent += 1
        if fail_last:
            error = pb_utils.InferenceResponse(error=pb_utils.TritonError("An Error Occurred"))
            sender.send(error, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        else:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
