"""A model spread over several files of its version directory, imported both ways Triton allows: relatively
(`from . import`, the version directory is a package) and by name (it is on the path). OUT = IN * 2 + 1."""

import triton_python_backend_utils as pb_utils

import offset
from . import scale


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            out = offset.shift(scale.double(values))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out)]))
        return responses
