"""A fold's training curves (curves.png), redrawn as it trains."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from argus.callbacks import Callback
from argus.engine import State

from src.training.callbacks.improvement import best_epoch

log = logging.getLogger(__name__)


class TrainingCurves(Callback):
    """Redraws `curves.png` (losses, val lwlrap with the kept epoch, learning rate) from log.csv:
    after an epoch when `min_interval` seconds have passed since training started or since the
    last drawing, and when training ends.

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
        import pandas as pd

        from src.plots import plot_training_curves

        self.last_drawn = time.monotonic()
        try:
            rows = pd.read_csv(self.csv_path)
            best = best_epoch(rows.to_dict("records"))
            plot_training_curves(rows, self.png_path, self.title, best)
        except Exception as error:  # a plot must never stop training
            log.warning("could not draw %s: %s", self.png_path, error)

    def epoch_complete(self, state: State) -> None:
        if time.monotonic() - self.last_drawn >= self.min_interval:
            self._draw()

    def complete(self, state: State) -> None:
        self._draw()
