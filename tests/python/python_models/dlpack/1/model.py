"""OUT is IN passed through DLPack (Tensor.to_dlpack / Tensor.from_dlpack)."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "IN")
            out = pb_utils.Tensor.from_dlpack("OUT", tensor.to_dlpack())
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
