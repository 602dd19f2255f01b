#!/bin/sh
# Training throughput (forward + backward of the mean next-token cross-entropy), saeflow's
# lm_trainer model vs the same model in PyTorch (tools/llama_suite.py, the model the suite was
# trained with), side by side in one run, float32, random weights, 2 threads each.
#
#   bench/lm_train_bench.sh [BUILD_DIR] [ITERS] [ROUNDS] [THREADS...]   (default build, 3, 2, 2 1)
#
# Cases: the suite's architecture (data/suite/step-000000/config.json: d 192, 5 blocks, GQA 4/2,
# vocab 8000, 3.6M parameters) at its training batch (32 x 64 positions), and a ~25M-parameter
# Llama (d 512, 7 blocks, GQA 8/4, ff 1408, vocab 8000) at 16 x 128. Each side reports its best of
# ITERS steps; the sides alternate ROUNDS times per case and each keeps its best round, so a burst
# of load from other processes hurts neither side alone. The sgemm peak is the best 2048^3 sgemm
# on as many OpenBLAS threads (stages/forward/forward_bench --sgemm), measured before every case; the
# share of it counts only matrix-product FLOPs (3 x the forward's). Every case runs at each THREADS
# count on both sides (2: the goal's; 1: per-core efficiency, which other processes' load disturbs
# less than two threads that wait for each other).
set -eu
BUILD=${1:-build}
ITERS=${2:-3}
ROUNDS=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
THREADS=${*:-2 1}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
LMB="$BUILD/stages/lm_trainer/lm_bench"
FWB="$BUILD/stages/forward/forward_bench"
PY=/usr/bin/python3
for b in "$LMB" "$FWB"; do [ -x "$b" ] || { echo "build first: meson compile -C $BUILD ($b missing)"; exit 1; }; done
$PY -c "import torch" 2>/dev/null || { echo "skip: Debian python3-torch is not installed"; exit 77; }

export OPENBLAS_NUM_THREADS=2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir "$TMP/m25"
cat > "$TMP/m25/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 512, "num_attention_heads": 8,
 "num_key_value_heads": 4, "head_dim": 64, "intermediate_size": 1408, "num_hidden_layers": 7,
 "vocab_size": 8000, "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
 "tie_word_embeddings": true, "hidden_act": "silu", "attention_bias": false, "mlp_bias": false,
 "rope_scaling": null, "initializer_range": 0.02}
JSON

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-default}, threads: $THREADS, $(date -u '+%Y-%m-%d %H:%M UTC')"
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (a + 0 > b + 0) ? a : b }'; }
RESULTS=""
for c in "suite $ROOT/data/suite/step-000000 32 64" "25M $TMP/m25 16 128"; do
    for th in $THREADS; do
        set -- $c
        PEAK=$(OPENBLAS_NUM_THREADS=$th "$FWB" --sgemm 2048 "$ITERS")
        OURS="0 0 0"
        TORCH=0
        for r in $(seq "$ROUNDS"); do
            O=$("$LMB" "$2" "$3" "$4" "$ITERS" "$th")
            [ "$(max "${O%% *}" "${OURS%% *}")" = "${O%% *}" ] && OURS=$O
            TORCH=$(max "$TORCH" "$($PY "$HERE/lm_train_bench_torch.py" "$2" "$3" "$4" "$ITERS" "$th")")
        done
        RESULTS="$RESULTS$1 $3x$4 ${th}t $OURS $TORCH $PEAK
"
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-17s %9s %14s %12s %8s %13s %11s %8s\n' case params saeflow_tok/s torch_tok/s ratio saeflow_GF/s sgemm_GF/s "% peak"
printf '%s' "$RESULTS" | awk '{printf "%-17s %8.1fM %14.1f %12.1f %7.2fx %13.1f %11.1f %7.0f%%\n",
    $1 " " $2 " " $3, $6 / 1e6, $4, $7, $4 / $7, $5, $8, 100 * $5 / $8}'
