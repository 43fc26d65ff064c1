"""Deployment checks (run by scripts/check-deploy.sh in its own venv, .venv-deploy): the Helm chart, the KServe
runtime and the Dockerfile, all offline. The helpers live in scripts/lib/deploy_checks.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "lib"))
