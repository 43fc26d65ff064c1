"""Command line, startup and shutdown contract of the `rampart` binary (docs/protocol.md, "Model control",
"Readiness, startup and shutdown", "Command line"): flag syntax, refused not-yet-built features, --exit-on-error /
--strict-readiness, --id, --model-store, signals, the startup model status table. These tests start their own
short-lived servers (default engine)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket

import pytest
import requests

from conftest import (
    PORT_RE,
    RampartServer,
    ServerStartError,
    base_args,
    example_repo,
    ort_dir,
    run_to_exit,
    running,
    start_server,
    wait_models_settled,
)

EXAMPLES = ("simple", "identity_fp32", "identity_bytes", "mlp")
BROKEN = ("broken_config", "broken_model", "name_mismatch")


def stderr_of(proc) -> str:
    return proc.stderr.decode("utf-8", errors="replace")


def base_without(flag_prefix: str, repo=None) -> list[str]:
    return [a for a in base_args(repo or example_repo()) if not a.startswith(flag_prefix)]


@pytest.fixture(scope="module")
def mixed_repo_cli(bad_repo, tmp_path_factory):
    repo = tmp_path_factory.mktemp("cli_mixed_repo")
    for child in bad_repo.iterdir():
        if child.is_dir():
            shutil.copytree(child, repo / child.name)
    if not (repo / "simple").exists():
        shutil.copytree(example_repo() / "simple", repo / "simple")
    return repo


def _table_rows(text: str, model: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(rf"(^|[\s|]){re.escape(model)}([\s|]|$)", line)]


# --------------------------------------------------------------------------------------- startup output


def test_started_line_and_model_status_table_on_stderr():
    with running(base_args(example_repo()), "rampart[cli table]") as srv:
        err = srv.stderr_text()
        m = PORT_RE.search(err)
        assert m, f"no 'Started HTTPService at <addr>:<port>' line on stderr\n{srv.output()}"
        assert int(m.group(2)) == srv.port and m.group(1).startswith("127.0.0.1")
        for model in EXAMPLES:
            rows = [r for r in _table_rows(err, model) if "READY" in r and re.search(r"(^|[\s|])1([\s|]|$)", r)]
            assert rows, f"status table has no '{model} | 1 | READY' row on stderr\n{err[-3000:]}"


# --------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_with_exit_code_zero(sig):
    srv = start_server(base_args(example_repo()), f"rampart[cli {sig.name}]")
    port = srv.port
    assert requests.get(srv.base + "/v2/health/live", timeout=10).status_code == 200
    rc = srv.stop(sig)
    assert rc == 0, f"exit code {rc} after {sig.name}\n{srv.output()}"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# --------------------------------------------------------------------------------------- flag parsing


@pytest.mark.parametrize("extra", [["--no-such-flag=1"], ["--no-such-flag"]])
def test_unknown_flag_fails_with_usage(extra):
    proc = run_to_exit(base_args(example_repo()) + extra)
    assert proc.returncode == 2
    err = stderr_of(proc)
    assert "usage" in err.lower(), f"usage text expected on stderr:\n{err[-2000:]}"


def test_positional_argument_fails():
    proc = run_to_exit(base_args(example_repo()) + ["positional-argument"])
    assert proc.returncode == 2, stderr_of(proc)[-2000:]


def test_missing_model_repository_fails():
    proc = run_to_exit(base_without("--model-repository"))
    assert proc.returncode == 1, stderr_of(proc)[-2000:]


@pytest.mark.parametrize("listener", ["grpc", "http"])
def test_tls_without_certificate_fails(listener):
    proc = run_to_exit(base_args(example_repo()) + [f"--{listener}-use-ssl=true"])
    assert proc.returncode == 1
    assert f"--{listener}-use-ssl needs --{listener}-server-cert" in stderr_of(proc), stderr_of(proc)[-2000:]


@pytest.mark.parametrize(
    "flags",
    [["--trace-config=level=TENSORS"], ["--allow-sagemaker=true", "--sagemaker-safe-port-range=8000-9000"]],
)
def test_unbuilt_features_are_refused(flags):
    base = base_args(example_repo())
    names = tuple(f.split("=")[0] for f in flags)
    proc = run_to_exit([a for a in base if not a.startswith(names)] + flags)
    assert proc.returncode == 1
    assert "not supported yet" in stderr_of(proc), stderr_of(proc)[-2000:]


@pytest.mark.parametrize(
    "flag,code",
    [
        # Values the command-line parser refuses: a usage error (2).
        ("--strict-readiness=maybe", 2),
        ("--exit-on-error=yes-please", 2),
        ("--http-port=http", 2),
        # A well-formed value refused when the flags are checked: a startup error (1).
        ("--max-queued-requests=0", 1),
    ],
)
def test_invalid_flag_values_fail(flag, code):
    proc = run_to_exit(base_args(example_repo()) + [flag])
    assert proc.returncode == code, stderr_of(proc)[-2000:]


def test_http_max_input_size_must_be_positive():
    proc = run_to_exit(base_args(example_repo()) + ["--http-max-input-size=0"])
    assert proc.returncode == 1, stderr_of(proc)[-2000:]


def test_space_separated_flag_values():
    args = [
        "--model-repository",
        str(example_repo()),
        "--http-address",
        "127.0.0.1",
        "--http-port",
        "0",
        "--allow-grpc",
        "false",
        "--allow-metrics",
        "false",
        "--backend-directory",
        str(ort_dir()),
        "--id",
        "spaced",
    ]
    with running(args, "rampart[cli spaced]") as srv:
        assert srv.get("/v2").json()["name"] == "spaced"
        assert srv.get("/v2/models/simple/ready").status_code == 200


def test_boolean_flags_accept_1_and_0():
    args = [a for a in base_args(example_repo()) if not a.startswith(("--allow-grpc", "--allow-metrics"))]
    args += ["--allow-grpc=0", "--allow-metrics=0", "--exit-on-error=1", "--strict-readiness=1"]
    with running(args, "rampart[cli 1/0]") as srv:
        assert srv.get("/v2/health/ready").status_code == 200


def test_model_store_alias():
    args = [f"--model-store={example_repo()}" if a.startswith("--model-repository") else a for a in base_args(example_repo())]
    with running(args, "rampart[cli model-store]") as srv:
        assert srv.get("/v2/models/simple").json()["name"] == "simple"


@pytest.mark.parametrize("value", ["foo", "my-server_1"])
def test_id_sets_server_name(value):
    with running(base_args(example_repo(), None, [f"--id={value}"]), "rampart[cli id]") as srv:
        md = srv.get("/v2").json()
        assert md["name"] == value
        with srv.client() as c:
            assert c.get_server_metadata()["name"] == value


# --------------------------------------------------------------------------------------- broken models


@pytest.mark.parametrize("flag", [[], ["--exit-on-error=true"]], ids=["default", "explicit"])
def test_exit_on_error_with_broken_model_fails(mixed_repo_cli, flag):
    proc = run_to_exit(base_args(mixed_repo_cli, None, flag))
    assert proc.returncode == 1
    err = stderr_of(proc)
    assert any(m in err for m in BROKEN), f"stderr should name the model that failed:\n{err[-3000:]}"


def test_exit_on_error_false_lenient_readiness(mixed_repo_cli):
    args = base_args(mixed_repo_cli, None, ["--exit-on-error=false", "--strict-readiness=false"])
    with running(args, "rampart[cli lenient]", wait="live") as srv:
        wait_models_settled(srv)
        r = srv.get("/v2/health/ready")
        assert r.status_code == 200, "--strict-readiness=false: ready although models are UNAVAILABLE"
        idx = {e["name"]: e for e in srv.index()}
        for m in BROKEN:
            assert idx[m]["state"] == "UNAVAILABLE" and idx[m].get("reason"), idx.get(m)
        assert idx["simple"]["state"] == "READY"
        err = srv.stderr_text()
        for m in BROKEN:
            assert any("UNAVAILABLE" in row for row in _table_rows(err, m)), f"no UNAVAILABLE row for {m}\n{err[-3000:]}"


def test_exit_on_error_false_strict_readiness(mixed_repo_cli):
    args = base_args(mixed_repo_cli, None, ["--exit-on-error=false", "--strict-readiness=true"])
    with running(args, "rampart[cli strict]", wait="live") as srv:
        wait_models_settled(srv)
        assert srv.get("/v2/health/ready").status_code == 400
        assert srv.get("/v2/health/live").status_code == 200
        assert srv.get("/v2/models/simple/ready").status_code == 200


def test_start_failure_is_reported_not_hung(mixed_repo_cli):
    """Sanity for the harness: a server that exits during startup is reported with its output."""
    srv = RampartServer(base_args(mixed_repo_cli), "rampart[cli expected failure]")
    with pytest.raises(ServerStartError):
        srv.start(wait="ready", timeout=60)
    assert not srv.alive()


# --------------------------------------------------------------------------------------- least privilege


def test_refuses_onnxruntime_from_a_directory_others_can_write(tmp_path):
    libdir = tmp_path / "ortlib"
    shutil.copytree(ort_dir(), libdir, symlinks=True)
    os.chmod(libdir, 0o777)
    args = [a for a in base_args(example_repo()) if not a.startswith("--backend-directory")]
    proc = run_to_exit(args + [f"--backend-directory={libdir}"])
    assert proc.returncode == 1
    err = stderr_of(proc)
    assert "refusing to load ONNX Runtime" in err and "writable by other users" in err, err[-2000:]
    os.chmod(libdir, 0o755)
    srv = start_server(args + [f"--backend-directory={libdir}"], "rampart[private ort dir]")
    srv.stop()


def test_warns_about_root_and_writable_repository(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(example_repo() / "simple", repo / "simple")
    os.chmod(repo, 0o777)
    srv = start_server(base_args(repo), "rampart[writable repo]")
    try:
        log = srv.stderr_text()
        assert "writable by other users" in log and str(repo) in log, log[-3000:]
        assert ("running as root" in log) == (os.geteuid() == 0), log[-3000:]
    finally:
        srv.stop()
