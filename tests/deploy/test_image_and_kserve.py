"""deploy/docker/Dockerfile and deploy/kserve/*.yaml: the properties hadolint, checkov and the schema validator
do not know about (what runs, as whom, with which flags, on which paths)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

import deploy_checks as dc

# ---- Dockerfile ---------------------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in dc.DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            word, _, rest = current.partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def exec_form(stage: list[tuple[str, str]], word: str) -> list[str]:
    (arg,) = [a for w, a in stage if w == word]
    return json.loads(arg)


def test_final_image_is_distroless_without_shell() -> None:
    base = final_stage()[0][1]
    assert base.startswith("gcr.io/distroless/cc-debian12:"), base
    assert "debug" not in base, "the :debug variants contain a busybox shell"
    # The builder is Debian 12 as well: same glibc as the runtime image.
    builders = [a for w, a in instructions() if w == "FROM"][:-1]
    assert builders and all(re.match(r"rust:\d+\.\d+\.\d+-bookworm AS \w+$", b) for b in builders), builders
    # Nothing in the final stage executes a command at build time (there is no shell to run it).
    assert not [a for w, a in final_stage() if w == "RUN"]


def test_runs_as_uid_1000() -> None:
    users = [a for w, a in final_stage() if w == "USER"]
    assert users == ["1000:1000"], users
    text = dc.DOCKERFILE.read_text()
    assert "'rampart:x:1000:1000:" in text and "'rampart:x:1000:'" in text, "passwd/group entries for rampart"


def test_healthcheck_uses_probe_mode() -> None:
    (hc,) = [a for w, a in final_stage() if w == "HEALTHCHECK"]
    options, _, command = hc.partition(" CMD ")
    assert json.loads(command) == ["/usr/local/bin/rampart", "probe", "http://127.0.0.1:8000/v2/health/ready"]
    assert "--timeout=" in options and "--start-period=" in options


def test_probe_mode_exists_in_the_binary() -> None:
    """The HEALTHCHECK (no shell, no curl) runs `rampart probe URL`."""
    sources = "".join(p.read_text() for p in (dc.ROOT / "crates" / "rampart-server" / "src").rglob("*.rs"))
    found = re.search(r'"probe"|\bProbe\b|\bfn probe\b', sources) is not None
    assert found, "deploy/docker/Dockerfile's HEALTHCHECK runs `rampart probe`, which crates/rampart-server lacks"


def test_entrypoint_and_cmd() -> None:
    stage = final_stage()
    entrypoint = exec_form(stage, "ENTRYPOINT")
    cmd = exec_form(stage, "CMD")
    assert entrypoint == ["/usr/local/bin/rampart", "--backend-directory=/opt/rampart/onnxruntime"]
    assert "--model-repository=/models" in cmd
    known = dc.cli_flags()
    for arg in entrypoint[1:] + cmd:
        assert dc.flag_name(arg) in known, arg
    exposed = sorted(int(p) for w, a in stage if w == "EXPOSE" for p in a.split())
    assert exposed == [8000, 8001, 8002]
    env = " ".join(a for w, a in stage if w == "ENV")
    assert "TMPDIR=/tmp" in env


def test_labels() -> None:
    labels = " ".join(a for w, a in final_stage() if w == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key


def test_build_and_onnxruntime_match_the_project() -> None:
    text = dc.DOCKERFILE.read_text()
    assert "cargo build --release --locked -p rampart-server" in text
    setup = (dc.ROOT / "scripts" / "setup.sh").read_text()
    (version,) = re.findall(r"^ORT_VERSION=(\S+)", setup, re.M)
    assert f"ort_version={version};" in text, f"the image must ship ONNX Runtime {version}, as scripts/setup.sh does"
    wheels = re.findall(r"onnxruntime-([\d.]+)-cp\d+-cp\d+-manylinux_\w+?_(x86_64|aarch64)\.whl", text)
    assert sorted(wheels) == [(version, "aarch64"), (version, "x86_64")], wheels
    assert len(re.findall(r"sha256=[0-9a-f]{64}\b", text)) == 2, "each wheel is checked against its sha256"
    assert "sha256sum -c" in text


def test_dockerignore_is_an_allowlist() -> None:
    lines = [l.strip() for l in (dc.ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines[0] == "*"
    admitted = {l[1:].rstrip("/") for l in lines if l.startswith("!")}
    assert {"Cargo.toml", "Cargo.lock", "crates"} <= admitted
    # Every workspace member must be in the build context.
    cargo = (dc.ROOT / "Cargo.toml").read_text()
    members = re.findall(r'"([^"]+)"', re.search(r"members\s*=\s*\[(.*?)\]", cargo, re.S).group(1))
    for member in members:
        assert member.split("/")[0] in admitted, f"workspace member {member} is not in the Docker build context"


# ---- KServe -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kserve() -> dict[str, dict[str, Any]]:
    return dc.kserve_manifests()


def test_serving_runtime(kserve) -> None:
    rt = kserve["ServingRuntime"]
    assert rt["apiVersion"] == "serving.kserve.io/v1alpha1"
    spec = rt["spec"]
    onnx = [f for f in spec["supportedModelFormats"] if f["name"] == "onnx"]
    assert onnx and onnx[0].get("autoSelect") is True
    assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])
    (c,) = spec["containers"]
    assert c["name"] == "kserve-container"
    args = c["args"]
    for expected in ("--model-repository=/mnt/models", "--http-port=8080", "--grpc-port=9000",
                     "--backend-directory=/opt/rampart/onnxruntime"):
        assert expected in args, expected
    known = dc.cli_flags()
    for arg in args:
        assert dc.flag_name(arg) in known, f"{arg}: no such flag in crates/rampart-server/src/cli/"
    metrics_port = [a.split("=", 1)[1] for a in args if a.startswith("--metrics-port=")]
    assert spec["annotations"]["prometheus.kserve.io/port"] == (metrics_port[0] if metrics_port else "8002")
    assert spec["annotations"]["prometheus.kserve.io/path"] == "/metrics"


def test_serving_runtime_hardened(kserve) -> None:
    spec = kserve["ServingRuntime"]["spec"]
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 1000 and sc["runAsGroup"] == 1000
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault"
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][section])
    volumes = {v["name"]: v for v in spec["volumes"]}
    (tmp,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert volumes[tmp["name"]]["emptyDir"]["medium"] == "Memory"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["port"] == 8080


def test_inference_service_example(kserve) -> None:
    isvc = kserve["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["metadata"].get("namespace") not in (None, "default")
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == kserve["ServingRuntime"]["metadata"]["name"]
    formats = {f["name"] for f in kserve["ServingRuntime"]["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert re.match(r"^(pvc|s3|gs|https?)://", model["storageUri"])
    assert predictor.get("automountServiceAccountToken") is False


def test_kserve_pod_is_what_checkov_sees(kserve) -> None:
    pod = dc.kserve_pod()
    assert pod["spec"]["containers"] == kserve["ServingRuntime"]["spec"]["containers"]
    assert pod["metadata"]["namespace"] == kserve["InferenceService"]["metadata"]["namespace"]


def test_kserve_network_policy(kserve) -> None:
    policy = kserve["NetworkPolicy"]
    isvc = kserve["InferenceService"]
    assert policy["metadata"]["namespace"] == isvc["metadata"]["namespace"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    ports = sorted(p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"])
    assert ports == [8002, 8080, 9000]
    assert all(rule.get("from") for rule in policy["spec"]["ingress"]), "every ingress rule names its sources"
    assert {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]} == {53}
