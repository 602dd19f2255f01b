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
list=$(echo $steps | tr ' ' ',')
for step in $steps; do mkdir -p "$runs/$step/features"; done
echo "== training an SAE per checkpoint on the train split (pipelines/demo-train.flow): $list"
# shellcheck disable=SC2086
"$sf" run pipelines/demo-train.flow --sweep step="$list" suite="$suite" runs="$runs" ${TRAIN_ARGS:-}
echo "== evaluating and mining features on the test split (pipelines/demo-mine.flow): $list"
# shellcheck disable=SC2086
"$sf" run pipelines/demo-mine.flow --sweep step="$list" suite="$suite" runs="$runs" ${MINE_ARGS:-}
dirs=""
for step in $steps; do dirs="$dirs $runs/$step/features"; done
echo "== report over $(echo $steps | wc -w) checkpoints"
# shellcheck disable=SC2086
"$sf" report $dirs --out "$runs/report"
echo "demo finished in $(( $(date +%s) - start )) s; dashboards: $runs/<step>/features/index.html"
