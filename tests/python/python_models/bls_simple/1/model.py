"""BLS: passes INPUT0 and INPUT1 to the ONNX model `simple` (a batch of one) and answers its OUTPUT0 (sum) and
OUTPUT1 (difference); an error of the call is this model's error."""

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            inputs = [
                pb_utils.Tensor(name, pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(1, 16))
                for name in ("INPUT0", "INPUT1")
            ]
            call = pb_utils.InferenceRequest(
                model_name="simple", requested_output_names=["OUTPUT0", "OUTPUT1"], inputs=inputs
            )
            answer = call.exec()
            if answer.has_error():
                raise pb_utils.TritonModelException(answer.error().message())
            outputs = [
                pb_utils.Tensor(name, pb_utils.get_output_tensor_by_name(answer, name).as_numpy().reshape(16))
                for name in ("OUTPUT0", "OUTPUT1")
            ]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
