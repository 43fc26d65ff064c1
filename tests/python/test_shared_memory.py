"""System shared memory (docs/protocol.md, "System shared memory", "gRPC parameters", "Security history (CVEs)":
CVE-2024-0088, CVE-2024-0116, CVE-2025-23319 chain), over HTTP and gRPC.

- Default server (no flag): status answers empty, register / unregister and any inference naming a region are
  UNSUPPORTED (501 / UNIMPLEMENTED) with Triton's "Client shared memory is disabled…" message; CUDA shared
  memory is not supported in this build (register 400 / INVALID_ARGUMENT, status empty).
- `--allow-client-shm=true`: tritonclient's example flow on `simple` (INPUT0 + INPUT1 -> OUTPUT0, INPUT0 - INPUT1
  -> OUTPUT1, INT32 [batch, 16]) with inputs and outputs in regions, mixed shm / non-shm tensors, region status,
  duplicate names, unregister one / all, the registration offset applied exactly once.
- Hostile: out-of-object registrations, overflowing offsets, reserved / malformed keys, out-of-region tensor
  offsets and sizes (incl. values near 2^64 and negative gRPC int64), size mismatches, wrong gRPC parameter
  kinds, unregistering while inferences use the region, shrinking the object after registering.
- `--http-restricted-api` / `--grpc-restricted-protocol` on the `shared-memory` category.

Every shared-memory object is created by the test (key includes the pid) and unlinked by a finalizer; every
region a test registers on a shared server is unregistered by a finalizer. Shared memory does not depend on
the engine: the servers run on the first selected engine.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from conftest import (
    assert_error,
    assert_live,
    concurrently,
    finish_server,
    grpc_base_args,
    grpc_error,
    grpc_input,
    grpc_request,
    grpc_result,
    parse_infer_response,
    raw_bytes,
    running,
    selected_engines,
    set_grpc_param,
    start_server,
)

ENGINE = selected_engines()[0]
PID = os.getpid()
SHM_ON = ["--allow-client-shm=true"]
DISABLED = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
RESERVED = "triton_python_backend_shm_region_"
U64_MAX = 2**64 - 1

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)
NBYTES = A.nbytes  # 64
PROTOCOLS = ("http", "grpc")


# --------------------------------------------------------------------------------------------------------------
# Shared-memory objects and regions (always cleaned up)
# --------------------------------------------------------------------------------------------------------------


class Objects:
    """POSIX shared-memory objects made by one test: tritonclient handles (mmapped, for reading / writing
    tensors) and raw /dev/shm files (for keys tritonclient cannot create); all unlinked at the end."""

    def __init__(self, tag: str):
        self.tag = tag
        self.n = 0
        self.handles: list = []
        self.files: list[Path] = []

    def key(self, what: str = "o") -> str:
        self.n += 1
        return f"/rampart_t_{PID}_{self.tag}_{what}_{self.n}"

    def create(self, size: int, what: str = "o", fill: int | None = None):
        """(handle, key) of a new object of `size` bytes (zeros, or `fill` in every byte)."""
        key = self.key(what)
        h = shm.create_shared_memory_region(key.lstrip("/"), key, size)
        self.handles.append(h)
        if fill is not None:
            shm.set_shared_memory_region(h, [np.full(size, fill, dtype=np.uint8)])
        return h, key

    def raw(self, name: str, size: int) -> Path:
        """A /dev/shm object with an exact `name` (no leading '/'), as shm_open would make it."""
        p = Path("/dev/shm") / name
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        self.files.append(p)
        return p

    def close(self) -> None:
        for h in self.handles:
            try:
                shm.destroy_shared_memory_region(h)
            except Exception:  # noqa: BLE001 - already unlinked by the test
                pass
        for p in self.files:
            try:
                p.unlink()
            except FileNotFoundError:
                pass


_TEST_SEQ = itertools.count(1)


@pytest.fixture
def objs():
    o = Objects(str(next(_TEST_SEQ)))
    yield o
    o.close()


class Regions:
    """Region names registered by one test on one server; unregistered (HTTP) at the end."""

    def __init__(self, srv, tag: str):
        self.srv, self.tag, self.n, self.names = srv, tag, 0, []

    def name(self, what: str = "r") -> str:
        self.n += 1
        n = f"{what}_{PID}_{self.tag}_{self.n}"
        self.names.append(n)
        return n

    def close(self) -> None:
        if self.srv.alive():
            for n in self.names:
                self.srv.post(f"/v2/systemsharedmemory/region/{n}/unregister")


@pytest.fixture
def regions(shm_server):
    r = Regions(shm_server, str(next(_TEST_SEQ)))
    yield r
    r.close()


# --------------------------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_server(examples_dir):
    """examples/models, HTTP + gRPC, client shared memory left at its default (disabled)."""
    srv = start_server(grpc_base_args(examples_dir, ENGINE), f"rampart[{ENGINE}, shm default]")
    yield srv
    finish_server(srv)


@pytest.fixture(scope="module")
def shm_server(examples_dir):
    """examples/models, HTTP + gRPC, --allow-client-shm=true."""
    srv = start_server(grpc_base_args(examples_dir, ENGINE, SHM_ON), f"rampart[{ENGINE}, shm on]")
    yield srv
    finish_server(srv)


@pytest.fixture(autouse=True)
def _module_servers_alive(request):
    """After every test, the module's servers it used are still running and live."""
    yield
    for name in ("plain_server", "shm_server"):
        if name in request.fixturenames:
            assert_live(request.getfixturevalue(name))


# --------------------------------------------------------------------------------------------------------------
# Request helpers
# --------------------------------------------------------------------------------------------------------------


def http_register(srv, name: str, key: str, byte_size: int, offset: int | None = None, headers=None, body=None):
    if body is None:
        body = {"key": key, "byte_size": byte_size}
        if offset is not None:
            body["offset"] = offset
    return srv.post(f"/v2/systemsharedmemory/region/{name}/register", data=json.dumps(body), headers=headers or {})


def grpc_register(srv, name: str, key: str, byte_size: int, offset: int = 0, metadata=()):
    return srv.grpc_stub().SystemSharedMemoryRegister(
        service_pb2.SystemSharedMemoryRegisterRequest(name=name, key=key, offset=offset, byte_size=byte_size),
        metadata=list(metadata),
    )


def register(proto: str, srv, name: str, key: str, byte_size: int, offset: int = 0) -> None:
    """Register and require success."""
    if proto == "http":
        r = http_register(srv, name, key, byte_size, offset)
        assert r.status_code == 200, f"register {name} -> {r.status_code} {r.text}"
    else:
        grpc_register(srv, name, key, byte_size, offset)


def http_status(srv, name: str | None = None) -> requests.Response:
    path = "/v2/systemsharedmemory/status" if name is None else f"/v2/systemsharedmemory/region/{name}/status"
    return srv.get(path)


def grpc_status(srv, name: str = ""):
    return srv.grpc_stub().SystemSharedMemoryStatus(service_pb2.SystemSharedMemoryStatusRequest(name=name))


def status_by_name(proto: str, srv) -> dict[str, dict]:
    """name -> {"name", "key", "offset", "byte_size"} of every registered region."""
    if proto == "http":
        r = http_status(srv)
        assert r.status_code == 200, r.text
        body = r.json()
        assert isinstance(body, list), body
        return {e["name"]: e for e in body}
    out = {}
    for k, s in grpc_status(srv).regions.items():
        out[k] = {"name": s.name, "key": s.key, "offset": s.offset, "byte_size": s.byte_size}
    return out


def shm_params(region: str, byte_size: int, offset: int | None = None) -> dict:
    p = {"shared_memory_region": region, "shared_memory_byte_size": byte_size}
    if offset is not None:
        p["shared_memory_offset"] = offset
    return p


