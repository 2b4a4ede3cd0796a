"""A fold trained as part of a hyper-parameter search: its validation lwlrap, epoch by epoch,
handed to the search, which may stop the trial early (prune it)."""

from __future__ import annotations

from collections.abc import Callable

from argus.callbacks import Callback
from argus.engine import State

from src.training.parts import MONITOR


class TrialReport(Callback):
    """Calls `report(step, val_lwlrap)` after every epoch; when it answers True (the search
    prunes the trial) the fold stops as early stopping stops it, so the fold folder ends
    finished with its best checkpoint, and `pruned_at` holds the epoch.

    `first_step` numbers this fold's epochs after the trial's earlier folds, so that trials
    are compared at the same fold and epoch.
    """

    def __init__(self, report: Callable[[int, float], bool], first_step: int = 0) -> None:
        self.report = report
        self.first_step = first_step
        self.pruned_at: int | None = None

    def epoch_complete(self, state: State) -> None:
        score = state.metrics.get(MONITOR)
        if score is None or self.pruned_at is not None:
            return
        if self.report(self.first_step + state.epoch, float(score)):
            self.pruned_at = state.epoch
            state.stopped = True
            state.logger.info(f"the search prunes this trial after epoch {state.epoch}")
