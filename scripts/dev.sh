#!/usr/bin/env bash
# Builds Trove (release) and starts a local 3-node cluster on 127.0.0.1 with `trove dev`.
# Extra arguments go to `trove dev` (e.g. --nodes 5 --base-port 8000 --data-dir /tmp/td).
# Ctrl-C stops the cluster; running it again reuses ./trove-data.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --bin trove -- dev "$@"
