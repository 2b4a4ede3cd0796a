"""When an epoch is better than the best one so far: a higher val lwlrap, or the same val lwlrap
and a lower validation binary cross-entropy (`src.models.metrics.Bce`). The checkpoint and the
early stopping share the rule.

A small validation set (a few clips per class, as in a user's own dataset) reaches lwlrap 1.0
within a few epochs, and no later epoch can beat it. With the score alone, the first epoch to
reach it is the one kept, and early stopping ends the run `early_stopping` epochs later however
much the network still learns. The cross-entropy keeps telling those epochs apart. On the
validation folds of FAT2019 (about 1,000 clips each) two epochs practically never reach the same
score, so there the rule keeps the epochs the score alone keeps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from src.training.parts import MONITOR, TIE_BREAK


class Improvement:
    """The best (MONITOR, TIE_BREAK) seen so far, as `score` and `loss`; `update` tells whether an
    epoch's metrics beat it."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.score = -math.inf
        self.loss = math.inf

    def update(self, metrics: Mapping[str, float]) -> bool:
        """Whether `metrics` (an epoch's, with MONITOR and TIE_BREAK) is better than the best so
        far; if so, it becomes the best."""
        for name in (MONITOR, TIE_BREAK):
            if name not in metrics:
                raise ValueError(
                    f"metric {name!r} not found in the epoch's metrics (a fold validates with "
                    "src.training.parts.validation_metrics())"
                )
        score, loss = float(metrics[MONITOR]), float(metrics[TIE_BREAK])
        if score > self.score or (score == self.score and loss < self.loss):
            self.score, self.loss = score, loss
            return True
        return False

    def state(self) -> dict[str, float]:
        return {"score": self.score, "loss": self.loss}

    def restore(self, saved: dict[str, float] | float) -> None:
        if not isinstance(saved, dict):  # a state saved before ties were broken: the score alone
            saved = {"score": saved, "loss": math.inf}
        self.score, self.loss = float(saved["score"]), float(saved["loss"])


def best_epoch(epochs: Iterable[Mapping[str, float]]) -> int | None:
    """The position of the best of a fold's epochs (log.csv rows, in order) by the rule above:
    the epoch its checkpoint holds. None when there is none."""
    best, chosen = Improvement(), None
    for position, metrics in enumerate(epochs):
        if best.update(metrics):
            chosen = position
    return chosen
