#!/usr/bin/env bash
# The compose cluster under faults, driven from the host (run by .ci/run after
# scripts/image.sh; needs Docker and docker-compose):
#
#  1. brings up deploy/compose/compose.yaml (its own project and host ports) and times
#     how long the three nodes take to become healthy;
#  2. writes and reads records and a 3 MiB object from the host;
#  3. with a writer running: `docker kill`s one container, `docker network disconnect`s
#     another (quorum lost: writes wait), keeps writing, restores both; then cuts off
#     the leader and checks the other two go on;
#  4. with a writer running: restarts all three containers one after another (rolling
#     restart), each only once `trove cluster upgrade-check` allows it and the previous
#     one is healthy again;
#  5. checks that every acknowledged write reads back with its value, and the object
#     with its SHA-256;
#  6. checks /metrics and /readyz, and runs the status-page browser test
#     (tests/deploy/status-page.sh) against node 1.
#
# Exit 0 on success. TROVE_BIN: the client binary (default: the static release build).
# TROVE_KEEP_COMPOSE=1 leaves the cluster running afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$(pwd)"

export COMPOSE_PROJECT_NAME=trove-ci
export TROVE_HOST_CLIENT_1=27001 TROVE_HOST_CLIENT_2=27002 TROVE_HOST_CLIENT_3=27003
export TROVE_HOST_ADMIN_1=27401 TROVE_HOST_ADMIN_2=27402 TROVE_HOST_ADMIN_3=27403
source scripts/compose-lib.sh

BIN="${TROVE_BIN:-$ROOT/target/x86_64-unknown-linux-gnu/release/trove}"
export TROVE_ENDPOINTS=127.0.0.1:27001,127.0.0.1:27002,127.0.0.1:27003
WORK="$(mktemp -d)"
NET="${COMPOSE_PROJECT_NAME}_trove"
WRITER_PID=""

log() { printf '[compose-faults %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { log "FAIL: $*"; exit 1; }
trove() { "$BIN" --timeout 5s --retry-budget 20s "$@"; }

cleanup() {
    local rc=$?
    [[ -n "$WRITER_PID" ]] && kill "$WRITER_PID" 2>/dev/null || true
    if (( rc != 0 )); then
        log "logs of the nodes (last 40 lines each):"
        for s in node1 node2 node3; do
            echo "--- $s" >&2
            docker logs --tail 40 "$(container_of "$s")" 2>&1 | sed 's/^/    /' >&2 || true
        done
    fi
    if [[ "${TROVE_KEEP_COMPOSE:-0}" != 1 ]]; then
        compose down --volumes --timeout 5 >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

# A writer in the background: record w/<phase>/<i> = v-<i>, one `trove` process per
# write; a write is acknowledged when `trove record put` exits 0, and only then is it
# listed in $WORK/acked-<phase>. Runs until $WORK/stop-<phase> exists.
start_writer() {
    local phase="$1"
    (
        i=0
        while [[ ! -e "$WORK/stop-$phase" ]]; do
            i=$((i + 1))
            if trove record put "w/$phase/$i" "v-$i" >/dev/null 2>>"$WORK/writer-$phase.err"; then
                echo "w/$phase/$i v-$i" >>"$WORK/acked-$phase"
            fi
        done
    ) &
    WRITER_PID=$!
}
stop_writer() {
    local phase="$1"
    touch "$WORK/stop-$phase"
    wait "$WRITER_PID" || true
    WRITER_PID=""
    log "$phase: $(acks "$phase") writes acknowledged, $(cat "$WORK/writer-$phase.err" 2>/dev/null | wc -l) error lines from failed attempts"
}
# Every acknowledged write of a phase reads back (linearizable) with its value.
verify_acked() {
    local phase="$1" n=0 key want got
    while read -r key want; do
        got="$(trove record get "$key")" || fail "$phase: acknowledged $key cannot be read"
        [[ "$got" == "$want" ]] || fail "$phase: $key is '$got', acknowledged '$want'"
        n=$((n + 1))
    done <"$WORK/acked-$phase"
    (( n > 0 )) || fail "$phase: no write was acknowledged"
    log "$phase: all $n acknowledged writes read back"
}
acks() { if [[ -f "$WORK/acked-$1" ]]; then wc -l <"$WORK/acked-$1"; else echo 0; fi; }
wait_acks() { # wait until the writer has at least $2 more acks than now
    local phase="$1" more="$2" base
    base=$(acks "$phase")
    for _ in $(seq 1 120); do
        (( $(acks "$phase") >= base + more )) && return 0
        sleep 0.5
    done
    fail "$phase: the writer made no progress"
}

[[ -x "$BIN" ]] || fail "no client binary at $BIN (build it or set TROVE_BIN)"
compose down --volumes --timeout 5 >/dev/null 2>&1 || true

log "1. compose up"
started=$(date +%s.%N)
compose up -d
wait_healthy node1 node2 node3
READY_SECONDS=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
log "cluster healthy after ${READY_SECONDS}s"
trove cluster status

log "2. records and an object from the host"
trove record put greeting hello >/dev/null
[[ "$(trove record get greeting)" == hello ]] || fail "record read back differs"
head -c $((3 * 1024 * 1024 + 123)) /dev/urandom >"$WORK/blob"
trove bucket create blobs >/dev/null
trove object put blobs/one "$WORK/blob" >/dev/null
BLOB_SHA="$(sha256sum "$WORK/blob" | cut -d' ' -f1)"
trove object get blobs/one "$WORK/blob.back" >/dev/null
[[ "$(sha256sum "$WORK/blob.back" | cut -d' ' -f1)" == "$BLOB_SHA" ]] || fail "object read back differs"

log "3. kill one container, disconnect another, keep writing, restore both"
start_writer faults
wait_acks faults 20
docker kill "$(container_of node1)" >/dev/null
log "killed node1; node2 and node3 keep the quorum"
wait_acks faults 20
docker network disconnect "$NET" "$(container_of node2)"
log "disconnected node2: node3 alone has no quorum; the writer keeps trying"
sleep 5
docker start "$(container_of node1)" >/dev/null
docker network connect --alias node2 "$NET" "$(container_of node2)"
log "restarted node1 and reconnected node2"
wait_healthy node1 node2 node3
wait_acks faults 20
# Cut off whichever node leads now: the other two elect a new leader and go on.
leader="$(trove -o json cluster status | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"])')"
docker network disconnect "$NET" "$(container_of "node$leader")"
log "disconnected the leader, node$leader"
wait_acks faults 20
docker network connect --alias "node$leader" "$NET" "$(container_of "node$leader")"
log "reconnected node$leader"
wait_healthy node1 node2 node3
wait_acks faults 10
stop_writer faults

