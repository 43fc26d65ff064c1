"""Decoupled: as repeat_decoupled, but the responses are sent by a thread after execute() has returned
(each 50 ms apart). A cancelled request ends with a CANCELLED error response, as Triton's
response_sender_until_cancelled does, unless the request's parameter `ignore_cancel` is true."""

import json
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
            ignore = json.loads(request.parameters()).get("ignore_cancel", False)
            thread = threading.Thread(target=self._respond, args=(request.get_response_sender(), values, ignore))
            thread.start()
            self.threads.append(thread)
        return None

    def _respond(self, sender, values, ignore_cancel):
        for i, v in enumerate(values):
            time.sleep(0.05)
            if sender.is_cancelled() and not ignore_cancel:
                error = pb_utils.TritonError("request has been cancelled", pb_utils.TritonError.CANCELLED)
                sender.send(pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            outputs = [
                pb_utils.Tensor("OUT", np.array([v], dtype=np.int32)),
                pb_utils.Tensor("IDX", np.array([i], dtype=np.uint32)),
            ]
            sender.send(pb_utils.InferenceResponse(outputs))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        for thread in self.threads:
            thread.join(10)
