#!/usr/bin/env bash
# Validates deploy/k8s/*.yaml against the Kubernetes API's JSON schemas, strictly
# (unknown fields are errors), with no cluster and no network beyond PyPI: the pinned
# `kubernetes-validate` package ships the schemas. Installs it into target/k8s-venv.
#
#   ./scripts/validate-k8s.sh [KUBERNETES_VERSION]     # default 1.33.0
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${1:-1.33.0}"
VENV=target/k8s-venv
PKG=kubernetes-validate==1.37.0
if [[ ! -x "$VENV/bin/kubernetes-validate" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "$PKG"
fi
"$VENV/bin/kubernetes-validate" --strict -k "$VERSION" deploy/k8s/*.yaml
