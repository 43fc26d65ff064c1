"""Schema oracle: our gRPC .proto files must match Triton's and gRPC's, field for field.

Compiles, with protoc (bundled in grpcio-tools), into FileDescriptorSets:

  * crates/rampart-grpc/proto/grpc_service.proto (model_config.proto from
    crates/rampart-model-config/proto on the include path), compared with the
    descriptor carried by tritonclient's generated `service_pb2`;
  * crates/rampart-grpc/proto/health.proto, compared with the descriptor of
    grpcio-health-checking's `grpc_health.v1.health_pb2`.

Every message, field (name, number, label, type, type name, oneof, proto3
optional, default, packed), oneof, nested type, map entry and enum, and every
service method (name, input/output type, client/server streaming, options) must
be equal, in both directions (nothing missing, nothing extra). Declaration order
is not compared; it affects neither the wire format nor the text format.

Not compared: the file name, json_name and source info, and for health.proto
the upstream language-specific file options (java_package, go_package, ...),
which Rampart does not declare.

A round trip through the wire format between the two schemas (populated
ModelInferRequest / ModelStatisticsResponse / ... built with tritonclient's
classes, parsed with classes built from our descriptor) closes the loop.

Requirements: tests/python/requirements-config.txt
"""

from __future__ import annotations

import pathlib

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from grpc_health.v1 import health_pb2
from grpc_tools import protoc
from tritonclient.grpc import model_config_pb2, service_pb2

REPO = pathlib.Path(__file__).resolve().parents[2]
GRPC_PROTO_DIR = REPO / "crates" / "rampart-grpc" / "proto"
CONFIG_PROTO_DIR = REPO / "crates" / "rampart-model-config" / "proto"

FDP = descriptor_pb2.FieldDescriptorProto

# name -> (our .proto file name, upstream generated module)
SCHEMAS = {
    "grpc_service": ("grpc_service.proto", service_pb2),
    "health": ("health.proto", health_pb2),
}


def _compile(out_dir: pathlib.Path, proto: str, include_imports: bool = False):
    out = out_dir / (proto + ".pb")
    args = [
        "protoc",
        f"-I{GRPC_PROTO_DIR}",
        f"-I{CONFIG_PROTO_DIR}",
        f"--descriptor_set_out={out}",
    ]
    if include_imports:
        args.append("--include_imports")
    args.append(str(GRPC_PROTO_DIR / proto))
    rc = protoc.main(args)
    assert rc == 0, f"protoc failed to compile {GRPC_PROTO_DIR / proto} (rc={rc})"
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("desc")
    result = {}
    for key, (proto, _module) in SCHEMAS.items():
        fds = _compile(out_dir, proto)
        assert [f.name for f in fds.file] == [proto]
        result[key] = fds.file[0]
    return result


def _theirs(key: str) -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto()
    SCHEMAS[key][1].DESCRIPTOR.CopyToProto(fd)
    return fd


def _field_row(msg: descriptor_pb2.DescriptorProto, f: descriptor_pb2.FieldDescriptorProto):
    oneof = msg.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None
    return {
        "number": f.number,
        "label": FDP.Label.Name(f.label),
        "type": FDP.Type.Name(f.type),
        "type_name": f.type_name,
        "extendee": f.extendee,
        "oneof": oneof,
        "proto3_optional": f.proto3_optional,
        "default_value": f.default_value,
        "options": f.options.SerializeToString(deterministic=True),
    }


