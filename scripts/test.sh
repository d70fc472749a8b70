#!/usr/bin/env bash
# Runs Trove's whole test suite: the one test command of the README and of CI.
#
#   ./scripts/test.sh [extra cargo test args...]   e.g. ./scripts/test.sh -- --test-threads=1
#
# 1. Creates (or updates) .venv with the pinned Python gRPC tools that the Python
#    client test (tests/it/python.rs) uses to generate stubs from proto/.
# 2. Builds the `trove` binary that the multi-process integration tests start.
# 3. Runs `cargo test --workspace`, passing extra arguments through.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"

# Pinned so that the generated stubs and the test's expectations do not drift.
PY_PACKAGES=(grpcio-tools==1.85.1 grpcio-health-checking==1.85.1 grpcio-reflection==1.85.1)

if [[ ! -x .venv/bin/python3 ]]; then
    echo "test.sh: creating .venv for the Python client test" >&2
    python3 -m venv .venv
fi
if ! .venv/bin/python3 - "${PY_PACKAGES[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
PY
    echo "test.sh: installing ${PY_PACKAGES[*]} into .venv" >&2
    .venv/bin/python3 -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
export TROVE_PYTHON="$ROOT/.venv/bin/python3"

cargo build --bin trove
exec cargo test --workspace "$@"
