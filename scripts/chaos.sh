#!/usr/bin/env bash
# Longer chaos soaks: many seeded `trove chaos` runs with the release build, one after
# the other, for people who want more confidence than CI's two short runs.
#
#   ./scripts/chaos.sh [--minutes 30] [--seeds N] [--duration 120] [--first-seed S] [-- trove chaos args...]
#
#   --minutes M      stop starting new runs after M minutes (default 30)
#   --seeds N        stop after N runs (default: as many as fit in --minutes)
#   --duration SECS  length of each run (default 120)
#   --first-seed S   seeds are S, S+1, ... (default: derived from the clock)
#   -- ...           passed to every `trove chaos`, e.g. -- --faults kill,restart-all --rate 200
#
# Each run's output goes to $CHAOS_OUT/seed-<S> (default ./chaos-out); passing runs'
# folders are deleted. Prints one summary line per seed and exits 1 if any run did not
# pass (its folder, report and replay command are kept).
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=30
seeds=0
duration=120
first_seed=$(( $(date +%s) % 1000000 ))
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --seeds) seeds="$2"; shift 2 ;;
        --duration) duration="$2"; shift 2 ;;
        --first-seed) first_seed="$2"; shift 2 ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "chaos.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

out_root="${CHAOS_OUT:-./chaos-out}"
mkdir -p "$out_root"
cargo build --release -p trove-cli
bin=./target/release/trove

deadline=$(( $(date +%s) + minutes * 60 ))
seed=$first_seed
runs=0
failed=0
summary=()
while true; do
    if [[ "$seeds" -gt 0 && "$runs" -ge "$seeds" ]]; then break; fi
    if [[ "$(date +%s)" -ge "$deadline" ]]; then break; fi
    out="$out_root/seed-$seed"
    rm -rf "$out"
    echo "==> chaos seed $seed (run $((runs + 1))), ${duration}s" >&2
    status=0
    "$bin" chaos --seed "$seed" --duration "$duration" --out "$out" "${extra[@]}" \
        > "$out_root/seed-$seed.txt" 2>&1 || status=$?
    report="$out_root/seed-$seed.txt"
    line="seed $seed: $(grep -E '^verdict' "$report" | awk '{print $2}' || true)"
    ops=$(grep -E '^ops ' "$report" | awk '{print $2, $3, $4, $5}' || true)
    acked=$(grep -E '^acked writes' "$report" | sed 's/^acked writes *//' || true)
    faults=$(grep -E '^faults ' "$report" | sed 's/^faults *//' || true)
    summary+=("$line | $ops | $acked | $faults")
    if [[ "$status" -eq 0 ]]; then
        rm -rf "$out"
    else
        failed=$((failed + 1))
        echo "chaos.sh: seed $seed did not pass (exit $status); see $report and $out" >&2
        tail -5 "$report" >&2
    fi
    runs=$((runs + 1))
    seed=$((seed + 1))
done

echo
echo "chaos.sh: $runs runs, $failed not passed"
for l in "${summary[@]}"; do echo "  $l"; done
[[ "$failed" -eq 0 ]]
