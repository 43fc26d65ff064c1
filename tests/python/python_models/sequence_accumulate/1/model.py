"""A stateful Python model under the sequence batcher: keeps a running sum per correlation ID (its own state,
as Python models do), started by the START flag and dropped at END. SEEN tells what the request carried:
[correlation_id(), flags(), the START control, the CORRID control]."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            value = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy().reshape(-1)[0])
            start = int(pb_utils.get_input_tensor_by_name(request, "START").as_numpy().reshape(-1)[0])
            corrid = int(pb_utils.get_input_tensor_by_name(request, "CORRID").as_numpy().reshape(-1)[0])
            key = request.correlation_id()
            flags = request.flags()
            if flags & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START:
                self.sums[key] = 0
            self.sums[key] = self.sums.get(key, 0) + value
            total = self.sums[key]
            if flags & pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_END:
                del self.sums[key]
            seen = np.array([[key, flags, start, corrid]], dtype=np.int64)
            outputs = [pb_utils.Tensor("SUM", np.array([[total]], dtype=np.int32)), pb_utils.Tensor("SEEN", seen)]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
