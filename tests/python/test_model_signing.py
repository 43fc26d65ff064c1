"""Signed model repositories (`--model-signature-policy`, `--model-signature-key`): models signed with the reference
tool (`model_signing sign key`, OpenSSF model signing, a key generated here) load under `enforce`; a flipped byte, an
added file, a removed file, a wrong key and a symlink swap each leave the model UNAVAILABLE with a reason naming the
file; a poll-mode reload of a tampered version keeps the verified one serving; an explicit load of an unsigned model
and a config override other than the signed config are refused; a signed `file:` upload loads, an unsigned, altered
or swapped one is refused; `warn` loads but logs; the audit log records each verification with the key.
Certificate chains (`model_signing sign certificate`): a chain to the configured root (`--model-signature-root`)
loads, one to another root is refused, and the audit names the signing certificate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from test_metrics import metrics_args, metrics_server
from conftest import base_args, example_repo, require_binary, run_to_exit, running, selected_engines

ENGINE = selected_engines()[0]
TOOL = str(Path(sys.executable).parent / "model_signing")
SIMPLE_IN = {
    "inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
    ]
}


# A signed ensemble over `simple` (its own directory is verified like any model's).
ENSEMBLE = "signed_ensemble"
ENSEMBLE_CONFIG = """platform: "ensemble"
max_batch_size: 8
input [ { name: "A" data_type: TYPE_INT32 dims: [ 16 ] }, { name: "B" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "SUM" data_type: TYPE_INT32 dims: [ 16 ] } ]
ensemble_scheduling { step [ { model_name: "simple" model_version: -1
  input_map [ { key: "INPUT0" value: "A" }, { key: "INPUT1" value: "B" } ] output_map { key: "OUTPUT0" value: "SUM" } } ] }
