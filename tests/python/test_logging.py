"""Logging (docs/protocol.md, "Logging"): the three line formats (`--log-format default|ISO8601|json`), escaping of
control characters in logged text, `--log-file`, the level switches
(`--log-info/--log-warning/--log-error/--log-verbose`), and the logging API over HTTP (`GET/POST /v2/logging`) and
gRPC (`LogSettings`).

Formats (every stderr line that is not the startup model table nor an audit event is a log line):
  default  `LMMDD hh:mm:ss.uuuuuu <pid> <file>:<line>] <message>`   (L = E, W, I or V)
  ISO8601  `YYYY-MM-DDThh:mm:ssZ L <pid> <file>:<line>] <message>`
  json     one object per line: time (`YYYY-MM-DDThh:mm:ss.mmmZ`), level (ERROR/WARN/INFO/DEBUG/TRACE), pid, source
           (`file:line`), message, plus the event's extra fields (strings).

Rampart differences from Triton (deliberate): POST updates are checked as a whole before any field applies (Triton
applies field by field); an invalid `log_format` answers 400 (Triton 503); `json` is an extra format.

The events used to observe the log (each test starts its own servers, explicit model control, `simple` loaded):
  INFO   "successfully loaded '<model>' version 1" (explicit load), "log settings changed: ..." (logging API update);
  WARN   "restricted API refused: ..." with fields category= and path= (the model-config category is restricted,
         so GET /v2/models/<marker>/config is refused and logs the marker);
  ERROR  "failed to load 'mlp': ... backend '<text>' is not supported ..." (explicit load with a config override
         whose backend is client text -- how client text with control characters reaches the log);
  DEBUG  "HTTP connection ended: ..." (a connection that sends garbage), with --log-verbose >= 1.
A "sentinel" is one such event with a unique marker, triggered after an action and awaited, so that checking that
the action logged nothing does not race the output pump.

Servers are started on ports chosen up front (the port line is itself an INFO log line, which is absent when INFO
is off, written to --log-file, or a JSON object)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import stat
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import service_pb2

from conftest import (
    RampartServer,
    ServerStartError,
    base_args,
    example_repo,
    finish_server,
    grpc_base_args,
    grpc_error,
    raw_exchange,
    run_to_exit,
    selected_engines,
)

ENGINE = selected_engines()[0]
SC = grpc.StatusCode
CFG_KEY, CFG_VALUE = "cfg-key", "cfg-secret"
EVENT_WAIT = 10.0  # s: deadline for an expected line to show up

DEFAULTS = {
    "log_file": "",
    "log_info": True,
    "log_warning": True,
    "log_error": True,
    "log_verbose_level": 0,
    "log_format": "default",
}
LOG_FILE_REFUSED = "log file location can not be updated through network protocol"
BAD_FORMAT = "invalid argument for --log_format, got: "

DEFAULT_RE = re.compile(r"^([EWIV])(\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6}) (\d+) (\S+):(\d+)\] (.*)$", re.S)
ISO_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)Z ([EWIV]) (\d+) (\S+):(\d+)\] (.*)$", re.S)
JSON_TIME_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z$")
SOURCE_RE = re.compile(r"^\S+:\d+$")
JSON_LEVELS = {"ERROR": "E", "WARN": "W", "INFO": "I", "DEBUG": "V", "TRACE": "V"}

# A fake line in each text format (pid 1 is never the server's).
FORGED = "I0101 00:00:00.000000 1 forged.rs:1] FORGED-LOG-LINE"
FORGED_ISO = "2099-01-01T00:00:00Z I 1 forged.rs:1] FORGED-LOG-LINE"


# ---------------------------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("logging_repo")
    for name in ("simple", "identity_fp32", "mlp"):
        shutil.copytree(example_repo() / name, dest / name)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_args(repo: Path, extra=(), grpc_on: bool = False) -> tuple[list[str], int, int | None]:
    """Explicit model control with `simple` loaded, model-config restricted (for WARN events), fixed ports."""
    flags = [
        "--model-control-mode=explicit",
        "--load-model=simple",
        f"--http-restricted-api=model-config:{CFG_KEY}={CFG_VALUE}",
        *extra,
    ]
    args = (grpc_base_args if grpc_on else base_args)(repo, ENGINE, flags)
    http_port, grpc_port = free_port(), (free_port() if grpc_on else None)
    args = [f"--http-port={http_port}" if a == "--http-port=0" else f"--grpc-port={grpc_port}" if a == "--grpc-port=0" else a for a in args]
    return args, http_port, grpc_port


@contextmanager
def running(repo: Path, *extra: str, grpc_on: bool = False, label: str = "rampart[logging]"):
    args, http_port, grpc_port = server_args(repo, extra, grpc_on)
    srv = RampartServer(args, label)
    # The ports are known: do not wait for the "Started ..." log lines.
    srv.port = http_port
    srv._port_found.set()
    if grpc_on:
        srv.grpc_port = grpc_port
        srv._grpc_port_found.set()
    try:
        srv.start()
    except ServerStartError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield srv
    finally:
        if srv.alive():
            finish_server(srv)


# ---------------------------------------------------------------------------------------------------------------
# Output parsing
# ---------------------------------------------------------------------------------------------------------------


def complete_lines(text: str) -> list[str]:
    """Lines as a line-oriented reader splitting on '\\n' sees them (the unterminated tail is left out)."""
    return text.split("\n")[:-1]


def kind_of(line: str) -> str:
    """'table' (the startup model table), 'audit' (an audit JSON event) or 'log'."""
    if line.startswith(("+", "|")):
        return "table"
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except ValueError:
            return "log"
        if isinstance(obj, dict) and "event" in obj and "level" not in obj:
            return "audit"
    return "log"


def check_time(when: dt.datetime, line: str) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    assert abs((now - when).total_seconds()) < 600, f"log time {when} is not now (UTC {now}): {line!r}"


def parse(line: str, fmt: str, pid: int) -> dict:
    """One log line of format `fmt` -> {letter, source, message, fields}; AssertionError if it is not one."""
    if fmt == "json":
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"not a JSON log line ({e}): {line!r}")
        assert isinstance(obj, dict), line
        missing = {"time", "level", "pid", "source", "message"} - set(obj)
        assert not missing, f"JSON log line lacks {missing}: {line!r}"
        assert obj["level"] in JSON_LEVELS, f"level {obj['level']!r} not one of {sorted(JSON_LEVELS)}: {line!r}"
        assert obj["pid"] == pid, f"pid {obj['pid']!r} is not the server's {pid}: {line!r}"
        assert isinstance(obj["source"], str) and SOURCE_RE.match(obj["source"]), line
        assert isinstance(obj["message"], str), line
        m = JSON_TIME_RE.match(obj["time"]) if isinstance(obj["time"], str) else None
        assert m, f"time {obj['time']!r} is not YYYY-MM-DDThh:mm:ss.mmmZ: {line!r}"
        y, mo, d, h, mi, s, ms = map(int, m.groups())
        check_time(dt.datetime(y, mo, d, h, mi, s, ms * 1000), line)
        fields = {k: v for k, v in obj.items() if k not in ("time", "level", "pid", "source", "message")}
        for k, v in fields.items():
            assert isinstance(v, str), f"extra field {k}={v!r} is not a string: {line!r}"
        return {"letter": JSON_LEVELS[obj["level"]], "level": obj["level"], "source": obj["source"], "message": obj["message"], "fields": fields}
    if fmt == "default":
        m = DEFAULT_RE.match(line)
        assert m, f"not a default-format log line (LMMDD hh:mm:ss.uuuuuu pid file:line] msg): {line!r}"
        letter, mo, d, h, mi, s, us, p, src, ln, msg = m.groups()
        year = dt.datetime.now(dt.timezone.utc).year
        check_time(dt.datetime(year, int(mo), int(d), int(h), int(mi), int(s), int(us)), line)
    else:
        m = ISO_RE.match(line)
        assert m, f"not an ISO8601-format log line (YYYY-MM-DDThh:mm:ssZ L pid file:line] msg): {line!r}"
        y, mo, d, h, mi, s, letter, p, src, ln, msg = m.groups()
        check_time(dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s)), line)
    assert int(p) == pid, f"pid {p} is not the server's {pid}: {line!r}"
    return {"letter": letter, "source": f"{src}:{ln}", "message": msg, "fields": {}}


def log_lines(text: str) -> list[str]:
    return [line for line in complete_lines(text) if kind_of(line) == "log"]


def check_all(text: str, fmt: str, pid: int) -> list[dict]:
    """Every log line of `text` parses as `fmt`; returns them parsed."""
    return [parse(line, fmt, pid) for line in log_lines(text)]


def wait_line(srv, needle: str, start: int = 0, timeout: float = EVENT_WAIT, text=None) -> str:
    """The first log line (from line index `start` of stderr, or of `text()`) containing `needle`."""
    deadline = time.monotonic() + timeout
    while True:
        source = text() if text else srv.stderr_text()
        for line in complete_lines(source)[start:]:
            if needle in line and kind_of(line) == "log":
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line containing {needle!r} within {timeout}s\n{source[-4000:]}")
        time.sleep(0.05)


def mark(srv) -> int:
    """Index of the next stderr line (for 'what was logged after this point')."""
    return len(complete_lines(srv.stderr_text()))


def since(srv, start: int) -> list[str]:
    return [line for line in complete_lines(srv.stderr_text())[start:] if kind_of(line) == "log"]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------------------------


def warn_event(srv, marker: str | None = None) -> str:
    """A restricted-API refusal (WARN) naming `marker` in its path; returns the marker."""
    marker = marker or unique("warn-")
    r = srv.get(f"/v2/models/{marker}/config")
    assert r.status_code == 403, r.text
    return marker


def error_event(srv, text: str | None = None) -> str:
    """A failed explicit load of `mlp` whose config override names backend `text` (ERROR); returns the text."""
    text = text if text is not None else unique("err-")
    config = json.dumps({"name": "mlp", "backend": text})
    r = srv.post("/v2/repository/models/mlp/load", json={"parameters": {"config": config}})
    assert r.status_code == 400 and "is not supported" in r.json()["error"], r.text
    return text


def info_load(srv, model: str) -> None:
    """An explicit load (INFO "successfully loaded '<model>' version 1")."""
    r = srv.post(f"/v2/repository/models/{model}/load")
    assert r.status_code == 200, r.text


def debug_event(srv) -> None:
    """A connection that sends garbage: hyper refuses it; Rampart logs "HTTP connection ended" at DEBUG."""
    raw = raw_exchange(srv.host, srv.port, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n", timeout=5)
    assert raw.startswith(b"HTTP/1.1 400"), raw[:200]


def post_settings(srv, body) -> dict:
    r = srv.post("/v2/logging", json=body)
    assert r.status_code == 200, f"POST /v2/logging {body!r}: {r.status_code} {r.text}"
    return r.json()


# ---------------------------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["default", "ISO8601", "json"])
def test_every_line_has_the_format(repo, fmt):
    """With each --log-format, every stderr line that is neither the model table nor an audit event is one log line
    of that format, written by the server's pid at the current UTC time, and the four levels appear (E, W, I, V)."""
    with running(repo, f"--log-format={fmt}", "--log-verbose=1", label=f"rampart[logging {fmt}]") as srv:
        assert srv.get("/v2/logging").json()["log_format"] == fmt
        warn = warn_event(srv)
        err = error_event(srv)
        info_load(srv, "identity_fp32")
        debug_event(srv)
        for needle in (warn, err, "successfully loaded 'identity_fp32' version 1", "HTTP connection ended"):
            wait_line(srv, needle)
        pid = srv.proc.pid
    text = srv.stderr_text()
    parsed = check_all(text, fmt, pid)
    letters = {p["letter"] for p in parsed}
    assert {"E", "W", "I", "V"} <= letters, f"levels seen: {letters}\n{text[-3000:]}"
    by_msg = lambda needle: [p for p in parsed if needle in p["message"]]  # noqa: E731
    # The startup port line, the explicit load, the shutdown: INFO.
    assert [p["letter"] for p in by_msg(f"Started HTTPService at 127.0.0.1:{srv.port}")] == ["I"], text[-3000:]
    assert [p["letter"] for p in by_msg("successfully loaded 'identity_fp32' version 1")] == ["I"]
    assert [p["letter"] for p in parsed if p["message"] == "exiting"] == ["I"], text[-3000:]
    # The failed load: ERROR, naming the client's backend text.
    assert [p["letter"] for p in by_msg(f"backend '{err}' is not supported")] == ["E"]
    # The refusal: WARN with its fields (JSON: extra keys; text formats: key=value after the message).
    refusal = [p for p in parsed if "restricted API refused" in p["message"] and (warn in p["message"] or warn in str(p["fields"]))]
    assert len(refusal) == 1 and refusal[0]["letter"] == "W", refusal
    if fmt == "json":
        assert refusal[0]["level"] == "WARN"
        assert refusal[0]["fields"] == {"category": "model-config", "path": f"/v2/models/{warn}/config"}, refusal[0]
    else:
        assert refusal[0]["message"].endswith(f"category=model-config path=/v2/models/{warn}/config"), refusal[0]
    debug = by_msg("HTTP connection ended")
    assert debug and all(p["letter"] == "V" for p in debug), debug
    if fmt == "json":
        assert all(p["level"] == "DEBUG" for p in debug), debug
    # Sources are file:line of Rampart's sources.
    assert all(re.match(r"^[\w.-]+\.rs:\d+$", p["source"]) for p in parsed), [p["source"] for p in parsed]
    # The table and the audit events are still there, unformatted.
    kinds = [kind_of(line) for line in complete_lines(text)]
    assert "table" in kinds and "audit" in kinds, text[-3000:]


