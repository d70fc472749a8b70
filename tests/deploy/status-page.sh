#!/usr/bin/env bash
# Loads a node's status page in headless Chromium (Debian package `chromium`) against a
# running cluster, checks that the node table shows three nodes and exactly one leader,
# and saves a screenshot.
#
#   tests/deploy/status-page.sh http://127.0.0.1:7401/ target/status-page.png
set -euo pipefail
URL="$1"
SHOT="$2"
BROWSER="$(command -v chromium || command -v chromium-browser || true)"
[[ -n "$BROWSER" ]] || { echo "status-page.sh: chromium is not installed" >&2; exit 1; }
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1000
       --virtual-time-budget=8000)
dom="$("$BROWSER" "${flags[@]}" --dump-dom "$URL" 2>/dev/null)"
nodes=$(grep -o '<tr class="node"[^>]*>' <<<"$dom" | wc -l)
leaders=$(grep -o '<tr class="node"[^>]*data-role="leader"' <<<"$dom" | wc -l)
if (( nodes != 3 || leaders != 1 )); then
    echo "status-page.sh: expected 3 nodes and 1 leader in the table, saw $nodes and $leaders" >&2
    grep -o '<tr class="node"[^>]*>' <<<"$dom" >&2 || true
    exit 1
fi
grep -q 'id="leader">node [0-9]' <<<"$dom" || { echo "status-page.sh: no leader shown" >&2; exit 1; }
mkdir -p "$(dirname "$SHOT")"
"$BROWSER" "${flags[@]}" --screenshot="$SHOT" "$URL" >/dev/null 2>&1
[[ -s "$SHOT" ]] || { echo "status-page.sh: no screenshot written" >&2; exit 1; }
echo "status page OK: 3 nodes, 1 leader; screenshot $SHOT"
