"""How many training samples an epoch saw."""

from __future__ import annotations

import torch
from argus.callbacks import Callback
from argus.engine import State

from src.training.distributed import sum_across_ranks


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
