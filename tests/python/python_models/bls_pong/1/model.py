"""One end of a chain of BLS calls between bls_ping and bls_pong (the config's "peer" names the other end). HOPS
is the number of calls so far; at STOP the chain ends and HOPS is the answer, else the peer is called with HOPS + 1.
An error of the call is this model's error response, so the client sees the error of the deepest call."""

import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.peer = config["parameters"]["peer"]["string_value"]

    def execute(self, requests):
        responses = []
        for request in requests:
            hops = pb_utils.get_input_tensor_by_name(request, "HOPS").as_numpy()
            stop = pb_utils.get_input_tensor_by_name(request, "STOP").as_numpy()
            if hops[0] >= stop[0]:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("HOPS", hops)]))
                continue
            answer = pb_utils.InferenceRequest(
                model_name=self.peer,
                requested_output_names=["HOPS"],
                inputs=[pb_utils.Tensor("HOPS", hops + 1), pb_utils.Tensor("STOP", stop)],
            ).exec()
            if answer.has_error():
                responses.append(pb_utils.InferenceResponse(error=answer.error()))
            else:
                responses.append(pb_utils.InferenceResponse(answer.output_tensors()))
        return responses
