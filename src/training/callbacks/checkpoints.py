"""The best checkpoint of a fold (`Improvement`'s rule), written atomically."""

from __future__ import annotations

import warnings
from pathlib import Path

from argus.callbacks import MonitorCheckpoint
from argus.engine import State

from src.library_internals import plain_module
from src.runs import CHECKPOINT_FORMAT, write_checkpoint
from src.training.callbacks.improvement import Improvement
from src.training.parts import MONITOR


class BestCheckpoint(MonitorCheckpoint):
    """Keeps one checkpoint, the best epoch's, written under a temporary name and renamed."""

    def __init__(self, dir_path: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Directory ... already exists": expected here
            super().__init__(
                dir_path, CHECKPOINT_FORMAT, max_saves=1, monitor=MONITOR, better="max"
            )
        self.best = Improvement()

    def start(self, state: State) -> None:
        self.best.reset()

    def epoch_complete(self, state: State) -> None:
        if self.best.update(state.metrics):
            self.save_checkpoint(state)

    def save_model(self, state: State, file_path) -> None:
        save_model_atomic(state.model, Path(file_path))
        state.logger.info(f"Model saved to '{file_path}'")


def save_model_atomic(model, path: Path) -> None:
    """An argus model as a checkpoint (`src.runs.write_checkpoint`): the plain module's keys,
    also for --compile runs (no `_orig_mod.` prefix)."""
    state_dict = plain_module(model.get_nn_module()).state_dict()
    write_checkpoint(path, type(model).__name__, model.params, state_dict)
