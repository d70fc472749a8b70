#!/usr/bin/env bash
# Stops the compose cluster. The data volumes are kept for the next compose-up.sh unless
# --volumes is given.
#
#   ./scripts/compose-down.sh [--volumes]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/compose-lib.sh
compose down "$@"
