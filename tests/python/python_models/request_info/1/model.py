"""Describes each request: id, parameters JSON, correlation id (repr, so its type shows), flags, the
outputs the client asked for and its timeout (microseconds)."""

import numpy as np
import triton_python_backend_utils as pb_utils


def _text(value):
    return np.array([value.encode()], dtype=np.object_)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = [
                pb_utils.Tensor("ID", _text(request.request_id())),
                pb_utils.Tensor("PARAMETERS", _text(request.parameters())),
                pb_utils.Tensor("CORRELATION_ID", _text(repr(request.correlation_id()))),
                pb_utils.Tensor("FLAGS", np.array([request.flags()], dtype=np.uint32)),
                pb_utils.Tensor(
                    "REQUESTED",
                    np.array([n.encode() for n in request.requested_output_names()] or [b""], dtype=np.object_),
                ),
                pb_utils.Tensor("TIMEOUT", np.array([request.timeout()], dtype=np.uint64)),
            ]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
