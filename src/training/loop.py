"""Training folds with argus: callbacks, resuming, and the experiment folder's rules.

Used by first-level (CNN) and stacking (MLP) training alike. Per fold folder:

    model-EEE-S.pth   the best checkpoint so far (val_lwlrap S at epoch EEE), written atomically
    log.txt           the epoch log (appended across resumes)
    log.csv           one row of metrics per epoch
    curves.png        training curves, redrawn every epoch
    last.pth          the state to resume from (model, optimizer, scheduler, AMP scaler,
                      early-stopping and checkpoint bookkeeping, RNG); removed when done
    finished.json     written when the fold is done (early stop or epoch cap)

Rules of the experiment folder: an experiment with the same configuration resumes (finished
folds are skipped, interrupted ones continue from their last epoch); one with a different
configuration is never overwritten without `--force`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from argus.callbacks import (
    Callback,
    EarlyStopping,
    LoggingToCSV,
    LoggingToFile,
    MonitorCheckpoint,
    ReduceLROnPlateau,
    attach_callbacks,
    on_epoch_complete,
)
from argus.callbacks.logging import default_logging
from argus.engine import Engine, State
from argus.metrics import Metric
from argus.metrics.loss import Loss
from argus.metrics.metric import attach_metrics
from tqdm import tqdm

from src.config import ConfigError
from src.runs import (
    CHECKPOINT_FORMAT,
    FINISHED_FILE,
    PARAMS_FILE,
    STATE_FILE,
    best_checkpoint,
    fold_dir,
    fold_finished,
    read_checkpoint,
    read_finished,
)
from src.training.distributed import barrier, sum_across_ranks
from src.utils import (
    LOCK_FILE,
    plain_module,
    remove_leftovers,
    strip_compile_prefix,
    tmp_name,
    write_json_atomic,
    writer_lock,
)

log = logging.getLogger(__name__)

MONITOR = "val_lwlrap"


class ExperimentExistsError(ConfigError):
    """An experiment folder that holds a different configuration."""


# --------------------------------------------------------------------------------------
# The experiment folder
# --------------------------------------------------------------------------------------


def prepare_experiment_dir(
    experiment_dir: Path, record: dict, force: bool, runtime: dict | None = None
) -> None:
    """Create the folder and its `params.json`, or check that an existing one matches.

    `record` is everything that must be equal for a rerun to continue the same experiment
    (the resolved configuration, the classes, the seed); `runtime` (device, AMP, versions) is
    recorded too but may change between sessions.
    """
    params_path = experiment_dir / PARAMS_FILE
    if experiment_dir.exists() and any(experiment_dir.iterdir()):
        if force:
            log.warning("--force: deleting %s", experiment_dir)
            with ExitStack() as held:  # never under a process training one of its folds
                for lock in sorted(experiment_dir.glob(f"fold_*/{LOCK_FILE}")):
                    held.enter_context(writer_lock(lock, str(lock.parent)))
                shutil.rmtree(experiment_dir)
        elif not params_path.is_file():
            raise ExperimentExistsError(
                f"{experiment_dir} exists but holds no {PARAMS_FILE}; move it away or use --force"
            )
        else:
            existing = _what_shapes_the_run(json.loads(params_path.read_text()))
            wanted = _what_shapes_the_run(json.loads(json.dumps(record)))  # tuples -> lists
            # A record of an older version has no folds fingerprint: it cannot be compared.
            existing.setdefault("folds", wanted.get("folds"))
            changed = sorted(key for key in record if existing.get(key) != wanted[key])
            if changed:
                raise ExperimentExistsError(
                    f"{experiment_dir} already holds a run with a different {', '.join(changed)}; "
                    "use --force to delete it and train again"
                )
    experiment_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic({**record, "runtime": runtime or {}}, params_path)


def _what_shapes_the_run(record: dict) -> dict:
    """The record without the configuration's `original` entry: notes on where the settings
    come from, which may be reworded without changing the run."""
    config = {k: v for k, v in record.get("config", {}).items() if k != "original"}
    return {**record, "config": config}


# --------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------


class AtomicCheckpoint(MonitorCheckpoint):
    """Best-only checkpoint written under a temporary name and renamed."""

    def save_model(self, state: State, file_path) -> None:
        save_model_atomic(state.model, Path(file_path))
        state.logger.info(f"Model saved to '{file_path}'")


def save_model_atomic(model, path: Path) -> None:
    """argus's checkpoint format (model_name, params, nn_state_dict), renamed into place."""
    state = {
        "model_name": type(model).__name__,
        "params": model.params,
        # The plain module's keys, also for --compile runs (no `_orig_mod.` prefix).
        "nn_state_dict": {
            k: v.cpu() for k, v in plain_module(model.get_nn_module()).state_dict().items()
        },
    }
    tmp = tmp_name(path)
    torch.save(state, tmp)
    os.replace(tmp, path)


