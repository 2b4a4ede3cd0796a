"""Training data: label tables, ONE clip dataset, and the probability sampler.

See docs/original.md, "Data, folds and datasets".

Curated, noisy and corrected-noisy clips are the same `ClipDataset` with a different table
and noisy flag (curated 0, noisy 1, corrected noisy 0). `ProbabilityMix` draws a set by
probability and a clip uniformly from it, `epoch_size` times per epoch.

Reproducibility: sample number k of a run (k = epoch * epoch_size + i) is drawn and augmented
with its own generator, `np.random.default_rng([seed, k])`. A sample therefore depends only on
the seed and its number: not on the worker that makes it, the number of workers, or how many
processes share an epoch (DDP), and no two workers can produce the same sample. The loaders
get their own torch generator (`loader_generator`), so the model's draws (dropout) follow the
global torch generator alone, restored on resume: a run is the same whatever `--workers` and
however often it was interrupted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from src.augment.gpu import Raw, TrainDraws
from src.augment.mixers import Mixer
from src.config import ConfigError
from src.data.store import SpectrogramStore

log = logging.getLogger(__name__)

NOISY_FLAG = {"noisy": 1, "corrected": 0, "curated": 0}


# --------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------

Transform = Callable[[np.ndarray, np.random.Generator | None], torch.Tensor]


class ClipDataset(Dataset):
    """Clips of one set: spectrogram -> transform -> optional mixer.

    Items are (image, target, noisy flag as uint8). `__getitem__` serves validation (the
    transform's randomness, if any, is seeded by the index); training goes through
    `sample(index, rng)` with the generator of the sample being drawn.
    """

    def __init__(
        self,
        store: SpectrogramStore,
        fnames: Sequence[str],
        targets: np.ndarray,
        noisy: int,
        transform: Transform,
        mixer: Mixer | None = None,
        seed: int = 0,
    ) -> None:
        missing = [f for f in fnames if f not in store]
        if missing:
            raise ConfigError(
                f"{store.path}: no spectrograms for {len(missing)} clips: {missing[:5]}"
            )
        if len(fnames) != len(targets):
            raise ValueError("fnames and targets differ in length")
        self.store = store
        self.fnames = list(fnames)
        self.targets = np.asarray(targets, dtype=np.float32)
        self.noisy = torch.tensor(noisy, dtype=torch.uint8)
        self.transform = transform
        self.mixer = mixer
        self.seed = seed

    def __len__(self) -> int:
        return len(self.fnames)

    def transformed(
        self, index: int, rng: np.random.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.transform(self.store[self.fnames[index]], rng)
        return image, torch.from_numpy(self.targets[index].copy())

    def random_transformed(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A uniformly drawn clip of this set through the same transform (for the mixers)."""
        return self.transformed(int(rng.integers(len(self))), rng)

    def sample(self, index: int, rng: np.random.Generator):
        image, target = self.transformed(index, rng)
        if self.mixer is not None:
            image, target = self.mixer(self, image, target, rng)
        return image, target, self.noisy

    def __getitem__(self, index: int):
        return self.sample(index, np.random.default_rng([self.seed, index]))


class Sampleable(Protocol):
    """What ProbabilityMix draws from: a ClipDataset, or its raw-window form for the GPU path."""

    def __len__(self) -> int: ...

    def sample(self, index: int, rng: np.random.Generator): ...


class ProbabilityMix(Dataset):
    """Sample k: pick a set with probability p, then a clip uniformly, with generator (seed, k)."""

    def __init__(
        self,
        datasets: Sequence[Sampleable],
        probabilities: Sequence[float],
        size: int,
        seed: int | Sequence[int],
    ) -> None:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if len(datasets) != len(probabilities) or not len(datasets):
            raise ValueError("one probability per dataset is needed")
        if np.any(probabilities < 0) or not np.isclose(probabilities.sum(), 1.0):
            raise ConfigError(
                f"dataset probabilities must be >= 0 and sum to 1, got {probabilities.tolist()}"
            )
        empty = [
            i for i, (d, p) in enumerate(zip(datasets, probabilities)) if p > 0 and len(d) == 0
        ]
        if empty:
            raise ConfigError(f"a dataset drawn with probability > 0 is empty: positions {empty}")
        self.datasets = list(datasets)
        self.probabilities = probabilities / probabilities.sum()
        self.size = size
        self.seed = [seed] if isinstance(seed, int) else list(seed)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key: int):
        rng = np.random.default_rng([*self.seed, key])
        dataset = self.datasets[rng.choice(len(self.datasets), p=self.probabilities)]
        return dataset.sample(int(rng.integers(len(dataset))), rng)