log "4. rolling restart of all three containers under traffic"
start_writer rolling
wait_acks rolling 10
for s in node1 node2 node3; do
    id="${s#node}"
    for _ in $(seq 1 60); do
        trove cluster upgrade-check "$id" >/dev/null 2>&1 && break
        sleep 1
    done
    trove cluster upgrade-check "$id" >/dev/null || fail "upgrade-check never allowed restarting $s"
    docker restart --time 20 "$(container_of "$s")" >/dev/null
    log "restarted $s"
    wait_healthy node1 node2 node3
    wait_acks rolling 10
done
stop_writer rolling

log "5. every acknowledged write"
verify_acked faults
verify_acked rolling
trove object get blobs/one "$WORK/blob.back2" >/dev/null
[[ "$(sha256sum "$WORK/blob.back2" | cut -d' ' -f1)" == "$BLOB_SHA" ]] || fail "object differs after the faults"
log "object still reads back with its SHA-256"

log "6. admin port: /readyz, /metrics, status page"
python3 - <<'PY' || fail "admin endpoints"
import urllib.request
base = "http://127.0.0.1:27401"
assert urllib.request.urlopen(base + "/readyz", timeout=5).read().strip() == b"ok"
metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
for name in ("trove_server_has_leader 1", "trove_server_leader_changes_seen_total",
             "trove_disk_wal_fsync_duration_seconds_bucket", "grpc_server_handled_total",
             "trove_chunks_repaired_total 0", "trove_chunks_unrepairable_total 0",
             "trove_scrub_pass_progress_ratio"):
    assert name in metrics, name
PY
bash tests/deploy/status-page.sh "http://127.0.0.1:27401/" "$ROOT/target/status-page.png"

cat <<EOF | tee "$ROOT/target/compose-faults.txt"
compose fault test: PASS
  cluster healthy after ${READY_SECONDS}s (compose up to three healthy nodes)
  acknowledged writes verified: faults $(wc -l <"$WORK/acked-faults"), rolling restart $(wc -l <"$WORK/acked-rolling")
  image size: $(( $(docker image inspect -f '{{.Size}}' "${TROVE_IMAGE:-trove:latest}") / 1024 / 1024 )) MiB
EOF
