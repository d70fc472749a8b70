# Shared by the compose scripts and the compose test (sourced, not run).
#
# `compose` runs Docker Compose on deploy/compose/compose.yaml with the project name
# $COMPOSE_PROJECT_NAME (default "trove"): the `docker compose` plugin if it is
# installed, else the standalone `docker-compose`.

COMPOSE_FILE_PATH="${COMPOSE_FILE_PATH:-deploy/compose/compose.yaml}"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-trove}"

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose -f "$COMPOSE_FILE_PATH" "$@"
    else
        docker-compose -f "$COMPOSE_FILE_PATH" "$@"
    fi
}

# The container id of a service.
container_of() {
    compose ps -q "$1"
}

# Waits (up to $2 seconds, default 120) until the containers of the given services are
# healthy, printing the last health log of any that is not.
wait_healthy() {
    local limit="${WAIT_HEALTHY_SECONDS:-120}" deadline svc cid state all
    deadline=$(( $(date +%s) + limit ))
    while :; do
        all=1
        for svc in "$@"; do
            cid="$(container_of "$svc")"
            state="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$cid" 2>/dev/null || echo missing)"
            [[ "$state" == healthy ]] || all=0
        done
        (( all )) && return 0
        if (( $(date +%s) >= deadline )); then
            echo "not healthy after ${limit}s:" >&2
            for svc in "$@"; do
                cid="$(container_of "$svc")"
                docker inspect -f "$svc {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}" "$cid" >&2 || true
                docker logs --tail 20 "$cid" >&2 || true
            done
            return 1
        fi
        sleep 1
    done
}