def http_simple(srv, in0: dict | None = None, in1: dict | None = None, outputs: list | None = None):
    """POST a JSON `simple` request. `in0` / `in1`: parameters for a shm input (None: JSON data A / B)."""

    def inp(name, arr, params):
        t = {"name": name, "datatype": "INT32", "shape": [1, 16]}
        if params is None:
            t["data"] = arr.flatten().tolist()
        else:
            t["parameters"] = params
        return t

    body = {"inputs": [inp("INPUT0", A, in0), inp("INPUT1", B, in1)]}
    if outputs is not None:
        body["outputs"] = outputs
    return srv.infer("simple", body)


def grpc_shm_input(name: str, region: str, byte_size, offset=None, kinds: dict | None = None):
    t = grpc_input(name, "INT32", [1, 16])
    set_grpc_param(t.parameters, "shared_memory_region", region)
    kinds = kinds or {}
    set_grpc_param(t.parameters, "shared_memory_byte_size", byte_size, kinds.get("shared_memory_byte_size", "int64"))
    if offset is not None:
        set_grpc_param(t.parameters, "shared_memory_offset", offset, kinds.get("shared_memory_offset", "int64"))
    return t


def grpc_simple(srv, in0=None, in1=None, outputs=None):
    """A raw gRPC `simple` request; in0 / in1 are (region, byte_size, offset) tuples or None (raw A / B).
    `outputs`: ModelInferRequest.InferRequestedOutputTensor messages."""
    inputs, raw = [], []
    for name, arr, spec in (("INPUT0", A, in0), ("INPUT1", B, in1)):
        if spec is None:
            inputs.append(grpc_input(name, "INT32", [1, 16]))
            raw.append(raw_bytes(arr, "INT32"))
        else:
            inputs.append(grpc_shm_input(name, *spec))
    req = grpc_request("simple", inputs, raw)
    for o in outputs or []:
        req.outputs.append(o)
    return srv.grpc_stub().ModelInfer(req)


def grpc_out(name: str, region: str | None = None, byte_size=None, offset=None, **params):
    o = service_pb2.ModelInferRequest.InferRequestedOutputTensor(name=name)
    if region is not None:
        set_grpc_param(o.parameters, "shared_memory_region", region)
    if byte_size is not None:
        set_grpc_param(o.parameters, "shared_memory_byte_size", byte_size, "int64")
    if offset is not None:
        set_grpc_param(o.parameters, "shared_memory_offset", offset, "int64")
    for k, v in params.items():
        if isinstance(v, tuple):
            set_grpc_param(o.parameters, k, v[0], v[1])
        else:
            set_grpc_param(o.parameters, k, v)
    return o


def expect_error(proto: str, call, http_status, grpc_code, *contains: str, exact: str | None = None) -> str:
    """`call()` returns a requests.Response (HTTP) or raises (gRPC); check status / code and message."""
    if proto == "http":
        return assert_error(call(), http_status, *contains, exact=exact)
    return grpc_error(call, grpc_code, *contains, exact=exact)


def input_region(objs, regions, srv, proto="http", size: int = 2 * NBYTES):
    """A registered region of `size` bytes holding A at 0 and B at 64; returns (region name, handle, key)."""
    h, key = objs.create(size, "in")
    shm.set_shared_memory_region(h, [A, B])
    name = regions.name("in")
    register(proto, srv, name, key, size)
    return name, h, key


def output_region(objs, regions, srv, proto="http", size: int = 2 * NBYTES, fill: int = 0x5A):
    """A registered region of `size` bytes, every byte `fill` (so untouched bytes are recognisable)."""
    h, key = objs.create(size, "out", fill=fill)
    name = regions.name("out")
    register(proto, srv, name, key, size)
    return name, h, key


def object_bytes(h, size: int, offset: int = 0) -> np.ndarray:
    return shm.get_contents_as_numpy(h, np.uint8, [size], offset=offset)


# ==============================================================================================================
# 1. Default server: client shared memory disabled
# ==============================================================================================================


def test_default_status_is_empty(plain_server):
    r = http_status(plain_server)
    assert r.status_code == 200, r.text
    assert r.json() == []
    assert len(grpc_status(plain_server).regions) == 0
    # A named region that is not registered: not found (the status API itself is not disabled).
    assert_error(http_status(plain_server, "nope"), 404, "nope")
    grpc_error(lambda: grpc_status(plain_server, "nope"), grpc.StatusCode.NOT_FOUND, "nope")


def test_default_register_and_unregister_refused_http(plain_server, objs):
    _, key = objs.create(128)  # a real object: the refusal is not about the key
    assert_error(http_register(plain_server, "r", key, 128), 501, exact=DISABLED)
    assert_error(plain_server.post("/v2/systemsharedmemory/region/r/unregister"), 501, exact=DISABLED)
    assert_error(plain_server.post("/v2/systemsharedmemory/unregister"), 501, exact=DISABLED)
    assert http_status(plain_server).json() == []


def test_default_register_and_unregister_refused_grpc(plain_server, objs):
    _, key = objs.create(128)
    grpc_error(lambda: grpc_register(plain_server, "r", key, 128), grpc.StatusCode.UNIMPLEMENTED, exact=DISABLED)
    for name in ("r", ""):
        grpc_error(
            lambda: plain_server.grpc_stub().SystemSharedMemoryUnregister(
                service_pb2.SystemSharedMemoryUnregisterRequest(name=name)
            ),
            grpc.StatusCode.UNIMPLEMENTED,
            exact=DISABLED,
        )
    assert len(grpc_status(plain_server).regions) == 0


def test_default_tritonclient_register_refused(plain_server, objs):
    _, key = objs.create(128)
    client = plain_server.client()
    try:
        with pytest.raises(InferenceServerException) as e:
            client.register_system_shared_memory("r", key, 128)
        assert DISABLED in str(e.value)
    finally:
        client.close()
    with plain_server.grpc_client() as g:
        with pytest.raises(InferenceServerException) as e:
            g.register_system_shared_memory("r", key, 128)
        assert e.value.status() == "StatusCode.UNIMPLEMENTED" and DISABLED in e.value.message()


def test_default_infer_naming_a_region_refused(plain_server):
    assert_error(http_simple(plain_server, in0=shm_params("r", NBYTES)), 501, exact=DISABLED)
    out = [{"name": "OUTPUT0", "parameters": shm_params("r", NBYTES)}]
    assert_error(http_simple(plain_server, outputs=out), 501, exact=DISABLED)
    grpc_error(lambda: grpc_simple(plain_server, in0=("r", NBYTES)), grpc.StatusCode.UNIMPLEMENTED, exact=DISABLED)
    grpc_error(
        lambda: grpc_simple(plain_server, outputs=[grpc_out("OUTPUT0", "r", NBYTES)]),
        grpc.StatusCode.UNIMPLEMENTED,
        exact=DISABLED,
    )
    # Ordinary inference is unaffected.
    r = http_simple(plain_server)
    assert r.status_code == 200, r.text


CUDA_BODY = {"raw_handle": {"b64": base64.b64encode(bytes(64)).decode()}, "device_id": 0, "byte_size": 64}


