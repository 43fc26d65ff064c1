"""Repository agents (`model_repository_agents`): Triton's checksum agent, built into Rampart (no shared library is
loaded). A matching MD5 (or SHA256) lets the model load; a mismatch, a path out of the model directory, an unknown
algorithm and an unknown agent each refuse the model with Triton's message or one naming what exists. The agent runs
on every load path: startup, explicit load, a config override, a poll-mode reload (which keeps the old version
serving), and `rampart check` reports it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

from conftest import base_args, ort_dir, require_binary, running
from test_model_control import (
    ENGINE,
    POLL,
    WAIT,
    add_model_bytes,
    added,
    atomic_write,
    config_json,
    explicit,
    index_of,
    infer,
    load,
    write_model,
)

MODEL_FILE = "1/model.onnx"


def agents(*parameters: tuple[str, str], name: str = "checksum") -> str:
    params = "\n".join(f'      parameters {{ key: "{k}" value: "{v}" }}' for k, v in parameters)
    return f'model_repository_agents {{\n  agents [ {{\n    name: "{name}"\n{params}\n  }} ]\n}}\n'


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def seeded(repo: Path) -> dict[str, str]:
    """Models with one checksum case each; answers the name → expected reason fragment (empty: READY)."""
    good = add_model_bytes(1)
    cases = {
        "md5_ok": (agents(("MD5:" + MODEL_FILE, md5(good))), ""),
        "sha256_ok": (agents(("SHA256:" + MODEL_FILE, hashlib.sha256(good).hexdigest())), ""),
        "md5_bad": (
            agents(("MD5:" + MODEL_FILE, "0" * 32)),
            f"Mismatched MD5 hash for file {MODEL_FILE}, expect: {'0' * 32}, got: {md5(good)}",
        ),
        "escape": (agents(("MD5:../md5_ok/" + MODEL_FILE, md5(good))), "must stay within the model directory"),
        "algorithm": (agents(("CRC32:" + MODEL_FILE, "0")), "Unsupported checksum algorithm: CRC32"),
        "unknown_agent": (
            agents(name="decrypt"),
            "unknown repository agent 'decrypt': Rampart's agents are built in (checksum)",
        ),
    }
    for name, (extra, _) in cases.items():
        write_model(repo, name, const=1, extra=extra)
    return {name: reason for name, (_, reason) in cases.items()}


def test_each_checksum_case_loads_or_is_refused_with_its_reason(tmp_path):
    repo = tmp_path / "models"
    expected = seeded(repo)
    with running(base_args(repo, ENGINE, ["--exit-on-error=false", "--strict-readiness=false"]), "rampart[agents]") as srv:
        index = {e["name"]: e for e in srv.index() if e["name"] in expected}
        for name, reason in expected.items():
            entry = index[name]
            if not reason:
                assert entry["state"] == "READY", entry
                assert added(infer(srv, name)) == 1
            else:
                assert entry["state"] == "UNAVAILABLE", entry
                assert reason in entry["reason"], entry


def test_repoagent_directory_is_accepted_and_loads_nothing(tmp_path):
    """Triton loads agents as shared libraries from --repoagent-directory; Rampart's are built in."""
    agents_dir = tmp_path / "repoagents" / "checksum"
    agents_dir.mkdir(parents=True)
    (agents_dir / "libtritonrepoagent_checksum.so").write_bytes(b"not a library")
    repo = tmp_path / "models"
    write_model(repo, "m", const=1, extra="")
    args = base_args(repo, ENGINE, [f"--repoagent-directory={tmp_path / 'repoagents'}"])
    with running(args, "rampart[repoagent dir]") as srv:
        assert added(infer(srv, "m")) == 1
        assert "--repoagent-directory has no effect: repository agents are built in (checksum); no shared " \
               "library is ever loaded" in srv.stderr_text()


def test_an_explicit_load_checks_the_files_and_a_config_override_brings_its_own_agents(tmp_path):
    repo = tmp_path / "models"
    good = add_model_bytes(1)
    write_model(repo, "m", const=1, extra=agents(("MD5:" + MODEL_FILE, md5(good))))
    with explicit(repo) as srv:
        assert load(srv, "m").status_code == 200
        (repo / "m" / "1" / "model.onnx").write_bytes(add_model_bytes(2))
        r = load(srv, "m")
        assert r.status_code == 400, r.text
        assert f"Mismatched MD5 hash for file {MODEL_FILE}" in r.json()["error"], r.text
        assert added(infer(srv, "m")) == 1, "the verified version keeps serving"
        # A config override names the agents of the files as they are now.
        override = config_json("m", model_repository_agents={
            "agents": [{"name": "checksum", "parameters": {"MD5:" + MODEL_FILE: md5(add_model_bytes(2))}}]
        })
        assert load(srv, "m", {"config": override}).status_code == 200
        assert added(infer(srv, "m")) == 2
        wrong = config_json("m", model_repository_agents={
            "agents": [{"name": "checksum", "parameters": {"MD5:" + MODEL_FILE: "1" * 32}}]
        })
        r = load(srv, "m", {"config": wrong})
        assert r.status_code == 400 and "Mismatched MD5 hash" in r.json()["error"], r.text


def test_a_tampered_file_under_poll_keeps_the_verified_version_serving(tmp_path):
    repo = tmp_path / "models"
    good = add_model_bytes(1)
    write_model(repo, "m", const=1, extra=agents(("MD5:" + MODEL_FILE, md5(good))))
    with running(base_args(repo, ENGINE, POLL), "rampart[agents, poll]") as srv:
        assert added(infer(srv, "m")) == 1
        mark = len(srv.output())
        atomic_write(repo / "m" / "1" / "model.onnx", add_model_bytes(3), tmp_path / "staging")
        deadline = time.monotonic() + WAIT
        while "Mismatched MD5 hash for file 1/model.onnx" not in srv.output()[mark:]:
            assert time.monotonic() < deadline, f"the poller never refused the tampered file: {srv.output()[mark:]}"
            time.sleep(0.2)
        assert [e["state"] for e in index_of(srv)["m"]] == ["READY"]
        assert added(infer(srv, "m")) == 1, "the verified version keeps serving"


def test_rampart_check_reports_the_mismatch_with_triton_s_message(tmp_path):
    repo = tmp_path / "models"
    expected = seeded(repo)
    r = subprocess.run(
        [str(require_binary()), "check", str(repo), "--format=json", f"--backend-directory={ort_dir()}"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 1, r.stderr
    findings = {f["model"]: f for f in json.loads(r.stdout)["findings"]}
    assert set(findings) == {n for n, reason in expected.items() if reason}, findings
    for name, f in findings.items():
        assert expected[name] in f["message"], f
        assert f["file"] == f"{name}/config.pbtxt", f