def test_invalid_log_format_refused():
    for value in ("xml", "iso8601", "JSON", ""):
        proc = run_to_exit(base_args(example_repo(), ENGINE, [f"--log-format={value}"]))
        err = proc.stderr.decode(errors="replace")
        assert proc.returncode == 1, f"--log-format={value!r} accepted"
        assert "invalid argument for --log-format" in err, err[-2000:]


@pytest.mark.parametrize("flag", ["--log-verbose=-1", "--log-verbose=abc", "--log-info=maybe", "--log-error=2"])
def test_invalid_level_flags_refused(flag):
    proc = run_to_exit(base_args(example_repo(), ENGINE, [flag]))
    assert proc.returncode == 2, f"{flag} accepted\n{proc.stderr.decode(errors='replace')[-2000:]}"


# ---------------------------------------------------------------------------------------------------------------
# Escaping (log injection)
# ---------------------------------------------------------------------------------------------------------------

# Client text with the control characters a log line could be forged or garbled with.
INJECTED = f"evil\n{FORGED}\r\n{FORGED_ISO}\rCR \x1b[2J\x1b[31mESC \x00NUL \x7fDEL \tTAB"


@pytest.mark.parametrize("fmt", ["default", "ISO8601", "json"])
def test_control_characters_escaped(repo, fmt):
    """Client text in a logged error (the backend of a config override) cannot start a line of its own nor carry raw
    control characters: text formats write escapes (newline as \\n, ESC as \\u{1b}); JSON escapes in the string."""
    with running(repo, f"--log-format={fmt}", label=f"rampart[logging escape {fmt}]") as srv:
        error_event(srv, INJECTED)
        line = wait_line(srv, "FORGED-LOG-LINE")
        pid = srv.proc.pid
    text = srv.stderr_text()
    lines = complete_lines(text)
    assert not [x for x in lines if x.startswith((FORGED, FORGED_ISO, "\r", "CR ", "\x1b"))], "a forged line was written"
    check_all(text, fmt, pid)
    for x in lines:
        # JSON escapes what it must (below U+0020); the text formats escape every control character, DEL included.
        bad = [c for c in x if ord(c) < 0x20 or (fmt != "json" and ord(c) == 0x7F)]
        assert not bad, f"raw control characters {bad!r} in output line {x!r}"
    hits = [x for x in log_lines(text) if "FORGED-LOG-LINE" in x]
    assert hits == [line], f"the injected text must stay inside one line: {hits}"
    if fmt == "json":
        assert INJECTED in json.loads(line)["message"], line
    else:
        assert "evil\\n" + FORGED in line and "\\u{1b}[2J" in line, line