@pytest.mark.parametrize("which", ["plain_server", "shm_server"])
def test_cuda_shared_memory_not_supported(request, which):
    srv = request.getfixturevalue(which)
    r = srv.post("/v2/cudasharedmemory/region/c/register", data=json.dumps(CUDA_BODY))
    assert_error(r, 400, "not supported")
    r = srv.get("/v2/cudasharedmemory/status")
    assert r.status_code == 200 and r.json() == [], r.text
    # Nothing can be registered, so unregistering (all, or one region) succeeds, as in Triton's CPU-only
    # build: Triton's shared-memory example clients start with exactly these calls.
    for path in ("/v2/cudasharedmemory/unregister", "/v2/cudasharedmemory/region/c/unregister"):
        r = srv.post(path)
        assert (r.status_code, r.content) == (200, b""), (path, r.text)
    stub = srv.grpc_stub()
    for name in ("", "c"):
        stub.CudaSharedMemoryUnregister(service_pb2.CudaSharedMemoryUnregisterRequest(name=name))
    grpc_error(
        lambda: srv.grpc_stub().CudaSharedMemoryRegister(
            service_pb2.CudaSharedMemoryRegisterRequest(name="c", raw_handle=bytes(64), device_id=0, byte_size=64)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not supported",
    )
    assert len(srv.grpc_stub().CudaSharedMemoryStatus(service_pb2.CudaSharedMemoryStatusRequest()).regions) == 0


# ==============================================================================================================
# 2. --allow-client-shm=true: the normal flows
# ==============================================================================================================


def test_http_tritonclient_flow_inputs_and_outputs_in_shm(shm_server, objs, regions):
    """tritonclient's simple_http_shm_client.py, on `simple`."""
    client = shm_server.client()
    in_h, in_key = objs.create(2 * NBYTES, "in")
    out_h, out_key = objs.create(2 * NBYTES, "out", fill=0x5A)
    shm.set_shared_memory_region(in_h, [A, B])
    rin, rout = regions.name("in"), regions.name("out")
    client.register_system_shared_memory(rin, in_key, 2 * NBYTES)
    client.register_system_shared_memory(rout, out_key, 2 * NBYTES)

    status = {s["name"]: s for s in client.get_system_shared_memory_status()}
    assert status[rin] == {"name": rin, "key": in_key, "offset": 0, "byte_size": 2 * NBYTES}, status
    assert status[rout] == {"name": rout, "key": out_key, "offset": 0, "byte_size": 2 * NBYTES}, status

    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory(rin, NBYTES)
    inputs[1].set_shared_memory(rin, NBYTES, offset=NBYTES)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0"), httpclient.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory(rout, NBYTES)
    outputs[1].set_shared_memory(rout, NBYTES, offset=NBYTES)
    result = client.infer("simple", inputs, outputs=outputs)

    o0, o1 = result.get_output("OUTPUT0"), result.get_output("OUTPUT1")
    for o, offset in ((o0, 0), (o1, NBYTES)):
        assert "data" not in o, o
        assert o["datatype"] == "INT32" and o["shape"] == [1, 16], o
        p = o["parameters"]
        assert p["shared_memory_region"] == rout and p["shared_memory_byte_size"] == NBYTES, o
        assert "binary_data_size" not in p, o
        assert p.get("shared_memory_offset", 0) == offset, o
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_h, np.int32, [1, 16]), A + B)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_h, np.int32, [1, 16], offset=NBYTES), A - B)

    client.unregister_system_shared_memory(rin)
    client.unregister_system_shared_memory(rout)
    names = {s["name"] for s in client.get_system_shared_memory_status()}
    assert rin not in names and rout not in names
    client.close()


def test_http_raw_response_for_shm_outputs(shm_server, objs, regions):
    """The raw HTTP answer: no binary tail, no data, the region parameters (offset only when not 0)."""
    rin, _, _ = input_region(objs, regions, shm_server)
    rout, out_h, _ = output_region(objs, regions, shm_server)
    out = [
        {"name": "OUTPUT0", "parameters": shm_params(rout, NBYTES)},
        {"name": "OUTPUT1", "parameters": shm_params(rout, NBYTES, NBYTES)},
    ]
    r = http_simple(shm_server, shm_params(rin, NBYTES), shm_params(rin, NBYTES, NBYTES), out)
    assert r.status_code == 200, r.text
    assert "Inference-Header-Content-Length" not in r.headers, r.headers
    body = r.json()
    got = {o["name"]: o for o in body["outputs"]}
    assert got["OUTPUT0"] == {
        "name": "OUTPUT0",
        "datatype": "INT32",
        "shape": [1, 16],
        "parameters": {"shared_memory_region": rout, "shared_memory_byte_size": NBYTES},
    }, got
    assert got["OUTPUT1"]["parameters"] == {
        "shared_memory_region": rout,
        "shared_memory_byte_size": NBYTES,
        "shared_memory_offset": NBYTES,
    }, got
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_h, np.int32, [1, 16]), A + B)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_h, np.int32, [1, 16], offset=NBYTES), A - B)


def test_grpc_tritonclient_flow_inputs_and_outputs_in_shm(shm_server, objs, regions):
    """tritonclient's simple_grpc_shm_client.py, on `simple`."""
    with shm_server.grpc_client() as client:
        in_h, in_key = objs.create(2 * NBYTES, "in")
        out_h, out_key = objs.create(2 * NBYTES, "out", fill=0x5A)
        shm.set_shared_memory_region(in_h, [A, B])
        rin, rout = regions.name("in"), regions.name("out")
        client.register_system_shared_memory(rin, in_key, 2 * NBYTES)
        client.register_system_shared_memory(rout, out_key, 2 * NBYTES)

        st = client.get_system_shared_memory_status()
        assert st.regions[rin].key == in_key and st.regions[rin].byte_size == 2 * NBYTES, st
        assert st.regions[rin].name == rin and st.regions[rin].offset == 0, st
        one = client.get_system_shared_memory_status(region_name=rout)
        assert list(one.regions) == [rout] and one.regions[rout].key == out_key, one

        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory(rin, NBYTES)
        inputs[1].set_shared_memory(rin, NBYTES, offset=NBYTES)
        outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
        outputs[0].set_shared_memory(rout, NBYTES)
        outputs[1].set_shared_memory(rout, NBYTES, offset=NBYTES)
        result = client.infer("simple", inputs, outputs=outputs)
        resp = result.get_response()

        for i, (name, offset) in enumerate((("OUTPUT0", 0), ("OUTPUT1", NBYTES))):
            o = result.get_output(name)
            assert o.datatype == "INT32" and list(o.shape) == [1, 16], o
            p = o.parameters
            assert p["shared_memory_region"].string_param == rout, o
            assert p["shared_memory_byte_size"].int64_param == NBYTES, o
            assert p["shared_memory_offset"].int64_param == offset if offset else (
                "shared_memory_offset" not in p or p["shared_memory_offset"].int64_param == 0
            ), o
            # No data travels on the wire for an output in shared memory.
            idx = [x.name for x in resp.outputs].index(name)
            assert idx >= len(resp.raw_output_contents) or resp.raw_output_contents[idx] == b"", resp
        np.testing.assert_array_equal(shm.get_contents_as_numpy(out_h, np.int32, [1, 16]), A + B)
        np.testing.assert_array_equal(shm.get_contents_as_numpy(out_h, np.int32, [1, 16], offset=NBYTES), A - B)

        client.unregister_system_shared_memory(rin)
        client.unregister_system_shared_memory(rout)
        left = client.get_system_shared_memory_status().regions
        assert rin not in left and rout not in left


@pytest.mark.parametrize("in1_binary", [True, False], ids=["binary", "json"])
def test_http_mixed_shm_and_inline_tensors(shm_server, objs, regions, in1_binary):
    """INPUT0 in shm, INPUT1 inline (binary or JSON); OUTPUT0 to shm, OUTPUT1 returned in the response."""
    client = shm_server.client()
    in_h, in_key = objs.create(NBYTES, "in")
    shm.set_shared_memory_region(in_h, [A])
    rin = regions.name("in")
    client.register_system_shared_memory(rin, in_key, NBYTES)
    rout, out_h, _ = output_region(objs, regions, shm_server, size=NBYTES)

    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory(rin, NBYTES)
    inputs[1].set_data_from_numpy(B, binary_data=in1_binary)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0"), httpclient.InferRequestedOutput("OUTPUT1", binary_data=in1_binary)]
    outputs[0].set_shared_memory(rout, NBYTES)
    result = client.infer("simple", inputs, outputs=outputs)

    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    o0 = result.get_output("OUTPUT0")
    assert "data" not in o0 and o0["parameters"]["shared_memory_region"] == rout, o0
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_h, np.int32, [1, 16]), A + B)
    client.close()


