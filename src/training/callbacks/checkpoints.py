"""The best checkpoint of a fold, written atomically."""

from __future__ import annotations

from pathlib import Path

from argus.callbacks import MonitorCheckpoint
from argus.engine import State

from src.library_internals import plain_module
from src.runs import write_checkpoint


class AtomicCheckpoint(MonitorCheckpoint):
    """Best-only checkpoint written under a temporary name and renamed."""

    def save_model(self, state: State, file_path) -> None:
        save_model_atomic(state.model, Path(file_path))
        state.logger.info(f"Model saved to '{file_path}'")


def save_model_atomic(model, path: Path) -> None:
    """An argus model as a checkpoint (`src.runs.write_checkpoint`): the plain module's keys,
    also for --compile runs (no `_orig_mod.` prefix)."""
    state_dict = plain_module(model.get_nn_module()).state_dict()
    write_checkpoint(path, type(model).__name__, model.params, state_dict)
