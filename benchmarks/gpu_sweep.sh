#!/usr/bin/env bash
# The 2-job GPU sweep of issue 21, for a machine with a GPU (a few minutes):
#   bash benchmarks/gpu_sweep.sh [SWEEP_DIR]
# Two jobs (full, ablation_lfm) of lgfn_small on the built-in clips, trainer=gpu (all visible GPUs, DDP when there
# are several), 200 steps each; then every job's status.json and the sweep's summary.csv. Exit 1 unless both are ok.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-${OUT:-.}/gpu_sweep}
PY=${PY:-python}
WANDB_MODE=offline $PY train.py -m experiment=full,ablation_lfm model=lgfn_small data=builtin trainer=gpu \
    logger=csv trainer.max_epochs=-1 trainer.max_steps=200 trainer.val_check_interval=200 \
    trainer.check_val_every_n_epoch=null "hydra.sweep.dir=$DIR"
status=0
for f in "$DIR"/*/status.json; do
    echo "$f: $(cat "$f" | tr -d '\n' | cut -c1-200)"
    grep -q '"status": "ok"' "$f" || status=1
done
[ -f "$DIR/summary.csv" ] && cat "$DIR/summary.csv"
exit $status