def test_grpc_mixed_shm_and_inline_tensors(shm_server, objs, regions):
    """INPUT1 in shm, INPUT0 raw; OUTPUT1 to shm, OUTPUT0 returned in raw_output_contents."""
    in_h, in_key = objs.create(NBYTES, "in")
    shm.set_shared_memory_region(in_h, [B])
    rin = regions.name("in")
    register("grpc", shm_server, rin, in_key, NBYTES)
    rout, out_h, _ = output_region(objs, regions, shm_server, "grpc", size=NBYTES)

    resp = grpc_simple(shm_server, in1=(rin, NBYTES), outputs=[grpc_out("OUTPUT0"), grpc_out("OUTPUT1", rout, NBYTES)])
    res = grpc_result(resp)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_h, np.int32, [1, 16]), A - B)
    o1 = res.get_output("OUTPUT1")
    assert o1.parameters["shared_memory_region"].string_param == rout, o1


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_status_lists_registered_regions(shm_server, objs, regions, proto):
    _, k1 = objs.create(256)
    _, k2 = objs.create(512)
    n1, n2 = regions.name(), regions.name()
    register(proto, shm_server, n1, k1, 128, offset=64)
    register(proto, shm_server, n2, k2, 512)
    for p in PROTOCOLS:  # registered over one protocol, seen over both
        st = status_by_name(p, shm_server)
        assert st[n1] == {"name": n1, "key": k1, "offset": 64, "byte_size": 128}, st
        assert st[n2] == {"name": n2, "key": k2, "offset": 0, "byte_size": 512}, st
    r = http_status(shm_server, n1)
    assert r.status_code == 200 and r.json() == [{"name": n1, "key": k1, "offset": 64, "byte_size": 128}], r.text
    one = grpc_status(shm_server, n2).regions
    assert list(one) == [n2] and one[n2].byte_size == 512 and one[n2].key == k2, one


def test_status_of_unknown_region_is_not_found(shm_server):
    assert_error(http_status(shm_server, f"missing_{PID}"), 404, f"missing_{PID}")
    grpc_error(lambda: grpc_status(shm_server, f"missing_{PID}"), grpc.StatusCode.NOT_FOUND, f"missing_{PID}")


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_register_same_name_twice(shm_server, objs, regions, proto):
    _, k1 = objs.create(128)
    _, k2 = objs.create(256)
    n = regions.name()
    register(proto, shm_server, n, k1, 128)
    msg = f"shared memory region '{n}' already in manager"
    expect_error(
        proto,
        lambda: http_register(shm_server, n, k2, 256) if proto == "http" else grpc_register(shm_server, n, k2, 256),
        400,
        grpc.StatusCode.ALREADY_EXISTS,
        msg,
    )
    # The first registration is untouched.
    assert status_by_name(proto, shm_server)[n] == {"name": n, "key": k1, "offset": 0, "byte_size": 128}


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_same_key_twice_then_unregister_one(shm_server, objs, regions, proto):
    """CVE-2026-47478: two regions over one key; unregistering one must not close what the other uses."""
    h, key = objs.create(NBYTES)
    shm.set_shared_memory_region(h, [A])
    first, second = regions.name("a"), regions.name("b")
    register(proto, shm_server, first, key, NBYTES)
    register(proto, shm_server, second, key, NBYTES)
    if proto == "http":
        assert shm_server.post(f"/v2/systemsharedmemory/region/{first}/unregister").status_code == 200
    else:
        shm_server.grpc_stub().SystemSharedMemoryUnregister(service_pb2.SystemSharedMemoryUnregisterRequest(name=first))
    # Files opened after the unregister (a new region here) must not take over the closed descriptor's role.
    _, other = objs.create(NBYTES, fill=0x7F)
    register(proto, shm_server, regions.name("c"), other, NBYTES)
    for _ in range(3):
        if proto == "http":
            r = http_simple(shm_server, in0=shm_params(second, NBYTES))
            assert r.status_code == 200, r.text
            assert r.json()["outputs"][0]["data"] == (A + B).flatten().tolist()
        else:
            out = grpc_simple(shm_server, in0=(second, NBYTES))
            got = np.frombuffer(out.raw_output_contents[0], dtype=np.int32)
            assert got.tolist() == (A + B).flatten().tolist()


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_unregister_one_then_all(examples_dir, objs, proto):
    """On a server of its own, since unregister-all clears every region."""
    with running(grpc_base_args(examples_dir, ENGINE, SHM_ON), f"rampart[{ENGINE}, shm unregister]") as srv:
        keys = [objs.create(128)[1] for _ in range(3)]
        names = [f"u{i}_{PID}" for i in range(3)]
        for n, k in zip(names, keys):
            register(proto, srv, n, k, 128)
        assert set(status_by_name(proto, srv)) == set(names)

        if proto == "http":
            r = srv.post(f"/v2/systemsharedmemory/region/{names[0]}/unregister")
            assert r.status_code == 200, r.text
        else:
            srv.grpc_stub().SystemSharedMemoryUnregister(service_pb2.SystemSharedMemoryUnregisterRequest(name=names[0]))
        assert set(status_by_name(proto, srv)) == set(names[1:])
        # Unregistering a name that is not registered succeeds (as in Triton) and changes nothing.
        if proto == "http":
            r = srv.post(f"/v2/systemsharedmemory/region/{names[0]}/unregister")
            assert r.status_code == 200, r.text
        else:
            srv.grpc_stub().SystemSharedMemoryUnregister(service_pb2.SystemSharedMemoryUnregisterRequest(name=names[0]))
        assert set(status_by_name(proto, srv)) == set(names[1:])
        # The unregistered name no longer serves inference, and is free again.
        expect_error(
            proto,
            (lambda: http_simple(srv, in0=shm_params(names[0], NBYTES)))
            if proto == "http"
            else (lambda: grpc_simple(srv, in0=(names[0], NBYTES))),
            404,
            grpc.StatusCode.NOT_FOUND,
            f"Unable to find shared memory region: '{names[0]}'",
        )

        if proto == "http":
            r = srv.post("/v2/systemsharedmemory/unregister")
            assert r.status_code == 200, r.text
        else:
            srv.grpc_stub().SystemSharedMemoryUnregister(service_pb2.SystemSharedMemoryUnregisterRequest())
        assert status_by_name(proto, srv) == {}
        # Every name can be registered again.
        for n, k in zip(names, keys):
            register(proto, srv, n, k, 64)
        assert {n: s["byte_size"] for n, s in status_by_name(proto, srv).items()} == dict.fromkeys(names, 64)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_registration_offset_is_applied_once(shm_server, objs, regions, proto):
    """Regions registered at object offset 64: tensor offsets are relative to the region (object 64 + t)."""
    size = 320
    in_h, in_key = objs.create(size, "in", fill=0x7F)  # garbage everywhere outside the tensors
    shm.set_shared_memory_region(in_h, [A], offset=64)  # region offset 0
    shm.set_shared_memory_region(in_h, [B], offset=64 + 128)  # region offset 128
    out_h, out_key = objs.create(size, "out", fill=0x5A)
    rin, rout = regions.name("in"), regions.name("out")
    register(proto, shm_server, rin, in_key, 256, offset=64)
    register(proto, shm_server, rout, out_key, 256, offset=64)

    if proto == "http":
        out = [{"name": "OUTPUT0", "parameters": shm_params(rout, NBYTES, 32)}, {"name": "OUTPUT1"}]
        r = http_simple(shm_server, shm_params(rin, NBYTES), shm_params(rin, NBYTES, 128), out)
        assert r.status_code == 200, r.text
        header, blobs = parse_infer_response(r)
        o1 = next(o for o in header["outputs"] if o["name"] == "OUTPUT1")
        got1 = np.array(o1["data"], dtype=np.int32) if "data" in o1 else np.frombuffer(blobs["OUTPUT1"], np.int32)
        o0 = next(o for o in header["outputs"] if o["name"] == "OUTPUT0")
        assert o0["parameters"].get("shared_memory_offset") == 32, o0
    else:
        resp = grpc_simple(
            shm_server, (rin, NBYTES), (rin, NBYTES, 128), [grpc_out("OUTPUT0", rout, NBYTES, 32), grpc_out("OUTPUT1")]
        )
        got1 = grpc_result(resp).as_numpy("OUTPUT1")
    np.testing.assert_array_equal(np.asarray(got1).reshape(1, 16), A - B)
    whole = object_bytes(out_h, size)
    # OUTPUT0 is at object offset 64 + 32 = 96; nothing else was written.
    np.testing.assert_array_equal(whole[96 : 96 + NBYTES].view(np.int32).reshape(1, 16), A + B)
    assert (whole[:96] == 0x5A).all() and (whole[96 + NBYTES :] == 0x5A).all(), whole


