"""Early stopping: the fold ends after `patience` epochs without a better one (`Improvement`'s
rule, the checkpoint's)."""

from __future__ import annotations

from argus.callbacks import Callback
from argus.engine import State

from src.training.callbacks.improvement import Improvement
from src.training.parts import MONITOR, TIE_BREAK


class EarlyStopping(Callback):
    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best = Improvement()
        self.wait = 0  # epochs since the best one

    def start(self, state: State) -> None:
        self.best.reset()
        self.wait = 0

    def epoch_complete(self, state: State) -> None:
        if self.best.update(state.metrics):
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            state.stopped = True
            state.logger.info(
                f"Epoch {state.epoch}: early stopping, no better {MONITOR} (or equal one with a "
                f"lower {TIE_BREAK}) in {self.wait} epochs"
            )
