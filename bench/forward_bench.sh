#!/bin/sh
# Forward throughput, saeflow vs the same forward in PyTorch, side by side in one run, on a
# ~100M-parameter Llama-shaped random checkpoint (d 768, 12 layers, GQA 12/4 heads, ffn 2048,
# vocab 32000, bf16 on disk, float32 compute) made here with PyTorch (not committed).
#
#   bench/forward_bench.sh [BUILD_DIR] [ITERS] [ROUNDS]   (default build-forward, 3, 2)
#
# Each side reports its best of ITERS forwards; the two sides alternate ROUNDS times per case and
# each keeps its best round, so a burst of load from other processes hurts neither side alone.
# The sgemm peak is the best of a 2048^3 sgemm measured before every case.
#
# Both sides: 2 threads, OPENBLAS_CORETYPE=SKYLAKEX (set only if the CPU has avx512f), 1024
# tokens per call: 16 sequences x 64 tokens and 1 x 1024; "mid" stops after block 5 (resid_post.5),
# "full" runs all 12 blocks, the LM head and the per-token loss.
set -eu
BUILD=${1:-build-forward}
ITERS=${2:-3}
ROUNDS=${3:-2}
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
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 > b + 0) ? a : b }'; }
PEAK=0
RESULTS=""
for c in "16 64 5 mid" "16 64 full full" "1 1024 5 mid" "1 1024 full full"; do
    set -- $c
    PEAK=$(max "$PEAK" "$("$BENCH" --sgemm 2048 "$ITERS")")
    OURS="0 0 0"
    TORCH=0
    for r in $(seq "$ROUNDS"); do
        O=$("$BENCH" "$MODEL" "$1" "$2" "$3" "$ITERS" | cut -d' ' -f1-3)
        [ "$(max "${O%% *}" "${OURS%% *}")" = "${O%% *}" ] && OURS=$O
        TORCH=$(max "$TORCH" "$($PY "$HERE/forward_bench_torch.py" run "$MODEL" "$1" "$2" "$3" "$ITERS")")
    done
    RESULTS="$RESULTS$1x$2 $4 $OURS $TORCH
"
done
echo "sgemm 2048^3 peak (best): $PEAK GFLOP/s; load after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-14s %10s %14s %12s %8s %13s %8s\n' case MFLOP/tok saeflow_tok/s torch_tok/s ratio saeflow_GF/s "% peak"
printf '%s' "$RESULTS" | awk -v peak="$PEAK" '{printf "%-14s %10.1f %14.1f %12.1f %7.2fx %13.1f %7.0f%%\n",
    $1 " " $2, $5, $3, $6, $3 / $6, $4, 100 * $4 / peak}'
