#!/usr/bin/env bash
# The full-size path on one GPU, checked and measured in one command.
#
#   bench/gpu_check.sh [--out DIR] [--budget SECONDS]   # on the GPU machine, repository root
#   bench/gpu_check.sh --dry-run [--out DIR]            # the same steps on the CPU, tiny sizes
#   bench/gpu_check.sh --dry-run --with-wheels          # ... installing .whl/ as the real run
#
# Real run: installs the wheels of .whl/ (made by `make gpu-wheels`) into a temporary site
# folder (pip --no-index --no-deps --target, then PYTHONPATH), imports every module and compiles
# librosa's numba functions once (bench/gpu_steps.py warm), then within the budget (default
# 460 s for the install and the steps, under 8 minutes with the report):
#   a) data             synthetic FAT2019-layout dataset (80 classes) + folds
#      logmel_store     its spectrogram stores built with the CUDA log-mel, vs librosa
#      logmel_compute   bench/features.py on the same files: log-mel only, vs librosa per core
#   b) train_faithful   fold 0 of corr_noisy_007 at full size, 2 epochs of 32,768 samples,
#                       fp32 + numpy augmentation in the loader workers (the baseline)
#      train_fast       the same with --amp bf16 --channels-last --augment-on gpu
#   c) train_step       bench/train_step.py: step only per precision, data path per worker
#   d) predict_folds    predict_folds.py --folds 0 --amp bf16 (out-of-fold + test tiles)
#      predict_bench    bench/predict.py: tiles/s and the whole ensemble on 3,400 clips
#      kernel_estimate  the stacking kernel's Kaggle time estimate (src/kaggle/estimate.py)
#   f) search_trial     search.py: one Optuna trial of one epoch (SQLite study, in-process)
#   b) train_resume     train_fast's command stopped by SIGTERM after its first epoch, run again:
#                       it resumes, and its log.csv equals train_fast's (bench/gpu_steps.py resume)
#      train_finetune   train_folds.py --init-from corr_noisy_007 (train_fast's fold 0) into
#                       another experiment: 2 epochs, the first training only the heads
#      train_compiled   train_fast + --compile, with the time left
#   e) report           gpu_report.md + gpu_report.json in --out, the short table printed last
# Each step runs under `timeout` (its own cap, never past the budget); a failed step is
# reported with its error and the next one runs. Exit status 0 only when every step passed.
# PYTHON (default python3) is the interpreter; each step's output is in OUT/logs/STEP.log.
set -u
cd "$(dirname "$0")/.." || exit 2

OUT=data/gpu-check
DRY=0
WITH_WHEELS=0
BUDGET=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#--out=}"; shift ;;
        --dry-run) DRY=1; shift ;;
        --with-wheels) WITH_WHEELS=1; shift ;;
        --budget) BUDGET="$2"; shift 2 ;;
        -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

PY="${PYTHON:-python3}"
mkdir -p "$OUT/logs" "$OUT/runs"
OUT="$(cd "$OUT" && pwd)"
DATA="$OUT/data"
export FREESOUND_DATA_DIR="$DATA" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
EXPERIMENT=corr_noisy_007
STEPS="$OUT/steps.tsv"
printf 'step\tstatus\tseconds\tlimit\tcpu_seconds\n' > "$STEPS"

if [ "$DRY" = 1 ]; then
    BUDGET="${BUDGET:-600}"
    DEVICE=cpu
    WORKERS=0
    SYNTH=(--classes 8 --curated-per-class 3 --noisy-per-class 1 --test 4 --min-seconds 0.5
           --max-seconds 1.5)
    TRAIN=(--smoke --set epoch_size=64 --device cpu --workers 0)
    BENCH_TRAIN=(--smoke --device cpu --batch 2 --steps 1 --data-samples 8 --workers 0 --threads 1)
    FEATURES=(--seconds 5 --repeat 1)
    PREDICT_BENCH=(--smoke --device cpu --clips 2 --seconds 1 --batch 8 --threads 1)
    PREDICT_AMP=(--amp off)
    SEARCH=(--scale smoke --device cpu --workers 0 --amp off)
    SEARCH_SPACE='"epoch_size": [64], '
    STORE_WORKERS=1
    export OMP_NUM_THREADS=1
