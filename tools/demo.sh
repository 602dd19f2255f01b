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
#   SAMPLING=strongest tools/demo.sh   today's one-pass selection instead of the paper's
set -eu
cd "$(dirname "$0")/.."
runs=${RUNS:-runs/demo}
suite=${SUITE:-data/suite}
build=${BUILD:-build}
steps=${STEPS:-$(cd "$suite" && ls -d step-* | sort)}

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
    "$sf" run pipelines/demo-train.flow step="$step" seed="$seed" suite="$suite" runs="$runs" ${TRAIN_ARGS:-}
done
list=$(echo $steps | tr ' ' ',')
# The paper's sampling reads the test split twice: pass 1 finds each feature's maximum encoder
# pre-activation, pass 2 takes the first 50 sequences in shuffled order above 0.7 of it. Each pass
# runs the whole flow (the held-out evaluation too, with the same result). SAMPLING=strongest:
# one pass, the 50 sequences of highest peak.
sampling=${SAMPLING:-paper}
if [ "$sampling" = paper ]; then
    echo "== pass 1 of the paper's sampling: each feature's maximum pre-activation on the test split (pipelines/demo-mine.flow): $list"
    # shellcheck disable=SC2086
    "$sf" run pipelines/demo-mine.flow --sweep step="$list" suite="$suite" runs="$runs" sampling=paper-max ${MINE_ARGS:-}
fi
echo "== evaluating and mining features on the test split (pipelines/demo-mine.flow, sampling $sampling): $list"
# shellcheck disable=SC2086
"$sf" run pipelines/demo-mine.flow --sweep step="$list" suite="$suite" runs="$runs" sampling="$sampling" ${MINE_ARGS:-}
dirs=""
for step in $steps; do dirs="$dirs $runs/$step/features"; done
echo "== report over $n checkpoints"
# shellcheck disable=SC2086
"$sf" report $dirs --out "$runs/report"
echo "demo finished in $(( $(date +%s) - start )) s; $(du -sh "$runs" | cut -f1) in $runs; dashboards: $runs/<step>/features/index.html"
