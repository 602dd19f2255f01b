#!/bin/sh
# The paper's study end to end on the checkpoint suite in data/suite: for every checkpoint, train a
# TopK SAE on a middle layer's activations of the train split (pipelines/demo-train.flow), evaluate
# it and mine its features on the test split (pipelines/demo-mine.flow, the paper's two passes over
# the test split, or one with SAMPLING=strongest); then `saeflow report`.
# Each checkpoint's SAE starts from its own initialisation (seed: a CRC of the checkpoint's name),
# so the report's feature matching measures training, not a shared starting point.
#
#   tools/demo.sh                      everything, into runs/demo (about 2.1 GB), building into build/
#   RUNS=/tmp/d BUILD=build-ci STEPS="step-000000 step-001000" TRAIN_ARGS="docs=200" MINE_ARGS="docs=50" tools/demo.sh
#   SAMPLING=strongest tools/demo.sh   the one-pass selection (the 50 strongest) instead of the paper's
#   OVERWRITE=true tools/demo.sh       again into the same RUNS: replace the earlier results (else refused)
#   PAIRS=false tools/demo.sh          without the cross-lingual (pairs) test (pipelines/demo-pairs.flow)
#   SUITE=/data/llm-jp-3-1.8b LAYER=11 tools/demo.sh      another suite (the paper's "layer 12" = hidden_states[12] = resid_post.11)
#
# Variables: SUITE (a folder of checkpoint folders), STEPS (which of them, in training order; default
# all, sorted by name), LAYER (the block whose output, resid_post.LAYER, the SAEs read; default the middle one of the first checkpoint's
# num_hidden_layers / n_layer), TOKENIZER (default: SUITE's tokenizer.json or .model, else each
# checkpoint's own), TRAIN_ARGS, MINE_ARGS and PAIRS_ARGS (KEY=VALUE overrides of pipelines/demo-train.flow,
# demo-mine.flow and demo-pairs.flow), RUNS (output folder), BUILD (meson build folder).
set -eu
cd "$(dirname "$0")/.."
runs=${RUNS:-runs/demo}
suite=${SUITE:-data/suite}
build=${BUILD:-build}
die() { echo "demo.sh: $*" >&2; exit 2; }

[ -d "$suite" ] || die "SUITE=$suite is not a folder: set SUITE to a checkpoint suite (a folder with one folder per checkpoint, each holding config.json and the weights)"
if [ -n "${STEPS:-}" ]; then
    steps=$STEPS
    for step in $steps; do
        [ -f "$suite/$step/config.json" ] || die "STEPS names $step, but $suite/$step/config.json does not exist: STEPS lists checkpoint folders of SUITE=$suite"
    done
else # every checkpoint folder: any folder of the suite with a config.json
    steps=$(for d in "$suite"/*/; do [ -f "$d/config.json" ] && basename "$d"; done | sort)
    [ -n "$steps" ] || die "no checkpoint folders in SUITE=$suite (a checkpoint folder holds config.json and the weights): set SUITE to your suite, or STEPS=\"a b ...\" to name its checkpoints"
fi
case "$steps" in *,*) die "checkpoint names with a comma cannot be swept: rename them or run pipelines/demo-mine.flow per checkpoint" ;; esac
first=$(echo $steps | cut -d' ' -f1)
if [ -z "${LAYER:-}" ]; then
    depth=$(sed -n 's/.*"\(num_hidden_layers\|n_layer\)": *\([0-9][0-9]*\).*/\2/p' "$suite/$first/config.json" | head -1)
    [ -n "$depth" ] || die "cannot read the number of layers from $suite/$first/config.json: set LAYER (the block whose output the SAEs read)"
    LAYER=$((depth / 2))
fi
tok_args=""
if [ -n "${TOKENIZER:-}" ]; then
    tok_args="tokenizer=$TOKENIZER"
else
    for step in $steps; do
        found=""
        for f in "$suite/tokenizer.json" "$suite/tokenizer.model" "$suite/$step/tokenizer.json" "$suite/$step/tokenizer.model"; do
            [ -f "$f" ] && found=1 && break
        done
        [ -n "$found" ] || die "no tokenizer for $step: neither $suite nor $suite/$step holds a tokenizer.json or tokenizer.model; set TOKENIZER=FILE"
    done
fi
echo "== suite $suite: $(echo $steps | wc -w) checkpoints ($(echo $steps)), SAEs on resid_post.$LAYER"

echo "== building in $build"
if [ ! -f "$build/build.ninja" ]; then meson setup "$build" --buildtype=release; fi
ninja -C "$build"
sf=$build/core/saeflow
start=$(date +%s)
n=$(echo $steps | wc -w)
i=0
for step in $steps; do
    i=$((i + 1))
    seed=$(printf %s "$step" | cksum | cut -d' ' -f1)
    mkdir -p "$runs/$step/features"
    echo "== training an SAE for $step ($i/$n) on the train split (pipelines/demo-train.flow, seed $seed)"
    # shellcheck disable=SC2086
    "$sf" run pipelines/demo-train.flow step="$step" seed="$seed" suite="$suite" layer="$LAYER" runs="$runs" \
        overwrite="${OVERWRITE:-false}" $tok_args ${TRAIN_ARGS:-}
done
list=$(echo $steps | tr ' ' ',')
# The paper's sampling reads the test split twice: pass 1 finds each feature's maximum encoder
# pre-activation, pass 2 takes the first 50 sequences in shuffled order above 0.7 of it. The
# held-out evaluation (and the forward's spliced pass it reads) runs once, in pass 2: pass 1 sets
# evaluate=false splice=. SAMPLING=strongest: one pass, the 50 sequences of highest peak.
sampling=${SAMPLING:-paper}
if [ "$sampling" = paper ]; then
    echo "== pass 1 of the paper's sampling: each feature's maximum pre-activation on the test split (pipelines/demo-mine.flow): $list"
    # shellcheck disable=SC2086
    "$sf" run pipelines/demo-mine.flow --sweep step="$list" suite="$suite" layer="$LAYER" runs="$runs" sampling=paper-max \
        evaluate=false splice= overwrite="${OVERWRITE:-false}" $tok_args ${MINE_ARGS:-}
fi
echo "== evaluating and mining features on the test split (pipelines/demo-mine.flow, sampling $sampling): $list"
# shellcheck disable=SC2086
"$sf" run pipelines/demo-mine.flow --sweep step="$list" suite="$suite" layer="$LAYER" runs="$runs" sampling="$sampling" \
    overwrite="${OVERWRITE:-false}" $tok_args ${MINE_ARGS:-}
if [ "${PAIRS:-true}" = true ]; then
    # Our test, not the paper's: the corpus's 877 en/ja translation pairs, every split, through each
    # SAE; the report takes each checkpoint's share from RUNS/<step>/pairs (stages/feature_miner/README.md).
    echo "== cross-lingual (pairs): every paired section through each SAE (pipelines/demo-pairs.flow): $list"
    # shellcheck disable=SC2086
    "$sf" run pipelines/demo-pairs.flow --sweep step="$list" suite="$suite" layer="$LAYER" runs="$runs" \
        overwrite="${OVERWRITE:-false}" $tok_args ${PAIRS_ARGS:-}
fi
dirs=""
for step in $steps; do dirs="$dirs $runs/$step/features"; done
echo "== report over $n checkpoints"
# shellcheck disable=SC2086
"$sf" report $dirs --out "$runs/report"
echo "demo finished in $(( $(date +%s) - start )) s; $(du -sh "$runs" | cut -f1) in $runs; dashboards: $runs/<step>/features/index.html"
