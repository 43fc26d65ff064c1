"""custom_metrics: pb_utils.MetricFamily. Each request adds 1 to a counter, sets a gauge to VALUE and observes
VALUE in a histogram (buckets 1, 10); COUNT answers the counter's value as the server holds it."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        requests = pb_utils.MetricFamily("custom_requests_total", "Requests seen by model code",
                                         pb_utils.MetricFamily.COUNTER)
        last = pb_utils.MetricFamily("custom_last_value", "The last VALUE", pb_utils.MetricFamily.GAUGE)
        values = pb_utils.MetricFamily("custom_values", "VALUEs seen", pb_utils.MetricFamily.HISTOGRAM)
        labels = {"model": args["model_name"]}
        self.requests = requests.Metric(labels=labels)
        self.last = last.Metric(labels=labels)
        self.values = values.Metric(labels=labels, buckets=[1.0, 10.0])
        try:
            pb_utils.MetricFamily("nv_inference_count", "", pb_utils.MetricFamily.COUNTER)
            self.reserved = "allowed"
        except pb_utils.TritonError as e:
            self.reserved = e.message()

    def execute(self, requests):
        responses = []
        for request in requests:
            value = float(pb_utils.get_input_tensor_by_name(request, "VALUE").as_numpy().reshape(-1)[0])
            self.requests.increment(1)
            self.last.set(value)
            self.values.observe(value)
            if "nv_" not in self.reserved:
                raise pb_utils.TritonError(f"a reserved family name was allowed: {self.reserved}")
            count = np.array([self.requests.value()], dtype=np.float64)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("COUNT", count)]))
        return responses