"""


def keypair(dest: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = dest / f"{name}.key.pem", dest / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def sign(model_dir: Path, private: Path) -> None:
    r = subprocess.run([TOOL, "sign", "key", "--private_key", str(private), "--signature",
                        str(model_dir / "model.sig"), str(model_dir)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def simple_copy(repo: Path, name: str) -> Path:
    d = repo / name
    shutil.copytree(example_repo() / "simple", d)
    cfg = d / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace('name: "simple"', f'name: "{name}"'))
    return d


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("keys")
    return {"trusted": keypair(d, "trusted"), "other": keypair(d, "other")}


def enforce(public: Path, *extra: str) -> list[str]:
    return ["--model-signature-policy=enforce", f"--model-signature-key={public}", *extra]


@pytest.fixture(scope="module")
def tampered(tmp_path_factory, keys) -> tuple[Path, dict[str, str]]:
    """The example models signed, plus one signed copy of `simple` per tampering; answers the repository and,
    per tampered model, the reason its index entry must give."""
    repo = tmp_path_factory.mktemp("signed") / "models"
    shutil.copytree(example_repo(), repo)
    (repo / ENSEMBLE / "1").mkdir(parents=True)
    (repo / ENSEMBLE / "config.pbtxt").write_text(ENSEMBLE_CONFIG)
    private = keys["trusted"][0]
    for d in sorted(p for p in repo.iterdir() if p.is_dir()):
        sign(d, private)
    outside = tmp_path_factory.mktemp("outside")
    cases = {
        "flipped": "file '1/model.onnx' does not match its signed digest",
        "added": "file '1/notes.txt' is not covered by the signature",
        "removed": "file '1/model.onnx' is signed but missing",
        "wrong_key": "model.sig is not signed by a trusted key",
        "symlink": "'1/model.onnx' is a symbolic link",
        "unsigned": "the model is not signed: cannot read model.sig",
    }
    for name in cases:
        d = simple_copy(repo, name)
        if name != "unsigned":
            sign(d, keys["other"][0] if name == "wrong_key" else private)
        onnx = d / "1" / "model.onnx"
        if name == "flipped":
            data = bytearray(onnx.read_bytes())
            data[-1] ^= 1
            onnx.write_bytes(bytes(data))
        elif name == "added":
            (d / "1" / "notes.txt").write_text("not signed")
        elif name == "removed":
            onnx.unlink()
        elif name == "symlink":
            shutil.copy(onnx, outside / "model.onnx")
            onnx.unlink()
            onnx.symlink_to(outside / "model.onnx")
    return repo, cases


def test_signed_models_load_and_each_tampering_is_refused_naming_the_file(tampered, keys, tmp_path):
    repo, cases = tampered
    audit = tmp_path / "audit.log"
    args = base_args(repo, ENGINE, enforce(keys["trusted"][1], "--exit-on-error=false", "--strict-readiness=false",
                                           f"--audit-log-file={audit}"))
    with running(args, "rampart[signed]") as srv:
        index = {e["name"]: e for e in srv.index()}
        for name in (p.name for p in example_repo().iterdir() if p.is_dir()):
            assert index[name]["state"] == "READY", index[name]
        for name, reason in cases.items():
            assert index[name]["state"] == "UNAVAILABLE", index[name]
            assert f"model '{name}': signature check failed: " in index[name]["reason"], index[name]
            assert reason in index[name]["reason"], index[name]
        r = srv.post("/v2/models/simple/infer", json=SIMPLE_IN)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [x + 1 for x in range(16)]
        assert "model signatures: --model-signature-policy=enforce, 1 trusted key(s): " in srv.output(100_000)
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    signed = {r["model"]: r for r in records if r["event"] == "model_signature"}
    assert signed["simple"]["outcome"] == "verified" and signed["simple"]["target"].startswith("key "), signed
    assert signed["flipped"]["outcome"] == "refused", signed
    fingerprint = signed["simple"]["target"][len("key "):]
    assert fingerprint in srv.output(100_000), "the startup report names the same key"


def test_warn_loads_what_does_not_verify_says_so_and_the_gauge_tells_them_apart(tampered, keys):
    repo, _ = tampered
    args = metrics_args(base_args(repo, ENGINE, [
        "--model-signature-policy=warn", f"--model-signature-key={keys['trusted'][1]}", "--exit-on-error=false",
        "--strict-readiness=false"]))
    with metrics_server(args, "rampart[signed, warn]") as srv:
        index = {e["name"]: e for e in srv.index()}
        assert index["unsigned"]["state"] == "READY" and index["flipped"]["state"] == "READY", index
        out = srv.output(100_000)
        assert "model 'flipped': signature check failed: file '1/model.onnx' does not match its signed digest; " \
               "loading it anyway (--model-signature-policy=warn)" in out
        page = requests.get(srv.metrics_url + "/metrics", timeout=10).text
        gauge = dict(
            (line.split("{")[1].split('"')[1], line.rsplit(" ", 1)[1])
            for line in page.splitlines() if line.startswith("rampart_model_signature_verified{")
        )
        assert gauge["simple"] == "1" and gauge["flipped"] == "0" and gauge["unsigned"] == "0", gauge
        assert gauge[ENSEMBLE] == "1", "an ensemble has its row too"
        assert "# TYPE rampart_model_signature_verified gauge" in page


def test_a_tampered_poll_reload_keeps_the_verified_version_serving(tmp_path, keys):
    repo = tmp_path / "models"
    d = simple_copy(repo, "m")
    sign(d, keys["trusted"][0])
    args = base_args(repo, ENGINE, enforce(keys["trusted"][1], "--model-control-mode=poll", "--repository-poll-secs=1"))
    with running(args, "rampart[signed, poll]") as srv:
        assert srv.post("/v2/models/m/infer", json=SIMPLE_IN).status_code == 200
        mark = len(srv.output(100_000))
        staged = tmp_path / "staged.onnx"
        data = bytearray((d / "1" / "model.onnx").read_bytes())
        data[-1] ^= 1
        staged.write_bytes(bytes(data))
        staged.replace(d / "1" / "model.onnx")
        deadline = time.monotonic() + 20
        while "signature check failed: file '1/model.onnx' does not match" not in srv.output(100_000)[mark:]:
            assert time.monotonic() < deadline, srv.output(100_000)[mark:]
            time.sleep(0.2)
        r = srv.post("/v2/models/m/infer", json=SIMPLE_IN)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [x + 1 for x in range(16)], r.text


def test_an_explicit_load_of_an_unsigned_model_and_a_config_override_are_refused(tmp_path, keys):
    repo = tmp_path / "models"
    simple_copy(repo, "unsigned")
    sign(simple_copy(repo, "signed"), keys["trusted"][0])
    args = base_args(repo, ENGINE, enforce(keys["trusted"][1], "--model-control-mode=explicit"))
    with running(args, "rampart[signed, explicit]") as srv:
        r = srv.post("/v2/repository/models/unsigned/load")
        assert r.status_code == 400, r.text
        assert "signature check failed: the model is not signed" in r.json()["error"], r.text
        assert srv.post("/v2/repository/models/signed/load").status_code == 200
        config = json.dumps({"name": "signed", "platform": "onnxruntime_onnx", "max_batch_size": 4})
        r = srv.post("/v2/repository/models/signed/load", json={"parameters": {"config": config}})
        assert r.status_code == 400, r.text
        assert "signature check failed: the config override is not the signed config.pbtxt (they differ)" \
               in r.json()["error"], r.text
        assert srv.post("/v2/models/signed/infer", json=SIMPLE_IN).status_code == 200, "the signed model serves"


# The signed config.pbtxt of `simple` (examples/models/simple) as a config override: the same ModelConfig.
def simple_config_json(name: str) -> str:
    tensors = lambda prefix: [{"name": f"{prefix}{i}", "data_type": "TYPE_INT32", "dims": [16]} for i in (0, 1)]
    return json.dumps({"name": name, "platform": "onnxruntime_onnx", "max_batch_size": 8,
                       "input": tensors("INPUT"), "output": tensors("OUTPUT")})


def test_a_signed_file_upload_loads_and_an_unsigned_or_altered_one_is_refused(tmp_path, keys):
    import base64
    repo, staging = tmp_path / "models", tmp_path / "staging"
    repo.mkdir()
    d = simple_copy(staging, "uploaded")
    sign(d, keys["trusted"][0])
    files = {f"file:{p.relative_to(d)}": base64.b64encode(p.read_bytes()).decode()
             for p in d.rglob("*") if p.is_file()}
    assert set(files) == {"file:config.pbtxt", "file:model.sig", "file:1/model.onnx"}
    args = base_args(repo, ENGINE, enforce(keys["trusted"][1], "--model-control-mode=explicit",
                                           "--allow-model-file-override=true"))
    load = lambda srv, params: srv.post("/v2/repository/models/uploaded/load", json={"parameters": params})
    with running(args, "rampart[signed, upload]") as srv:
        r = load(srv, {"config": simple_config_json("uploaded"), **files})
        assert r.status_code == 200, r.text
        r = srv.post("/v2/models/uploaded/infer", json=SIMPLE_IN)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [x + 1 for x in range(16)], r.text
        unsigned = {k: v for k, v in files.items() if k != "file:model.sig"}
        r = load(srv, {"config": simple_config_json("uploaded"), **unsigned})
        assert r.status_code == 400 and "the model is not signed" in r.json()["error"], r.text
        altered = json.loads(simple_config_json("uploaded"))
        altered["max_batch_size"] = 4
        r = load(srv, {"config": json.dumps(altered), **files})
        assert r.status_code == 400 and "the config override is not the signed config.pbtxt" in r.json()["error"], r.text
        swapped = {**files, "file:1/model.onnx": base64.b64encode(b"not the signed model").decode()}
        r = load(srv, {"config": simple_config_json("uploaded"), **swapped})
        assert r.status_code == 400 and "file '1/model.onnx' does not match its signed digest" in r.json()["error"], \
            r.text
        r = srv.post("/v2/models/uploaded/infer", json=SIMPLE_IN)
        assert r.status_code == 200, "refused uploads leave the verified one serving: " + r.text


def test_the_policy_needs_a_usable_key(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    for extra, words in [
        (["--model-signature-policy=enforce"], "needs at least one --model-signature-key or --model-signature-root"),
        (["--model-signature-policy=enforce", f"--model-signature-root={bad}"], "holds no PEM block"),
        (["--model-signature-policy=enforce", f"--model-signature-key={bad}"], "holds no PEM block"),
        (["--model-signature-policy=sometimes"], "unexpected value for --model-signature-policy"),
    ]:
        r = run_to_exit(base_args(tmp_path, ENGINE, extra))
        assert r.returncode == 1 and words in r.stderr.decode(), (extra, r.stderr)



def certificate(subject: str, key, issuer: str, issuer_key, ca: bool) -> x509.Certificate:
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def pem_file(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A root, an intermediate and a code-signing leaf (with its key), plus an unrelated root."""
    d = tmp_path_factory.mktemp("pki")
    root_key, inter_key, leaf_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    leaf_private = d / "leaf.key.pem"
    leaf_private.write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return {
        "root": pem_file(d / "root.pem", certificate("Test Root", root_key, "Test Root", root_key, True)),
        "other_root": pem_file(d / "other.pem", certificate("Other Root", other_key, "Other Root", other_key, True)),
        "intermediate": pem_file(d / "inter.pem", certificate("Test CA", inter_key, "Test Root", root_key, True)),
        "leaf": pem_file(d / "leaf.pem", certificate("ml-release@example.com", leaf_key, "Test CA", inter_key, False)),
        "leaf_key": leaf_private,
    }


