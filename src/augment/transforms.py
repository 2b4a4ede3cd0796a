"""Spectrogram augmentations and the train / validation pipelines (docs/original.md,
"Augmentations").

A spectrogram is a float32 array (n_mels, T) in dB: rows are mel bands, columns time frames.
Every transform is a callable ``t(x, rng) -> x`` taking an explicit ``np.random.Generator``;
deterministic transforms accept ``rng=None``. The original drew from the global ``random`` /
``np.random`` state; here the distributions are the same but the stream is the caller's, so a
seed reproduces a sample exactly.

``bilinear_matrix`` (resize as a matrix product) is public because the batched GPU path reuses
it; the model input (deltas, /100) is `src.augment.deltas`, shared by every path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import torch

from src.augment.deltas import model_input


class Transform(Protocol):
    """``t(x, rng)``: random transforms need ``rng``; deterministic ones accept None."""

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray: ...


# --------------------------------------------------------------------------------------
# Composition
# --------------------------------------------------------------------------------------


class Compose:
    """Apply transforms in order, passing the same generator to each."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(
        self, x: np.ndarray, rng: np.random.Generator | None = None
    ) -> np.ndarray | torch.Tensor:
        for transform in self.transforms:
            x = transform(x, rng)
        return x


class OneOf:
    """Apply one transform, chosen with probabilities ``p`` (the original used np.random.choice)."""

    def __init__(self, transforms: Sequence[Transform], p: Sequence[float] | None = None):
        if p is not None and len(p) != len(transforms):
            raise ValueError(f"OneOf: {len(transforms)} transforms but {len(p)} probabilities")
        self.transforms = list(transforms)
        self.p = None if p is None else list(p)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        index = int(rng.choice(len(self.transforms), p=self.p))
        return self.transforms[index](x, rng)


class UseWithProb:
    """Apply ``transform`` when ``rng.random() < prob``."""

    def __init__(self, transform: Transform, prob: float = 0.5):
        self.transform = transform
        self.prob = prob

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.prob:
            return self.transform(x, rng)
        return x


# --------------------------------------------------------------------------------------
# Padding and cropping along time
# --------------------------------------------------------------------------------------

PAD_MODES = ("constant", "wrap")


class PadToSize:
    """Pad the time axis to ``size`` when shorter; longer clips are returned unchanged.

    ``constant`` fills with the clip's own minimum (not 0), ``wrap`` is numpy periodic padding,
    which repeats the clip when the pad is longer than the clip.
    """

    def __init__(self, size: int, mode: str = "constant"):
        if mode not in PAD_MODES:
            raise ValueError(f"PadToSize mode must be one of {PAD_MODES}, got {mode!r}")
        self.size = size
        self.mode = mode

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        padding = self.size - x.shape[1]
        if padding <= 0:
            return x
        left = padding // 2
        pad_width = ((0, 0), (left, padding - left))
        if self.mode == "constant":
            return np.pad(x, pad_width, mode="constant", constant_values=x.min())
        return np.pad(x, pad_width, mode="wrap")


class RandomCrop:
    """Crop ``size`` frames starting at a uniform integer in [0, T - size] (inclusive)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        max_start = x.shape[1] - self.size
        if max_start < 0:
            raise ValueError(
                f"RandomCrop({self.size}) needs at least {self.size} frames, got {x.shape[1]}; "
                "pad first (PadToSize)"
            )
        start = int(rng.integers(0, max_start + 1))
        return x[:, start : start + self.size]


class CenterCrop:
    """Crop ``size`` central frames (start (T - size)//2); shorter clips pass unchanged."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        if x.shape[1] <= self.size:
            return x
        start = (x.shape[1] - self.size) // 2
        return x[:, start : start + self.size]


# --------------------------------------------------------------------------------------
# RandomResizedCrop
# --------------------------------------------------------------------------------------


def bilinear_matrix(
    in_size: int,
    out_size: int,
    offset: int = 0,
    total: int | None = None,
    dtype: npt.DTypeLike = np.float32,
) -> np.ndarray:
    """Linear-interpolation weights as a matrix: ``M @ v`` resizes ``v[offset:offset+in_size]``.

    Returns M of shape (out_size, total), where ``total`` (default ``offset + in_size``) is the
    length of ``v``. The weights follow PyTorch's ``interpolate(mode='bilinear',
    align_corners=False)`` along one axis: half-pixel centres, source = (dst + 0.5) * in/out - 0.5,
    negative sources clamped to 0, the upper neighbour clamped to in_size - 1. Bilinear resizing
    of a 2-D slice is then ``bilinear_matrix(h, H, i, total_rows) @ x @ bilinear_matrix(w, W, j,
    total_cols).T``; for upscaling this equals PIL's BILINEAR, which the original used.
    """
    total = offset + in_size if total is None else total
    if in_size < 1 or out_size < 1 or offset < 0 or offset + in_size > total:
        raise ValueError(
            f"bilinear_matrix: invalid slice [{offset}, {offset + in_size}) of length {total} "
            f"resized to {out_size}"
        )
    scale = in_size / out_size
    source = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    lower = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    upper_weight = source - lower
    matrix = np.zeros((out_size, total), dtype=np.float64)
    rows = np.arange(out_size)
    # add.at because lower == upper at the clamped edge, where both weights land on one column
    np.add.at(matrix, (rows, offset + lower), 1.0 - upper_weight)
    np.add.at(matrix, (rows, offset + upper), upper_weight)
    return matrix.astype(dtype)


class Box(NamedTuple):
    """A crop region: rows [top, top+height), columns [left, left+width)."""

    top: int
    left: int
    height: int
    width: int


def resized_crop(x: np.ndarray, box: Box) -> np.ndarray:
    """Crop ``box`` from a 2-D array and resize it bilinearly back to the array's shape."""
    rows, cols = x.shape
    row_matrix = bilinear_matrix(box.height, rows, box.top, rows)
    col_matrix = bilinear_matrix(box.width, cols, box.left, cols)
    return (row_matrix @ x @ col_matrix.T).astype(np.float32)


class RandomResizedCrop:
    """Torchvision-style random crop of the (mel, time) image, resized back to its shape."""

    max_attempts = 10  # as torchvision's and the original's

    def __init__(
        self,
        scale: tuple[float, float] = (0.8, 1.0),
        ratio: tuple[float, float] = (1.7, 2.3),
    ):
        if scale[0] > scale[1] or ratio[0] > ratio[1]:
            raise ValueError(f"RandomResizedCrop: ranges must be (min, max): {scale}, {ratio}")
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)

    def sample_box(self, height: int, width: int, rng: np.random.Generator) -> Box:
        """Draw the crop region as the original did (up to 10 attempts, then a fallback).

        Python's ``round`` (half to even) is used for the sizes, as in the original.
        """
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(self.max_attempts):
            target_area = rng.uniform(*self.scale) * area
            aspect = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if w <= width and h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return Box(top, left, h, w)
        # Fallback: a centred crop with the aspect clamped to the ratio range. The original left
        # h or w as a float here (unreachable with the used ranges; docs/original.md, quirk "Crop
        # fallback"); we round.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        return Box((height - h) // 2, (width - w) // 2, h, w)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return resized_crop(x, self.sample_box(*x.shape, rng))


