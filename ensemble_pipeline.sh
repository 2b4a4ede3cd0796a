#!/usr/bin/env bash
# Reproduce the whole final ensemble from this one commit (no `git checkout`):
#   folds -> 7 first-level experiments (train + predict) -> 3 stacking experiments
#   -> final prediction (submission.csv + out-of-fold lwlrap table) -> Kaggle kernels.
#
# Usage: ./ensemble_pipeline.sh [--smoke] [--gpus 0,1,...] [--device cpu|cuda]
#   --smoke  everything at smoke scale on the CPU; without competition data in the data
#            directory, a 20-class synthetic dataset is generated there first
#   --gpus   devices to train folds on in parallel (default: every visible GPU; with --smoke
#            on a CPU machine, one single-threaded worker per core, at most 5)
#
# A step whose outputs exist is skipped, so rerunning after an interruption continues where it
# stopped (the training scripts themselves resume interrupted folds). Data directory:
# $FREESOUND_DATA_DIR (default: data/ in the repository).
set -euo pipefail
cd "$(dirname "$0")"

SMOKE=""
GPUS=""
DEVICE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE="--smoke" ;;
        --gpus) GPUS="$2"; shift ;;
        --device) DEVICE="$2"; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

PYTHON=${PYTHON:-$(command -v python || command -v python3)}
FIRST_LEVEL="auxiliary_016 auxiliary_019 corr_noisy_003 corr_noisy_004 corr_noisy_007 corrections_002 corrections_003"
STACKING="stacking_008_fcnet_43040 stacking_008_fcnet_45041 stacking_008_fcnet_50013"
DATA=$("$PYTHON" -c "from src.config import get_paths; print(get_paths().save_dir)")

if [ -z "$GPUS" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        GPUS=$(nvidia-smi -L | awk 'NR > 1 {printf ","} {printf NR - 1}')
    elif [ -n "$SMOKE" ]; then
        # Small CPU models train best one thread per process: one fold per core (at most 5).
        WORKERS=$("$PYTHON" -c "import os; print(min(5, os.cpu_count() or 1))")
        if [ "$WORKERS" -ge 2 ]; then GPUS=$(printf 'cpu%.0s,' $(seq "$WORKERS") | sed 's/,$//'); fi
    fi
fi
RUN_ARGS=(--no-progress)
[ -n "$DEVICE" ] && RUN_ARGS+=(--device "$DEVICE")
TRAIN_ARGS=("${RUN_ARGS[@]}")
# Smoke data is tiny: loading it in the training process beats starting loader processes.
[ -n "$SMOKE" ] && TRAIN_ARGS+=(--smoke --workers 0)
# The stacking MLPs train in seconds per fold: in one process, whatever the devices.
STACKING_ARGS=("${TRAIN_ARGS[@]}")
[ -n "$GPUS" ] && TRAIN_ARGS+=(--gpus "$GPUS")

say() { printf '\n==> %s\n' "$*"; }
skip() { printf '    (skipped: %s)\n' "$*"; }

folds_done() {  # all five folds of an experiment finished?
    for k in 0 1 2 3 4; do [ -f "$DATA/experiments/$1/fold_$k/finished.json" ] || return 1; done
}

if [ -n "$SMOKE" ] && [ ! -f "$DATA/train_curated.csv" ]; then
    say "generating the synthetic dataset in $DATA"
    "$PYTHON" make_synthetic.py --out "$DATA" --classes 20 --curated-per-class 8 --noisy-per-class 8 --test 40 --workers 2
fi

say "folds"
if [ -f "$DATA/train_folds.csv" ]; then skip "$DATA/train_folds.csv exists"; else "$PYTHON" make_folds.py; fi

for experiment in $FIRST_LEVEL; do
    say "first level: $experiment"
    if folds_done "$experiment"; then skip "trained"; else "$PYTHON" train_folds.py --experiment "$experiment" "${TRAIN_ARGS[@]}"; fi
    if [ -f "$DATA/predictions/$experiment/val_lwlrap.json" ]; then skip "predicted"; else
        "$PYTHON" predict_folds.py --experiment "$experiment" "${RUN_ARGS[@]}"
    fi
done

for experiment in $STACKING; do
    say "stacking: $experiment"
    if folds_done "$experiment"; then skip "trained"; else "$PYTHON" stacking_train.py --experiment "$experiment" "${STACKING_ARGS[@]}"; fi
done

say "final ensemble"
"$PYTHON" stacking_predict.py "${RUN_ARGS[@]}"

say "Kaggle kernels"
"$PYTHON" build_kernel.py --out "${KERNEL_DIR:-kernel}"

say "done"
echo "submission: $DATA/submission.csv"
echo "out-of-fold lwlrap: $DATA/predictions/ensemble_oof_lwlrap.csv"