def loader_generator(seed: Sequence[int]) -> torch.Generator:
    """A DataLoader's own generator. Without one, every loader iterator draws its workers' base
    seed from the global torch generator: once per epoch without persistent workers, once per
    run with them, so the model's dropout stream (the global generator) shifted with the number
    of workers and with every resume. The base seed only seeds the workers' global generators,
    which no sample uses (each sample has its own generator, see above)."""
    return torch.Generator().manual_seed(int(np.random.default_rng(list(seed)).integers(2**63)))


class EpochSampler(Sampler[int]):
    """Yields the sample numbers of one epoch: epoch * size + i.

    With `world_size` > 1 (DDP), rank r takes i = r, r + W, r + 2W, ...: the ranks together
    draw exactly the samples of a single-process epoch. The epoch advances at every iteration;
    `set_epoch` positions it when a run resumes.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, start_epoch: int = 0) -> None:
        if size % world_size:
            raise ConfigError(f"epoch size {size} is not divisible by {world_size} processes")
        self.size = size
        self.rank = rank
        self.world_size = world_size
        self.epoch = start_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.world_size

    def __iter__(self) -> Iterator[int]:
        base = self.epoch * self.size
        self.epoch += 1
        return iter(range(base + self.rank, base + self.size, self.world_size))


class RawWindowClips:
    """A `ClipDataset` seen by the GPU path: `sample(index, rng)` returns the raw sample.

    Drop-in for the sets of `ProbabilityMix` (which only uses `len` and `sample`), so the set
    and clip choice is ProbabilityMix's own. The partner clip is drawn uniformly from the same
    set, as `ClipDataset.random_transformed` draws it for the CPU mixers.
    """

    def __init__(self, clips: ClipDataset):
        self.clips = clips
        self.draws = TrainDraws(clips.transform, clips.mixer)

    def __len__(self) -> int:
        return len(self.clips)

    def _spectrogram(self, index: int) -> np.ndarray:
        return self.clips.store[self.clips.fnames[index]]

    def sample(
        self, index: int, rng: np.random.Generator
    ) -> tuple[Raw, torch.Tensor, torch.Tensor]:
        """Raw sample of clip `index`: the same draws, in the same order, as
        `ClipDataset.sample` (transform, then mixer, then the partner and its transform)."""
        clips = self.clips
        spectrogram = self._spectrogram(index)
        primary = self.draws.window(spectrogram, rng)
        mix = self.draws.mix(rng)
        if mix is None:
            image_weights, target_weights = self.draws.no_mix()
            partner = self.draws.empty_window(spectrogram.shape[0])
            partner_target = np.zeros_like(clips.targets[index])
        else:
            image_weights, target_weights = mix
            other = int(rng.integers(len(clips)))  # ClipDataset.random_transformed
            partner = self.draws.window(self._spectrogram(other), rng)
            partner_target = clips.targets[other].copy()
        raw = {
            "primary": primary,
            "partner": partner,
            "partner_target": partner_target,
            "image_weights": image_weights,
            "target_weights": target_weights,
        }
        return raw, torch.from_numpy(clips.targets[index].copy()), clips.noisy


# --------------------------------------------------------------------------------------
# Stacking: out-of-fold tile predictions as inputs (see src.runs.read_oof_tiles)
# --------------------------------------------------------------------------------------


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