@pytest.mark.parametrize("fmt", ["default", "ISO8601", "json"])
def test_unicode_line_breaks_escaped(repo, fmt):
    """U+2028, U+2029 and U+0085 end a line for many line-oriented readers (Python's str.splitlines, log shippers,
    JavaScript): like the audit log, the log must not write them raw, or client text splits one event into two
    lines and the second one is the client's."""
    injected = f"lsep\u2028{FORGED}\u2029{FORGED_ISO}\x85NEL"
    with running(repo, f"--log-format={fmt}", label=f"rampart[logging u2028 {fmt}]") as srv:
        error_event(srv, injected)
        line = wait_line(srv, "lsep")
    text = srv.stderr_text()
    raw = [c for c in ("\u2028", "\u2029", "\x85") if c in text]
    assert not raw, f"raw {[hex(ord(c)) for c in raw]} in the log line {line!r}"
    assert text.splitlines() == text.split("\n")[:-1], "a log event spans several lines for str.splitlines()"
    if fmt == "json":
        assert injected in json.loads(line)["message"], line


# ---------------------------------------------------------------------------------------------------------------
# --log-file
# ---------------------------------------------------------------------------------------------------------------


def test_log_file(repo, tmp_path):
    """Log lines are appended to --log-file (created 0600, an existing file is kept); stderr keeps only the model
    table and the audit events; GET reports the path; a format change applies to the file too."""
    log = tmp_path / "logs" / "rampart.log"
    log.parent.mkdir()
    appended = tmp_path / "existing.log"
    appended.write_text("previous line\n")
    with running(repo, f"--log-file={log}", label="rampart[logging file]") as srv:
        reader = lambda: log.read_text(errors="replace")  # noqa: E731
        assert srv.get("/v2/logging").json() == {**DEFAULTS, "log_file": str(log)}
        warn = warn_event(srv)
        wait_line(srv, warn, text=reader)
        post_settings(srv, {"log_format": "json"})
        wait_line(srv, "log settings changed", text=reader)
        pid = srv.proc.pid
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600, oct(os.stat(log).st_mode)
    lines = complete_lines(log.read_text())
    switch = next(i for i, x in enumerate(lines) if "log settings changed" in x)
    for x in lines[:switch]:
        parse(x, "default", pid)
    for x in lines[switch:]:
        parse(x, "json", pid)
    body = "\n".join(lines)
    assert f"Started HTTPService at 127.0.0.1:{srv.port}" in body and "successfully loaded 'simple'" in body, body[-2000:]
    assert "exiting" in lines[-1], lines[-3:]
    err = srv.stderr_text()
    kinds = {kind_of(x) for x in complete_lines(err)}
    assert kinds == {"table", "audit"}, f"stderr must hold only the model table and audit events:\n{err[-3000:]}"

    # An existing file is appended to, not truncated.
    with running(repo, f"--log-file={appended}", label="rampart[logging append]") as srv:
        wait_line(srv, f"Started HTTPService at 127.0.0.1:{srv.port}", text=lambda: appended.read_text())
    text = appended.read_text()
    assert text.startswith("previous line\n") and "Started HTTPService" in text, text[:500]