def _flatten(fd: descriptor_pb2.FileDescriptorProto):
    """Map full name -> description for every message, enum and service method."""
    messages: dict[str, dict] = {}
    enums: dict[str, dict] = {}
    methods: dict[str, dict] = {}

    def enum(prefix: str, e: descriptor_pb2.EnumDescriptorProto):
        enums[f"{prefix}.{e.name}"] = {
            "values": {v.name: v.number for v in e.value},
            "options": e.options.SerializeToString(deterministic=True),
            "reserved": [(r.start, r.end) for r in e.reserved_range] + list(e.reserved_name),
        }

    def message(prefix: str, m: descriptor_pb2.DescriptorProto):
        full = f"{prefix}.{m.name}"
        messages[full] = {
            "map_entry": m.options.map_entry,
            "options": m.options.SerializeToString(deterministic=True),
            "fields": {f.name: _field_row(m, f) for f in m.field},
            "oneofs": sorted(o.name for o in m.oneof_decl),
            "nested": sorted(n.name for n in m.nested_type),
            "enums": sorted(e.name for e in m.enum_type),
            "reserved": [(r.start, r.end) for r in m.reserved_range] + list(m.reserved_name),
            "extension_ranges": [(r.start, r.end) for r in m.extension_range],
            "extensions": len(m.extension),
        }
        for e in m.enum_type:
            enum(full, e)
        for n in m.nested_type:
            message(full, n)

    pkg = "." + fd.package
    for e in fd.enum_type:
        enum(pkg, e)
    for m in fd.message_type:
        message(pkg, m)
    for s in fd.service:
        for me in s.method:
            methods[f"{pkg}.{s.name}/{me.name}"] = {
                "input_type": me.input_type,
                "output_type": me.output_type,
                "client_streaming": me.client_streaming,
                "server_streaming": me.server_streaming,
                "options": me.options.SerializeToString(deterministic=True),
            }
    return messages, enums, methods


def _names(kind: int):
    return [(key, name) for key in SCHEMAS for name in sorted(_flatten(_theirs(key))[kind])]


def _ids(params):
    return [f"{k}:{n}" for k, n in params]


# ---------------------------------------------------------------------------
# File level


def test_grpc_service_file_header(compiled):
    ours, theirs = compiled["grpc_service"], _theirs("grpc_service")
    assert ours.package == theirs.package == "inference"
    assert ours.syntax == theirs.syntax == "proto3"
    assert list(ours.dependency) == list(theirs.dependency) == ["model_config.proto"]
    assert list(ours.public_dependency) == list(theirs.public_dependency) == []
    assert [s.name for s in ours.service] == [s.name for s in theirs.service] == ["GRPCInferenceService"]
    assert len(ours.extension) == len(theirs.extension) == 0
    assert ours.options == theirs.options == descriptor_pb2.FileOptions()


def test_health_file_header(compiled):
    ours, theirs = compiled["health"], _theirs("health")
    assert ours.package == theirs.package == "grpc.health.v1"
    assert ours.syntax == theirs.syntax == "proto3"
    assert list(ours.dependency) == list(theirs.dependency) == []
    assert [s.name for s in ours.service] == [s.name for s in theirs.service] == ["Health"]
    assert len(ours.extension) == len(theirs.extension) == 0
    # Upstream carries only language-specific options; Rampart declares none.
    assert ours.options == descriptor_pb2.FileOptions()


def test_imported_model_config_is_ours(tmp_path):
    """The import resolves to our model_config.proto (same bytes as compiling it alone)."""
    fds = _compile(tmp_path, "grpc_service.proto", include_imports=True)
    assert [f.name for f in fds.file] == ["model_config.proto", "grpc_service.proto"]
    ours = fds.file[0]
    theirs = descriptor_pb2.FileDescriptorProto()
    model_config_pb2.DESCRIPTOR.CopyToProto(theirs)
    assert sorted(m.name for m in ours.message_type) == sorted(m.name for m in theirs.message_type)


# ---------------------------------------------------------------------------
# Sets of names, both directions


@pytest.mark.parametrize("key", sorted(SCHEMAS))
def test_same_sets_of_messages_enums_methods(compiled, key):
    om, oe, os_ = _flatten(compiled[key])
    tm, te, ts = _flatten(_theirs(key))
    assert sorted(set(tm) - set(om)) == [], "messages missing from our proto"
    assert sorted(set(om) - set(tm)) == [], "messages in our proto but not upstream"
    assert sorted(set(te) - set(oe)) == [], "enums missing from our proto"
    assert sorted(set(oe) - set(te)) == [], "enums in our proto but not upstream"
    assert sorted(set(ts) - set(os_)) == [], "RPC methods missing from our proto"
    assert sorted(set(os_) - set(ts)) == [], "RPC methods in our proto but not upstream"