class SampleCounter(Callback):
    """Records how many training samples an epoch saw (summed over DDP ranks) as
    `train_samples` in the epoch's metrics, so logs show what every process drew."""

    def epoch_start(self, state: State) -> None:
        self.count = 0

    def iteration_complete(self, state: State) -> None:
        # The target: batch[0] of the GPU augmentation path is a tuple of raw-window fields.
        self.count += len(state.batch[1])

    def epoch_complete(self, state: State) -> None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        state.metrics["train_samples"] = int(
            sum_across_ranks(self.count) if distributed else self.count
        )


class ProgressBar(Callback):
    """A tqdm bar over the iterations of each training epoch."""

    def __init__(self, description: str, total: int) -> None:
        self.description = description
        self.total = total
        self.bar = None

    def epoch_start(self, state: State) -> None:
        self.bar = tqdm(
            total=self.total,
            desc=f"{self.description} epoch {state.epoch}",
            leave=False,
            unit="batch",
        )

    def iteration_complete(self, state: State) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{state.step_output['loss']:.4f}", refresh=False)

    def epoch_complete(self, state: State) -> None:
        self.bar.close()

    def catch_exception(self, state: State) -> None:
        if self.bar is not None:
            self.bar.close()


class FoldProgress(Callback):
    """One bar per fold over its epochs, with the latest and the best validation lwlrap: what
    the console shows of a fold while the per-epoch lines go to its log.txt."""

    def __init__(self, description: str, start_epoch: int, max_epochs: int) -> None:
        self.bar = tqdm(
            total=max_epochs, initial=start_epoch, desc=description, unit="epoch", leave=True
        )
        self.best = float("-inf")

    def epoch_complete(self, state: State) -> None:
        score = state.metrics.get(MONITOR)
        if score is not None:
            self.best = max(self.best, float(score))
            self.bar.set_postfix_str(f"{MONITOR} {score:.4f}, best {self.best:.4f}", refresh=False)
        self.bar.update(1)

    def complete(self, state: State) -> None:
        self.bar.close()

    def catch_exception(self, state: State) -> None:
        self.bar.close()


@contextmanager
def epoch_lines_to_log_only(model, verbose: bool) -> Iterator[None]:
    """argus prints every epoch's metrics and checkpoint moves to stdout; unless `verbose`,
    they go to the fold's log.txt only (LoggingToFile adds its own handler to that logger)."""
    consoles = [
        h
        for h in model.logger.handlers
        if type(h) is logging.StreamHandler  # not files
    ]
    levels = [h.level for h in consoles]
    for handler in consoles:
        handler.addFilter(_not_an_interrupt)
        if not verbose:
            handler.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for handler, level in zip(consoles, levels):
            handler.setLevel(level)
            handler.removeFilter(_not_an_interrupt)


def _not_an_interrupt(record: logging.LogRecord) -> bool:
    """argus logs the exception that stops a run with its traceback; for Ctrl-C the script's
    one line `interrupted` says it all on the console (log.txt keeps the record)."""
    return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


