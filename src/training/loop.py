"""The fold loop, used by first-level (CNN) and stacking (MLP) training alike. Per fold folder:

    model-EEE-S.pth   the best checkpoint so far (val_lwlrap S at epoch EEE; of equal scores,
                      the lower val_bce), written atomically
    log.txt           the epoch log (appended across resumes)
    log.csv           one row of metrics per epoch
    curves.png        training curves, redrawn while it trains
    last.pth          the state to resume from (model, optimizer, scheduler, AMP scaler,
                      early-stopping and checkpoint bookkeeping, RNG); removed when done
    finished.json     written when the fold is done (early stop or epoch cap)

A fold that finished is skipped; one that was interrupted continues from its last epoch. The
callbacks live in `src/training/callbacks/`, one module per role; the experiment folder's rules
(`prepare_experiment_dir`) in `src/runs.py`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from argus.callbacks import (
    Callback,
    CosineAnnealingWarmRestarts,
    LoggingToCSV,
    LoggingToFile,
    ReduceLROnPlateau,
)
from argus.callbacks.lr_schedulers import LRScheduler

from src.library_internals import fit
from src.runs import (
    FINISHED_FILE,
    STATE_FILE,
    best_checkpoint,
    fold_dir,
    fold_finished,
    read_finished,
)
from src.training.callbacks.checkpoints import BestCheckpoint
from src.training.callbacks.console import epoch_lines_to_log_only
from src.training.callbacks.curves import TrainingCurves
from src.training.callbacks.early_stopping import EarlyStopping
from src.training.callbacks.progress import FoldProgress, ProgressBar
from src.training.callbacks.resume import ResumeState, resume
from src.training.callbacks.samples import SampleCounter
from src.training.distributed import barrier
from src.training.parts import MONITOR, FoldParts, Schedule
from src.utils import LOCK_FILE, remove_leftovers, write_json_atomic, writer_lock

log = logging.getLogger(__name__)


def run_fold(
    parts: FoldParts,
    fold_dir: Path,
    schedule: Schedule,
    description: str,
    progress: bool = True,
    verbose: bool = False,
) -> dict:
    """Train one fold until early stopping or the epoch cap, resuming if it was interrupted.

    One process writes a fold: a second one stops with LockedError naming the holder (its
    `last.pth`, log.csv and temporary names would otherwise mix with the first's). Holding the
    lock, it first removes what a killed writer left (temporary checkpoints and files)."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    if not parts.is_main:  # DDP ranks other than 0 write nothing
        return _run_fold(parts, fold_dir, schedule, description, progress, verbose)
    with writer_lock(fold_dir / LOCK_FILE, description):
        remove_leftovers(fold_dir)
        return _run_fold(parts, fold_dir, schedule, description, progress, verbose)


def _run_fold(
    parts: FoldParts,
    fold_dir: Path,
    schedule: Schedule,
    description: str,
    progress: bool,
    verbose: bool,
) -> dict:
    model = parts.model
    saved, start_epoch = resume(model, fold_dir)
    if saved and saved.get("stopped"):
        start_epoch = schedule.max_epochs  # interrupted between its last epoch and finishing
    if parts.sampler is not None:
        parts.sampler.set_epoch(start_epoch)
    if saved:
        log.info("%s: resuming at epoch %d", description, start_epoch)
        if parts.is_main:
            _truncate_csv_log(fold_dir / "log.csv", start_epoch)

    callbacks = _callbacks(parts, fold_dir, schedule, description, progress, saved, start_epoch)
    started = time.time()
    if start_epoch < schedule.max_epochs:
        with epoch_lines_to_log_only(model, verbose):
            fit(
                model,
                parts.train_loader,
                parts.val_loader,
                start_epoch,
                schedule.max_epochs,
                parts.metrics,
                callbacks,
            )
    result = {"seconds": round(time.time() - started, 1)}
    best = best_checkpoint(fold_dir)
    if best is not None:
        result.update(best_checkpoint=best[0].name, best_val_lwlrap=best[1])
    if parts.is_main:
        write_json_atomic(result, fold_dir / FINISHED_FILE)
        (fold_dir / STATE_FILE).unlink(missing_ok=True)
    return result


def _callbacks(
    parts: FoldParts,
    fold_dir: Path,
    schedule: Schedule,
    description: str,
    progress: bool,
    saved: dict | None,
    start_epoch: int,
) -> list[Callback]:
    """The fold's callbacks, in the order they run: checkpoint, early stopping and the
    learning-rate scheduler, logs, curves and bars (on the process that writes), then the set-up's
    own, and the resume state last (it saves what the others updated)."""
    checkpoint = BestCheckpoint(fold_dir) if parts.is_main else None
    early_stopping = EarlyStopping(patience=schedule.early_stopping)
    scheduler = lr_scheduler(schedule)
    callbacks: list[Callback] = [SampleCounter(), early_stopping, scheduler]
    if parts.is_main:
        csv_path = fold_dir / "log.csv"
        callbacks = [
            checkpoint,
            *callbacks,
            LoggingToFile(fold_dir / "log.txt", append=True),
            LoggingToCSV(csv_path, append=saved is not None, write_header=saved is None),
            TrainingCurves(csv_path, fold_dir / "curves.png", description),
        ]
        if progress:
            callbacks.append(FoldProgress(description, start_epoch, schedule.max_epochs))
            callbacks.append(ProgressBar(description, len(parts.train_loader)))
    callbacks += parts.extra_callbacks
    callbacks.append(
        ResumeState(
            fold_dir / STATE_FILE, checkpoint, early_stopping, scheduler, saved, parts.is_main
        )
    )
    return callbacks


def lr_scheduler(schedule: Schedule) -> LRScheduler:
    """The schedule's learning-rate callback: warm restarts (stepped per epoch) or the plateau
    scheduler on MONITOR."""
    if schedule.warm_restarts is not None:
        warm = schedule.warm_restarts
        return CosineAnnealingWarmRestarts(
            T_0=int(warm["T_0"]), T_mult=int(warm.get("T_mult", 1)), eta_min=warm.get("eta_min", 0)
        )
    return ReduceLROnPlateau(
        monitor=MONITOR,
        better="max",
        factor=schedule.factor,
        patience=schedule.patience,
        min_lr=schedule.min_lr,
    )


def _truncate_csv_log(path: Path, start_epoch: int) -> None:
    """Drop rows of epochs that will run again (written after the last saved state)."""
    import pandas as pd

    if path.is_file():
        rows = pd.read_csv(path)
        if (rows["epoch"] >= start_epoch).any():
            rows[rows["epoch"] < start_epoch].to_csv(path, index=False)


def train_folds(
    experiment_dir: Path,
    folds: Sequence[int],
    build: Callable[[int], FoldParts],
    schedule: Schedule,
    name: str,
    progress: bool = True,
    verbose: bool = False,
) -> dict[int, dict]:
    """Train the given folds in turn, skipping finished ones; returns each fold's summary."""
    results = {}
    for fold in folds:
        folder = fold_dir(experiment_dir, fold)
        if fold_finished(folder):
            results[fold] = read_finished(folder)
            log.info(
                "%s fold %d already finished (%s), skipping",
                name,
                fold,
                results[fold].get("best_checkpoint"),
            )
            continue
        parts = build(fold)
        results[fold] = run_fold(
            parts, folder, schedule, f"{name} fold {fold}", progress and parts.is_main, verbose
        )
        log.info("%s fold %d: best val_lwlrap %s", name, fold, results[fold].get("best_val_lwlrap"))
        barrier()  # under torchrun, rank 0 has written the fold's files before anyone goes on
    return results