# ---------------------------------------------------------------------------
# Per message / enum / method


_MESSAGES = _names(0)
_ENUMS = _names(1)
_METHODS = _names(2)


@pytest.mark.parametrize("key,name", _MESSAGES, ids=_ids(_MESSAGES))
def test_message_matches(compiled, key, name):
    om, _, _ = _flatten(compiled[key])
    tm, _, _ = _flatten(_theirs(key))
    assert name in om, f"message {name} missing from our proto"
    o, t = om[name], tm[name]
    for k in ("map_entry", "options", "oneofs", "nested", "enums", "reserved",
              "extension_ranges", "extensions"):
        assert o[k] == t[k], f"{name}: {k} differs: ours={o[k]!r} upstream={t[k]!r}"
    missing = sorted(set(t["fields"]) - set(o["fields"]))
    extra = sorted(set(o["fields"]) - set(t["fields"]))
    assert not missing, f"{name}: fields missing from our proto: {missing}"
    assert not extra, f"{name}: fields not in upstream schema: {extra}"
    for fname, trow in t["fields"].items():
        assert o["fields"][fname] == trow, f"{name}.{fname} differs"


@pytest.mark.parametrize("key,name", _ENUMS, ids=_ids(_ENUMS))
def test_enum_matches(compiled, key, name):
    _, oe, _ = _flatten(compiled[key])
    _, te, _ = _flatten(_theirs(key))
    assert name in oe, f"enum {name} missing from our proto"
    assert oe[name] == te[name], f"enum {name} differs"


@pytest.mark.parametrize("key,name", _METHODS, ids=_ids(_METHODS))
def test_method_matches(compiled, key, name):
    _, _, os_ = _flatten(compiled[key])
    _, _, ts = _flatten(_theirs(key))
    assert name in os_, f"RPC {name} missing from our proto"
    assert os_[name] == ts[name], f"RPC {name} differs"


def test_streaming_rpcs_are_exactly_the_expected_ones(compiled):
    """Spelled out so a wrong streaming flag reads clearly in the failure."""
    _, _, gm = _flatten(compiled["grpc_service"])
    _, _, hm = _flatten(compiled["health"])
    streaming = {
        n: (m["client_streaming"], m["server_streaming"])
        for n, m in {**gm, **hm}.items()
        if m["client_streaming"] or m["server_streaming"]
    }
    assert streaming == {
        ".inference.GRPCInferenceService/ModelStreamInfer": (True, True),
        ".grpc.health.v1.Health/Watch": (False, True),
    }


# ---------------------------------------------------------------------------
# Whole-file equality


def _norm(fd: descriptor_pb2.FileDescriptorProto, drop_file_options: bool):
    fd = descriptor_pb2.FileDescriptorProto.FromString(fd.SerializeToString())
    fd.ClearField("name")
    fd.ClearField("source_code_info")
    if drop_file_options:
        fd.ClearField("options")

    def msg(m):
        for f in m.field:
            f.ClearField("json_name")
        m.field.sort(key=lambda f: f.number)
        for n in m.nested_type:
            msg(n)
        m.nested_type.sort(key=lambda n: n.name)
        m.enum_type.sort(key=lambda e: e.name)

    for m in fd.message_type:
        msg(m)
    fd.message_type.sort(key=lambda m: m.name)
    fd.enum_type.sort(key=lambda e: e.name)
    for s in fd.service:
        s.method.sort(key=lambda me: me.name)
    fd.service.sort(key=lambda s: s.name)
    return fd


@pytest.mark.parametrize("key", sorted(SCHEMAS))
def test_file_descriptors_equal_modulo_order(compiled, key):
    drop = key == "health"
    assert _norm(compiled[key], drop) == _norm(_theirs(key), drop)


# ---------------------------------------------------------------------------
# Wire round trip between the two schemas


@pytest.fixture(scope="module")
def our_classes(tmp_path_factory):
    fds = _compile(tmp_path_factory.mktemp("rt"), "grpc_service.proto", include_imports=True)
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)

    def cls(name):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

    return cls