class TrainingCurves(Callback):
    """Redraws `curves.png` (losses, val lwlrap, learning rate) from log.csv: after an epoch
    when `min_interval` seconds have passed since training started or since the last drawing,
    and when training ends.

    Drawing takes about half a second, longer than a small model's epoch: every epoch would
    make plotting most of a smoke run or of a stacking fold.
    """

    def __init__(
        self, csv_path: Path, png_path: Path, title: str, min_interval: float = 30.0
    ) -> None:
        self.csv_path = csv_path
        self.png_path = png_path
        self.title = title
        self.min_interval = min_interval
        self.last_drawn = time.monotonic()

    def start(self, state: State) -> None:
        # A fold shorter than the interval is drawn once, at its end.
        self.last_drawn = time.monotonic()

    def _draw(self) -> None:
        from src.plots import plot_training_curves

        self.last_drawn = time.monotonic()
        try:
            plot_training_curves(self.csv_path, self.png_path, self.title)
        except Exception as error:  # a plot must never stop training
            log.warning("could not draw %s: %s", self.png_path, error)

    def epoch_complete(self, state: State) -> None:
        if time.monotonic() - self.last_drawn >= self.min_interval:
            self._draw()

    def complete(self, state: State) -> None:
        self._draw()


class ResumeState(Callback):
    """Restores the bookkeeping of the other callbacks on start, saves everything each epoch.

    Attached last, so its `start` runs after theirs (which reset their counters) and its
    `epoch_complete` after theirs (which updated them).
    """

    def __init__(
        self,
        path: Path,
        checkpoint: MonitorCheckpoint | None,
        early_stopping: EarlyStopping,
        scheduler: ReduceLROnPlateau,
        saved: dict | None,
        writes: bool,
    ) -> None:
        self.path = path
        self.checkpoint = checkpoint
        self.early_stopping = early_stopping
        self.scheduler = scheduler
        self.saved = saved
        self.writes = writes

    def start(self, state: State) -> None:
        if self.saved is None:
            return
        if self.checkpoint is not None:
            self.checkpoint.best_value = self.saved["checkpoint_best"]
            self.checkpoint.saved_files_paths = list(self.saved["checkpoint_files"])
        self.early_stopping.best_value = self.saved["early_stopping_best"]
        self.early_stopping.wait = self.saved["early_stopping_wait"]
        self.scheduler.scheduler.load_state_dict(self.saved["scheduler"])

    def epoch_complete(self, state: State) -> None:
        if not self.writes:
            return
        model = state.model
        snapshot = {
            "epoch": state.epoch,
            "stopped": bool(state.stopped),
            "nn_state_dict": plain_module(model.get_nn_module()).state_dict(),
            "optimizer": model.optimizer.state_dict(),
            "scaler": model.scaler.state_dict() if hasattr(model, "scaler") else {},
            "scheduler": self.scheduler.scheduler.state_dict(),
            "early_stopping_best": float(self.early_stopping.best_value),
            "early_stopping_wait": int(self.early_stopping.wait),
            "checkpoint_best": float(self.checkpoint.best_value)
            if self.checkpoint
            else float("-inf"),
            "checkpoint_files": [str(p) for p in self.checkpoint.saved_files_paths]
            if self.checkpoint
            else [],
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }
        tmp = tmp_name(self.path)
        torch.save(snapshot, tmp)
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------------------
# One fold
# --------------------------------------------------------------------------------------


@dataclass
class Schedule:
    """Epoch cap, early stopping and the plateau scheduler of a run (docs/original.md,
    "Training")."""

    max_epochs: int
    early_stopping: int
    patience: int
    factor: float
    min_lr: float = 1e-8

    @classmethod
    def from_config(cls, config: dict) -> Schedule:
        scheduler = config["scheduler"]
        return cls(
            max_epochs=int(config["max_epochs"]),
            early_stopping=int(config["early_stopping"]),
            patience=int(scheduler["patience"]),
            factor=float(scheduler["factor"]),
            min_lr=float(scheduler.get("min_lr", 1e-8)),
        )


@dataclass
class RunOptions:
    """How (not what) to train: none of these enter the experiment's configuration."""

    device: str = "cpu"
    amp: str = "off"
    seed: int = 2019
    workers: int = 0
    channels_last: bool = False
    rank: int = 0
    world_size: int = 1
    sync_batchnorm: bool = False
    augment_on: str = "cpu"  # 'gpu': workers ship raw windows, the model's device augments
    compile: bool = False  # torch.compile the network


