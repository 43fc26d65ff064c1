"""IN = 1 kills the worker (SIGKILL), IN = 2 makes it exit with status 3; anything else is echoed with the
worker's pid in PID."""

import os
import signal

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            if value[0] == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            if value[0] == 2:
                os._exit(3)
            pid = pb_utils.Tensor("PID", np.array([os.getpid()], dtype=np.int64))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", value), pid]))
        return responses