def test_a_certificate_chain_to_the_configured_root_loads_and_another_root_is_refused(tmp_path, pki):
    repo = tmp_path / "models"
    d = simple_copy(repo, "m")
    r = subprocess.run([TOOL, "sign", "certificate", "--private_key", str(pki["leaf_key"]), "--signing_certificate",
                        str(pki["leaf"]), "--certificate_chain", str(pki["intermediate"]), "--signature",
                        str(d / "model.sig"), str(d)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    audit = tmp_path / "audit.log"
    trusted = ["--model-signature-policy=enforce", f"--model-signature-root={pki['root']}",
               f"--audit-log-file={audit}"]
    with running(base_args(repo, ENGINE, trusted), "rampart[signed, certificate]") as srv:
        r = srv.post("/v2/models/m/infer", json=SIMPLE_IN)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [x + 1 for x in range(16)], r.text
        assert "1 trusted root(s): CN=Test Root" in srv.output(100_000)
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    (verified,) = [r for r in records if r["event"] == "model_signature"]
    assert verified["outcome"] == "verified", verified
    assert verified["target"] == "certificate 'CN=ml-release@example.com' (root 'CN=Test Root')", verified
    other = ["--model-signature-policy=enforce", f"--model-signature-root={pki['other_root']}",
             "--exit-on-error=false", "--strict-readiness=false"]
    with running(base_args(repo, ENGINE, other), "rampart[signed, other root]") as srv:
        (entry,) = srv.index()
        assert entry["state"] == "UNAVAILABLE", entry
        assert "signature check failed: the signing certificate 'CN=ml-release@example.com' does not chain to a " \
               "trusted root" in entry["reason"], entry
    # A key alone does not vouch for a certificate-signed model.
    key_only = ["--model-signature-policy=enforce", f"--model-signature-key={pki['leaf']}", "--exit-on-error=false",
                "--strict-readiness=false"]
    with running(base_args(repo, ENGINE, key_only), "rampart[signed, key only]") as srv:
        (entry,) = srv.index()
        assert "no trusted root is configured (--model-signature-root)" in entry["reason"], entry


def test_rampart_check_verifies_under_the_given_policy_and_names_each_file(tampered, keys):
    repo, cases = tampered
    r = subprocess.run(
        [str(require_binary()), "check", str(repo), "--format=json",
         *base_args(repo, ENGINE, enforce(keys["trusted"][1]))[1:]],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 1, r.stderr
    findings = {f["model"]: f for f in json.loads(r.stdout)["findings"] if f["check"] == "load"}
    assert set(findings) == set(cases), findings
    files = {name: f["file"] for name, f in findings.items()}
    assert files == {
        "flipped": "flipped/1/model.onnx", "added": "added/1/notes.txt", "removed": "removed/1/model.onnx",
        "wrong_key": "wrong_key/model.sig", "symlink": "symlink/1/model.onnx", "unsigned": "unsigned/model.sig",
    }