def _samples():
    s = service_pb2
    req = s.ModelInferRequest(model_name="m", model_version="3", id="req-1")
    req.parameters["sequence_id"].int64_param = -7
    req.parameters["sequence_start"].bool_param = True
    req.parameters["priority"].uint64_param = 2**63
    req.parameters["note"].string_param = "x"
    req.parameters["scale"].double_param = 0.5
    i = req.inputs.add(name="IN", datatype="FP32", shape=[1, -1])
    i.parameters["shared_memory_region"].string_param = "r0"
    i.contents.fp32_contents.extend([1.5, -2.0])
    i.contents.bytes_contents.extend([b"\x00a", b""])
    i.contents.uint64_contents.append(2**64 - 1)
    o = req.outputs.add(name="OUT")
    o.parameters["classification"].int64_param = 3
    req.raw_input_contents.extend([b"\x01\x02", b""])

    resp = s.ModelInferResponse(model_name="m", model_version="1", id="req-1")
    resp.parameters["triton_final_response"].bool_param = True
    out = resp.outputs.add(name="OUT", datatype="BYTES", shape=[2])
    out.parameters["p"].int64_param = 1
    resp.raw_output_contents.append(b"\x01\x00\x00\x00a")
    stream = s.ModelStreamInferResponse(error_message="e")
    stream.infer_response.CopyFrom(resp)

    stats = s.ModelStatisticsResponse()
    ms = stats.model_stats.add(name="m", version="1", last_inference=5, inference_count=6,
                               execution_count=7)
    ms.inference_stats.success.count = 1
    ms.inference_stats.cache_miss.ns = 9
    ms.batch_stats.add(batch_size=4).compute_infer.ns = 10
    ms.memory_usage.add(type="CPU", id=-1, byte_size=8)
    ms.response_stats["0"].empty_response.count = 2

    load = s.RepositoryModelLoadRequest(model_name="m")
    load.parameters["config"].string_param = "{}"
    load.parameters["file:1/model.onnx"].bytes_param = b"\x00\xff"

    shm = s.SystemSharedMemoryStatusResponse()
    shm.regions["r"].CopyFrom(
        s.SystemSharedMemoryStatusResponse.RegionStatus(name="r", key="/k", offset=1, byte_size=2))
    cuda = s.CudaSharedMemoryRegisterRequest(name="c", raw_handle=b"\x01", device_id=-1, byte_size=3)

    trace = s.TraceSettingRequest(model_name="m")
    trace.settings["trace_level"].value.extend(["TIMESTAMPS", "TENSORS"])
    log = s.LogSettingsResponse()
    log.settings["log_verbose_level"].uint32_param = 2**32 - 1
    log.settings["log_info"].bool_param = False
    log.settings["log_format"].string_param = "ISO8601"

    cfg = s.ModelConfigResponse()
    cfg.config.name = "m"
    cfg.config.max_batch_size = 8
    cfg.config.input.add(name="IN", data_type=model_config_pb2.TYPE_FP32, dims=[-1])

    meta = s.ModelMetadataResponse(name="m", versions=["1"], platform="onnxruntime_onnx")
    meta.inputs.add(name="IN", datatype="FP32", shape=[-1, 3])
    return [req, resp, stream, stats, load, shm, cuda, trace, log, cfg, meta,
            s.RepositoryIndexResponse(models=[s.RepositoryIndexResponse.ModelIndex(
                name="m", version="1", state="READY", reason="")])]


@pytest.mark.parametrize("sample", _samples(), ids=lambda m: m.DESCRIPTOR.name)
def test_wire_round_trip(our_classes, sample):
    ours_cls = our_classes(sample.DESCRIPTOR.full_name)
    wire = sample.SerializeToString(deterministic=True)
    ours = ours_cls.FromString(wire)
    # Nothing landed in unknown fields and the text form is identical.
    assert text_format.MessageToString(ours) == text_format.MessageToString(sample)
    back = type(sample).FromString(ours.SerializeToString(deterministic=True))
    assert back == sample
