"""model_control: pb_utils.load_model / unload_model / is_model_ready on the model `simple`.

ACTION is one of ready, load, unload; RESULT is "ok <readiness of simple afterwards>" or
"error <code>: <message>" when the server refuses the call.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            action = pb_utils.get_input_tensor_by_name(request, "ACTION").as_numpy().reshape(-1)[0].decode()
            try:
                if action == "load":
                    pb_utils.load_model("simple")
                elif action == "unload":
                    pb_utils.unload_model("simple")
                result = f"ok {pb_utils.is_model_ready('simple')}"
            except pb_utils.TritonError as e:
                result = f"error {e.code()}: {e.message()}"
            out = pb_utils.Tensor("RESULT", np.array([result.encode()], dtype=np.object_))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