# ==============================================================================================================
# 3. Hostile registrations (CVE-2024-0088, CVE-2025-23319 chain)
# ==============================================================================================================


def register_call(proto, srv, name, key, byte_size, offset=0):
    if proto == "http":
        return lambda: http_register(srv, name, key, byte_size, offset)
    return lambda: grpc_register(srv, name, key, byte_size, offset)


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize(
    "offset,byte_size",
    [(0, 65), (64, 1), (1, 64), (0, 0), (2**64 - 32, 64), (U64_MAX, 1), (1, U64_MAX), (U64_MAX, U64_MAX)],
    ids=["size-past-end", "offset-at-end", "offset+size-past-end", "zero-size", "offset-2^64-32", "offset-max",
         "size-max", "both-max"],
)
def test_register_outside_the_object_refused(shm_server, objs, regions, proto, offset, byte_size):
    _, key = objs.create(64)
    n = regions.name()
    expect_error(
        proto,
        register_call(proto, shm_server, n, key, byte_size, offset),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        exact=f"failed to register shared memory region '{n}': invalid args",
    )
    assert n not in status_by_name(proto, shm_server)


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("key", ["/", "///", "", "////////////////"], ids=["slash", "slashes", "empty", "many"])
def test_register_all_slash_key_refused(shm_server, regions, proto, key):
    n = regions.name()
    expect_error(proto, register_call(proto, shm_server, n, key, 64), 400, grpc.StatusCode.INVALID_ARGUMENT,
                 exact=f"cannot register shared memory region '{n}' - invalid shm key '{key}'")
    assert n not in status_by_name(proto, shm_server)


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("slashes", ["", "/", "//", "/////"], ids=["none", "one", "two", "five"])
def test_register_reserved_python_backend_key_refused(shm_server, objs, regions, proto, slashes):
    """The object exists (as the Python backend would have made it): only the prefix check stops the mapping."""
    name = f"{RESERVED}{PID}_{slashes.count('/')}_{proto}"
    objs.raw(name, 4096)
    n = regions.name()
    expect_error(
        proto,
        register_call(proto, shm_server, n, slashes + name, 64),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        exact=f"cannot register shared memory region '{n}' with key '{slashes + name}' as the key contains the reserved"
        f" prefix '{RESERVED}'",
    )
    assert n not in status_by_name(proto, shm_server)


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize(
    "key,make",
    [
        ("/a/b", None),
        ("/../../etc/passwd", None),
        ("/..", None),
        ("..", None),
        ("/.", None),
        ("/dev/shm/x", None),
        (f"/rampart_ctl_{PID}\n", f"rampart_ctl_{PID}\n"),
        (f"/rampart_ctl_{PID}\x01x", f"rampart_ctl_{PID}\x01x"),
        (f"/rampart_ctl_{PID}\x7f", f"rampart_ctl_{PID}\x7f"),
    ],
    ids=["slash-inside", "dotdot-passwd", "slash-dotdot", "dotdot", "dot", "dev-shm-path", "newline", "ctrl-01", "del"],
)
def test_register_malformed_key_refused(shm_server, objs, regions, proto, key, make):
    if make is not None:  # the object exists, so only the key check can refuse it
        objs.raw(make + proto, 128)
        key = key + proto
    n = regions.name()
    shown = key.replace("\n", "\\n").replace("\x01", "\\u{1}").replace("\x7f", "\\u{7f}")  # Rust's escape_debug
    expect_error(
        proto,
        register_call(proto, shm_server, n, key, 64),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        exact=f"cannot register shared memory region '{n}' - invalid shm key '{shown}': a key is one name (at most 255 bytes,"
        " no '/' after the leading ones, no control characters)",
    )
    assert n not in status_by_name(proto, shm_server)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_register_nonexistent_key(shm_server, regions, proto):
    key = f"/rampart_t_{PID}_does_not_exist"
    n = regions.name()
    expect_error(
        proto,
        register_call(proto, shm_server, n, key, 64),
        500,
        grpc.StatusCode.INTERNAL,
        f"Unable to open shared memory region: '{key}'",
    )


def test_register_body_checks_http(shm_server, objs, regions):
    _, key = objs.create(64)
    n = regions.name()
    assert_error(http_register(shm_server, n, key, 64, body={"key": key}), 400, "byte_size")
    assert_error(http_register(shm_server, n, key, 64, body={"byte_size": 64}), 400, "key")
    assert_error(http_register(shm_server, n, key, 64, body={"key": key, "byte_size": -1}), (400, 500), "byte_size")
    assert_error(http_register(shm_server, n, key, 64, body={"key": key, "byte_size": 64, "offset": -1}), (400, 500), "offset")
    assert_error(http_register(shm_server, n, key, 64, body={"key": 5, "byte_size": 64}), (400, 500), "key")
    assert_error(http_register(shm_server, n, key, 64, body={"key": key, "byte_size": 2**64}), (400, 500))
    assert n not in status_by_name("http", shm_server)


# ==============================================================================================================
# 3b. Hostile inference parameters
# ==============================================================================================================


