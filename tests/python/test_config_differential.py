"""Differential test: Rampart's config.pbtxt parser against Google's text format.

Oracle: `google.protobuf.text_format.Parse` into tritonclient's generated
`ModelConfig` (the same schema and the same Parse semantics as Triton's C++
`TextFormat::ParseFromString`: duplicate singular fields and two members of one
oneof are errors).

Under test: the `rampart-pbtxt` binary (default `target/release/rampart-pbtxt`,
override with the env var RAMPART_PBTXT; a relative path is taken from the
repo root). Contract:

    rampart-pbtxt <file>
      success: exit 0, stdout = binary protobuf encoding of the ModelConfig
      failure: exit != 0, stderr = error message prefixed with <file> exactly as
               given on the command line, and carrying a line number
               (`<file>:<line>...` or `... line <n> ...`)

Corpus: tests/config_corpus/valid/*.pbtxt must parse to exactly the message the
oracle produces; tests/config_corpus/invalid/*.pbtxt must be rejected. The
corpus itself is checked against the oracle too, so a file in the wrong folder
fails loudly.

A missing binary is a failure, never a skip: build it first
(`cargo build --release -p rampart-model-config --bin rampart-pbtxt` or the
workspace build). Requirements: tests/python/requirements-config.txt
"""

from __future__ import annotations

import difflib
import os
import pathlib
import re
import subprocess

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

REPO = pathlib.Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "config_corpus"
VALID = sorted((CORPUS / "valid").glob("*.pbtxt"))
INVALID = sorted((CORPUS / "invalid").glob("*.pbtxt"))
DEFAULT_TOOL = REPO / "target" / "release" / "rampart-pbtxt"
TIMEOUT_S = 30

# A line number in an error message: "path:12", "path:12:5", "line 12", "Line: 12".
LINE_NUMBER_RE = re.compile(r"(:\d+)|(\bline\b\s*:?\s*\d+)", re.IGNORECASE)


def _tool_path() -> pathlib.Path:
    env = os.environ.get("RAMPART_PBTXT")
    if not env:
        return DEFAULT_TOOL
    path = pathlib.Path(env)
    return path if path.is_absolute() else REPO / path  # relative paths: from the repo root


@pytest.fixture(scope="session")
def tool() -> pathlib.Path:
    path = _tool_path()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"rampart-pbtxt binary not found or not executable at {path}. Build it "
            "(cargo build --release --bin rampart-pbtxt) or point RAMPART_PBTXT at it.",
            pytrace=False,
        )
    return path


def _oracle(path: pathlib.Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_bytes().decode("utf-8"), model_config_pb2.ModelConfig())


def _run(tool: pathlib.Path, path: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(tool), str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def _text(msg: model_config_pb2.ModelConfig) -> str:
    return text_format.MessageToString(msg, as_utf8=True, print_unknown_fields=True)


def _diff(expected: model_config_pb2.ModelConfig, got: model_config_pb2.ModelConfig) -> str:
    return "\n".join(
        difflib.unified_diff(
            _text(expected).splitlines(),
            _text(got).splitlines(),
            fromfile="google.protobuf.text_format (expected)",
            tofile="rampart-pbtxt (got)",
            lineterm="",
        )
    )


def test_corpus_is_large_enough():
    assert len(VALID) >= 25, f"only {len(VALID)} valid corpus files in {CORPUS / 'valid'}"
    assert len(INVALID) >= 12, f"only {len(INVALID)} invalid corpus files in {CORPUS / 'invalid'}"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_corpus_rejected_by_oracle(path):
    """Guard on the corpus itself: every invalid/ file must be rejected by Google's parser."""
    with pytest.raises(text_format.ParseError):
        _oracle(path)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_config_matches_oracle(tool, path):
    expected = _oracle(path)  # a ParseError here means the corpus file is not valid

    proc = _run(tool, path)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0, (
        f"rampart-pbtxt rejected a config that text_format.Parse accepts: {path.name}\n"
        f"exit code {proc.returncode}\nstderr:\n{stderr}"
    )

    try:
        got = model_config_pb2.ModelConfig.FromString(proc.stdout)
    except Exception as exc:  # DecodeError, or anything else from a malformed encoding
        pytest.fail(
            f"stdout of rampart-pbtxt for {path.name} is not a valid ModelConfig encoding "
            f"({len(proc.stdout)} bytes): {exc}\nfirst bytes: {proc.stdout[:64]!r}"
        )

    assert got == expected, (
        f"{path.name}: rampart-pbtxt's ModelConfig differs from text_format.Parse's\n"
        + _diff(expected, got)
    )
    # == treats -0.0 and 0.0 as equal and may ignore unknown fields; re-encode
    # both deterministically to catch those too.
    assert got.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    ), (
        f"{path.name}: messages compare equal but their canonical encodings differ "
        "(signed zero, or unknown fields in rampart-pbtxt's output?)\n" + _diff(expected, got)
    )


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_config_rejected(tool, path):
    try:
        _oracle(path)
        oracle_error = "(text_format.Parse ACCEPTED this file: corpus error)"
    except text_format.ParseError as exc:
        oracle_error = str(exc)

    proc = _run(tool, path)
    stderr = proc.stderr.decode("utf-8", "replace")
    context = (
        f"\nfile: {path.name}\ntext_format.Parse says: {oracle_error}\n"
        f"rampart-pbtxt exit code: {proc.returncode}\nstderr:\n{stderr}"
        f"\nstdout: {len(proc.stdout)} bytes"
    )
    assert proc.returncode == 1, f"rampart-pbtxt exit {proc.returncode} for an invalid config (expected 1)" + context
    assert stderr.strip(), "rampart-pbtxt printed no error message on stderr" + context
    assert str(path) in stderr, (
        "the error message does not name the file given on the command line" + context
    )
    rest = stderr.replace(str(path), "")
    assert LINE_NUMBER_RE.search(rest), "the error message carries no line number" + context


def test_missing_file_is_an_error(tool, tmp_path):
    missing = tmp_path / "does_not_exist" / "config.pbtxt"
    proc = _run(tool, missing)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 1, f"exit {proc.returncode} for a missing file (expected 1); stderr:\n{stderr}"
    assert str(missing) in stderr, f"error does not name the missing file; stderr:\n{stderr}"
