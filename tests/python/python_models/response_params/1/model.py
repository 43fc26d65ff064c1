"""Answers each request with the request's own parameters as its response parameters
(`InferenceResponse(parameters=…)`), OUT = IN. Decoupled (tests/python/test_python_response_parameters.py writes
that config), it sends IN responses, each with the request's parameters and its index, the last one with the
final flag. A request with the parameter `bad` sets a float, which Triton refuses."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"]))

    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            parameters = json.loads(request.parameters())
            if parameters.get("bad"):
                parameters["bad"] = 0.5
            if not self.decoupled:
                out = pb_utils.Tensor("OUT", value)
                responses.append(pb_utils.InferenceResponse([out], parameters=parameters))
                continue
            sender = request.get_response_sender()
            count = int(value[0])
            for i in range(count):
                out = pb_utils.Tensor("OUT", np.array([i], dtype=np.int32))
                response = pb_utils.InferenceResponse([out], parameters={**parameters, "index": i})
                flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if i == count - 1 else 0
                sender.send(response, flags=flags)
        return None if self.decoupled else responses
