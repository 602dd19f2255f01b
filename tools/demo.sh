#!/bin/sh
# The paper's study end to end on the checkpoint suite in data/suite: for every checkpoint, train a
# TopK SAE on a middle layer's activations of the train split (pipelines/demo-train.flow), evaluate
# it and mine its features on the test split (pipelines/demo-mine.flow); then `saeflow report`.
#
#   tools/demo.sh                      everything, into runs/demo
#   RUNS=/tmp/d STEPS="step-000000 step-001000" TRAIN_ARGS="docs=200" MINE_ARGS="docs=50" tools/demo.sh
set -eu
cd "$(dirname "$0")/.."
runs=${RUNS:-runs/demo}
suite=${SUITE:-data/suite}
steps=${STEPS:-$(cd "$suite" && ls -d step-* | sort)}

if [ ! -f build/build.ninja ]; then meson setup build --buildtype=release >/dev/null; fi
ninja -C build >/dev/null
sf=build/core/saeflow
start=$(date +%s)
n=$(echo $steps | wc -w) i=0
for step in $steps; do
    i=$((i + 1))
    echo "== [$i/$n] $step: training the SAE on the train split (pipelines/demo-train.flow)"
    mkdir -p "$runs/$step/features"
    # shellcheck disable=SC2086
    "$sf" run pipelines/demo-train.flow suite="$suite" step="$step" runs="$runs" ${TRAIN_ARGS:-}
    echo "== [$i/$n] $step: evaluating and mining features on the test split (pipelines/demo-mine.flow)"
    # shellcheck disable=SC2086
    "$sf" run pipelines/demo-mine.flow suite="$suite" step="$step" runs="$runs" ${MINE_ARGS:-}
done
dirs=""
for step in $steps; do dirs="$dirs $runs/$step/features"; done
echo "== report over $n checkpoints"
# shellcheck disable=SC2086
"$sf" report $dirs --out "$runs/report"
echo "demo finished in $(( $(date +%s) - start )) s; dashboards: $runs/<step>/features/index.html"
