"""Stacking inputs: concatenated out-of-fold tile predictions, and their transforms (spec 10.3).

A clip's input is (n_tiles, n_experiments * n_classes): the tile probabilities of every
first-level experiment, side by side, in the order of the stacking configuration. Training
draws random tile subsets (a contiguous run, then a random selection) before averaging over
tiles; validation and prediction average all tiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from src.config import ConfigError


def oof_path(predictions_dir: Path, experiment: str, fold: int, fname: str) -> Path:
    return predictions_dir / experiment / f"fold_{fold}" / "val" / f"{fname}.npy"


def check_oof_inputs(predictions_dir: Path, experiments: Sequence[str], folds_table) -> None:
    """Every input experiment must have out-of-fold predictions for every fold."""
    for experiment in experiments:
        for fold in sorted(folds_table["fold"].unique()):
            probs = predictions_dir / experiment / f"fold_{fold}" / "val" / "probs.csv"
            if not probs.is_file():
                raise ConfigError(
                    f"out-of-fold predictions of {experiment!r} fold {fold} are missing ({probs}); "
                    f"run `python train_folds.py --experiment {experiment}` and "
                    f"`python predict_folds.py --experiment {experiment}` first"
                )


def load_stacking_inputs(
    predictions_dir: Path, experiments: Sequence[str], fnames: Sequence[str], folds: Sequence[int]
) -> list[np.ndarray]:
    """(n_tiles, n_experiments * n_classes) per clip, from each clip's own fold."""
    inputs = []
    for fname, fold in zip(fnames, folds):
        parts = []
        for experiment in experiments:
            path = oof_path(predictions_dir, experiment, int(fold), fname)
            if not path.is_file():
                raise ConfigError(
                    f"{path}: missing; rerun `python predict_folds.py --experiment {experiment}`"
                )
            parts.append(np.load(path))
        if len({len(p) for p in parts}) != 1:
            raise ConfigError(
                f"{fname}: the input experiments tile it differently; they must share a crop size"
            )
        inputs.append(np.concatenate(parts, axis=1).astype(np.float32))
    return inputs


def random_tile_subset(
    tiles: np.ndarray, rng: np.random.Generator, sized_prob: float, stride_prob: float
) -> np.ndarray:
    """RandomSizedCrop then RandomStrideCrop, each applied with its probability."""
    if rng.random() < sized_prob:
        length = int(rng.integers(1, len(tiles) + 1))
        start = int(rng.integers(0, len(tiles) - length + 1))
        tiles = tiles[start : start + length]
    if rng.random() < stride_prob:
        length = int(rng.integers(1, len(tiles) + 1))
        tiles = tiles[rng.choice(len(tiles), size=length, replace=False)]
    return tiles


class StackingDataset(Dataset):
    """Validation: one item per clip (tile mean). Training (`size` given): item k draws a
    clip and a tile subset with the generator (seed, k), like the first-level sampler."""

    def __init__(
        self,
        inputs: Sequence[np.ndarray],
        targets: np.ndarray,
        size: int | None = None,
        seed: Sequence[int] = (0,),
        sized_prob: float = 0.5,
        stride_prob: float = 0.5,
    ) -> None:
        self.inputs = list(inputs)
        self.targets = np.asarray(targets, dtype=np.float32)
        self.size = size
        self.seed = list(seed)
        self.sized_prob = sized_prob
        self.stride_prob = stride_prob

    def __len__(self) -> int:
        return self.size if self.size is not None else len(self.inputs)

    def __getitem__(self, key: int):
        if self.size is None:
            index, tiles = key, self.inputs[key]
        else:
            rng = np.random.default_rng([*self.seed, key])
            index = int(rng.integers(len(self.inputs)))
            tiles = random_tile_subset(self.inputs[index], rng, self.sized_prob, self.stride_prob)
        return torch.from_numpy(tiles.mean(axis=0)), torch.from_numpy(self.targets[index].copy())
