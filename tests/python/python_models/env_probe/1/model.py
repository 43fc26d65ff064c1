"""ENV: the worker's environment as "KEY=value" elements; CWD: its working directory; UID: its user."""

import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        env = np.array([f"{k}={v}".encode() for k, v in sorted(os.environ.items())], dtype=np.object_)
        cwd = np.array([os.getcwd().encode()], dtype=np.object_)
        uid = np.array([os.getuid()], dtype=np.int64)
        outputs = [pb_utils.Tensor("ENV", env), pb_utils.Tensor("CWD", cwd), pb_utils.Tensor("UID", uid)]
        return [pb_utils.InferenceResponse(outputs) for _ in requests]
