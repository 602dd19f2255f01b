#!/bin/sh
# The paper's study end to end on the checkpoint suite in data/suite: for every checkpoint, train a
# TopK SAE on a middle layer's activations of the train split (pipelines/demo-train.flow), evaluate
# it and mine its features on the test split (pipelines/demo-mine.flow); then `saeflow report`.
# Each checkpoint's SAE starts from its own initialisation (seed: a CRC of the checkpoint's name),
# so the report's feature matching measures training, not a shared starting point.
#
#   tools/demo.sh                      everything, into runs/demo (about 2.1 GB), building into build/
#   RUNS=/tmp/d BUILD=build-ci STEPS="step-000000 step-001000" TRAIN_ARGS="docs=200" MINE_ARGS="docs=50" tools/demo.sh
#   OVERWRITE=true tools/demo.sh       again into the same RUNS: replace the earlier results (else refused)
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
    "$sf" run pipelines/demo-train.flow step="$step" seed="$seed" suite="$suite" runs="$runs" \
        overwrite="${OVERWRITE:-false}" ${TRAIN_ARGS:-}
done
list=$(echo $steps | tr ' ' ',')
echo "== evaluating and mining features on the test split (pipelines/demo-mine.flow): $list"
# shellcheck disable=SC2086
"$sf" run pipelines/demo-mine.flow --sweep step="$list" suite="$suite" runs="$runs" overwrite="${OVERWRITE:-false}" \
    ${MINE_ARGS:-}
dirs=""
for step in $steps; do dirs="$dirs $runs/$step/features"; done
echo "== report over $n checkpoints"
# shellcheck disable=SC2086
"$sf" report $dirs --out "$runs/report"
echo "demo finished in $(( $(date +%s) - start )) s; $(du -sh "$runs" | cut -f1) in $runs; dashboards: $runs/<step>/features/index.html"