else
    BUDGET="${BUDGET:-460}"
    DEVICE=cuda
    WORKERS="$(nproc)"
    SYNTH=(--classes 80 --curated-per-class 8 --noisy-per-class 8 --test 200 --max-seconds 12
           --workers "$WORKERS")
    TRAIN=(--device cuda --workers "$WORKERS")
    BENCH_TRAIN=(--device cuda --channels-last --batch 128 --steps 20 --workers "$WORKERS")
    FEATURES=(--seconds 600 --device cuda)
    PREDICT_BENCH=(--device cuda)
    PREDICT_AMP=(--amp bf16)
    SEARCH=(--device cuda --workers "$WORKERS" --amp bf16)
    SEARCH_SPACE=""
    STORE_WORKERS="$WORKERS"
fi
STARTED=$(date +%s)
echo "gpu_check: out $OUT, device $DEVICE, budget ${BUDGET}s$([ "$DRY" = 1 ] && echo ', dry run')"

# run_step NAME CAP COMMAND...: run under timeout (CAP, never past the budget), record it.
FAILED=0
run_step() {
    local name="$1" cap="$2"
    shift 2
    local left=$((BUDGET - ($(date +%s) - STARTED)))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 5 ]; then
        printf '%s\tno-time\t0\t0\t0\n' "$name" >> "$STEPS"
        echo "not run: no time left in the budget" > "$OUT/logs/$name.log"
        echo "  $name: not run (no time left)"
        FAILED=1
        return 1
    fi
    local rc status times
    # bash's `time`: wall, user and system seconds of the step and all its processes
    times=$( { TIMEFORMAT='%R %U %S'; time timeout --kill-after=10 "$limit" "$@" \
        > "$OUT/logs/$name.log" 2>&1; echo "rc $?" >&2; } 2>&1 )
    rc=$(echo "$times" | awk '$1 == "rc" {print $2}')
    case $rc in
        0) status=ok ;;
        124|137) status=timeout; FAILED=1 ;;
        *) status="failed($rc)"; FAILED=1 ;;
    esac
    local seconds cpu
    seconds=$(echo "$times" | awk '$1 != "rc" {printf "%.1f", $1}')
    cpu=$(echo "$times" | awk '$1 != "rc" {printf "%.1f", $2 + $3}')
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$seconds" "$limit" "$cpu" >> "$STEPS"
    echo "  $name: $status in ${seconds}s (limit ${limit}s, ${cpu} CPU s)"
    [ "$rc" = 0 ]
}

skip_step() {
    printf '%s\tskipped\t0\t0\t0\n' "$1" >> "$STEPS"
    echo "$2" > "$OUT/logs/$1.log"
    echo "  $1: skipped ($2)"
}

# Keep a training run's logs (the experiment folder is replaced by the next run).
keep_run() {  # keep_run NAME [EXPERIMENT]
    local exp="$DATA/experiments/${2:-$EXPERIMENT}"
    rm -rf "$OUT/runs/$1"
    mkdir -p "$OUT/runs/$1"
    cp "$exp/params.json" "$exp/fold_0/log.csv" "$exp/fold_0/log.txt" \
        "$exp/fold_0/finished.json" "$OUT/runs/$1/" 2>/dev/null || true
}

TRAIN_FOLD=(train_folds.py --experiment "$EXPERIMENT" --folds 0 --no-corrections --max-epochs 2
            --no-progress)
FAST=(--amp bf16 --channels-last --augment-on gpu)

train() {  # train NAME CAP [extra train_folds.py options]
    local name="$1" cap="$2"
    shift 2
    run_step "$name" "$cap" "$PY" "${TRAIN_FOLD[@]}" --force "${TRAIN[@]}" "$@"
    local rc=$?
    keep_run "$name"
    return $rc
}

if [ "$DRY" = 1 ] && [ "$WITH_WHEELS" = 0 ]; then
    skip_step wheels "dry run: the CPU environment has every requirement"
else
    SITE="$(mktemp -d /tmp/gpu-check-site.XXXXXX)"
    trap 'rm -rf "$SITE"' EXIT
    run_step wheels 180 bash -c "shopt -s failglob; '$PY' -m pip install -q --no-index --no-deps \
        --no-compile --no-cache-dir --upgrade --target '$SITE' .whl/*.whl && \
        PYTHONPATH='$SITE' '$PY' bench/gpu_steps.py warm"
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

