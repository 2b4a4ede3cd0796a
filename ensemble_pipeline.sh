#!/usr/bin/env bash
# Reproduce the whole final ensemble from this one commit (no `git checkout`):
#   folds -> 7 first-level experiments (train + predict) -> 3 stacking experiments
#   -> final prediction (submission.csv + out-of-fold lwlrap table) -> Kaggle kernels.
#
# Usage: ./ensemble_pipeline.sh [--scale full|cpu|smoke] [--smoke] [--gpus 0,1,...]
#            [--device auto|cpu|cuda] [--no-corrections] [--set KEY=VALUE]...
#            [--stacking-set KEY=VALUE]... [--experiments A,B,...]
#            [--stacking-experiments S,...|none]
#   --scale    full (default), cpu (first level small enough for a laptop's CPU; the stacking
#              MLPs are small at full size) or smoke (tiny, everything on the CPU)
#   --smoke    --scale smoke; without a dataset in the data directory, a 20-class synthetic
#              one is generated there first
#   --gpus     devices to train folds on in parallel (default: every visible GPU; at smoke
#              scale on a CPU machine, one single-threaded worker per core, at most 5)
#   --no-corrections        train without label-correction files (your own data has none)
#   --set KEY=VALUE         an override for every first-level experiment (repeatable)
#   --stacking-set KEY=VALUE  the same for the stacking experiments
#   --experiments A,B       the first-level experiments (default: the seven); the stacking
#                           experiments then take these as their inputs
#   --stacking-experiments  the stacking experiments (default: the three); none: no stacking,
#                           the final prediction is the blend of the first-level experiments
#
# A step whose outputs exist is skipped, so rerunning after an interruption continues where it
# stopped (the training scripts themselves resume interrupted folds). Data directory:
# $FREESOUND_DATA_DIR (default: data/ in the repository).
set -euo pipefail
cd "$(dirname "$0")"

FIRST_LEVEL="auxiliary_016 auxiliary_019 corr_noisy_003 corr_noisy_004 corr_noisy_007 corrections_002 corrections_003"
STACKING="stacking_008_fcnet_43040 stacking_008_fcnet_45041 stacking_008_fcnet_50013"
SCALE="full"
GPUS=""
DEVICE=""
NO_CORRECTIONS=""
CHOSEN=""
SETS=()
STACKING_SETS=()
need() { [ $# -ge 2 ] || { echo "$1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SCALE="smoke" ;;
        --scale) need "$@"; SCALE="$2"; shift ;;
        --gpus) need "$@"; GPUS="$2"; shift ;;
        --device) need "$@"; DEVICE="$2"; shift ;;
        --no-corrections) NO_CORRECTIONS="--no-corrections" ;;
        --set) need "$@"; SETS+=(--set "$2"); shift ;;
        --stacking-set) need "$@"; STACKING_SETS+=(--set "$2"); shift ;;
        --experiments) need "$@"; FIRST_LEVEL="${2//,/ }"; CHOSEN="$2"; shift ;;
        --stacking-experiments) need "$@"; STACKING="${2//,/ }"; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$SCALE" in
    full|cpu|smoke) ;;
    *) echo "--scale takes full, cpu or smoke, got '$SCALE'" >&2; exit 2 ;;
esac
[ "$STACKING" = "none" ] && STACKING=""

PYTHON=${PYTHON:-$(command -v python || command -v python3)}
DATA=$("$PYTHON" -c "from src.config import get_paths; print(get_paths().save_dir)")

if [ -z "$GPUS" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        GPUS=$(nvidia-smi -L | awk 'NR > 1 {printf ","} {printf NR - 1}')
    elif [ "$SCALE" = "smoke" ]; then
        # Small CPU models train best one thread per process: one fold per core (at most 5).
        WORKERS=$("$PYTHON" -c "import os; print(min(5, os.cpu_count() or 1))")
        if [ "$WORKERS" -ge 2 ]; then GPUS=$(printf 'cpu%.0s,' $(seq "$WORKERS") | sed 's/,$//'); fi
    fi
fi
RUN_ARGS=(--no-progress)
[ -n "$DEVICE" ] && RUN_ARGS+=(--device "$DEVICE")
TRAIN_ARGS=("${RUN_ARGS[@]}")
[ -n "$NO_CORRECTIONS" ] && TRAIN_ARGS+=("$NO_CORRECTIONS")
# Smoke data is tiny: loading it in the training process beats starting loader processes.
[ "$SCALE" = "smoke" ] && TRAIN_ARGS+=(--workers 0)
# The stacking MLPs train in seconds per fold: in one process, whatever the devices; they have
# no cpu scale (small at full size).
STACKING_ARGS=("${TRAIN_ARGS[@]}" "${STACKING_SETS[@]}")
[ "$SCALE" = "smoke" ] && STACKING_ARGS+=(--scale smoke)
[ -n "$CHOSEN" ] && STACKING_ARGS+=(--set "inputs=$CHOSEN")
TRAIN_ARGS+=(--scale "$SCALE" "${SETS[@]}")
[ -n "$GPUS" ] && TRAIN_ARGS+=(--gpus "$GPUS")

say() { printf '\n==> %s\n' "$*"; }
skip() { printf '    (skipped: %s)\n' "$*"; }

folds_done() {  # all five folds of an experiment finished?
    for k in 0 1 2 3 4; do [ -f "$DATA/experiments/$1/fold_$k/finished.json" ] || return 1; done
}

if [ "$SCALE" = "smoke" ] && [ ! -f "$DATA/train_curated.csv" ]; then
    say "generating the synthetic dataset in $DATA"
    "$PYTHON" make_synthetic.py --out "$DATA" --classes 20 --curated-per-class 8 --noisy-per-class 8 --test 40 --workers 2 --no-progress
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

read -r -a FIRST <<< "$FIRST_LEVEL"
if [ -n "$STACKING" ]; then
    say "final ensemble"
    "$PYTHON" stacking_predict.py --experiments "${STACKING// /,}" "${RUN_ARGS[@]}"
    KERNELS="single,stacking"
else
    say "final blend (no stacking)"
    "$PYTHON" blend_predict.py --experiments "${FIRST_LEVEL// /,}"
    KERNELS="single"
fi
KERNEL_ARGS=(--experiment "${FIRST[0]}" --stacking-experiments "${STACKING// /,}")
if [ "${#FIRST[@]}" -ge 2 ]; then
    KERNELS="$KERNELS,blend"
    KERNEL_ARGS+=(--blend-experiments "${FIRST_LEVEL// /,}")
fi

say "Kaggle kernels"
"$PYTHON" build_kernel.py --out "${KERNEL_DIR:-kernel}" --kernels "$KERNELS" "${KERNEL_ARGS[@]}"

say "done"
echo "submission: $DATA/submission.csv"
[ -n "$STACKING" ] && echo "out-of-fold lwlrap: $DATA/predictions/ensemble_oof_lwlrap.csv"
exit 0