# --------------------------------------------------------------------------------------
# SpecAugment
# --------------------------------------------------------------------------------------


class Band(NamedTuple):
    """One SpecAugment iteration: a band of rows and a band of columns (start, width each)."""

    freq_start: int
    freq_width: int
    time_start: int
    time_width: int


class SpecAugment:
    """Frequency and time masking filled with the input's minimum.

    1..num_mask iterations, each masking one frequency band and one time band; a band can have
    zero width. The fill value is the minimum of the input before any mask (after any earlier
    crop/resize, as the original; docs/original.md, quirk "Mask minimum and label union").
    """

    def __init__(self, num_mask: int = 2, freq_masking: float = 0.15, time_masking: float = 0.20):
        if num_mask < 1:
            raise ValueError(f"SpecAugment: num_mask must be >= 1, got {num_mask}")
        self.num_mask = num_mask
        self.freq_masking = freq_masking
        self.time_masking = time_masking

    def sample_bands(self, height: int, width: int, rng: np.random.Generator) -> list[Band]:
        """Draw the masked bands in the original's order: per iteration frequency, then time."""
        bands = []
        for _ in range(int(rng.integers(1, self.num_mask + 1))):
            freq_width = int(rng.uniform(0, self.freq_masking) * height)
            freq_start = int(rng.uniform(0, height - freq_width))
            time_width = int(rng.uniform(0, self.time_masking) * width)
            time_start = int(rng.uniform(0, width - time_width))
            bands.append(Band(freq_start, freq_width, time_start, time_width))
        return bands

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        value = x.min()
        out = x.copy()
        for band in self.sample_bands(*x.shape, rng):
            out[band.freq_start : band.freq_start + band.freq_width] = value
            out[:, band.time_start : band.time_start + band.time_width] = value
        return out


# --------------------------------------------------------------------------------------
# Conversion to the model input
# --------------------------------------------------------------------------------------


class ToTensor:
    """[x, delta, delta-delta] / 100 as a (3, F, T) float32 tensor: the model input."""

    def __call__(self, x: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        return model_input(x)


# --------------------------------------------------------------------------------------
# Pipelines (docs/original.md, "Augmentations")
# --------------------------------------------------------------------------------------


def get_transforms(
    train: bool,
    size: int = 256,
    wrap_pad_prob: float = 0.5,
    resize_scale: tuple[float, float] | None = (0.8, 1.0),
    resize_ratio: tuple[float, float] = (1.7, 2.3),
    resize_prob: float = 0.33,
    spec_num_mask: int = 2,
    spec_freq_masking: float = 0.15,
    spec_time_masking: float = 0.20,
    spec_prob: float = 0.5,
) -> Compose:
    """The original's pipelines; the arguments and defaults are the original's.

    Validation/test: constant pad -> centre crop -> tensor (``rng`` unused, may be None).
    Train: wrap-or-constant pad -> random crop -> RandomResizedCrop (omitted when resize_prob is
    0 or resize_scale is None, as in the older experiments without it) -> SpecAugment (omitted
    when spec_prob is 0) -> tensor.
    """
    if not train:
        return Compose([PadToSize(size, "constant"), CenterCrop(size), ToTensor()])
    steps: list[Transform] = [
        OneOf(
            [PadToSize(size, "wrap"), PadToSize(size, "constant")],
            p=[wrap_pad_prob, 1.0 - wrap_pad_prob],
        ),
        RandomCrop(size),
    ]
    if resize_prob > 0 and resize_scale is not None:
        steps.append(UseWithProb(RandomResizedCrop(resize_scale, resize_ratio), resize_prob))
    if spec_prob > 0:
        spec_augment = SpecAugment(spec_num_mask, spec_freq_masking, spec_time_masking)
        steps.append(UseWithProb(spec_augment, spec_prob))
    steps.append(ToTensor())
    return Compose(steps)
