#!/usr/bin/env bash
# Trove and etcd side by side on this machine: the same closed-loop workloads from the same
# load generator (`trove bench`, built with its etcd driver), alternating runs so machine
# noise hits both alike. Writes bench-results/<date>/: results.jsonl (every run),
# results.json (medians and ratios), results.md (the table) and plot.png.
#
#   scripts/bench-vs-etcd.sh [--duration SECS] [--rounds N] [--out DIR] [--no-large]
#
# Installs what it needs when missing: etcd-server and protobuf-compiler from Debian's
# packages (root), matplotlib from PyPI into a venv under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10
rounds=3
out="bench-results/$(date +%Y-%m-%d)"
large=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration="$2"; shift 2 ;;
        --rounds) rounds="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --no-large) large=0; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "==> installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    echo "==> installing matplotlib into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q matplotlib
fi

echo "==> building trove (release, with the etcd driver)"
cargo build --release -q -p trove-cli --features etcd
trove="$PWD/target/release/trove"

mkdir -p "$out"
work="$(mktemp -d /tmp/trove-bench-vs-etcd.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> starting etcd $(etcd --version | head -1 | awk '{print $3}'): 3 members on loopback (fsync on, its default)"
cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$work/etcd$i" \
        --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
        --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token bench \
        --log-level error >"$work/etcd$i.log" 2>&1 &
    pids+=($!)
done
etcd_eps="127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"

echo "==> starting trove: 3 nodes on loopback"
"$trove" dev --no-demo --base-port 7900 --data-dir "$work/trove" >"$work/trove-dev.log" 2>&1 &
pids+=($!)
trove_eps="127.0.0.1:7901,127.0.0.1:7902,127.0.0.1:7903"

for _ in $(seq 60); do
    if "$trove" --endpoints "$trove_eps" --timeout 1s --retry-budget 1s cluster status >/dev/null 2>&1; then
        break
    fi
    sleep 1
done

results="$out/results.jsonl"
: >"$results"
# run SYSTEM ROUND WORKLOAD CLIENTS [extra bench args...]
run() {
    local system="$1" round="$2" workload="$3" clients="$4"
    shift 4
    local eps="$trove_eps"
    [ "$system" = etcd ] && eps="$etcd_eps"
    local line
    line="$("$trove" -o json --endpoints "$eps" --timeout 10s bench --system "$system" \
        --workload "$workload" --clients "$clients" "$@")"
    echo "$line" | python3 -c "import json,sys; d=json.load(sys.stdin); d['round']=$round; print(json.dumps(d))" >>"$results"
    echo "$line" | python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"  {d['system']:5} {d['workload']:16} {d['clients']:3} clients  {d['ops_per_sec']:9.0f} ops/s {d['mb_per_sec']:8.1f} MB/s  p50 {d['p50_ms']:7.2f} ms  p99 {d['p99_ms']:7.2f} ms  errors {d['errors']}\")"
}

record_rows=("record-put 1" "record-put 64" "record-get 1" "record-get 64" "record-get-local 64" "record-cas 1" "mixed 64")
for round in $(seq "$rounds"); do
    echo "==> round $round of $rounds"
    for row in "${record_rows[@]}"; do
        set -- $row
        # Alternate which system goes first, so drift in machine speed hits both.
        if [ $((round % 2)) -eq 1 ]; then order="trove etcd"; else order="etcd trove"; fi
        for system in $order; do
            run "$system" "$round" "$1" "$2" --duration "$duration"
        done
    done
    run trove "$round" object-put 1 --object-size 67108864 --ops 6
    run trove "$round" object-put 4 --object-size 1048576 --duration "$duration"
    run trove "$round" object-get 1 --object-size 67108864 --ops 12
done
kill "${pids[@]}" 2>/dev/null || true

if [ "$large" = 1 ]; then
    echo "==> memory and write amplification (a fresh local cluster per run)"
    for spec in "object-put 1073741824 1" "object-get 1073741824 2" "record-put 256 0"; do
        set -- $spec
        if [ "$3" = 0 ]; then n=(--duration "$duration" --clients 16 --value-size "$2"); else n=(--ops "$3" --object-size "$2"); fi
        "$trove" -o json bench --local --base-port 7950 --workload "$1" "${n[@]}" \
            | python3 -c "import json,sys; d=json.load(sys.stdin); d['round']=0; d['local']=True; print(json.dumps(d))" >>"$results"
        tail -1 "$results" | python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"  {d['workload']:12} peak RSS per node (MiB): {[round(n['peak_rss_bytes']/2**20) for n in d['nodes']]}  write amplification per replica: {[None if n['write_amplification'] is None else round(n['write_amplification'],2) for n in d['nodes']]}\")"
    done
    echo "==> re-seeding a wiped node that holds 1 GiB (16 objects of 64 MiB)"
    "$trove" -o json bench --local --base-port 7950 --workload reseed --object-size 67108864 --ops 16 \
        | python3 -c "import json,sys; d=json.load(sys.stdin); d['round']=0; d['local']=True; print(json.dumps(d))" >>"$results"
    tail -1 "$results" | python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"  re-seeded at {d['mb_per_sec']:.0f} MB/s ({d['seconds']:.1f} s)\")"
fi

"$venv/bin/python" scripts/bench_report.py "$results" "$out"
echo "==> wrote $out/results.json, $out/results.md, $out/plot.png"
cat "$out/results.md"
