"""Offline helpers for the deployment checks (scripts/check-deploy.sh, tests/deploy/).

Renders the Helm chart with helm-python-sdk (Helm's Go SDK through ctypes: no helm binary, no cluster),
turns the KServe ServingRuntime into the Pod that KServe would create from it (so the core-schema validator
and checkov, which know nothing of KServe's CRDs, can check its container), and reads the server's flag
names from crates/rampart-server/src/cli/*.rs.

    python scripts/lib/deploy_checks.py lint                 # helm lint --strict, every scenario
    python scripts/lib/deploy_checks.py render OUTDIR        # OUTDIR/<scenario>/<template>.yaml
    python scripts/lib/deploy_checks.py kserve-pods OUTDIR   # OUTDIR/<name>-pod.yaml + the NetworkPolicy
"""

from __future__ import annotations

import copy
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "rampart"
KSERVE = ROOT / "deploy" / "kserve"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
CLI_DIR = ROOT / "crates" / "rampart-server" / "src" / "cli"

RELEASE = "rampart"
NAMESPACE = "inference"  # anything but `default`: the chart must put it on every object itself
# Scenario name -> values file (None: the chart's defaults).
SCENARIOS: dict[str, Path | None] = {"default": None, "full": CHART / "ci" / "full-values.yaml"}


def load_values(path: Path | None) -> dict[str, Any] | None:
    return None if path is None else yaml.safe_load(path.read_text())


def _render_all(values: dict[str, Any] | None, namespace: str, chart: Path) -> dict[str, str]:
    import helm_python as helm

    return helm.Chart.load(str(chart)).render(values, name=RELEASE, namespace=namespace, is_install=True)


def render(values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE, chart: Path = CHART) -> dict[str, str]:
    """Template path -> rendered text, without NOTES.txt and templates that rendered to nothing."""
    out = _render_all(values, namespace, chart)
    return {k: v for k, v in out.items() if not k.endswith("NOTES.txt") and v.strip()}


def notes(values: dict[str, Any] | None = None, *, chart: Path = CHART) -> str:
    out = _render_all(values, NAMESPACE, chart)
    return next(v for k, v in out.items() if k.endswith("NOTES.txt"))


def documents(values: dict[str, Any] | None = None, *, chart: Path = CHART) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for text in render(values, chart=chart).values():
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def lint(values: dict[str, Any] | None) -> list[str]:
    """helm lint --strict; returns the warnings and errors (info messages such as 'icon is recommended' pass)."""
    import helm_python as helm

    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    problems = [f"{m['path']}: {m['error']}" for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    return problems + list(report.get("errors") or [])


def kserve_manifests() -> dict[str, dict[str, Any]]:
    """kind -> document of deploy/kserve/*.yaml."""
    out = {}
    for path in sorted(KSERVE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[doc["kind"]] = doc
    return out


def kserve_pod() -> dict[str, Any]:
    """The predictor Pod KServe builds for the example InferenceService: the runtime's containers and volumes,
    with the InferenceService's pod-level fields, in the InferenceService's namespace."""
    m = kserve_manifests()
    runtime, isvc = m["ServingRuntime"], m["InferenceService"]
    spec = runtime["spec"]
    predictor = isvc["spec"]["predictor"]
    pod_spec: dict[str, Any] = {
        "containers": copy.deepcopy(spec["containers"]),
        "volumes": copy.deepcopy(spec.get("volumes", [])),
    }
    for key in ("automountServiceAccountToken", "securityContext", "serviceAccountName"):
        if key in predictor:
            pod_spec[key] = copy.deepcopy(predictor[key])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{isvc['metadata']['name']}-predictor",
            "namespace": isvc["metadata"]["namespace"],
            # The runtime's pod annotations, plus its own (checkov skip annotations with their reasons).
            "annotations": {**spec.get("annotations", {}), **runtime["metadata"].get("annotations", {})},
            "labels": {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]},
        },
        "spec": pod_spec,
    }


def cli_flags() -> set[str]:
    """Long flag names (without --) that crates/rampart-server/src/cli/*.rs declare, aliases included."""
    text = "\n".join(path.read_text() for path in sorted(CLI_DIR.glob("*.rs")))
    flags: set[str] = set()
    # `#[arg(...)]` (possibly after doc comments) followed by `pub field: Type`.
    for attr, field in re.findall(r"#\[arg\(([^\]]*)\)\]\s*(?:///[^\n]*\n\s*)*pub\s+(\w+)\s*:", text):
        if not re.search(r"\blong\b", attr):
            continue
        explicit = re.search(r'\blong\s*=\s*"([^"]+)"', attr)
        flags.add(explicit.group(1) if explicit else field.replace("_", "-"))
        flags.update(re.findall(r'(?:visible_)?alias\s*=\s*"([^"]+)"', attr))
    return flags


def flag_name(arg: str) -> str | None:
    """'--http-port=8080' -> 'http-port'; None for anything that is not a long flag."""
    if not arg.startswith("--"):
        return None
    return arg[2:].split("=", 1)[0]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "lint":
        failed = False
        for name, values_file in SCENARIOS.items():
            problems = lint(load_values(values_file))
            print(f"helm lint --strict [{name}]: {'OK' if not problems else 'FAILED'}")
            for p in problems:
                print(f"  {p}")
            failed |= bool(problems)
        return 1 if failed else 0
    if len(argv) == 2 and argv[0] == "render":
        out = Path(argv[1])
        for name, values_file in SCENARIOS.items():
            rendered = render(load_values(values_file))
            for template, text in rendered.items():
                _write(out / name / os.path.basename(template), text)
            print(f"rendered [{name}]: {', '.join(sorted(os.path.basename(t) for t in rendered))}")
        return 0
    if len(argv) == 2 and argv[0] == "kserve-pods":
        # The Pod, next to the example's NetworkPolicy (checkov matches one against the other).
        pod = kserve_pod()
        path = Path(argv[1]) / f"{pod['metadata']['name']}-pod.yaml"
        _write(path, yaml.safe_dump(pod, sort_keys=False))
        policy = kserve_manifests()["NetworkPolicy"]
        _write(Path(argv[1]) / "networkpolicy.yaml", yaml.safe_dump(policy, sort_keys=False))
        print(f"kserve: {path} (+ networkpolicy.yaml)")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