@pytest.mark.parametrize("where", ["missing-dir", "directory"])
def test_log_file_unopenable_refused(tmp_path, where):
    path = tmp_path / "no" / "such" / "dir" / "x.log" if where == "missing-dir" else tmp_path
    proc = run_to_exit(base_args(example_repo(), ENGINE, [f"--log-file={path}"]))
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, f"--log-file={path} accepted"
    assert "cannot open --log-file" in err, err[-2000:]
    assert not (tmp_path / "no").exists()


# ---------------------------------------------------------------------------------------------------------------
# Command-line level switches
# ---------------------------------------------------------------------------------------------------------------


def test_command_line_settings_reflected_and_applied(repo):
    """--log-info/--log-warning/--log-error=false, --log-verbose=2, --log-format=ISO8601: GET (HTTP and gRPC) answers
    them, and no E/W/I line is written at all (events of each level are triggered; a DEBUG one is the sentinel)."""
    flags = ("--log-info=false", "--log-warning=false", "--log-error=false", "--log-verbose=2", "--log-format=ISO8601")
    expected = {**DEFAULTS, "log_info": False, "log_warning": False, "log_error": False, "log_verbose_level": 2, "log_format": "ISO8601"}
    with running(repo, *flags, grpc_on=True, label="rampart[logging flags]") as srv:
        assert srv.get("/v2/logging").json() == expected
        with srv.grpc_client() as c:
            got = c.get_log_settings(as_json=True)["settings"]
        assert {k: list(v.values())[0] for k, v in got.items()} == expected, got
        warn_event(srv)
        error_event(srv)
        info_load(srv, "identity_fp32")
        debug_event(srv)
        wait_line(srv, "HTTP connection ended")
        pid = srv.proc.pid
    text = srv.stderr_text()
    parsed = check_all(text, "ISO8601", pid)
    assert {p["letter"] for p in parsed} == {"V"}, f"only verbose lines expected:\n{text[-3000:]}"


