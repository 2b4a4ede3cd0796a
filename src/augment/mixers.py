"""Mixers: blend a transformed training sample with another clip of the same dataset.

See docs/original.md, "Mixers".

A mixer is called ``mixer(dataset, image, target, rng) -> (image, target)`` after the dataset
has transformed its own sample: ``image`` is the (3, F, W) tensor of the train transform and
``target`` a float32 multi-hot tensor. The other clip comes from
``dataset.random_transformed(rng)``: a uniform draw from the *same* dataset, passed through the
same train transform with independent randomness. The mixed sample is not mixed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

ALPHA_DISTS = ("uniform", "beta")
Sample = tuple[torch.Tensor, torch.Tensor]


class MixSource(Protocol):
    """A dataset that can draw one of its clips at random, already train-transformed."""

    def random_transformed(self, rng: np.random.Generator) -> Sample: ...


class Mixer(Protocol):
    """``mixer(dataset, image, target, rng) -> (image, target)``."""

    def __call__(
        self,
        dataset: MixSource,
        image: torch.Tensor,
        target: torch.Tensor,
        rng: np.random.Generator,
    ) -> Sample: ...


class AddMixer:
    """Weighted sum of two clips with soft targets (mixup).

    alpha ~ U(0, 0.5) ('uniform', the primary keeps at least half) or Beta(0.4, 0.4) ('beta').
    """

    def __init__(self, alpha_dist: str = "uniform"):
        if alpha_dist not in ALPHA_DISTS:
            raise ValueError(f"AddMixer: alpha_dist must be in {ALPHA_DISTS}, got {alpha_dist!r}")
        self.alpha_dist = alpha_dist

    def sample_alpha(self, rng: np.random.Generator) -> float:
        if self.alpha_dist == "uniform":
            return float(rng.uniform(0.0, 0.5))
        return float(rng.beta(0.4, 0.4))

    def __call__(
        self,
        dataset: MixSource,
        image: torch.Tensor,
        target: torch.Tensor,
        rng: np.random.Generator,
    ) -> Sample:
        alpha = self.sample_alpha(rng)
        other_image, other_target = dataset.random_transformed(rng)
        image = (1 - alpha) * image + alpha * other_image
        target = (1 - alpha) * target + alpha * other_target
        return image, target


def sigmoid_mask(radius: int, width: int) -> np.ndarray:
    """The SigmoidConcatMixer weight of the primary clip per time frame, float32 (width,).

    sigmoid over ``width`` evenly spaced points from -radius (inclusive) to +radius (exclusive).
    For width 256 this equals the original's ``arange(-r, r, 2r/256)`` bit for bit (the step is
    an exact binary fraction); computing ``-r + i*step`` instead of ``arange`` guarantees exactly
    ``width`` values for any width.
    """
    x = -radius + (2.0 * radius / width) * np.arange(width, dtype=np.float64)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


class SigmoidConcatMixer:
    """Smooth cross-fade over time: the early side from ``other``, the late side from the primary.

    The radius r (integer, uniform in ``sigmoid_range`` inclusive) sets the sharpness; labels are
    merged as a hard union clipped to 1, however little each clip contributes, as the original did
    (docs/original.md, quirk "Mask minimum and label union").
    """

    def __init__(self, sigmoid_range: tuple[int, int] = (3, 12)):
        low, high = sigmoid_range
        if not 0 < low <= high:
            raise ValueError(f"SigmoidConcatMixer: invalid sigmoid_range {sigmoid_range}")
        self.sigmoid_range = (int(low), int(high))

    def sample_radius(self, rng: np.random.Generator) -> int:
        low, high = self.sigmoid_range
        return int(rng.integers(low, high + 1))

    def __call__(
        self,
        dataset: MixSource,
        image: torch.Tensor,
        target: torch.Tensor,
        rng: np.random.Generator,
    ) -> Sample:
        radius = self.sample_radius(rng)
        other_image, other_target = dataset.random_transformed(rng)
        mask = torch.as_tensor(
            sigmoid_mask(radius, image.shape[-1]), dtype=image.dtype, device=image.device
        )
        image = mask * image + (1 - mask) * other_image  # broadcast over channels and mels
        target = torch.clamp(target + other_target, 0, 1)
        return image, target


class RandomMixer:
    """Apply one of ``mixers``, chosen with probabilities ``p``."""

    def __init__(self, mixers: Sequence[Mixer], p: Sequence[float] | None = None):
        if p is not None and len(p) != len(mixers):
            raise ValueError(f"RandomMixer: {len(mixers)} mixers but {len(p)} probabilities")
        self.mixers = list(mixers)
        self.p = None if p is None else list(p)

    def __call__(
        self,
        dataset: MixSource,
        image: torch.Tensor,
        target: torch.Tensor,
        rng: np.random.Generator,
    ) -> Sample:
        index = int(rng.choice(len(self.mixers), p=self.p))
        return self.mixers[index](dataset, image, target, rng)


class UseMixerWithProb:
    """Apply ``mixer`` when ``rng.random() < prob``; otherwise return the sample unchanged."""

    def __init__(self, mixer: Mixer, prob: float = 0.5):
        self.mixer = mixer
        self.prob = prob

    def __call__(
        self,
        dataset: MixSource,
        image: torch.Tensor,
        target: torch.Tensor,
        rng: np.random.Generator,
    ) -> Sample:
        if rng.random() < self.prob:
            return self.mixer(dataset, image, target, rng)
        return image, target


def get_mixer(
    prob: float,
    sigmoid_range: tuple[int, int] = (3, 12),
    p: Sequence[float] = (0.6, 0.4),
    alpha_dist: str = "uniform",
) -> UseMixerWithProb | None:
    """The configuration of every experiment: sigmoid-concat or add, applied with
    probability ``prob``; None when ``prob`` is 0 (no mixing, as for validation)."""
    if prob <= 0:
        return None
    mixer = RandomMixer([SigmoidConcatMixer(sigmoid_range), AddMixer(alpha_dist)], p=p)
    return UseMixerWithProb(mixer, prob)
