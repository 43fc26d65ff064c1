"""The Helm chart (deploy/helm/rampart), rendered offline with helm-python-sdk.

Each property is checked by a `check_*` function. The tests run them on the real chart (they must pass) and,
in test_checks_catch_mutations, on copies of the chart with one hardening removed (they must fail), so none of
them can pass vacuously.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

import deploy_checks as dc

FULL = dc.load_values(dc.SCENARIOS["full"])
ACCESS_DIR = "/var/run/secrets/rampart/access"
TLS_DIR = "/var/run/secrets/rampart/tls"
CREDENTIAL_FLAGS = ("http-restricted-api", "grpc-restricted-protocol", "model-access")
# Environment variable names that carry credentials: they may only come from a Secret (secretKeyRef).
SECRET_ENV = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|SESSION|SAS|CONNECTION_STRING", re.I)


# ---- helpers ------------------------------------------------------------------------------------------------


def merge(base: dict[str, Any] | None, extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base or {})
    for k, v in extra.items():
        out[k] = merge(out.get(k), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return only(docs, "Deployment")["spec"]["template"]["spec"]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = pod_spec(docs)["containers"]
    assert len(containers) == 1
    return containers[0]


def args_of(docs: list[dict[str, Any]]) -> list[str]:
    return [str(a) for a in container(docs)["args"]]


def flag_values(args: list[str], flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith(f"--{flag}=")]


def mounts_by_path(docs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """mountPath -> (volumeMount, volume)."""
    volumes = {v["name"]: v for v in pod_spec(docs).get("volumes", [])}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in container(docs).get("volumeMounts", [])}


# ---- checks -------------------------------------------------------------------------------------------------


def check_hardened(docs: list[dict[str, Any]]) -> None:
    pod = pod_spec(docs)
    psc = pod["securityContext"]
    assert psc.get("runAsNonRoot") is True, psc
    assert (psc.get("runAsUser"), psc.get("runAsGroup"), psc.get("fsGroup")) == (1000, 1000, 1000), psc
    assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", psc
    assert pod.get("automountServiceAccountToken") is False
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), key
    assert not any("hostPath" in v for v in pod.get("volumes", [])), "hostPath volume"

    c = container(docs)
    csc = c["securityContext"]
    assert csc.get("readOnlyRootFilesystem") is True, csc
    assert csc.get("allowPrivilegeEscalation") is False, csc
    assert csc.get("privileged") is not True, csc
    assert csc.get("runAsNonRoot") is True and csc.get("runAsUser") == 1000, csc
    assert csc.get("capabilities", {}).get("drop") == ["ALL"], csc
    assert not csc.get("capabilities", {}).get("add"), csc
    assert csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", csc
    assert c.get("imagePullPolicy") == "Always", c.get("imagePullPolicy")

    for section in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            assert c.get("resources", {}).get(section, {}).get(resource), f"resources.{section}.{resource} missing"

    # /tmp: memory-backed emptyDir with a size limit (the root filesystem is read-only).
    mount, volume = mounts_by_path(docs)["/tmp"]
    assert volume.get("emptyDir", {}).get("medium") == "Memory", volume
    assert volume["emptyDir"].get("sizeLimit"), volume
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    assert env.get("TMPDIR") == "/tmp", env

    # A dedicated ServiceAccount without a token.
    sa = only(docs, "ServiceAccount")
    assert pod.get("serviceAccountName") == sa["metadata"]["name"] != "default"
    assert sa.get("automountServiceAccountToken") is False

    # Every object carries the release namespace itself, and it is not `default`.
    for d in docs:
        assert d["metadata"].get("namespace") == dc.NAMESPACE != "default", (d["kind"], d["metadata"])


def check_probes(docs: list[dict[str, Any]], scheme: str = "HTTP") -> None:
    c = container(docs)
    http_port = [p for p in c["ports"] if p["name"] == "http"]
    assert http_port and f"--http-port={http_port[0]['containerPort']}" in args_of(docs)
    expected = {
        "livenessProbe": "/v2/health/live",
        "readinessProbe": "/v2/health/ready",
        "startupProbe": "/v2/health/live",
    }
    for probe, path in expected.items():
        get = c.get(probe, {}).get("httpGet", {})
        assert get.get("path") == path, (probe, get)
        assert get.get("port") == "http", (probe, get)
        assert get.get("scheme", "HTTP") == scheme, (probe, get)


def check_metrics_annotations(docs: list[dict[str, Any]], enabled: bool) -> None:
    annotations = only(docs, "Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    service_ports = {p["name"] for p in only(docs, "Service")["spec"]["ports"]}
    if enabled:
        assert annotations.get("prometheus.io/scrape") == "true", annotations
        assert annotations.get("prometheus.io/port") == str(ports["metrics"]) == "8002", annotations
        assert annotations.get("prometheus.io/path") == "/metrics", annotations
        assert "metrics" in service_ports
        assert "--allow-metrics=true" in args_of(docs)
    else:
        assert not any(k.startswith("prometheus.io/") for k in annotations), annotations
        assert "metrics" not in ports and "metrics" not in service_ports
        assert "--allow-metrics=false" in args_of(docs)


def check_secrets_as_files(docs: list[dict[str, Any]]) -> None:
    """Credentials and keys reach the server as files from read-only Secret volumes, never as values in the
    pod spec: no Secret object rendered, no credential in an argument, credential env only via secretKeyRef."""
    assert "Secret" not in kinds(docs), "the chart must not carry secret values"
    args = args_of(docs)
    mounts = mounts_by_path(docs)

    def secret_file(path: str) -> None:
        directory = path.rsplit("/", 1)[0]
        assert directory in mounts, f"{path}: {directory} is not mounted"
        mount, volume = mounts[directory]
        assert mount.get("readOnly") is True, mount
        assert "secret" in volume and volume["secret"].get("secretName"), volume
        mode = volume["secret"].get("defaultMode")
        assert mode is not None and mode & 0o007 == 0, f"{volume['name']}: files readable by others ({mode})"

    credentials = 0
    for flag in CREDENTIAL_FLAGS:
        for value in flag_values(args, flag):
            _, _, credential = value.partition(":")
            key, _, secret = credential.partition("=")
            if key == "client-cert":
                continue
            assert secret.startswith(f"@{ACCESS_DIR}/"), f"--{flag}: credential not read from a Secret file: {value}"
            secret_file(secret[1:])
            credentials += 1
    for flag in ("http-server-cert", "http-server-key", "grpc-server-cert", "grpc-server-key", "grpc-root-cert"):
        for path in flag_values(args, flag):
            assert path.startswith(f"{TLS_DIR}/"), (flag, path)
            secret_file(path)
    assert not any("env:" in a for a in args), "credentials come from files, not environment variables"
    for e in container(docs).get("env", []):
        if SECRET_ENV.search(e["name"]):
            assert "value" not in e, f"env {e['name']} has a literal value"
            assert "secretKeyRef" in e.get("valueFrom", {}), e
    if credentials == 0 and any(flag_values(args, f) for f in CREDENTIAL_FLAGS):
        pytest.fail("no credential flags checked")


def check_network_policy(docs: list[dict[str, Any]], values: dict[str, Any] | None) -> None:
    v = merge(yaml.safe_load((dc.CHART / "values.yaml").read_text()), values or {})
    np = only(docs, "NetworkPolicy")
    spec = np["spec"]
    selector = only(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert spec["podSelector"]["matchLabels"] == selector
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    ports = v["ports"]
    rules = {tuple(sorted(p["port"] for p in r["ports"])): r for r in spec["ingress"]}
    serving = rules[tuple(sorted([ports["http"], ports["grpc"]]))]
    assert serving.get("from", []) == v["networkPolicy"]["servingFrom"]
    metrics = rules[(ports["metrics"],)]
    assert metrics.get("from") and metrics["from"] == v["networkPolicy"]["metricsFrom"], metrics
    assert len(spec["ingress"]) == 2, "only the serving ports and the metrics port are admitted"
    egress = spec.get("egress", [])
    dns = [r for r in egress if {p["port"] for p in r.get("ports", [])} == {53}]
    assert dns and "to" not in dns[0], "DNS egress"
    assert egress[1:] == v["networkPolicy"]["egress"]["extra"], "egress beyond DNS only as configured"


# ---- the chart as shipped ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return dc.documents()


@pytest.fixture(scope="module")
def full_docs() -> list[dict[str, Any]]:
    return dc.documents(FULL)


def test_helm_lint_strict() -> None:
    for values in (None, FULL):
        assert dc.lint(values) == []


def test_default_objects(default_docs) -> None:
    assert kinds(default_docs) == ["Deployment", "NetworkPolicy", "Service", "ServiceAccount"]


def test_full_objects(full_docs) -> None:
    assert kinds(full_docs) == [
        "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceAccount",
    ]


@pytest.mark.parametrize("scenario", ["default", "full"])
def test_hardened_pod(scenario, default_docs, full_docs) -> None:
    check_hardened(default_docs if scenario == "default" else full_docs)


def test_probes(default_docs, full_docs) -> None:
    check_probes(default_docs, "HTTP")
    check_probes(full_docs, "HTTPS")  # tls.http.enabled: kubelet probes over TLS (it does not verify the cert)


def test_metrics_annotations(default_docs) -> None:
    check_metrics_annotations(default_docs, enabled=True)
    check_metrics_annotations(dc.documents({"metrics": {"enabled": False}}), enabled=False)


def test_secrets_mounted_as_files(full_docs) -> None:
    check_secrets_as_files(full_docs)
    args = args_of(full_docs)
    assert len(flag_values(args, "http-restricted-api")) == 2
    assert len(flag_values(args, "grpc-restricted-protocol")) == 2
    assert flag_values(args, "model-access") == [f"tenant-a-*:tenant-key=@{ACCESS_DIR}/tenant-a"]
    assert flag_values(args, "grpc-root-cert") == [f"{TLS_DIR}/ca.crt"]
    assert "--grpc-use-ssl-mutual=true" in args and "--http-use-ssl=true" in args


@pytest.mark.parametrize(
    "values",
    [
        {"access": {"secretName": "a", "http": [{"categories": ["inference"], "header": "k", "secretKey": "k", "value": "hunter2"}]}},
        {"modelRepository": {"secretEnv": [{"name": "AWS_SECRET_ACCESS_KEY", "secretName": "s", "key": "k", "value": "hunter2"}]}},
        {"tls": {"secretName": "t", "key": "hunter2"}},
        {"server": {"extraArgs": ["--http-restricted-api=inference:infer-key=hunter2"]}},
        {"server": {"extraArgs": ["--model-access=*:tenant-key=hunter2"]}},
        {"server": {"extraArgs": ["--grpc-restricted-protocol", "inference:infer-key=hunter2"]}},
    ],
    ids=["access-value", "secret-env-value", "tls-key", "extra-arg-http", "extra-arg-model", "extra-arg-split"],
)
def test_credential_values_are_refused(values) -> None:
    """There is no way to hand the chart a credential value: each attempt fails to render."""
    try:
        rendered = dc.render(values)
    except Exception:
        return
    leaked = "hunter2" in "".join(rendered.values())
    pytest.fail(f"rendered without error{' and the value is in the manifests' if leaked else ''}")


def test_image_digest_overrides_tag(default_docs, full_docs) -> None:
    assert container(default_docs)["image"] == "rampart:0.1.0"  # appVersion
    assert container(full_docs)["image"] == "registry.example.com/rampart@" + FULL["image"]["digest"]
    with pytest.raises(Exception, match="digest"):
        dc.render({"image": {"digest": "latest"}})


def test_network_policy(default_docs, full_docs) -> None:
    check_network_policy(default_docs, None)
    check_network_policy(full_docs, FULL)
    assert "NetworkPolicy" not in kinds(dc.documents({"networkPolicy": {"enabled": False}}))


def test_hpa_only_when_enabled(default_docs, full_docs) -> None:
    assert "HorizontalPodAutoscaler" not in kinds(default_docs)
    assert only(default_docs, "Deployment")["spec"]["replicas"] == 1
    hpa = only(full_docs, "HorizontalPodAutoscaler")
    deployment = only(full_docs, "Deployment")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["averageUtilization"] == 60


def test_pdb_only_when_enabled(default_docs, full_docs) -> None:
    assert "PodDisruptionBudget" not in kinds(default_docs)
    pdb = only(full_docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == only(full_docs, "Deployment")["spec"]["selector"]["matchLabels"]


def test_model_repository_sources(default_docs, full_docs) -> None:
    mount, volume = mounts_by_path(default_docs)["/models"]
    assert mount.get("readOnly") is True and volume["persistentVolumeClaim"]["readOnly"] is True
    assert "--model-repository=/models" in args_of(default_docs)
    assert "/models" not in mounts_by_path(full_docs)
    assert f"--model-repository={FULL['modelRepository']['url']}" in args_of(full_docs)


def test_graceful_shutdown(default_docs, full_docs) -> None:
    for docs in (default_docs, full_docs):
        kill_after = pod_spec(docs)["terminationGracePeriodSeconds"]
        (timeout,) = flag_values(args_of(docs), "exit-timeout-secs")
        (grace,) = flag_values(args_of(docs), "shutdown-grace-secs")
        pause = (container(docs).get("lifecycle") or {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert kill_after > int(timeout) + int(grace) + pause, "SIGKILL must come after grace, pause and drain"
    assert int(flag_values(args_of(default_docs), "shutdown-grace-secs")[0]) > 0, "readiness first by default"
    assert "lifecycle" not in container(default_docs), "no preStop unless asked for"
    (pre_stop,) = [container(full_docs)["lifecycle"]["preStop"]]
    assert pre_stop == {"sleep": {"seconds": FULL["server"]["preStopSleepSecs"]}}, "a sleep action, no shell"


@pytest.mark.parametrize("scenario", ["default", "full"])
def test_flags_exist_in_cli(scenario, default_docs, full_docs) -> None:
    known = dc.cli_flags()
    for arg in args_of(default_docs if scenario == "default" else full_docs):
        name = dc.flag_name(arg)
        assert name in known, f"{arg}: no such flag in crates/rampart-server/src/cli/"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"tls": {"secretName": "t", "http": {"enabled": True, "mutual": True}}}, "client certificate"),
        ({"access": {"secretName": "a", "http": [{"categories": ["health"], "header": "k", "secretKey": "k"}]}}, "health"),
        ({"access": {"http": [{"categories": ["inference"], "header": "k", "secretKey": "k"}]}}, "secretName"),
        ({"tls": {"grpc": {"enabled": True}}}, "secretName"),
        ({"modelRepository": {"url": "s3://b/p"}}, "not both"),
        ({"modelRepository": {"persistentVolumeClaim": ""}}, "persistentVolumeClaim"),
        ({"networkPolicy": {"metricsFrom": []}}, "metricsFrom"),
        ({"server": {"modelControlMode": "remote"}}, "modelControlMode"),
    ],
)
def test_unworkable_values_are_refused(values, message) -> None:
    with pytest.raises(Exception, match=message):
        dc.render(values)


# ---- the checks can fail -------------------------------------------------------------------------------------

MUTATIONS = [
    # (file, text to replace, replacement, check that must now fail)
    ("templates/deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "hardened"),
    ("templates/deployment.yaml", 'drop: ["ALL"]', 'drop: ["NET_RAW"]', "hardened"),
    ("templates/deployment.yaml", "automountServiceAccountToken: false", "automountServiceAccountToken: true", "hardened"),
    ("templates/deployment.yaml", "medium: Memory", "medium: \"\"", "hardened"),
    ("templates/deployment.yaml", "path: /v2/health/ready", "path: /v2/health/live", "probes"),
    ("templates/deployment.yaml", "prometheus.io/path: /metrics", "prometheus.io/path: /", "metrics"),
    ("templates/deployment.yaml", "defaultMode: 0440", "defaultMode: 0444", "secrets"),
    ("templates/_helpers.tpl", '"--http-restricted-api=%s:%s=@%s/%s"', '"--http-restricted-api=%s:%s=%s/%s"', "secrets"),
    ("templates/networkpolicy.yaml", "{{- with .Values.networkPolicy.servingFrom }}", "{{- with list }}", "networkpolicy"),
    ("templates/serviceaccount.yaml", "namespace: {{ .Release.Namespace }}", "namespace: default", "hardened"),
]


@pytest.mark.parametrize("path, old, new, check", MUTATIONS, ids=[f"{m[3]}:{m[1][:30]}" for m in MUTATIONS])
def test_checks_catch_mutations(tmp_path: Path, path, old, new, check) -> None:
    chart = tmp_path / "rampart"
    shutil.copytree(dc.CHART, chart)
    target = chart / path
    text = target.read_text()
    assert old in text, f"mutation target not found in {path}: {old}"
    target.write_text(text.replace(old, new))
    docs = dc.documents(FULL, chart=chart)
    checks = {
        "hardened": lambda: check_hardened(docs),
        "probes": lambda: check_probes(docs, "HTTPS"),
        "metrics": lambda: check_metrics_annotations(docs, enabled=True),
        "secrets": lambda: check_secrets_as_files(docs),
        "networkpolicy": lambda: check_network_policy(docs, FULL),
    }
    with pytest.raises(AssertionError):
        checks[check]()
