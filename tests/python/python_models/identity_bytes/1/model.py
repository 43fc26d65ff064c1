"""Returns its BYTES input unchanged (checks that every element is a Python bytes object)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            if data.dtype != np.object_ or not all(isinstance(x, bytes) for x in data.reshape(-1)):
                raise TypeError(f"BYTES input arrived as {data.dtype} / {[type(x) for x in data.reshape(-1)]}")
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", data)]))
        return responses