# ---------------------------------------------------------------------------------------------------------------
# Level switches through the API take effect at once
# ---------------------------------------------------------------------------------------------------------------


def test_log_info_false_suppresses_info(repo):
    """After log_info=false no INFO line is written: neither the update's own "log settings changed" nor a later
    explicit load (an event already logged once before the switch)."""
    with running(repo, label="rampart[logging info off]") as srv:
        info_load(srv, "identity_fp32")
        wait_line(srv, "successfully loaded 'identity_fp32'")
        start = mark(srv)
        assert post_settings(srv, {"log_info": False})["log_info"] is False
        r = srv.post("/v2/repository/models/identity_fp32/unload")
        assert r.status_code == 200, r.text
        info_load(srv, "identity_fp32")
        sentinel = warn_event(srv)
        wait_line(srv, sentinel, start)
        infos = [x for x in since(srv, start) if x.startswith("I")]
        assert not infos, f"INFO lines after log_info=false: {infos}"


def test_log_info_true_again_restores_info(repo):
    """Started with --log-info=false (the startup load of `simple` was not logged), log_info=true over the API makes
    INFO lines appear again: the update's "log settings changed" and a later explicit load."""
    with running(repo, "--log-info=false", label="rampart[logging info on again]") as srv:
        assert "successfully loaded" not in srv.stderr_text()
        start = mark(srv)
        assert post_settings(srv, {"log_info": True})["log_info"] is True
        wait_line(srv, "log settings changed", start)
        info_load(srv, "identity_fp32")
        wait_line(srv, "successfully loaded 'identity_fp32' version 1", start)


