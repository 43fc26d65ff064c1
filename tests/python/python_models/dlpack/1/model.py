"""OUT is IN passed through DLPack (Tensor.to_dlpack / Tensor.from_dlpack); OUT2 is IN read by numpy through the
tensor's own DLPack protocol (`__dlpack__`, as torch.from_dlpack(tensor) reads it) and handed back the same way."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "IN")
            out = pb_utils.Tensor.from_dlpack("OUT", tensor.to_dlpack())
            out2 = pb_utils.Tensor.from_dlpack("OUT2", np.from_dlpack(tensor))
            responses.append(pb_utils.InferenceResponse([out, out2]))
        return responses
