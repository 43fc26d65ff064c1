"""BF16 without torch, as Triton's python backend allows it: numpy has no bfloat16, so `as_numpy()` refuses and the
tensor travels through DLPack. OUTPUT0 is INPUT0 through a DLPack capsule (to_dlpack/from_dlpack), OUTPUT1 through
the tensor's own `__dlpack__` protocol. CHECKS reports what model
code sees: the as_numpy errors, numpy's own DLPack import, and the output tensors' types and shapes."""

import numpy as np
import triton_python_backend_utils as pb_utils


def error_of(call):
    try:
        call()
    except Exception as e:  # noqa: BLE001 - the message is the result
        return f"{type(e).__name__}: {e}"
    return "no error"


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            out0 = pb_utils.Tensor.from_dlpack("OUTPUT0", tensor.to_dlpack())
            out1 = pb_utils.Tensor.from_dlpack("OUTPUT1", tensor)

            checks = [
                error_of(tensor.as_numpy),
                error_of(out0.as_numpy),
                error_of(lambda: np.from_dlpack(tensor)),
                f"dtype={out0.triton_dtype()},{out1.triton_dtype()} shape={out1.shape()}",
            ]
            responses.append(
                pb_utils.InferenceResponse(
                    [out0, out1, pb_utils.Tensor("CHECKS", np.array([checks], dtype=np.object_))]
                )
            )
        return responses