def test_log_warning_false_suppresses_warn(repo):
    with running(repo, label="rampart[logging warn off]") as srv:
        wait_line(srv, warn_event(srv))
        start = mark(srv)
        assert post_settings(srv, {"log_warning": False})["log_warning"] is False
        warn_event(srv)
        wait_line(srv, error_event(srv), start)  # sentinel
        warns = [x for x in since(srv, start) if x.startswith("W")]
        assert not warns, f"WARN lines after log_warning=false: {warns}"


def test_log_error_false_suppresses_error(repo):
    with running(repo, label="rampart[logging error off]") as srv:
        wait_line(srv, error_event(srv))
        start = mark(srv)
        assert post_settings(srv, {"log_error": False})["log_error"] is False
        err = error_event(srv)
        wait_line(srv, warn_event(srv), start)  # sentinel
        errors = [x for x in since(srv, start) if x.startswith("E") or err in x]
        assert not errors, f"ERROR lines after log_error=false: {errors}"


def test_log_verbose_level_switch(repo):
    """The DEBUG event ("HTTP connection ended", verbose level 1) is not logged at level 0 and is after
    log_verbose_level=1; back at 0 it is not any more."""
    with running(repo, label="rampart[logging verbose]") as srv:
        start = mark(srv)
        debug_event(srv)
        wait_line(srv, warn_event(srv), start)
        assert not [x for x in since(srv, start) if "HTTP connection ended" in x or x.startswith("V")]
        assert post_settings(srv, {"log_verbose_level": 1})["log_verbose_level"] == 1
        start = mark(srv)
        debug_event(srv)
        line = wait_line(srv, "HTTP connection ended", start, timeout=5)
        assert line.startswith("V"), line
        assert post_settings(srv, {"log_verbose_level": 0})["log_verbose_level"] == 0
        start = mark(srv)
        debug_event(srv)
        wait_line(srv, warn_event(srv), start)
        assert not [x for x in since(srv, start) if x.startswith("V")]


def test_libraries_never_log_below_info(repo):
    """At --log-verbose=2 hyper / h2 / tonic stay at INFO: HTTP and gRPC requests that succeed log no verbose
    line per request (a library at DEBUG/TRACE writes several per request or frame)."""
    with running(repo, "--log-verbose=2", grpc_on=True, label="rampart[logging libraries]") as srv:
        start = mark(srv)
        with srv.grpc_client() as c:
            for _ in range(10):
                assert c.is_model_ready("simple")
        for _ in range(10):
            assert srv.get("/v2/models/simple/ready").status_code == 200
        wait_line(srv, warn_event(srv), start)
        verbose = [x for x in since(srv, start) if x.startswith("V")]
        assert len(verbose) < 5, f"{len(verbose)} verbose lines for 20 requests: {verbose[:10]}"


def test_log_format_switch(repo):
    """log_format changes the format of the very next line (the update's own INFO line) and of every later one."""
    with running(repo, label="rampart[logging format switch]") as srv:
        pid = srv.proc.pid
        for fmt in ("ISO8601", "json", "default"):
            start = mark(srv)
            assert post_settings(srv, {"log_format": fmt})["log_format"] == fmt
            changed = wait_line(srv, "log settings changed", start)
            marker = warn_event(srv)
            wait_line(srv, marker, start)
            lines = since(srv, start)
            assert lines[0] == changed, lines[:3]
            for x in lines:
                parse(x, fmt, pid)
            assert srv.get("/v2/logging").json()["log_format"] == fmt


