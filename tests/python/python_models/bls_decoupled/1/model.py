"""BLS to a decoupled model: IN goes to `repeat_decoupled` with exec(decoupled=True). COUNT: its responses with
outputs; TOTAL: every response the iterator gave; VALUES / INDICES: their OUT / IDX in order; LAST_EMPTY: the last
response had neither outputs nor an error."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            call = pb_utils.InferenceRequest(
                model_name="repeat_decoupled",
                requested_output_names=["OUT", "IDX"],
                inputs=[pb_utils.Tensor("IN", values)],
            )
            seen, outs, idxs = [], [], []
            for answer in call.exec(decoupled=True):
                if answer.has_error():
                    raise pb_utils.TritonModelException(answer.error().message())
                seen.append(answer)
                if answer.output_tensors():
                    outs.append(int(pb_utils.get_output_tensor_by_name(answer, "OUT").as_numpy()[0]))
                    idxs.append(int(pb_utils.get_output_tensor_by_name(answer, "IDX").as_numpy()[0]))
            last_empty = bool(seen) and not seen[-1].output_tensors() and not seen[-1].has_error()
            outputs = [
                pb_utils.Tensor("COUNT", np.array([len(outs)], dtype=np.int32)),
                pb_utils.Tensor("TOTAL", np.array([len(seen)], dtype=np.int32)),
                pb_utils.Tensor("VALUES", np.array(outs, dtype=np.int32)),
                pb_utils.Tensor("INDICES", np.array(idxs, dtype=np.uint32)),
                pb_utils.Tensor("LAST_EMPTY", np.array([last_empty], dtype=np.bool_)),
            ]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
