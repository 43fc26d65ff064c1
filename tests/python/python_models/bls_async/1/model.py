"""BLS from a coroutine: `async def execute` awaits asyncio.gather of four async_exec() calls to `simple`, call k
with INPUT0 + k and INPUT1 = k. SUMS row k is call k's OUTPUT0 (INPUT0 + 2k), in the order the calls were made."""

import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils

CALLS = 4


class TritonPythonModel:
    async def execute(self, requests):
        responses = []
        for request in requests:
            base = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy().reshape(1, 16)
            calls = [
                pb_utils.InferenceRequest(
                    model_name="simple",
                    requested_output_names=["OUTPUT0"],
                    inputs=[
                        pb_utils.Tensor("INPUT0", (base + k).astype(np.int32)),
                        pb_utils.Tensor("INPUT1", np.full((1, 16), k, dtype=np.int32)),
                    ],
                ).async_exec()
                for k in range(CALLS)
            ]
            answers = await asyncio.gather(*calls)
            for answer in answers:
                if answer.has_error():
                    raise pb_utils.TritonModelException(answer.error().message())
            sums = np.stack([pb_utils.get_output_tensor_by_name(a, "OUTPUT0").as_numpy().reshape(16) for a in answers])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SUMS", sums.astype(np.int32))]))
        return responses
