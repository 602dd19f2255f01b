#!/bin/sh
# Tensor throughput between two saeflow processes (tensor_gen on host a -> verify_sink on host b,
# over ipc and tcp) side by side with a bare libzmq PUSH/PULL loop (bench/zmq_raw) of the same
# message sizes, in the same run. Both are timed the same way: at the receiver, from the first to
# the last message; both senders write every payload (tensor_gen fill = false, zmq_raw's memset).
# Each size runs RUNS times, saeflow and zmq alternating, and the medians are compared; memcpy
# bandwidth at the same size is the ceiling.
# Usage: bench/core_throughput.sh [BUILD_DIR [BYTES_PER_RUN (default 1e9) [RUNS (default 3)]]]
#   (BENCH_TRANSPORTS="tcp" or "ipc" runs one transport only; BENCH_SIZES="4096" only those sizes)
set -eu
build=${1:-build} total=${2:-1000000000} runs=${3:-3}
sf=$build/core/saeflow raw=$build/bench/zmq_raw
tmp=$(mktemp -d /tmp/sf-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
port() { echo $((20000 + $(od -An -N2 -tu2 /dev/urandom) % 30000)); }

saeflow_rate() { # transport size count run -> MB/s at verify_sink
    p=$(port) d=$tmp/$4
    if [ "$1" = tcp ]; then ha=tcp://127.0.0.1:$p hb=tcp://127.0.0.1:$((p + 50));
    else mkdir -p "$d/a" "$d/b"; ha=ipc://$d/a hb=ipc://$d/b; fi
    cat > "$tmp/p.flow" <<FLOW
host a = $ha
host b = $hb
stage gen = tensor_gen {
    host = a
    count = $3
    rows = 16
    cols = $(($2 / 4 / 16))
    fill = false
}
stage sink = verify_sink {
    host = b
    input = gen
    expect = $3
    checksums = false
}
FLOW
    "$sf" run "$tmp/p.flow" --host b --no-progress 2>"$tmp/b.log" & pb=$!
    "$sf" run "$tmp/p.flow" --host a --no-progress 2>"$tmp/a.log" || { cat "$tmp/a.log" >&2; exit 1; }
    wait $pb || { cat "$tmp/b.log" >&2; exit 1; }
    sed -n 's/.*receive rate \([0-9.]*\) MB\/s.*/\1/p' "$tmp/b.log"
}

zmq_rate() { # transport size count run -> MB/s at zmq_raw pull
    if [ "$1" = tcp ]; then ep=tcp://127.0.0.1:$(port); else ep=ipc://$tmp/raw-$4; fi
    "$raw" pull "$ep" "$2" "$3" > "$tmp/raw.out" & pr=$!
    "$raw" push "$ep" "$2" "$3"
    wait $pr
    cat "$tmp/raw.out"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "median of $runs alternating runs per row, ~$total bytes each"
printf "%-6s %10s %8s %12s %12s %12s %7s\n" transport size count "memcpy MB/s" "saeflow MB/s" "zmq MB/s" ratio
for transport in ${BENCH_TRANSPORTS:-tcp ipc}; do
    for size in ${BENCH_SIZES:-4096 65536 1048576 4194304 16777216}; do
        count=$((total / size))
        [ $count -gt 200000 ] && count=200000
        [ $count -lt 3 ] && count=3
        ours="" theirs="" r=0
        while [ $r -lt "$runs" ]; do
            r=$((r + 1))
            ours="$ours $(saeflow_rate $transport $size $count $r)"
            theirs="$theirs $(zmq_rate $transport $size $count $r)"
        done
        mo=$(echo $ours | tr ' ' '\n' | median) mt=$(echo $theirs | tr ' ' '\n' | median)
        printf "%-6s %10s %8s %12s %12s %12s %7s\n" $transport $size $count "$($build/bench/memcpy_bw $size)" "$mo" "$mt" \
            "$(awk -v a="$mo" -v b="$mt" 'BEGIN { printf "%.2f", a / b }')"
    done
done
