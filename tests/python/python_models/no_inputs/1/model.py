"""no_inputs: a model without inputs (Triton loads such Python models); ARGV answers the worker's sys.argv, which
is [""] as in Triton's stub (unittest.main() and argparse in model code depend on it)."""

import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pb_utils.Logger.log("no_inputs initialized", pb_utils.Logger.INFO)

    def execute(self, requests):
        argv = np.array([repr(sys.argv).encode()], dtype=np.object_)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("ARGV", argv)]) for _ in requests]