# a) data, stores, log-mel
run_step data 60 bash -c "'$PY' make_synthetic.py --out '$DATA' ${SYNTH[*]} && '$PY' make_folds.py"
run_step logmel_store 60 "$PY" bench/gpu_steps.py stores --json "$OUT/logmel_store.json" \
    --device "$DEVICE" --workers "$STORE_WORKERS"
run_step logmel_compute 40 "$PY" bench/features.py --files "$DATA/train_curated" "${FEATURES[@]}"
# b) full-size training, faithful and fast
train train_faithful 120 --amp off
train train_fast 75 "${FAST[@]}"
FAST_OK=$?
# c) step only and data path
run_step train_step 90 "$PY" bench/train_step.py "${BENCH_TRAIN[@]}"
# d) prediction and the Kaggle estimate (with the fast run's fold 0 model)
run_step predict_folds 45 "$PY" predict_folds.py --experiment "$EXPERIMENT" --folds 0 \
    --device "$DEVICE" --batch-size 128 --no-progress "${PREDICT_AMP[@]}"
run_step predict_bench 45 "$PY" bench/predict.py "${PREDICT_BENCH[@]}"
run_step kernel_estimate 45 "$PY" bench/gpu_steps.py estimate --json "$OUT/kernel_estimate.json" \
    --device "$DEVICE"
# f) one search trial: search.py's study (SQLite), one epoch of a drawn lr, in-process training
printf '{%s"max_epochs": [1], "optimizer.params.lr": {"log": [0.0003, 0.003]}}\n' \
    "$SEARCH_SPACE" > "$OUT/search_space.json"
run_step search_trial 90 "$PY" search.py --experiment "$EXPERIMENT" --space "$OUT/search_space.json" \
    --trials 1 --folds 0 --study gpu_check --no-corrections --no-pruning --no-progress "${SEARCH[@]}"
# b) the fast run stopped by SIGTERM after its first epoch and resumed: the same log
if [ "$FAST_OK" != 0 ]; then
    skip_step train_resume "the fast run failed: no uninterrupted log to compare with"
else
    run_step train_resume 150 "$PY" bench/gpu_steps.py resume --json "$OUT/train_resume.json" \
        --device "$DEVICE" --experiment "$EXPERIMENT" --reference "$OUT/runs/train_fast/log.csv" \
        -- "$PY" "${TRAIN_FOLD[@]}" "${TRAIN[@]}" "${FAST[@]}"
fi
# b) a short fine-tune from the fast run's fold 0 (the same classes: every head row copied)
if [ "$FAST_OK" != 0 ]; then
    skip_step train_finetune "the fast run failed"
else
    printf '{"base": "%s", "name": "%s_finetune"}\n' "$EXPERIMENT" "$EXPERIMENT" \
        > "$OUT/finetune.json"
    run_step train_finetune 120 "$PY" train_folds.py --experiment "$OUT/finetune.json" \
        --init-from "$EXPERIMENT" --set finetune.freeze_epochs=1 --set finetune.backbone_lr_scale=0.1 \
        --folds 0 --no-corrections \
        --max-epochs 2 --force --no-progress "${TRAIN[@]}" "${PREDICT_AMP[@]}"
    keep_run train_finetune "${EXPERIMENT}_finetune"
fi
# b) once more with torch.compile, with whatever time is left
if [ "$DRY" = 1 ]; then
    skip_step train_compiled "dry run: torch.compile on the CPU takes minutes"
elif [ "$FAST_OK" != 0 ]; then
    skip_step train_compiled "the fast run failed"
else
    train train_compiled 300 "${FAST[@]}" --compile
fi

# e) the report (not under the budget: it only reads files)
DRY_FLAG=()
[ "$DRY" = 1 ] && DRY_FLAG=(--dry-run)
"$PY" bench/gpu_report.py --out "$OUT" "${DRY_FLAG[@]}" || FAILED=1
echo "gpu_check: $(( $(date +%s) - STARTED ))s in all; report in $OUT/gpu_report.md"
exit $FAILED
