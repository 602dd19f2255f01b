#!/bin/sh
# Train (or continue training) one seed of the second checkpoint suite, issue 17: runs
# pipelines/suite2-train.flow (lm_trainer, the suite's architecture and tokenizer, constant lr,
# checkpoints at log-spaced steps up to 17 tokens per parameter) into data/build/suite2/seed-N/train
# with resume = true, so the same command starts the run the first time and continues it from the
# saved training state after a kill, a crash or the end of a session (bit for bit: the thread count
# is fixed in the flow). Then tools/suite2_index.py lays data/build/suite2/seed-N out like
# data/suite/ (step-NNNNNN links, tokenizer.model, a checkpoints.json with parameters and
# tokens_seen) for the analysis pipelines and `saeflow report`. See data/suite2/README.md.
#
#   tools/train_suite2.sh --seed 0                  # start or resume seed 0
#   nohup nice -n 19 tools/train_suite2.sh --seed 0 > /work/suite2-seed0.log 2>&1 &
#   tools/train_suite2.sh --seed 0 --index-only     # refresh the layout from the checkpoints so far
#   BUILD=build-other tools/train_suite2.sh ...     # another build directory (default: build)
set -eu
cd "$(dirname "$0")/.."

seed="" index_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --seed) [ $# -ge 2 ] || { echo "train_suite2.sh: --seed needs a value" >&2; exit 2; }; seed="$2"; shift 2 ;;
        --index-only) index_only=1; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "train_suite2.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$seed" in
    ''|*[!0-9]*) echo "train_suite2.sh: --seed N (a non-negative integer) is required" >&2; exit 2 ;;
esac

saeflow="${BUILD:-build}/core/saeflow"
out="data/build/suite2/seed-$seed"
settings="{\"training\": {\"flow\": \"pipelines/suite2-train.flow\", \"seed\": $seed,
  \"command\": \"tools/train_suite2.sh --seed $seed\"},
  \"data\": {\"corpora\": [\"data/corpus/debian-docs.jsonl.gz\", \"data/corpus/debian-po.jsonl.gz\",
  \"data/corpus/debian-help.jsonl.gz\"], \"sequence\": \"BOS + 64 tokens\"}}"

if [ "$index_only" = 0 ]; then
    [ -x "$saeflow" ] || { echo "train_suite2.sh: $saeflow not built (meson setup build && ninja -C build)" >&2; exit 1; }
    mkdir -p "$out"
    echo "train_suite2.sh: seed $seed into $out/train (resumes a saved state), $(date -u +%FT%TZ)"
    "$saeflow" run pipelines/suite2-train.flow seed="$seed" out="$out/train" resume=true
fi
exec /usr/bin/python3 tools/suite2_index.py "$out" --settings "$settings"
