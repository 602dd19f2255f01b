#!/bin/sh
# Mines every checkpoint's SAE features, then writes the cross-checkpoint report.
#
#   tools/miner_sweep.sh [-p PIPELINE] [-x SAEFLOW] RUNS_ROOT CKPT...
#
# For each CKPT (in training order) it runs PIPELINE (default: stages/feature_miner/
# mine_shards.saeflow) with shards=RUNS_ROOT/CKPT/acts sae=RUNS_ROOT/CKPT/sae
# out=RUNS_ROOT/CKPT/feature_miner, skipping checkpoints whose feature_miner/summary.json exists,
# then `saeflow report` over the RUNS_ROOT/CKPT directories into RUNS_ROOT/report. Extra KEY=VALUE pipeline overrides can
# be given in SAEFLOW_SWEEP_ARGS (e.g. "tokenizer=/path/tok.model model=/path/ckpt").
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
pipeline=$here/stages/feature_miner/mine_shards.saeflow
saeflow=saeflow
while getopts p:x: opt; do
    case $opt in
    p) pipeline=$OPTARG ;;
    x) saeflow=$OPTARG ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { echo "usage: $0 [-p PIPELINE] [-x SAEFLOW] RUNS_ROOT CKPT..." >&2; exit 2; }
root=$1
shift
runs=""
for ck in "$@"; do
    run=$root/$ck
    if [ ! -f "$run/feature_miner/summary.json" ]; then
        # shellcheck disable=SC2086 # SAEFLOW_SWEEP_ARGS is a list of KEY=VALUE words
        "$saeflow" run "$pipeline" --no-progress shards="$run/acts" sae="$run/sae" out="$run/feature_miner" \
            ${SAEFLOW_SWEEP_ARGS:-}
    fi
    runs="$runs $run"
done
# shellcheck disable=SC2086 # run directories contain no spaces by construction above
"$saeflow" report $runs --out "$root/report"
