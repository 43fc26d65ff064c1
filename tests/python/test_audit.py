"""Audit log (`--audit-log-file`): one JSON line per admin call, per refused credential, and at startup and
shutdown, over HTTP and gRPC; no secret value in it; the file is private (0600)."""

from __future__ import annotations

import json
import os
import stat

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import example_repo, grpc_base_args, start_server

SECRET = "Audit-S3cret-Value"


def test_audit_log_records_admin_calls_and_refusals(tmp_path):
    log = tmp_path / "audit.jsonl"
    extra = [
        f"--audit-log-file={log}",
        f"--http-restricted-api=model-repository:admin-key={SECRET}",
        f"--grpc-restricted-protocol=model-repository:admin-key={SECRET}",
    ]
    srv = start_server(grpc_base_args(example_repo(), None, extra), "rampart[audit]")
    try:
        assert srv.post("/v2/repository/index", timeout=10).status_code == 403
        assert srv.post("/v2/repository/index", headers={"admin-key": "wrong"}, timeout=10).status_code == 403
        assert srv.post("/v2/repository/index", headers={"admin-key": SECRET}, timeout=10).status_code == 200
        assert srv.get("/v2/models/simple/config", timeout=10).status_code == 200
        assert srv.get("/v2/models/simple", timeout=10).status_code == 200  # metadata: not audited
        r = srv.post("/v2/models/identity_fp32/infer", json={"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1]}]}, timeout=10)
        assert r.status_code == 200  # inference: not audited
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
        try:
            client.get_model_repository_index()
            raise AssertionError("restricted RPC answered without a key")
        except InferenceServerException as e:
            assert "restricted" in str(e)
        assert client.get_model_repository_index(headers={"triton-grpc-protocol-admin-key": SECRET}) is not None
        client.get_inference_statistics("simple")
    finally:
        srv.stop()

    mode = stat.S_IMODE(os.stat(log).st_mode)
    assert mode == 0o600, oct(mode)
    text = log.read_text()
    assert SECRET not in text and "wrong" not in text
    events = [json.loads(line) for line in text.splitlines()]
    assert events[0]["event"] == "startup" and events[-1]["event"] == "shutdown", events
    assert all("time" in e for e in events)

    def find(**kw):
        return [e for e in events if all(e.get(k) == v for k, v in kw.items())]

    assert len(find(event="denied", protocol="http", category="model-repository", target="/v2/repository/index")) == 2
    ok = find(event="admin", protocol="http", category="model-repository", outcome="200")
    assert len(ok) == 1 and ok[0]["client"].startswith("127.0.0.1:"), events
    assert find(event="admin", protocol="http", category="model-config", target="/v2/models/simple/config", outcome="200")
    assert not find(category="metadata") and not find(category="inference"), events
    g_denied = find(event="denied", protocol="grpc", category="model-repository")
    assert len(g_denied) == 1 and g_denied[0]["target"] == "/inference.GRPCInferenceService/RepositoryIndex"
    assert g_denied[0]["client"].startswith("127.0.0.1:"), g_denied
    assert find(event="admin", protocol="grpc", category="model-repository", outcome="allowed")
    assert find(event="admin", protocol="grpc", category="statistics")