# ---------------------------------------------------------------------------------------------------------------
# The logging API over HTTP
# ---------------------------------------------------------------------------------------------------------------

# Invalid bodies: (field(s), status, substring of the error). Each is sent next to a valid change (log_error=false,
# log_format=ISO8601), which must not apply either: the update is checked as a whole.
HTTP_BAD = [
    ({"log_info": "true"}, 400, "log_info"),
    ({"log_warning": 1}, 400, "log_warning"),
    ({"log_info": None}, 400, "log_info"),
    ({"log_verbose_level": -1}, 400, "log_verbose_level"),
    ({"log_verbose_level": 1.5}, 400, "log_verbose_level"),
    ({"log_verbose_level": "1"}, 400, "log_verbose_level"),
    ({"log_verbose_level": True}, 400, "log_verbose_level"),
    ({"log_format": "xml"}, 400, BAD_FORMAT + "xml"),
    ({"log_format": "iso8601"}, 400, BAD_FORMAT + "iso8601"),
    ({"log_format": 1}, 400, "log_format"),
    ({"no_such_setting": True}, 400, "unexpected log setting"),
    ({"log_file": "LOGFILE"}, 501, LOG_FILE_REFUSED),
    ({"log_file": ""}, 501, LOG_FILE_REFUSED),
]


def test_http_get_and_update(repo):
    with running(repo, label="rampart[logging http api]") as srv:
        r = srv.get("/v2/logging")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), (r.status_code, r.headers)
        assert r.json() == DEFAULTS
        current = dict(DEFAULTS)
        for change in (
            {"log_info": False},
            {"log_warning": False},
            {"log_error": False},
            {"log_verbose_level": 3},
            {"log_format": "ISO8601"},
            {"log_format": "json"},
            {"log_info": True, "log_warning": True, "log_error": True, "log_verbose_level": 0, "log_format": "default"},
            {},
            {"log_file": None, "log_verbose_level": 1},  # a null log_file is ignored
        ):
            current.update({k: v for k, v in change.items() if k != "log_file"})
            assert post_settings(srv, change) == current, change
            assert srv.get("/v2/logging").json() == current, change


@pytest.mark.parametrize("bad,status,message", HTTP_BAD, ids=[f"{k}={v!r}" for b, _, _ in HTTP_BAD for k, v in b.items()])
def test_http_invalid_update_changes_nothing(repo, tmp_path, bad, status, message):
    target = tmp_path / "via-api.log"
    bad = {k: (str(target) if v == "LOGFILE" else v) for k, v in bad.items()}
    good = {k: v for k, v in {"log_error": False, "log_format": "ISO8601", "log_info": False}.items() if k not in bad}
    with running(repo, label="rampart[logging http invalid]") as srv:
        for body in (bad, {**good, **bad}, {**bad, **good}):
            r = srv.post("/v2/logging", json=body)
            assert r.status_code == status, f"{body}: {r.status_code} {r.text}"
            assert list(r.json()) == ["error"] and message in r.json()["error"], f"{body}: {r.text}"
            assert srv.get("/v2/logging").json() == DEFAULTS, f"{body} changed the settings"
    assert not target.exists(), f"{target} was created"