def infer_call(proto, srv, in0=None, out0=None):
    """`simple` with INPUT0 from shm (`in0` = (region, byte_size, offset)) and/or OUTPUT0 to shm (`out0`)."""
    if proto == "http":
        outputs = None
        if out0 is not None:
            outputs = [{"name": "OUTPUT0", "parameters": shm_params(*out0)}, {"name": "OUTPUT1"}]
        return lambda: http_simple(srv, in0=shm_params(*in0) if in0 else None, outputs=outputs)
    outputs = [grpc_out("OUTPUT0", *out0), grpc_out("OUTPUT1")] if out0 is not None else None
    return lambda: grpc_simple(srv, in0=in0, outputs=outputs)


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize(
    "offset,byte_size,message",
    [
        (128, NBYTES, "Invalid offset for shared memory region"),
        (1000, NBYTES, "Invalid offset for shared memory region"),
        (2**64 - 32, NBYTES, "Invalid offset for shared memory region"),
        (U64_MAX, 1, "Invalid offset for shared memory region"),
        (96, NBYTES, "Invalid offset + byte size for shared memory region"),
        (0, 129, "Invalid offset + byte size for shared memory region"),
        (8, 2**64 - 4, "Integer overflow"),
        (8, U64_MAX, "Integer overflow"),
    ],
    ids=["offset-at-end", "offset-past-end", "offset-2^64-32", "offset-max", "end-past-region", "size-past-region",
         "overflow", "overflow-max"],
)
def test_infer_out_of_region(shm_server, objs, regions, proto, side, offset, byte_size, message):
    """CVE-2024-0088: a 128-byte region, tensor offset / size outside it. gRPC sizes are int64: values >= 2^63
    are sent as their negative two's complement (the server reads them back as huge sizes)."""
    name, h, _ = input_region(objs, regions, shm_server, proto, size=128)
    before = object_bytes(h, 128).copy()
    if proto == "grpc":
        offset = offset - 2**64 if offset >= 2**63 else offset
        byte_size = byte_size - 2**64 if byte_size >= 2**63 else byte_size
    exact = None
    if message == "Integer overflow":  # Triton's whole text
        exact = (
            f"Integer overflow detected: byte_size ({byte_size % 2**64}) + offset ({offset % 2**64}) exceeds maximum value"
            f" ({U64_MAX}) for region '{name}'"
        )
    spec = (name, byte_size, offset)
    call = infer_call(proto, shm_server, in0=spec) if side == "input" else infer_call(proto, shm_server, out0=spec)
    expect_error(proto, call, 400, grpc.StatusCode.INVALID_ARGUMENT, message, exact=exact)
    np.testing.assert_array_equal(object_bytes(h, 128), before)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_infer_negative_grpc_size_is_out_of_region(shm_server, objs, regions, proto):
    """gRPC: shared_memory_byte_size -1 with offset 0 (huge size, no overflow) -> bounds error; over HTTP a
    negative size is not an unsigned integer at all."""
    name, _, _ = input_region(objs, regions, shm_server, proto, size=128)
    if proto == "grpc":
        grpc_error(
            lambda: grpc_simple(shm_server, in0=(name, -1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Invalid offset + byte size for shared memory region",
        )
        grpc_error(lambda: grpc_simple(shm_server, in0=(name, NBYTES, -1)), grpc.StatusCode.INVALID_ARGUMENT,
                   "Invalid offset for shared memory region")
    else:
        # Read as 2^64-1, as gRPC's int64 -1 (and Triton), and refused by the bounds check: a client error.
        r = http_simple(shm_server, in0={"shared_memory_region": name, "shared_memory_byte_size": -1})
        assert_error(
            r,
            400,
            exact=f"Invalid offset + byte size for shared memory region: '{name}': 0 + {2**64 - 1} is beyond the "
            "region's 128 bytes",
        )


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_infer_unknown_region_not_found(shm_server, proto):
    region = f"ghost_{PID}"
    expect_error(
        proto,
        infer_call(proto, shm_server, in0=(region, NBYTES, 0)),
        404,
        grpc.StatusCode.NOT_FOUND,
        f"Unable to find shared memory region: '{region}'",
    )
    expect_error(proto, infer_call(proto, shm_server, out0=(region, NBYTES, 0)), 404, grpc.StatusCode.NOT_FOUND,
                 f"Unable to find shared memory region: '{region}'")


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_input_byte_size_mismatch(shm_server, objs, regions, proto):
    name, _, _ = input_region(objs, regions, shm_server, proto, size=256)
    for size in (128, 32):
        expect_error(
            proto,
            infer_call(proto, shm_server, in0=(name, size, 0)),
            400,
            grpc.StatusCode.INVALID_ARGUMENT,
            exact=f"input byte size mismatch for input 'INPUT0' for model 'simple'. Expected 64, got {size}",
        )


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_output_region_too_small(shm_server, objs, regions, proto):
    name, h, _ = output_region(objs, regions, shm_server, proto, size=128)
    expect_error(
        proto,
        infer_call(proto, shm_server, out0=(name, 32, 0)),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        "should be at least 64 bytes",
    )
    assert (object_bytes(h, 128) == 0x5A).all(), "a refused output must not be written"
    # A larger-than-needed slot is fine: byte_size in the answer is the written size.
    if proto == "http":
        r = infer_call(proto, shm_server, out0=(name, 100, 0))()
        assert r.status_code == 200, r.text
        o0 = next(o for o in r.json()["outputs"] if o["name"] == "OUTPUT0")
        assert o0["parameters"]["shared_memory_byte_size"] == NBYTES, o0
    else:
        resp = infer_call(proto, shm_server, out0=(name, 100, 0))()
        o0 = next(o for o in resp.outputs if o.name == "OUTPUT0")
        assert o0.parameters["shared_memory_byte_size"].int64_param == NBYTES, o0
    np.testing.assert_array_equal(shm.get_contents_as_numpy(h, np.int32, [1, 16]), A + B)
    assert (object_bytes(h, 128)[NBYTES:] == 0x5A).all()


@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize("param", ["shared_memory_byte_size", "shared_memory_offset"])
@pytest.mark.parametrize("kind,value", [("uint64", 64), ("string", "64"), ("double", 64.0), ("bool", True)])
def test_grpc_shm_sizes_must_be_int64_param(shm_server, objs, regions, side, param, kind, value):
    name, _, _ = input_region(objs, regions, shm_server, "grpc", size=128)
    kinds = {param: kind}
    vals = {"shared_memory_byte_size": NBYTES, "shared_memory_offset": 0}
    vals[param] = value
    if side == "input":
        t = grpc_input("INPUT0", "INT32", [1, 16])
        set_grpc_param(t.parameters, "shared_memory_region", name)
        for k, v in vals.items():
            set_grpc_param(t.parameters, k, v, kinds.get(k, "int64"))
        req = grpc_request("simple", [t, grpc_input("INPUT1", "INT32", [1, 16])], [raw_bytes(B, "INT32")])
    else:
        o = grpc_out("OUTPUT0", name)
        for k, v in vals.items():
            set_grpc_param(o.parameters, k, v, kinds.get(k, "int64"))
        inputs = [grpc_input("INPUT0", "INT32", [1, 16]), grpc_input("INPUT1", "INT32", [1, 16])]
        req = grpc_request("simple", inputs, [raw_bytes(A, "INT32"), raw_bytes(B, "INT32")])
        req.outputs.append(o)
    msg = grpc_error(lambda: shm_server.grpc_stub().ModelInfer(req), grpc.StatusCode.INVALID_ARGUMENT,
                     "expected int64_param")
    assert param in msg, msg


def test_grpc_region_must_be_string_param(shm_server, objs, regions):
    name, _, _ = input_region(objs, regions, shm_server, "grpc", size=128)
    t = grpc_input("INPUT0", "INT32", [1, 16])
    set_grpc_param(t.parameters, "shared_memory_region", 5, "int64")
    set_grpc_param(t.parameters, "shared_memory_byte_size", NBYTES, "int64")
    req = grpc_request("simple", [t, grpc_input("INPUT1", "INT32", [1, 16])], [raw_bytes(B, "INT32")])
    grpc_error(lambda: shm_server.grpc_stub().ModelInfer(req), grpc.StatusCode.INVALID_ARGUMENT, "shared_memory_region")


@pytest.mark.parametrize("proto", PROTOCOLS)
@pytest.mark.parametrize("side", ["input", "output"])
@pytest.mark.parametrize(
    "params",
    [{"shared_memory_offset": 0}, {"shared_memory_byte_size": NBYTES}, {"shared_memory_offset": 0, "shared_memory_byte_size": NBYTES}],
    ids=["offset", "byte_size", "both"],
)
def test_shm_sizes_without_region_refused(shm_server, proto, side, params):
    if proto == "http":
        if side == "input":
            r = http_simple(shm_server, in0=params)
        else:
            r = http_simple(shm_server, outputs=[{"name": "OUTPUT0", "parameters": params}])
        assert_error(r, 400, "shared_memory_region")
    else:
        if side == "input":
            t = grpc_input("INPUT0", "INT32", [1, 16])
            for k, v in params.items():
                set_grpc_param(t.parameters, k, v, "int64")
            req = grpc_request("simple", [t, grpc_input("INPUT1", "INT32", [1, 16])],
                               [raw_bytes(A, "INT32"), raw_bytes(B, "INT32")])
        else:
            req = grpc_request("simple", [grpc_input("INPUT0", "INT32", [1, 16]), grpc_input("INPUT1", "INT32", [1, 16])],
                               [raw_bytes(A, "INT32"), raw_bytes(B, "INT32")])
            o = grpc_out("OUTPUT0")
            for k, v in params.items():
                set_grpc_param(o.parameters, k, v, "int64")
            req.outputs.append(o)
        grpc_error(lambda: shm_server.grpc_stub().ModelInfer(req), grpc.StatusCode.INVALID_ARGUMENT, "shared_memory_region")


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_region_without_byte_size_refused(shm_server, objs, regions, proto):
    name, _, _ = input_region(objs, regions, shm_server, proto, size=128)
    if proto == "http":
        assert_error(http_simple(shm_server, in0={"shared_memory_region": name}), 400, "shared_memory_byte_size")
    else:
        t = grpc_input("INPUT0", "INT32", [1, 16])
        set_grpc_param(t.parameters, "shared_memory_region", name)
        req = grpc_request("simple", [t, grpc_input("INPUT1", "INT32", [1, 16])], [raw_bytes(B, "INT32")])
        grpc_error(lambda: shm_server.grpc_stub().ModelInfer(req), grpc.StatusCode.INVALID_ARGUMENT,
                   "shared_memory_byte_size")


def test_http_output_shm_with_binary_data_refused(shm_server, objs, regions):
    name, h, _ = output_region(objs, regions, shm_server, size=128)
    out = [{"name": "OUTPUT0", "parameters": {**shm_params(name, NBYTES), "binary_data": True}}]
    assert_error(http_simple(shm_server, outputs=out), 400, "binary_data", "shared_memory_region")
    assert (object_bytes(h, 128) == 0x5A).all()
    # binary_data false together with a region is what tritonclient sends: accepted.
    out = [{"name": "OUTPUT0", "parameters": {**shm_params(name, NBYTES), "binary_data": False}}]
    r = http_simple(shm_server, outputs=out)
    assert r.status_code == 200, r.text
    np.testing.assert_array_equal(shm.get_contents_as_numpy(h, np.int32, [1, 16]), A + B)


def test_http_input_with_region_and_data_refused(shm_server, objs, regions):
    name, _, _ = input_region(objs, regions, shm_server, size=128)
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": A.flatten().tolist(),
             "parameters": shm_params(name, NBYTES)},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": B.flatten().tolist()},
        ]
    }
    assert_error(shm_server.infer("simple", body), 400, "Input must set only one of the following fields")


