"""Decoupled: as repeat_decoupled, but the responses are sent by a thread after execute() has returned
(each 50 ms apart)."""

import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.threads = []

    def execute(self, requests):
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy().copy()
            thread = threading.Thread(target=self._respond, args=(request.get_response_sender(), values))
            thread.start()
            self.threads.append(thread)
        return None

    def _respond(self, sender, values):
        for i, v in enumerate(values):
            time.sleep(0.05)
            outputs = [
                pb_utils.Tensor("OUT", np.array([v], dtype=np.int32)),
                pb_utils.Tensor("IDX", np.array([i], dtype=np.uint32)),
            ]
            sender.send(pb_utils.InferenceResponse(outputs))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        for thread in self.threads:
            thread.join(10)
