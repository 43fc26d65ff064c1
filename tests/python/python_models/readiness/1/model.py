"""A model with its own readiness check (`is_ready()`), whose answer the config parameter `answer` picks:
"true", "false", "raise", "text" (returns a string), "async" (an `async def` answering True) or "slow" (True
after 6 s, longer than the server waits). OUT = IN."""

import asyncio
import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.answer = params.get("answer", {}).get("string_value", "true")
        if self.answer == "async":
            self.is_ready = self._ready_async

    async def _ready_async(self):
        await asyncio.sleep(0.01)
        return True

    def is_ready(self):
        if self.answer == "raise":
            raise RuntimeError("the model's own check failed")
        if self.answer == "slow":
            time.sleep(6)
        return {"true": True, "false": False, "text": "ready", "slow": True}[self.answer]

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(r, "IN").as_numpy())])
            for r in requests
        ]
