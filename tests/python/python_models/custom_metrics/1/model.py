"""custom_metrics: pb_utils.MetricFamily. Each request adds 1 to a counter, sets a gauge to VALUE and observes
VALUE in a histogram (buckets 1, 10); COUNT answers the counter's value as the server holds it. The families are
kept (a metric must not outlive its family, as in Triton). `initialize` also tries Triton's edge cases, and every
request fails if one went wrong."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        requests = pb_utils.MetricFamily("custom_requests_total", "Requests seen by model code",
                                         pb_utils.MetricFamily.COUNTER)
        last = pb_utils.MetricFamily("custom_last_value", "The last VALUE", pb_utils.MetricFamily.GAUGE)
        values = pb_utils.MetricFamily("custom_values", "VALUEs seen", pb_utils.MetricFamily.HISTOGRAM)
        self.families = [requests, last, values]
        labels = {"model": args["model_name"]}
        self.requests = requests.Metric(labels=labels)
        self.last = last.Metric(labels=labels)
        self.values = values.Metric(labels=labels, buckets=[1.0, 10.0])
        try:
            pb_utils.MetricFamily("nv_inference_count", "", pb_utils.MetricFamily.COUNTER)
            self.reserved = "allowed"
        except pb_utils.TritonError as e:
            self.reserved = e.message()
        self.edge = self._edge_cases()

    def _edge_cases(self):
        problems = []
        self.edge_family = pb_utils.MetricFamily("custom_edge", "edge cases", pb_utils.MetricFamily.HISTOGRAM)
        self.edge_family.Metric(labels={"b": "none"}, buckets=[])  # no bucket: only +Inf counts
        metric = self.edge_family.Metric(labels={"b": "one"}, buckets=[1.0])
        for name in ("value", "increment", "set"):
            try:
                getattr(metric, name)(*([] if name == "value" else [1.0]))
                problems.append(f"a histogram accepted {name}()")
            except pb_utils.TritonModelException:
                pass
        for bad in (None, [2.0, 1.0], [1.0, 1.0]):
            try:
                self.edge_family.Metric(labels={"b": "bad"}, buckets=bad)
                problems.append(f"buckets {bad} were accepted")
            except pb_utils.TritonModelException:
                pass
        family = pb_utils.MetricFamily("custom_edge_gauge", "edge cases", pb_utils.MetricFamily.GAUGE)
        gauge = family.Metric()
        del family
        try:
            gauge.set(1.0)
            problems.append("a metric was used after its family was deleted")
        except pb_utils.TritonModelException as e:
            if "'MetricFamily' has been deleted" not in e.message():
                problems.append(e.message())
        return problems

    def execute(self, requests):
        responses = []
        for request in requests:
            value = float(pb_utils.get_input_tensor_by_name(request, "VALUE").as_numpy().reshape(-1)[0])
            self.requests.increment(1)
            self.last.set(value)
            self.values.observe(value)
            if self.edge:
                raise pb_utils.TritonError("; ".join(self.edge))
            if "nv_" not in self.reserved:
                raise pb_utils.TritonError(f"a reserved family name was allowed: {self.reserved}")
            count = np.array([self.requests.value()], dtype=np.float64)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("COUNT", count)]))
        return responses
