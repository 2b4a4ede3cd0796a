"""The state a fold resumes from (`last.pth`): saved after every epoch, restored on start.

It holds the network, optimizer and AMP scaler, the bookkeeping of the checkpoint, early
stopping and learning-rate callbacks, and the RNG, so an interrupted fold continues as if it had not
stopped.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from argus.callbacks import Callback
from argus.callbacks.lr_schedulers import LRScheduler
from argus.engine import State

from src.library_internals import (
    callback_state,
    plain_module,
    restore_callback_state,
    strip_compile_prefix,
)
from src.runs import STATE_FILE, read_checkpoint
from src.training.callbacks.checkpoints import BestCheckpoint
from src.training.callbacks.early_stopping import EarlyStopping
from src.utils import tmp_name


def load_resume_state(fold_dir: Path) -> dict | None:
    """The fold's saved state, read on the CPU, or None when it has none (a fresh fold).

    Always the CPU, whatever device the model is on: torch takes RNG states only as CPU byte
    tensors (on a GPU, `set_rng_state` refuses "RNG state must be a torch.ByteTensor"), and
    loading the network's and optimizer's state dicts moves their tensors to the parameters'
    device anyway."""
    path = fold_dir / STATE_FILE
    if not path.is_file():
        return None
    return read_checkpoint(path, map_location="cpu")


def resume(model, fold_dir: Path) -> tuple[dict | None, int]:
    """The fold's saved state (None for a fresh fold) restored into `model`, and the epoch to
    start at."""
    saved = load_resume_state(fold_dir)
    return saved, restore_model(model, saved) if saved else 0


def cpu_rng_state(state: torch.Tensor) -> torch.Tensor:
    """An RNG state as torch takes it back: a CPU byte tensor."""
    return state.to(device="cpu", dtype=torch.uint8)


def restore_model(model, saved: dict) -> int:
    """Network, optimizer, scaler and RNG from `saved`; returns the epoch to start at."""
    plain_module(model.get_nn_module()).load_state_dict(
        strip_compile_prefix(saved["nn_state_dict"])
    )
    model.optimizer.load_state_dict(saved["optimizer"])
    if hasattr(model, "scaler") and saved.get("scaler"):
        model.scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(cpu_rng_state(saved["torch_rng"]))
    if saved.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cpu_rng_state(s) for s in saved["cuda_rng"]])
    return int(saved["epoch"]) + 1


class ResumeState(Callback):
    """Restores the bookkeeping of the other callbacks on start, saves everything each epoch.

    Attached last, so its `start` runs after theirs (which reset their counters) and its
    `epoch_complete` after theirs (which updated them).
    """

    def __init__(
        self,
        path: Path,
        checkpoint: BestCheckpoint | None,
        early_stopping: EarlyStopping,
        scheduler: LRScheduler,
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
        saved = self.saved
        if saved is None:
            return
        restore_callback_state(saved, self.checkpoint, self.scheduler)
        if self.checkpoint is not None:
            self.checkpoint.best.restore(saved["checkpoint_best"])
        self.early_stopping.best.restore(saved["early_stopping_best"])
        self.early_stopping.wait = int(saved["early_stopping_wait"])

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
            **callback_state(self.checkpoint, self.scheduler),
            "checkpoint_best": self.checkpoint.best.state() if self.checkpoint else None,
            "early_stopping_best": self.early_stopping.best.state(),
            "early_stopping_wait": self.early_stopping.wait,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }
        tmp = tmp_name(self.path)
        torch.save(snapshot, tmp)
        os.replace(tmp, self.path)
