#!/usr/bin/env bash
# Starts the three-node cluster of deploy/compose/compose.yaml and waits until every
# node is healthy (its `trove health` check passes). Build the image first with
# scripts/image.sh.
#
#   ./scripts/compose-up.sh            # project name "trove"; COMPOSE_PROJECT_NAME overrides
#
# Then: export TROVE_ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
# and open http://127.0.0.1:7401/ for node 1's status page.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/compose-lib.sh

if ! docker image inspect "${TROVE_IMAGE:-trove:latest}" >/dev/null 2>&1; then
    echo "compose-up.sh: no image ${TROVE_IMAGE:-trove:latest}; run ./scripts/image.sh first" >&2
    exit 1
fi
started=$(date +%s.%N)
compose up -d
wait_healthy node1 node2 node3
elapsed=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "compose-up.sh: 3 nodes healthy after ${elapsed}s"
echo "export TROVE_ENDPOINTS=127.0.0.1:${TROVE_HOST_CLIENT_1:-7001},127.0.0.1:${TROVE_HOST_CLIENT_2:-7002},127.0.0.1:${TROVE_HOST_CLIENT_3:-7003}"
echo "status page: http://127.0.0.1:${TROVE_HOST_ADMIN_1:-7401}/"
