"""What a fold's training is made of: its schedule, how it runs, and its parts (model, loaders,
metrics), built by the first-level and stacking set-ups for the fold loop."""

from __future__ import annotations

from dataclasses import dataclass, field

from argus.callbacks import Callback
from argus.metrics import Metric

MONITOR = "val_lwlrap"  # the metric a fold checkpoints, stops early and schedules on


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
