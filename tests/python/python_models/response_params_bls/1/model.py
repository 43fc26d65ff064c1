"""Calls response_params (and, decoupled, response_params_decoupled) with this request's parameters and answers
the parameters of every response it got, one JSON text each."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "IN")
            texts = []
            for model, decoupled in (("response_params", False), ("response_params_decoupled", True)):
                call = pb_utils.InferenceRequest(
                    model_name=model, inputs=[value], requested_output_names=["OUT"],
                    parameters=request.parameters(),
                )
                answers = list(call.exec(decoupled=True)) if decoupled else [call.exec()]
                for answer in answers:
                    if answer.has_error():
                        raise pb_utils.TritonError(answer.error().message())
                    texts.append(answer.parameters().encode())
            out = pb_utils.Tensor("PARAMETERS", np.array(texts, dtype=np.object_))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
