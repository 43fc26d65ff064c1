"""Echoes IN_<type> as OUT_<type> for every numeric type (and BOOL), and names the numpy dtype each input
arrived as (NUMPY_TYPES, "<type>=<numpy dtype>")."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            outputs, seen = [], []
            for tensor in request.inputs():
                kind = tensor.name()[len("IN_"):]
                data = tensor.as_numpy()
                seen.append(f"{kind}={data.dtype}".encode())
                outputs.append(pb_utils.Tensor("OUT_" + kind, data.copy()))
            outputs.append(pb_utils.Tensor("NUMPY_TYPES", np.array(seen, dtype=np.object_)))
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
