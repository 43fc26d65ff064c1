"""Decoupled: one response per element of IN (OUT = the element, IDX = its index), then the final flag."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        if not pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"])):
            raise pb_utils.TritonModelException("repeat_decoupled needs a decoupled transaction policy")

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            for i, v in enumerate(values):
                sender.send(
                    pb_utils.InferenceResponse(
                        [
                            pb_utils.Tensor("OUT", np.array([v], dtype=np.int32)),
                            pb_utils.Tensor("IDX", np.array([i], dtype=np.uint32)),
                        ]
                    )
                )
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
