"""Training data: label tables, ONE clip dataset, and the probability sampler (spec 7.4).

Curated, noisy and corrected-noisy clips are the same `ClipDataset` with a different table
and noisy flag (curated 0, noisy 1, corrected noisy 0). `ProbabilityMix` draws a set by
probability and a clip uniformly from it, `epoch_size` times per epoch.

Reproducibility: sample number k of a run (k = epoch * epoch_size + i) is drawn and augmented
with its own generator, `np.random.default_rng([seed, k])`. A sample therefore depends only on
the seed and its number: not on the worker that makes it, the number of workers, or how many
processes share an epoch (DDP), and no two workers can produce the same sample.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from src.audio import list_audio_files
from src.cache import Extraction, SpectrogramStore, get_store
from src.config import ConfigError, Paths, Vocabulary
from src.corrections import apply_corrections, load_corrections, relabelled_only
from src.folds import read_folds, read_labels_csv
from src.mixers import Mixer

log = logging.getLogger(__name__)

SET_NAMES = ("noisy", "corrected", "curated")
NOISY_FLAG = {"noisy": 1, "corrected": 0, "curated": 0}


# --------------------------------------------------------------------------------------
# Stores of the three Kaggle sets
# --------------------------------------------------------------------------------------


def curated_store(paths: Paths, extraction: Extraction | None = None) -> SpectrogramStore:
    table = pd.read_csv(paths.train_curated_csv, dtype=str)
    files = [paths.train_curated_dir / f for f in table["fname"]]
    return get_store("curated", files, paths.cache_dir, extraction)


def noisy_store(paths: Paths, extraction: Extraction | None = None) -> SpectrogramStore:
    table = pd.read_csv(paths.train_noisy_csv, dtype=str)
    files = [paths.train_noisy_dir / f for f in table["fname"]]
    return get_store("noisy", files, paths.cache_dir, extraction)


def has_noisy_set(paths: Paths) -> bool:
    """Whether the dataset has a noisy part: `train_noisy.csv` exists and lists a clip.

    Datasets of one's own usually hold hand-labelled clips only; training then moves the noisy
    sets' sampling probabilities to the curated set (`src.first_level`).
    """
    path = paths.train_noisy_csv
    if not path.is_file():
        return False
    with path.open(encoding="utf-8") as handle:
        lines = [line for line in handle if line.strip()]
    return len(lines) > 1  # a header and at least one row


def find_test_files(paths: Paths) -> list[Path]:
    """The test clips, or a clear error when the folder is missing or holds no audio."""
    if not paths.test_dir.is_dir():
        raise ConfigError(f"{paths.test_dir}: test folder not found")
    files = list_audio_files(paths.test_dir)
    if not files:
        raise ConfigError(f"{paths.test_dir}: the test folder holds no audio files")
    return files


def test_store(paths: Paths, extraction: Extraction | None = None) -> SpectrogramStore:
    return get_store("test", find_test_files(paths), paths.cache_dir, extraction)


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


# --------------------------------------------------------------------------------------
# Label tables of an experiment
# --------------------------------------------------------------------------------------


@dataclass
class LabelTables:
    """fname/labels tables of the three sets after corrections (curated one has `fold`)."""

    curated: pd.DataFrame
    noisy: pd.DataFrame
    corrected: pd.DataFrame


def corrections_path(paths: Paths, name: str | None):
    return None if name is None else paths.corrections_dir / name


def load_label_tables(
    paths: Paths,
    vocabulary: Vocabulary,
    corrections: dict,
    need_noisy: bool,
    skip_missing_corrections: bool = False,
) -> LabelTables:
    """The experiment's training labels: folds + curated corrections, noisy set per config."""
    curated = read_folds(paths.folds_csv)
    check_labels(curated, vocabulary, paths.folds_csv)
    curated_fix = _read_corrections(
        paths, vocabulary, corrections.get("curated"), curated["fname"], skip_missing_corrections
    )
    curated = apply_corrections(curated, curated_fix)
    noisy = corrected = pd.DataFrame(columns=["fname", "labels"])
    if need_noisy:
        noisy = read_labels_csv(paths.train_noisy_csv, vocabulary)
        noisy_fix = _read_corrections(
            paths, vocabulary, corrections.get("noisy"), noisy["fname"], skip_missing_corrections
        )
        corrected = relabelled_only(noisy, noisy_fix)
        if corrections.get("noisy_labels", "raw") == "corrected":
            noisy = apply_corrections(noisy, noisy_fix)
    return LabelTables(curated, noisy, corrected)


def _read_corrections(paths, vocabulary, name, fnames, skip_missing):
    path = corrections_path(paths, name)
    if path is None:
        return None
    if not path.is_file():
        if skip_missing:
            log.warning("correction file %s not found: training without it (smoke run)", path)
            return None
        raise ConfigError(
            f"{path}: correction file not found. Make one with make_corrections.py, copy the "
            "original's (see README, 'Label corrections'), or train without corrections "
            "(--no-corrections)"
        )
    return load_corrections(path, vocabulary, known_fnames=fnames)


def check_labels(table: pd.DataFrame, vocabulary: Vocabulary, source) -> None:
    unknown = sorted({label for labels in table["labels"] for label in vocabulary.unknown(labels)})
    if unknown:
        raise ConfigError(f"{source}: unknown labels {unknown[:5]}")
