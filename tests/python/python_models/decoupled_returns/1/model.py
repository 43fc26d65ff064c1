"""decoupled_returns: a decoupled model whose execute wrongly returns responses instead of using the sender;
the request fails with Triton's message instead of waiting for a final flag that never comes."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "IN")]) for r in requests
        ]
