"""add_sub that also says how many requests its execute() call received (REQUESTS)."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.out_type = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, "OUTPUT0")["data_type"]
        )

    def execute(self, requests):
        count = len(requests)
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            rows = a.shape[0]
            outputs = [
                pb_utils.Tensor("OUTPUT0", (a + b).astype(self.out_type)),
                pb_utils.Tensor("OUTPUT1", (a - b).astype(self.out_type)),
                pb_utils.Tensor("REQUESTS", np.full((rows, 1), count, dtype=np.int32)),
            ]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