# ==============================================================================================================
# 3c. Unregistering while in use (CVE-2024-0116), shrinking the object
# ==============================================================================================================


@pytest.mark.timeout(240)
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_unregister_reregister_under_concurrent_inference(shm_server, objs, regions, proto):
    """Many threads infer with INPUT0 from a region while another thread unregisters and re-registers it.
    Each inference either succeeds with the right answer or fails with 404 / NOT_FOUND (region not found);
    the server stays up. FIXME: the interleaving is not deterministic (the deterministic in-flight case is
    test_unregister_while_request_is_queued)."""
    h, key = objs.create(NBYTES, "race")
    shm.set_shared_memory_region(h, [A])
    name = regions.name("race")
    register(proto, shm_server, name, key, NBYTES)
    stop = threading.Event()
    toggles = [0]
    toggle_errors: list = []

    def toggler():
        while not stop.is_set():
            try:
                if proto == "http":
                    r = shm_server.post(f"/v2/systemsharedmemory/region/{name}/unregister")
                    assert r.status_code == 200, r.text
                    r = http_register(shm_server, name, key, NBYTES)
                    assert r.status_code == 200, r.text
                else:
                    shm_server.grpc_stub().SystemSharedMemoryUnregister(
                        service_pb2.SystemSharedMemoryUnregisterRequest(name=name)
                    )
                    grpc_register(shm_server, name, key, NBYTES)
            except Exception as e:  # noqa: BLE001 - reported below
                toggle_errors.append(repr(e))
                return
            toggles[0] += 1

    def worker(_):
        outcomes = []
        session = requests.Session()
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            if proto == "http":
                r = session.post(
                    shm_server.base + "/v2/models/simple/infer",
                    data=json.dumps({"inputs": [
                        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "parameters": shm_params(name, NBYTES)},
                        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": B.flatten().tolist()},
                    ]}),
                    timeout=30,
                )
                if r.status_code == 200:
                    o = {x["name"]: x for x in r.json()["outputs"]}
                    ok = o["OUTPUT0"]["data"] == (A + B).flatten().tolist()
                    outcomes.append("ok" if ok else f"wrong data {o}")
                else:
                    outcomes.append((r.status_code, r.json().get("error")))
            else:
                try:
                    res = grpc_result(grpc_simple(shm_server, in0=(name, NBYTES)))
                    ok = np.array_equal(res.as_numpy("OUTPUT0"), A + B)
                    outcomes.append("ok" if ok else "wrong data")
                except grpc.RpcError as e:
                    outcomes.append((e.code(), e.details()))
        session.close()
        return outcomes

    t = threading.Thread(target=toggler, daemon=True)
    t.start()
    try:
        results = concurrently(worker, 6)
    finally:
        stop.set()
        t.join(30)
    assert not toggle_errors, toggle_errors
    assert all(per is not None for per in results), "a worker thread died"
    flat = [x for per in results for x in per]
    not_found = (404, f"Unable to find shared memory region: '{name}'") if proto == "http" else (
        grpc.StatusCode.NOT_FOUND, f"Unable to find shared memory region: '{name}'")
    bad = [x for x in flat if x != "ok" and x != not_found]
    assert not bad, f"unexpected outcomes ({len(bad)} of {len(flat)}): {bad[:5]}"
    assert flat.count("ok") > 0 and toggles[0] > 0, (flat.count("ok"), toggles[0])
    print(f"race: {flat.count('ok')} ok, {flat.count(not_found)} not found, {toggles[0]} unregister/register cycles")
    assert_live(shm_server)
    # Once the dust settles, the region serves again.
    register_final = status_by_name(proto, shm_server)
    if name not in register_final:
        register(proto, shm_server, name, key, NBYTES)
    r = http_simple(shm_server, in0=shm_params(name, NBYTES))
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def slow_server(examples_dir, tmp_path_factory):
    """`simple` with dynamic batching that holds a lone request for 1.5 s (max_queue_delay), so a request is
    deterministically in flight while the test unregisters its regions."""
    import shutil

    repo = tmp_path_factory.mktemp("shm_slow")
    shutil.copytree(examples_dir / "simple", repo / "simple")
    cfg = repo / "simple" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + "\ndynamic_batching { max_queue_delay_microseconds: 1500000 }\n")
    srv = start_server(grpc_base_args(repo, ENGINE, SHM_ON), f"rampart[{ENGINE}, shm slow]")
    yield srv
    finish_server(srv)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_unregister_while_request_is_queued(slow_server, objs, proto):
    """CVE-2024-0116: unregister (and even unlink) both regions while the request using them waits in the
    batcher; the request completes with the right output written into its output region (Triton defers the
    unregister until in-flight requests release the region), and the names are gone for new requests."""
    srv = slow_server
    in_h, in_key = objs.create(2 * NBYTES, "in")
    shm.set_shared_memory_region(in_h, [A, B])
    out_h, out_key = objs.create(2 * NBYTES, "out", fill=0x5A)
    rin, rout = f"qin_{PID}_{proto}", f"qout_{PID}_{proto}"
    register(proto, srv, rin, in_key, 2 * NBYTES)
    register(proto, srv, rout, out_key, 2 * NBYTES)
    result = {}

    def run():
        t0 = time.monotonic()
        try:
            if proto == "http":
                out = [{"name": "OUTPUT0", "parameters": shm_params(rout, NBYTES)},
                       {"name": "OUTPUT1", "parameters": shm_params(rout, NBYTES, NBYTES)}]
                r = http_simple(srv, shm_params(rin, NBYTES), shm_params(rin, NBYTES, NBYTES), out)
                result["outcome"] = (r.status_code, r.text)
            else:
                grpc_simple(srv, (rin, NBYTES), (rin, NBYTES, NBYTES),
                            [grpc_out("OUTPUT0", rout, NBYTES), grpc_out("OUTPUT1", rout, NBYTES, NBYTES)])
                result["outcome"] = (200, "")
        except grpc.RpcError as e:
            result["outcome"] = (e.code(), e.details())
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), f"request finished before the unregister: {result} (dynamic batching delay not applied?)"
    if proto == "http":
        assert srv.post("/v2/systemsharedmemory/unregister").status_code == 200
    else:
        srv.grpc_stub().SystemSharedMemoryUnregister(service_pb2.SystemSharedMemoryUnregisterRequest())
    assert status_by_name(proto, srv) == {}
    # Even the objects' names are removed (the server keeps its open descriptors; our mappings stay valid).
    os.unlink(f"/dev/shm{out_key}")
    os.unlink(f"/dev/shm{in_key}")
    t.join(30)
    assert result.get("outcome", (None,))[0] == 200, result
    assert result["elapsed"] > 1.0, result
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_h, np.int32, [1, 16]), A + B)
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_h, np.int32, [1, 16], offset=NBYTES), A - B)
    expect_error(proto, infer_call(proto, srv, in0=(rin, NBYTES, 0)), 404, grpc.StatusCode.NOT_FOUND, rin)
    assert_live(srv)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_shrunk_object_after_register(shm_server, objs, regions, proto):
    """The client truncates the object after registering it: reading the input is a client error (400 /
    INVALID_ARGUMENT), not a crash (with a plain mmap this would be SIGBUS); an output is written with pwrite, which
    grows the object back; growing it back makes the region usable again."""
    name, h, key = input_region(objs, regions, shm_server, proto, size=2 * NBYTES)
    fd = os.open(f"/dev/shm{key}", os.O_RDWR)
    try:
        os.ftruncate(fd, 16)
        shrunk = f"cannot read shared memory region '{name}'"
        call = (
            (lambda: http_simple(shm_server, in0=shm_params(name, NBYTES), in1=shm_params(name, NBYTES, NBYTES)))
            if proto == "http"
            else (lambda: grpc_simple(shm_server, (name, NBYTES), (name, NBYTES, NBYTES)))
        )
        expect_error(
            proto,
            call,
            400,
            grpc.StatusCode.INVALID_ARGUMENT,
            shrunk,
            "was the object shrunk after it was registered?",
        )
        assert_live(shm_server)
        # An output into the shrunk object: written with pwrite, which grows the object back to hold it.
        out = output_region(objs, regions, shm_server, proto, size=NBYTES)
        ofd = os.open(f"/dev/shm{out[2]}", os.O_RDWR)
        try:
            os.ftruncate(ofd, 0)
            if proto == "http":
                r = http_simple(shm_server, outputs=[{"name": "OUTPUT0", "parameters": shm_params(out[0], NBYTES)}])
                assert r.status_code == 200, (r.status_code, r.text)
            else:
                grpc_simple(shm_server, outputs=[grpc_out("OUTPUT0", out[0], NBYTES)])
            assert os.fstat(ofd).st_size == NBYTES
            assert os.pread(ofd, NBYTES, 0) == (A + B).astype("<i4").tobytes()
        finally:
            os.close(ofd)
        assert_live(shm_server)
        # Grow it back to its size: the first 16 bytes survived (A[:4]), the rest reads as zeros.
        os.ftruncate(fd, 2 * NBYTES)
    finally:
        os.close(fd)
    r = http_simple(shm_server, in0=shm_params(name, NBYTES), in1=shm_params(name, NBYTES, NBYTES))
    assert r.status_code == 200, r.text
    o = {x["name"]: x for x in r.json()["outputs"]}
    assert o["OUTPUT0"]["data"] == [0, 1, 2, 3] + [0] * 12, o
    assert o["OUTPUT1"]["data"] == [0, 1, 2, 3] + [0] * 12, o


