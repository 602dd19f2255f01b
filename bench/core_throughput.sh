#!/bin/sh
# Tensor throughput between two saeflow processes (tensor_gen on host a -> verify_sink on host b,
# over ipc and tcp) side by side with a bare libzmq PUSH/PULL loop of the same message sizes, in
# the same run, and memcpy bandwidth as the ceiling. Usage: bench/core_throughput.sh [BUILD_DIR]
set -eu
build=${1:-build}
sf=$build/core/saeflow raw=$build/bench/zmq_raw
tmp=$(mktemp -d /tmp/sf-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $(date -u +%Y-%m-%d)"
echo "memcpy: $($build/bench/memcpy_bw) MB/s"
printf "%-6s %10s %8s %12s %12s %7s\n" transport size count "saeflow MB/s" "zmq MB/s" ratio
for transport in tcp ipc; do
  for size in 4096 65536 1048576 4194304 16777216; do
    count=$((2000000000 / size)); [ $count -gt 200000 ] && count=200000
    cols=$((size / 4 / 16))
    port=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 30000))
    if [ $transport = tcp ]; then ha=tcp://127.0.0.1:$port hb=tcp://127.0.0.1:$((port + 50)) ep=tcp://127.0.0.1:$((port + 99));
    else mkdir -p "$tmp/a" "$tmp/b"; ha=ipc://$tmp/a hb=ipc://$tmp/b ep=ipc://$tmp/raw; fi
    cat > "$tmp/p.flow" <<FLOW
host a = $ha
host b = $hb
stage gen = tensor_gen {
    host = a
    count = $count
    rows = 16
    cols = $cols
    fill = false
}
stage sink = verify_sink {
    host = b
    input = gen
    expect = $count
    checksums = false
}
FLOW
    "$sf" run "$tmp/p.flow" --host b --no-progress 2>"$tmp/b.log" & pb=$!
    start=$(date +%s.%N)
    "$sf" run "$tmp/p.flow" --host a --no-progress 2>"$tmp/a.log"
    wait $pb
    end=$(date +%s.%N)
    ours=$(awk -v s="$start" -v e="$end" -v b=$((size * count)) 'BEGIN { printf "%.1f", b / (e - s) / 1e6 }')
    "$raw" pull "$ep" $size $count > "$tmp/raw.out" & pr=$!
    "$raw" push "$ep" $size $count
    wait $pr
    theirs=$(cat "$tmp/raw.out")
    printf "%-6s %10s %8s %12s %12s %7s\n" $transport $size $count "$ours" "$theirs" \
      "$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')"
  done
done
