"""Custom metrics from model code (`pb_utils.MetricFamily`, crates/rampart-core/src/custom_metrics.rs): counters,
gauges and histograms defined in a model.py appear on /metrics next to the server's own; reserved names (nv_,
rampart_) are refused."""

from __future__ import annotations

import requests

from conftest import HTTP_TIMEOUT, base_args
from test_metrics import metrics_args, metrics_server
from test_python_backend import (  # noqa: F401 - worker_python and module_public_dir are fixtures
    copy_repo,
    json_infer,
    module_public_dir,
    worker_python,
)


def test_model_code_metrics_appear_on_the_metrics_page(module_public_dir, worker_python):  # noqa: F811
    python, extra = worker_python
    repo = copy_repo(module_public_dir / "metrics", ["custom_metrics"])
    args = metrics_args(base_args(repo, extra=[f"--backend-config=python,interpreter={python}", *extra]))
    with metrics_server(args, "rampart[python metrics]") as srv:
        counts = []
        for value in (0.5, 5.0, 50.0):
            r = srv.post("/v2/models/custom_metrics/infer", json=json_infer("FP32", [1], [value], name="VALUE"))
            assert r.status_code == 200, r.text
            counts.append(r.json()["outputs"][0]["data"][0])
        assert counts == [1.0, 2.0, 3.0], "Metric.value() reads the server's value"
        page = requests.get(srv.metrics_url + "/metrics", timeout=HTTP_TIMEOUT).text
        label = '{model="custom_metrics"}'
        expected = [
            "# TYPE custom_requests_total counter",
            f"custom_requests_total{label} 3",
            "# TYPE custom_last_value gauge",
            f"custom_last_value{label} 50",
            "# TYPE custom_values histogram",
            'custom_values_bucket{model="custom_metrics",le="1"} 1',
            'custom_values_bucket{model="custom_metrics",le="10"} 2',
            'custom_values_bucket{model="custom_metrics",le="+Inf"} 3',
            f"custom_values_sum{label} 55.5",
            f"custom_values_count{label} 3",
            'custom_edge_bucket{b="none",le="+Inf"} 0',
        ]
        lines = page.splitlines()
        for line in expected:
            assert line in lines, f"{line!r} not on /metrics:\n{page[-3000:]}"
        # The server's own families are still there, and model code did not define one of them.
        assert "# TYPE nv_inference_count counter" in lines
        assert sum(1 for x in lines if x.startswith("# TYPE nv_inference_count ")) == 1
