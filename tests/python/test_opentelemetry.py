"""`--trace-config mode=opentelemetry`: sampled requests are exported as OTLP/HTTP spans to a small collector
that the test runs on 127.0.0.1; a W3C `traceparent` from the client (HTTP header or gRPC metadata) makes the
span part of the client's trace and is traced whatever the rate and count say."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import RampartServer, ServerStartError, example_repo, grpc_base_args

trace_service_pb2 = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2")

SIMPLE_BODY = {
    "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16},
    ]
}

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
GRPC_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


class Collector:
    """Receives OTLP/HTTP protobuf exports and keeps every span with its resource attributes."""

    def __init__(self):
        self.spans: list[tuple[dict, object]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = trace_service_pb2.ExportTraceServiceRequest()
                req.ParseFromString(body)
                with collector.lock:
                    collector.paths.append(self.path)
                    for rs in req.resource_spans:
                        resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                collector.spans.append((resource, span))
                out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.spans) >= n:
                    return list(self.spans)
            time.sleep(0.1)
        with self.lock:
            return list(self.spans)

    def close(self):
        self.server.shutdown()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def otel_args(port: int, *extra: str) -> list[str]:
    return grpc_base_args(
        example_repo(),
        extra=[
            "--trace-config=mode=opentelemetry",
            "--trace-config=level=TIMESTAMPS",
            f"--trace-config=opentelemetry,url=http://127.0.0.1:{port}/v1/traces",
            "--trace-config=opentelemetry,bsp_schedule_delay=100",
            "--trace-config=opentelemetry,resource=deployment=rampart-test",
            *extra,
        ],
    )


def attrs(span) -> dict:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else v.int_value
    return out


def test_spans_are_exported_with_timestamps_and_resource(collector):
    srv = RampartServer(otel_args(collector.port, "--trace-config=rate=1"), label="otel").start()
    try:
        s = srv.get("/v2/trace/setting").json()
        assert s["trace_mode"] == "opentelemetry" and s["trace_level"] == ["TIMESTAMPS"] and s["trace_file"] == "", s
        for _ in range(3):
            assert srv.infer("simple", SIMPLE_BODY).status_code == 200
        spans = collector.wait(3)
        assert len(spans) == 3, spans
        for resource, span in spans:
            assert resource.get("service.name") == "triton-inference-server", resource
            assert resource.get("deployment") == "rampart-test", resource
            assert span.name == "InferRequest"
            a = attrs(span)
            assert a["triton.model_name"] == "simple" and a["triton.model_version"] == 1, a
            names = [e.name for e in span.events]
            assert names[:2] == ["HTTP_RECV_START", "HTTP_RECV_END"], names
            for n in ("REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_END", "REQUEST_END", "HTTP_SEND_END"):
                assert n in names, names
            times = [e.time_unix_nano for e in span.events]
            assert times == sorted(times) and span.start_time_unix_nano == times[0] and span.end_time_unix_nano == times[-1]
            assert len(span.parent_span_id) == 0, "no traceparent: a root span"
        assert len({span.trace_id for _, span in spans}) == 3, "each request its own trace"
        assert set(collector.paths) == {"/v1/traces"}
    finally:
        srv.stop()


def test_traceparent_joins_the_client_trace_whatever_the_count(collector):
    # count=0: nothing is sampled, except requests that carry a trace context.
    srv = RampartServer(otel_args(collector.port, "--trace-config=count=0"), label="otel-w3c").start()
    try:
        assert srv.infer("simple", SIMPLE_BODY).status_code == 200
        r = srv.infer("simple", SIMPLE_BODY, headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
        assert r.status_code == 200, r.text
        client = srv.grpc_client()
        import numpy as np
        import tritonclient.grpc as grpcclient

        inputs = []
        for name in ("INPUT0", "INPUT1"):
            t = grpcclient.InferInput(name, [1, 16], "INT32")
            t.set_data_from_numpy(np.arange(16, dtype=np.int32).reshape(1, 16))
            inputs.append(t)
        client.infer("simple", inputs, headers={"traceparent": f"00-{GRPC_TRACE_ID}-{PARENT_ID}-01"})
        spans = collector.wait(2)
        time.sleep(0.5)  # nothing else may arrive
        spans = collector.wait(2)
        assert len(spans) == 2, [(s.trace_id.hex(), attrs(s)) for _, s in spans]
        by_trace = {span.trace_id.hex(): span for _, span in spans}
        assert set(by_trace) == {TRACE_ID, GRPC_TRACE_ID}, by_trace.keys()
        for span in by_trace.values():
            assert span.parent_span_id.hex() == PARENT_ID
        grpc_events = [e.name for e in by_trace[GRPC_TRACE_ID].events]
        assert grpc_events[0] == "GRPC_WAITREAD_START" and grpc_events[-1] == "GRPC_SEND_END", grpc_events
    finally:
        srv.stop()


def test_queued_spans_are_sent_at_shutdown(collector):
    # A long schedule delay: the spans are only sent because shutdown flushes them.
    args = otel_args(collector.port, "--trace-config=rate=1") + ["--trace-config=opentelemetry,bsp_schedule_delay=600000"]
    srv = RampartServer(args, label="otel-flush").start()
    try:
        for _ in range(2):
            assert srv.infer("simple", SIMPLE_BODY).status_code == 200
        time.sleep(0.5)
        assert collector.wait(1, timeout=0.1) == [], "nothing before the flush"
    finally:
        assert srv.stop() == 0
    assert len(collector.wait(2, timeout=5)) == 2


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--trace-config=opentelemetry,url=ftp://x", "must be an http:// or https:// URL"),
        ("--trace-config=opentelemetry,resource=novalue", "expects <key>=<value>"),
        ("--trace-config=opentelemetry,bsp_max_queue_size=0", "bsp_max_queue_size must be in"),
        ("--trace-config=opentelemetry,bogus=1", "unknown setting"),
    ],
)
def test_bad_opentelemetry_settings_are_refused(collector, flag, message):
    srv = RampartServer(otel_args(collector.port, flag), label="otel-bad")
    with pytest.raises(ServerStartError) as e:
        srv.start()
    assert message in str(e.value), str(e.value)[-2000:]
