#!/bin/bash
# Throughput of pipelines/three-hosts.flow: one process vs three hosts (network namespaces joined
# by a bridge, tcp + CURVE between them), and the forward stage with one vs two replicas.
# Usage (root): bench/hosts_bench.sh [BUILD_DIR] [DOCS]    e.g. bench/hosts_bench.sh build 1000
# FLOW=bench/hosts_forward.flow measures the forward stage alone (light source and BF16 sink).
# Tokens/s = activation rows the shard writer stored / wall time. The machine has 2 cores: the
# "hosts" share them, so this measures the engine's overhead and parallelism, not a real cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
DOCS=${2:-1000}
SF=$(realpath "$BUILD/core/saeflow")
FLOW=${FLOW:-pipelines/three-hosts.flow}
[ "$(id -u)" = 0 ] || { echo "hosts_bench: needs root for ip netns"; exit 77; }
command -v ip >/dev/null || { echo "hosts_bench: needs iproute2"; exit 77; }
T=$$
SW=sfb${T}sw
declare -A ADDR=([A]=10.231.0.1 [B]=10.231.0.2 [C]=10.231.0.3)
TMP=$(mktemp -d /tmp/sf-hosts-bench.XXXX)
cleanup() {
    for h in A B C; do ip netns del "sfb${T}${h}" 2>/dev/null || true; done
    ip netns del "$SW" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$SW"
ip -n "$SW" link add br0 type bridge
ip -n "$SW" link set br0 up
for h in A B C; do
    ns=sfb${T}${h}
    ip netns add "$ns"
    ip link add eth0 netns "$ns" type veth peer name "p$h" netns "$SW"
    ip -n "$SW" link set "p$h" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "${ADDR[$h]}/24" dev eth0
    ip -n "$ns" link set eth0 up
done
mkdir -p "$TMP/runs"
"$SF" keygen "$TMP/keys" >/dev/null
VARS="addr_a=${ADDR[A]} addr_b=${ADDR[B]} addr_c=${ADDR[C]} docs=$DOCS keys=$TMP/keys"

rows() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['count'])" "$1/shards/manifest.json"; }

# one process: everything on host A
one() { # NAME REPLICAS
    local run=$TMP/$1
    mkdir -p "$run"
    local t0=$(date +%s.%N)
    "$SF" run $FLOW --host A --no-progress on_b=A on_c=A fwd_replicas=$2 runs=$run $VARS 2>"$run.log" || { tail "$run.log"; exit 1; }
    local t1=$(date +%s.%N)
    echo "$(rows "$run") $(echo "$t1 - $t0" | bc)"
}
# three hosts, one process each in its namespace
three() { # NAME REPLICAS
    local run=$TMP/$1 pids=()
    mkdir -p "$run"
    local t0=$(date +%s.%N)
    for h in C B A; do
        ip netns exec "sfb${T}${h}" "$SF" run $FLOW --host $h --no-progress fwd_replicas=$2 runs=$run $VARS 2>"$run.$h.log" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || { tail "$run".*.log; exit 1; }; done
    local t1=$(date +%s.%N)
    echo "$(rows "$run") $(echo "$t1 - $t0" | bc)"
}
report() { # LABEL ROWS SECONDS
    printf "%-44s %9d tokens %7.2f s %9.0f tokens/s\n" "$1" "$2" "$3" "$(echo "$2 / $3" | bc -l)"
}
echo "$FLOW, docs=$DOCS, $(nproc) cores, $(date -u +%F)"
read r1 s1 < <(one one-1 1);     report "one process, 1 forward replica" $r1 $s1
read r2 s2 < <(one one-2 2);     report "one process, 2 forward replicas" $r2 $s2
read r3 s3 < <(three three-1 1); report "three hosts, 1 forward replica (on A)" $r3 $s3
read r4 s4 < <(three three-2 2); report "three hosts, 2 forward replicas (A, B)" $r4 $s4
[ "$r1" = "$r2" ] && [ "$r1" = "$r3" ] && [ "$r1" = "$r4" ] || echo "WARNING: row counts differ"
printf "three hosts / one process (2 replicas each):   %.2fx\n" "$(echo "$s2 / $s4" | bc -l)"
printf "forward replicas 2 / 1, three hosts:           %.2fx\n" "$(echo "$s3 / $s4" | bc -l)"
printf "forward replicas 2 / 1, one process:           %.2fx\n" "$(echo "$s1 / $s2" | bc -l)"
