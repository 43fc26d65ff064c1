"""Answers through its response sender before execute() returns, on return, and from a thread (or an asyncio task)
after it returned, as the request's INSTR input says: [responses before return, final flag before return, return a
response, responses after return, final flag after return, kill the worker after return]. Every response carries
its ID (1000 + i before return, 0 returned, 2000 + i after return) and how many requests the execute call held.

The same file serves four models (tests/python/test_python_responses.py writes their configs): decoupled or not
(the config's transaction policy), `async def execute` or not (the parameter `mode`).
"""

import asyncio
import json
import os
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.batched = config.get("max_batch_size", 0) > 0
        mode = config.get("parameters", {}).get("mode", {}).get("string_value", "")
        self.use_async = mode == "async"
        self.tasks = set()

    def _response(self, response_id, count):
        shape = [1, 1] if self.batched else [1]
        return pb_utils.InferenceResponse([
            pb_utils.Tensor("ID", np.array(response_id, dtype=np.int32).reshape(shape)),
            pb_utils.Tensor("COUNT", np.array(count, dtype=np.int32).reshape(shape)),
        ])

    def _send(self, plans, offset):
        for sender, responses, final, count, kill in plans:
            if kill:
                os.kill(os.getpid(), 9)
            for i in range(responses):
                sender.send(self._response(offset + i, count))
            if final:
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _plan(self, requests):
        before, after, returned = [], [], []
        for request in requests:
            instr = pb_utils.get_input_tensor_by_name(request, "INSTR").as_numpy().reshape(-1).tolist()
            pre, pre_final, on_return, post, post_final, kill = (int(v) for v in instr)
            sender = request.get_response_sender() if (pre or pre_final or post or post_final or kill) else None
            before.append((sender, pre, pre_final, len(requests), False))
            after.append((sender, post, post_final, len(requests), kill))
            returned.append(self._response(0, len(requests)) if on_return else None)
        return before, after, returned

    def execute(self, requests):
        if self.use_async:
            return self._execute_async(requests)
        before, after, returned = self._plan(requests)
        self._send(before, 1000)

        def later():
            time.sleep(0.5)
            self._send(after, 2000)

        threading.Thread(target=later, daemon=True).start()
        return None if returned == [None] * len(requests) else returned

    async def _execute_async(self, requests):
        before, after, returned = self._plan(requests)
        self._send(before, 1000)

        async def later():
            await asyncio.sleep(0.5)
            self._send(after, 2000)

        task = asyncio.create_task(later())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return None if returned == [None] * len(requests) else returned