@dataclass
class FoldParts:
    """What a fold needs to train: built fresh for every fold (a new model each time)."""

    model: object  # an argus.Model
    train_loader: object
    val_loader: object
    sampler: object | None = None  # has set_epoch(epoch) when the data depends on the epoch
    metrics: list[Metric] = field(default_factory=list)
    is_main: bool = True  # False on DDP ranks other than 0: they write nothing
    extra_callbacks: list[Callback] = field(default_factory=list)


def load_resume_state(fold_dir: Path, map_location: str | torch.device = "cpu") -> dict | None:
    path = fold_dir / STATE_FILE
    if not path.is_file():
        return None
    return read_checkpoint(path, map_location=map_location)


def _restore(parts: FoldParts, saved: dict) -> int:
    model = parts.model
    plain_module(model.get_nn_module()).load_state_dict(
        strip_compile_prefix(saved["nn_state_dict"])
    )
    model.optimizer.load_state_dict(saved["optimizer"])
    if hasattr(model, "scaler") and saved.get("scaler"):
        model.scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["torch_rng"])
    if saved.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return int(saved["epoch"]) + 1


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
    saved = load_resume_state(fold_dir, model.device)
    start_epoch = _restore(parts, saved) if saved else 0
    if saved and saved.get("stopped"):
        start_epoch = schedule.max_epochs  # interrupted between its last epoch and finishing
    if parts.sampler is not None:
        parts.sampler.set_epoch(start_epoch)
    if saved:
        log.info("%s: resuming at epoch %d", description, start_epoch)
        if parts.is_main:
            _truncate_csv_log(fold_dir / "log.csv", start_epoch)

    checkpoint = None
    if parts.is_main:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Directory ... already exists": expected here
            checkpoint = AtomicCheckpoint(
                fold_dir, CHECKPOINT_FORMAT, max_saves=1, monitor=MONITOR, better="max"
            )
    early_stopping = EarlyStopping(monitor=MONITOR, patience=schedule.early_stopping, better="max")
    plateau = ReduceLROnPlateau(
        monitor=MONITOR,
        better="max",
        factor=schedule.factor,
        patience=schedule.patience,
        min_lr=schedule.min_lr,
    )
    callbacks: list[Callback] = [SampleCounter(), early_stopping, plateau]
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
            fold_dir / STATE_FILE, checkpoint, early_stopping, plateau, saved, parts.is_main
        )
    )

    started = time.time()
    if start_epoch < schedule.max_epochs:
        with epoch_lines_to_log_only(model, verbose):
            _fit(
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


def _truncate_csv_log(path: Path, start_epoch: int) -> None:
    """Drop rows of epochs that will run again (written after the last saved state)."""
    import pandas as pd

    if path.is_file():
        rows = pd.read_csv(path)
        if (rows["epoch"] >= start_epoch).any():
            rows[rows["epoch"] < start_epoch].to_csv(path, index=False)


def _fit(
    model, train_loader, val_loader, start_epoch: int, end_epoch: int, metrics, callbacks
) -> None:
    """argus `Model.fit`, starting at `start_epoch` and without the epoch -1 validation pass
    (it changes nothing but the log and costs a full validation)."""
    phase_states: dict = {}
    train_engine = Engine(model.train_step, phase_states=phase_states)
    attach_metrics(train_engine, [Loss()])
    default_logging.attach(train_engine)
    val_engine = Engine(model.val_step, phase_states=phase_states)
    attach_metrics(val_engine, [Loss(), *metrics])
    default_logging.attach(val_engine)

    @on_epoch_complete
    def validate(train_state: State) -> None:
        val_state = val_engine.run(val_loader, train_state.epoch, train_state.epoch + 1)
        train_state.metrics.update(val_state.metrics)

    validate.attach(train_engine)
    attach_callbacks(train_engine, callbacks)
    train_engine.run(train_loader, start_epoch, end_epoch)


# --------------------------------------------------------------------------------------
# All folds of an experiment
# --------------------------------------------------------------------------------------


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
