#!/bin/sh
# Paper-sized extraction: peak RSS and tokens/s per core of the forward up to a hook block on a
# random-weight checkpoint with LLM-jp-3's shapes (tools/make_random_checkpoint.py, bf16), with
# resident float32 weights and with streamed ones (model.h's fw_weights), side by side.
#
#   bench/bigmodel_bench.sh [BUILD_DIR] [MODEL] [LAST_BLOCK] [BATCH] [SEQ] [ITERS] [MODES]
#   (default build, 1.8b, 11 (resid_post.11 = hidden_states.12), 4, 128, 2, "resident stream")
#
# The checkpoint goes to $BIGMODEL_DIR (default /work/scratch-bigmodels/MODEL, else $TMPDIR), made
# if missing: 3.7 GB for 1.8B, 27 GB for 13B; delete it after. Per mode: forward_bench's best wall
# tokens/s and tokens per CPU-second (= tokens/s per core, less disturbed by load) of ITERS calls of
# BATCH x SEQ tokens, and /usr/bin/time -v's peak RSS of the whole process (load included), against
# the bf16 bytes on disk of what the hook needs: blocks 0..LAST_BLOCK (+ the embedding table, of
# which a streamed forward keeps only the batch's rows).
set -eu
BUILD=${1:-build}
MODEL=${2:-1.8b}
LAST=${3:-11}
B=${4:-4}
T=${5:-128}
ITERS=${6:-2}
MODES=${7:-resident stream}
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH="$BUILD/stages/forward/forward_bench"
PY=/usr/bin/python3
[ -x "$BENCH" ] || { echo "build first: ninja -C $BUILD ($BENCH missing)"; exit 1; }
[ -x /usr/bin/time ] || { echo "skip: /usr/bin/time (Debian's time) is not installed"; exit 77; }
BASE=$( [ -d /work/scratch-bigmodels ] && echo /work/scratch-bigmodels || echo "${TMPDIR:-/tmp}")
DIR=${BIGMODEL_DIR:-$BASE/$MODEL}
[ -f "$DIR/config.json" ] || $PY "$HERE/../tools/make_random_checkpoint.py" "$MODEL" "$DIR"

# bf16 bytes of blocks 0..LAST and of the embedding, from the safetensors headers
NEED=$($PY - "$DIR" "$LAST" <<'PYEOF'
import json, os, struct, sys
d, last = sys.argv[1], int(sys.argv[2])
blocks = emb = 0
for f in sorted(os.listdir(d)):
    if not f.endswith(".safetensors"):
        continue
    with open(os.path.join(d, f), "rb") as fh:
        h = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
    for k, v in h.items():
        if k == "__metadata__":
            continue
        n = v["data_offsets"][1] - v["data_offsets"][0]
        if k == "model.embed_tokens.weight":
            emb += n
        elif k.startswith("model.layers.") and int(k.split(".")[2]) <= last:
            blocks += n
print(blocks, emb)
PYEOF
)
BLK=${NEED% *}
EMB=${NEED#* }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-default}, model $MODEL ($DIR), blocks 0..$LAST, $B x $T tokens per call"
echo "bf16 on disk: blocks 0..$LAST $(awk -v b="$BLK" 'BEGIN{printf "%.2f", b/2^30}') GiB, embedding $(awk -v b="$EMB" 'BEGIN{printf "%.2f", b/2^30}') GiB"
printf '%-9s %10s %12s %10s %14s %14s\n' weights tok/s tok/CPU-s GFLOP/s "peak RSS GiB" "RSS/blocks"
for w in $MODES; do
    LOG=$(mktemp)
    O=$(/usr/bin/time -v -o "$LOG" "$BENCH" "$DIR" "$B" "$T" "$LAST" "$ITERS" "$w")
    RSS=$(awk -F: '/Maximum resident/ {print $2 * 1024}' "$LOG")
    rm -f "$LOG"
    set -- $O
    printf '%-9s %10.1f %12.1f %10.1f %14.2f %13.2fx\n' "$w" "$1" "$4" "$2" \
        "$(awk -v r="$RSS" 'BEGIN{print r/2^30}')" "$(awk -v r="$RSS" -v b="$BLK" 'BEGIN{print r/b}')"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
