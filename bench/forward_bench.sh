#!/bin/sh
# Forward throughput, saeflow vs the same forward in PyTorch, side by side in one run, on a
# ~100M-parameter Llama-shaped random checkpoint (d 768, 12 layers, GQA 12/4 heads, ffn 2048,
# vocab 32000, bf16 on disk, float32 compute) made here with PyTorch (not committed).
#
#   bench/forward_bench.sh [BUILD_DIR] [ITERS]      (default build-forward, 3; best of ITERS runs)
#
# Both sides: 2 threads, OPENBLAS_CORETYPE=SKYLAKEX (set only if the CPU has avx512f), 1024
# tokens per call: 16 sequences x 64 tokens and 1 x 1024; "mid" stops after block 5 (resid_post.5),
# "full" runs all 12 blocks, the LM head and the per-token loss.
set -eu
BUILD=${1:-build-forward}
ITERS=${2:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH="$BUILD/stages/forward/forward_bench"
PY=/usr/bin/python3
[ -x "$BENCH" ] || { echo "build first: meson compile -C $BUILD ($BENCH missing)"; exit 1; }
$PY -c "import torch" 2>/dev/null || { echo "skip: Debian python3-torch is not installed"; exit 77; }

grep -q avx512f /proc/cpuinfo && export OPENBLAS_CORETYPE=SKYLAKEX
export OPENBLAS_NUM_THREADS=2
MODEL=${FORWARD_BENCH_MODEL:-${TMPDIR:-/tmp}/saeflow_forward_bench_llama100m}
[ -f "$MODEL/model.safetensors" ] || $PY "$HERE/forward_bench_torch.py" make "$MODEL"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-default}, 2 threads, $(date -u '+%Y-%m-%d %H:%M UTC')"
PEAK=$("$BENCH" --sgemm 2048 "$ITERS")
echo "sgemm 2048^3 peak: $PEAK GFLOP/s"
printf '%-14s %10s %12s %12s %8s %12s %10s\n' case MFLOP/tok saeflow_tok/s torch_tok/s ratio saeflow_GF/s "% peak"
for c in "16 64 5 mid" "16 64 full full" "1 1024 5 mid" "1 1024 full full"; do
    set -- $c
    OURS=$("$BENCH" "$MODEL" "$1" "$2" "$3" "$ITERS")
    TORCH=$($PY "$HERE/forward_bench_torch.py" run "$MODEL" "$1" "$2" "$3" "$ITERS")
    echo "$1x$2 $4 $OURS $TORCH $PEAK" | awk '{printf "%-14s %10.1f %12.1f %12.1f %7.2fx %12.1f %9.0f%%\n",
        $1 " " $2, $5, $3, $6, $3 / $6, $4, 100 * $4 / $7}'
done
