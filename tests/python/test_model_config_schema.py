"""Schema oracle: our ModelConfig .proto must match Triton's, field for field.

Compiles crates/rampart-model-config/proto/model_config.proto with protoc
(bundled in grpcio-tools) into a FileDescriptorSet and compares every message,
field, oneof, map entry and enum against the descriptor that tritonclient's
generated `model_config_pb2` carries. Names, numbers, labels, types, type
names, oneof membership and enum values must all be equal, in both directions
(nothing missing, nothing extra). Declaration order is not compared; it does
not affect the text format or the wire format.

Requirements: tests/python/requirements-config.txt
"""

from __future__ import annotations

import pathlib

import pytest
from google.protobuf import descriptor_pb2
from grpc_tools import protoc
from tritonclient.grpc import model_config_pb2

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "crates" / "rampart-model-config" / "proto"
PROTO_FILE = "model_config.proto"


def _ours(tmp_path_factory) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path_factory.mktemp("desc") / "model_config.pb"
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTO_DIR}",
            f"--descriptor_set_out={out}",
            str(PROTO_DIR / PROTO_FILE),
        ]
    )
    assert rc == 0, f"protoc failed to compile {PROTO_DIR / PROTO_FILE} (rc={rc})"
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    assert len(fds.file) == 1, [f.name for f in fds.file]
    return fds.file[0]


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    return _ours(tmp_path_factory)


@pytest.fixture(scope="module")
def theirs():
    fd = descriptor_pb2.FileDescriptorProto()
    model_config_pb2.DESCRIPTOR.CopyToProto(fd)
    return fd


def _field_row(msg: descriptor_pb2.DescriptorProto, f: descriptor_pb2.FieldDescriptorProto):
    oneof = msg.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None
    return {
        "number": f.number,
        "label": descriptor_pb2.FieldDescriptorProto.Label.Name(f.label),
        "type": descriptor_pb2.FieldDescriptorProto.Type.Name(f.type),
        "type_name": f.type_name,
        "oneof": oneof,
        "proto3_optional": f.proto3_optional,
        "default_value": f.default_value,
        "packed": f.options.packed if f.options.HasField("packed") else None,
    }


def _flatten(fd: descriptor_pb2.FileDescriptorProto):
    """Map full name -> description for every message and enum in the file."""
    messages: dict[str, dict] = {}
    enums: dict[str, dict] = {}

    def enum(prefix: str, e: descriptor_pb2.EnumDescriptorProto):
        enums[f"{prefix}.{e.name}"] = {
            "values": {v.name: v.number for v in e.value},
            "allow_alias": e.options.allow_alias,
            "reserved": [(r.start, r.end) for r in e.reserved_range] + list(e.reserved_name),
        }

    def message(prefix: str, m: descriptor_pb2.DescriptorProto):
        full = f"{prefix}.{m.name}"
        messages[full] = {
            "map_entry": m.options.map_entry,
            "fields": {f.name: _field_row(m, f) for f in m.field},
            "oneofs": sorted(o.name for o in m.oneof_decl),
            "nested": sorted(n.name for n in m.nested_type),
            "enums": sorted(e.name for e in m.enum_type),
            "reserved": [(r.start, r.end) for r in m.reserved_range] + list(m.reserved_name),
            "extension_ranges": [(r.start, r.end) for r in m.extension_range],
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
    return messages, enums


def test_file_header(ours, theirs):
    assert ours.package == theirs.package == "inference"
    assert ours.syntax == theirs.syntax == "proto3"
    assert list(ours.dependency) == list(theirs.dependency) == []
    assert len(ours.service) == len(theirs.service) == 0
    assert len(ours.extension) == len(theirs.extension) == 0


def test_same_set_of_messages_and_enums(ours, theirs):
    om, oe = _flatten(ours)
    tm, te = _flatten(theirs)
    assert sorted(set(tm) - set(om)) == [], "messages missing from our proto"
    assert sorted(set(om) - set(tm)) == [], "messages in our proto but not Triton's"
    assert sorted(set(te) - set(oe)) == [], "enums missing from our proto"
    assert sorted(set(oe) - set(te)) == [], "enums in our proto but not Triton's"


def _message_names():
    fd = descriptor_pb2.FileDescriptorProto()
    model_config_pb2.DESCRIPTOR.CopyToProto(fd)
    return sorted(_flatten(fd)[0])


def _enum_names():
    fd = descriptor_pb2.FileDescriptorProto()
    model_config_pb2.DESCRIPTOR.CopyToProto(fd)
    return sorted(_flatten(fd)[1])


@pytest.mark.parametrize("name", _message_names())
def test_message_matches(ours, theirs, name):
    om, _ = _flatten(ours)
    tm, _ = _flatten(theirs)
    assert name in om, f"message {name} missing from our proto"
    o, t = om[name], tm[name]
    for key in ("map_entry", "oneofs", "nested", "enums", "reserved", "extension_ranges"):
        assert o[key] == t[key], f"{name}: {key} differs: ours={o[key]!r} triton={t[key]!r}"
    missing = sorted(set(t["fields"]) - set(o["fields"]))
    extra = sorted(set(o["fields"]) - set(t["fields"]))
    assert not missing, f"{name}: fields missing from our proto: {missing}"
    assert not extra, f"{name}: fields not in Triton's schema: {extra}"
    for fname, trow in t["fields"].items():
        assert o["fields"][fname] == trow, f"{name}.{fname} differs"


@pytest.mark.parametrize("name", _enum_names())
def test_enum_matches(ours, theirs, name):
    _, oe = _flatten(ours)
    _, te = _flatten(theirs)
    assert name in oe, f"enum {name} missing from our proto"
    assert oe[name] == te[name], f"enum {name} differs"


def test_file_descriptors_equal_modulo_order(ours, theirs):
    """Belt and braces: the whole descriptors are equal once sorted and stripped
    of things that legitimately differ (file name, json_name, source info)."""

    def norm(fd: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
        fd = descriptor_pb2.FileDescriptorProto.FromString(fd.SerializeToString())
        fd.ClearField("name")
        fd.ClearField("source_code_info")

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
        return fd

    assert norm(ours) == norm(theirs)