# ==============================================================================================================
# 4. Restricted API
# ==============================================================================================================


def test_restricted_shared_memory_category(examples_dir, objs):
    extra = [
        *SHM_ON,
        "--http-restricted-api=shared-memory:admin=secret",
        "--grpc-restricted-protocol=shared-memory:admin=secret",
    ]
    with running(grpc_base_args(examples_dir, ENGINE, extra), f"rampart[{ENGINE}, shm restricted]") as srv:
        _, key = objs.create(128)
        hdr = {"admin": "secret"}
        md = [("triton-grpc-protocol-admin", "secret")]
        denied_http = "This API is restricted, expecting header 'admin'"
        denied_grpc = "This protocol is restricted, expecting header 'triton-grpc-protocol-admin'"

        # HTTP
        assert_error(http_register(srv, "h", key, 128), 403, exact=denied_http)
        assert_error(http_register(srv, "h", key, 128, headers={"admin": "wrong"}), 403, exact=denied_http)
        assert_error(srv.get("/v2/systemsharedmemory/status"), 403, exact=denied_http)
        r = http_register(srv, "h", key, 128, headers=hdr)
        assert r.status_code == 200, r.text
        r = srv.get("/v2/systemsharedmemory/status", headers=hdr)
        assert r.status_code == 200 and [e["name"] for e in r.json()] == ["h"], r.text
        assert_error(srv.post("/v2/systemsharedmemory/region/h/unregister"), 403, exact=denied_http)
        assert srv.post("/v2/systemsharedmemory/region/h/unregister", headers=hdr).status_code == 200

        # gRPC
        grpc_error(lambda: grpc_register(srv, "g", key, 128), grpc.StatusCode.UNAVAILABLE, exact=denied_grpc)
        grpc_error(lambda: grpc_register(srv, "g", key, 128, metadata=[("triton-grpc-protocol-admin", "nope")]),
                   grpc.StatusCode.UNAVAILABLE, exact=denied_grpc)
        grpc_register(srv, "g", key, 128, metadata=md)
        st = srv.grpc_stub().SystemSharedMemoryStatus(service_pb2.SystemSharedMemoryStatusRequest(), metadata=md)
        assert list(st.regions) == ["g"], st
        grpc_error(lambda: srv.grpc_stub().SystemSharedMemoryStatus(service_pb2.SystemSharedMemoryStatusRequest()),
                   grpc.StatusCode.UNAVAILABLE, exact=denied_grpc)
        # Inference (another category) can use the region without the shared-memory credential.
        in_h, in_key = objs.create(NBYTES, "in")
        shm.set_shared_memory_region(in_h, [A])
        assert http_register(srv, "rin", in_key, NBYTES, headers=hdr).status_code == 200
        r = http_simple(srv, in0=shm_params("rin", NBYTES))
        assert r.status_code == 200, r.text
        srv.grpc_stub().SystemSharedMemoryUnregister(service_pb2.SystemSharedMemoryUnregisterRequest(), metadata=md)
        assert srv.get("/v2/systemsharedmemory/status", headers=hdr).json() == []


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_shm_reads_are_bounded_per_request(shm_server, objs, regions, proto):
    """Inputs are copied out of shared memory: a fixed-size input whose byte size does not match its shape is
    refused before anything is read, and a BYTES input may not make one request read more than 1 GiB (the object
    is sparse: tmpfs allocates nothing for it)."""
    huge = (1 << 30) + 64
    key = objs.key("huge")
    objs.raw(key.lstrip("/"), huge)
    name = regions.name("huge")
    register(proto, shm_server, name, key, huge)
    t = {"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "parameters": shm_params(name, huge)}
    if proto == "http":
        r = shm_server.infer("identity_bytes", {"inputs": [t]})
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "the shared-memory inputs of one request exceed 1073741824 bytes"
    else:
        req = grpc_request("identity_bytes", [grpc_input("INPUT0", "BYTES", [1, 1])])
        set_grpc_param(req.inputs[0].parameters, "shared_memory_region", name)
        set_grpc_param(req.inputs[0].parameters, "shared_memory_byte_size", huge, "int64")
        expect_error(
            proto,
            lambda: shm_server.grpc_stub().ModelInfer(req, timeout=30),
            400,
            grpc.StatusCode.INVALID_ARGUMENT,
            "the shared-memory inputs of one request exceed 1073741824 bytes",
        )
    # A fixed-size input must name exactly its tensor's bytes, checked before the read.
    expect_error(
        proto,
        (lambda: http_simple(shm_server, in0=shm_params(name, huge)))
        if proto == "http"
        else (lambda: grpc_simple(shm_server, in0=(name, huge))),
        400,
        grpc.StatusCode.INVALID_ARGUMENT,
        f"input byte size mismatch for input 'INPUT0' for model 'simple'. Expected 64, got {huge}",
    )
