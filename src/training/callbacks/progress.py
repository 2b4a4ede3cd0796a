"""Progress bars of a fold: one over its epochs, one over each epoch's batches."""

from __future__ import annotations

from argus.callbacks import Callback
from argus.engine import State
from tqdm import tqdm

from src.training.parts import MONITOR


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
