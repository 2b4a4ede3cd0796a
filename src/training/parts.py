"""What a fold's training is made of: its schedule, how it runs, and its parts (model, loaders,
metrics), built by the first-level and stacking set-ups for the fold loop."""

from __future__ import annotations

from dataclasses import dataclass, field

from argus.callbacks import Callback
from argus.metrics import Metric

from src.models.metrics import Bce, Lwlrap, MultiAccuracy

MONITOR = "val_lwlrap"  # the metric a fold checkpoints, stops early and schedules on
TIE_BREAK = "val_bce"  # between epochs of equal MONITOR, the lower one is the better epoch


def validation_metrics() -> list[Metric]:
    """Fresh validation metrics of a fold, MONITOR and TIE_BREAK among them (argus adds the
    loss)."""
    return [MultiAccuracy(), Lwlrap(), Bce()]


@dataclass
class Schedule:
    """Epoch cap, early stopping and the learning-rate scheduler of a run (docs/original.md,
    "Training"): the plateau scheduler, or torch's CosineAnnealingWarmRestarts stepped per
    epoch when `warm_restarts` holds its T_0, T_mult and eta_min (the original's fine-tuning
    recipe)."""

    max_epochs: int
    early_stopping: int
    patience: int
    factor: float
    min_lr: float = 1e-8
    warm_restarts: dict | None = None

    @classmethod
    def from_config(cls, config: dict) -> Schedule:
        scheduler = config["scheduler"]
        max_epochs = int(config["max_epochs"])
        stopping = config.get("early_stopping")
        warm = scheduler.get("warm_restarts")
        return cls(
            max_epochs=max_epochs,
            # null: no early stopping (a patience as long as the run never runs out)
            early_stopping=max_epochs if stopping is None else int(stopping),
            patience=int(scheduler.get("patience", 0)),
            factor=float(scheduler.get("factor", 0.1)),
            min_lr=float(scheduler.get("min_lr", 1e-8)),
            warm_restarts=None if warm is None else dict(warm),
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
    metrics: list[Metric] = field(default_factory=validation_metrics)  # the same for every fold
    is_main: bool = True  # False on DDP ranks other than 0: they write nothing
    extra_callbacks: list[Callback] = field(default_factory=list)