@pytest.mark.parametrize("body", [b"[]", b'"log_info"', b"1", b"null", b"{bad json"])
def test_http_body_not_an_object(repo, body):
    with running(repo, label="rampart[logging http body]") as srv:
        r = srv.post("/v2/logging", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (r.status_code, r.text)
        assert list(r.json()) == ["error"], r.text
        assert srv.get("/v2/logging").json() == DEFAULTS


def test_http_wrong_method(repo):
    with running(repo, label="rampart[logging http method]") as srv:
        for method in ("PUT", "DELETE", "PATCH"):
            r = srv.request(method, "/v2/logging", json={"log_info": False})
            assert (r.status_code, r.json()) == (405, {"error": "Method Not Allowed"}), (method, r.status_code, r.text)
        assert srv.get("/v2/logging").json() == DEFAULTS


# ---------------------------------------------------------------------------------------------------------------
# The logging API over gRPC
# ---------------------------------------------------------------------------------------------------------------


def settings_of(response) -> dict:
    """LogSettingsResponse -> {key: value} (value of whichever oneof field is set)."""
    out = {}
    for k, v in response.settings.items():
        which = v.WhichOneof("parameter_choice")
        out[k] = getattr(v, which) if which else None
    return out


def grpc_request(**fields):
    """LogSettingsRequest; each value is (oneof field, value), or None for a SettingValue with nothing set."""
    req = service_pb2.LogSettingsRequest()
    for key, kv in fields.items():
        if kv is None:
            req.settings[key].SetInParent()
        else:
            setattr(req.settings[key], kv[0], kv[1])
    return req


def test_grpc_get_and_update(repo):
    with running(repo, grpc_on=True, label="rampart[logging grpc api]") as srv:
        stub = srv.grpc_stub()
        response = stub.LogSettings(service_pb2.LogSettingsRequest())
        assert settings_of(response) == DEFAULTS
        kinds = {k: v.WhichOneof("parameter_choice") for k, v in response.settings.items()}
        assert kinds == {
            "log_file": "string_param",
            "log_info": "bool_param",
            "log_warning": "bool_param",
            "log_error": "bool_param",
            "log_verbose_level": "uint32_param",
            "log_format": "string_param",
        }, kinds
        with srv.grpc_client() as c:
            got = settings_of(c.update_log_settings({"log_info": False, "log_verbose_level": 2, "log_format": "json"}))
        expected = {**DEFAULTS, "log_info": False, "log_verbose_level": 2, "log_format": "json"}
        assert got == expected
        # One state for both protocols.
        assert srv.get("/v2/logging").json() == expected
        post_settings(srv, {"log_warning": False})
        assert settings_of(stub.LogSettings(service_pb2.LogSettingsRequest())) == {**expected, "log_warning": False}
        got = settings_of(stub.LogSettings(grpc_request(log_warning=("bool_param", True), log_error=("bool_param", False), log_format=("string_param", "ISO8601"))))
        assert got == {**expected, "log_error": False, "log_format": "ISO8601"}


GRPC_BAD = [
    ({"log_info": ("string_param", "true")}, SC.INVALID_ARGUMENT, "log_info"),
    ({"log_warning": ("uint32_param", 0)}, SC.INVALID_ARGUMENT, "log_warning"),
    ({"log_error": None}, SC.INVALID_ARGUMENT, "log_error"),
    ({"log_verbose_level": ("bool_param", True)}, SC.INVALID_ARGUMENT, "log_verbose_level"),
    ({"log_verbose_level": ("string_param", "1")}, SC.INVALID_ARGUMENT, "log_verbose_level"),
    ({"log_format": ("string_param", "xml")}, SC.INVALID_ARGUMENT, BAD_FORMAT + "xml"),
    ({"log_format": ("bool_param", True)}, SC.INVALID_ARGUMENT, "log_format"),
    ({"no_such_setting": ("bool_param", True)}, SC.INVALID_ARGUMENT, "unexpected log setting"),
    ({"log_file": ("string_param", "LOGFILE")}, SC.UNIMPLEMENTED, LOG_FILE_REFUSED),
    ({"log_file": ("string_param", "")}, SC.UNIMPLEMENTED, LOG_FILE_REFUSED),
    ({"log_file": ("bool_param", False)}, SC.UNIMPLEMENTED, LOG_FILE_REFUSED),
    ({"log_file": None}, SC.UNIMPLEMENTED, LOG_FILE_REFUSED),
]


def test_grpc_invalid_update_changes_nothing(repo, tmp_path):
    target = tmp_path / "via-grpc.log"
    with running(repo, grpc_on=True, label="rampart[logging grpc invalid]") as srv:
        stub = srv.grpc_stub()
        for bad, code, message in GRPC_BAD:
            bad = {k: ((v[0], str(target)) if v and v[1] == "LOGFILE" else v) for k, v in bad.items()}
            good = {"log_error": ("bool_param", False), "log_format": ("string_param", "ISO8601"), "log_verbose_level": ("uint32_param", 2)}
            good = {k: v for k, v in good.items() if k not in bad}
            for fields in (bad, {**good, **bad}, {**bad, **good}):
                grpc_error(lambda: stub.LogSettings(grpc_request(**fields)), code, message)
                assert settings_of(stub.LogSettings(service_pb2.LogSettingsRequest())) == DEFAULTS, f"{fields} changed the settings"
        with srv.grpc_client() as c:
            grpc_error(lambda: c.update_log_settings({"log_file": str(target), "log_info": False}), SC.UNIMPLEMENTED, exact=LOG_FILE_REFUSED)
        assert srv.get("/v2/logging").json() == DEFAULTS
    assert not target.exists(), f"{target} was created"
