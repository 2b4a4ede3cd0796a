"""GPU augmentation path: the train transforms and mixers on batched device tensors.

The work is split where it is cheapest:

* Data-loader workers (`src.training.datasets.RawWindowClips`) draw **every random
  parameter** of a sample with the sample's own generator, calling the CPU path's own
  samplers (`RandomResizedCrop.sample_box`, `SpecAugment.sample_bands`,
  `AddMixer.sample_alpha`, `SigmoidConcatMixer.sample_radius`) in exactly the order the CPU
  pipeline calls them. They ship a raw `crop`-wide window of the clip
  (cut in the worker for long clips; short clips are shipped whole, left-aligned, with their
  true length) plus those parameters as small arrays. Wrapped in the existing `ProbabilityMix`,
  sample k is therefore drawn from the generator (seed, k) with the same set, clip and
  augmentation parameters as the CPU path's sample k: both paths produce the same training
  data, up to float rounding, and reproducibility keeps the CPU path's guarantees (independent
  of workers, batch composition, DDP and resumption).
* `augment_batch` runs on the device on the collated batch and is deterministic: padding by a
  gather, RandomResizedCrop by separable linear interpolation, SpecAugment by broadcast masks,
  deltas by the model input's own matrix products (`src.augment.deltas`, float32: PyTorch
  keeps TF32 off for them unless a program asks), then the mix. No random numbers, no
  host-device syncs, no Python loop over the batch.

A worker sample is ``(raw, target, noisy)``; ``raw`` is a dict (collated into a dict of
batched tensors, which `argus.utils.deep_to` moves as a whole):

    primary, partner: {"window": (H, W) float32, clip left-aligned (zeros past `length`),
                       "length": int, "wrap": bool (pad mode),
                       "box": (4,) int64 top, left, height, width (the whole image when the
                              resized crop is not applied: an exact identity),
                       "bands": (num_mask, 4) int64 rows [freq_start, freq_width, time_start,
                                time_width]; all-zero rows mask nothing}
    partner_target: (n_classes,) float32
    image_weights:  (2, W) float32, per-frame weights of the primary and the partner image
    target_weights: (2,) float32, target = clamp(a * target + b * partner_target, 0, 1)

Without a mix the partner is an all-zero dummy with weights (1, 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from src.augment.deltas import stack_deltas
from src.augment.mixers import (
    AddMixer,
    Mixer,
    RandomMixer,
    SigmoidConcatMixer,
    UseMixerWithProb,
    sigmoid_mask,
)
from src.augment.transforms import (
    Compose,
    OneOf,
    PadToSize,
    RandomCrop,
    RandomResizedCrop,
    SpecAugment,
    ToTensor,
    UseWithProb,
)

Raw = dict[str, Any]

# The order in which the GPU applies the steps; the CPU pipeline must list them in this order
# (optional ones may be missing) for the parameter draws to follow the same random stream.
STEP_ORDER = ("pad", "crop", "resize", "spec", "tensor")
REQUIRED_STEPS = {"pad", "crop", "tensor"}


# --------------------------------------------------------------------------------------
# Worker side: raw windows and parameter draws
# --------------------------------------------------------------------------------------


def raw_window(
    spectrogram: np.ndarray, crop: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """The part of a clip that pad + RandomCrop(crop) can show, as a (H, crop) float32 array.

    The start is drawn exactly as `RandomCrop` draws it after `PadToSize` (uniform in
    [0, T - crop], a draw of 0 when T <= crop). Clips of T >= crop give that window (padding
    does nothing to them); shorter ones are returned whole, left-aligned, and padded on the
    device. Returns (window, number of valid frames).
    """
    height, frames = spectrogram.shape
    if frames < 1:
        raise ValueError("raw_window: empty spectrogram")
    start = int(rng.integers(0, max(frames - crop, 0) + 1))
    if frames >= crop:
        return np.array(spectrogram[:, start : start + crop], dtype=np.float32), crop
    window = np.zeros((height, crop), dtype=np.float32)
    window[:, :frames] = spectrogram
    return window, frames


def _step_kind(step: object) -> str:
    match step:
        case OneOf(transforms=transforms) if all(isinstance(t, PadToSize) for t in transforms):
            return "pad"
        case RandomCrop():
            return "crop"
        case UseWithProb(transform=RandomResizedCrop()):
            return "resize"
        case UseWithProb(transform=SpecAugment()):
            return "spec"
        case ToTensor():
            return "tensor"
    raise ValueError(f"the GPU augmentation path cannot mirror the train step {step!r}")


MixWeights = tuple[np.ndarray, np.ndarray]  # image (2, W), target (2,), float32


def _draw_mix(mixer: object, rng: np.random.Generator, width: int) -> MixWeights | None:
    """Mirrors the calls of UseMixerWithProb / RandomMixer / the two mixers (docs/original.md,
    "Mixers")."""
    match mixer:
        case UseMixerWithProb():
            return _draw_mix(mixer.mixer, rng, width) if rng.random() < mixer.prob else None
        case RandomMixer():
            index = int(rng.choice(len(mixer.mixers), p=mixer.p))
            return _draw_mix(mixer.mixers[index], rng, width)
        case SigmoidConcatMixer():
            mask = sigmoid_mask(mixer.sample_radius(rng), width)
            # image = m * image + (1 - m) * other; target = clamp(target + other, 0, 1)
            return np.stack([mask, np.float32(1) - mask]), np.ones(2, dtype=np.float32)
        case AddMixer():
            alpha = mixer.sample_alpha(rng)
            weights = np.array([1 - alpha, alpha], dtype=np.float32)
            return np.repeat(weights[:, None], width, axis=1), weights
    return None  # no mixer


def _check_mixer(mixer: object) -> None:
    match mixer:
        case None | SigmoidConcatMixer() | AddMixer():
            return
        case UseMixerWithProb():
            _check_mixer(mixer.mixer)
        case RandomMixer():
            for inner in mixer.mixers:
                _check_mixer(inner)
        case _:
            raise ValueError(f"the GPU augmentation path cannot mirror the mixer {mixer!r}")


class TrainDraws:
    """Draws the random parameters of a CPU train pipeline (`get_transforms(True, ...)` and
    `get_mixer(...)`) in the order of its own calls, so one generator yields the same values
    on both paths. The pipeline objects are read, not re-created from a config, so the GPU path
    cannot drift from them; a step it cannot mirror raises ValueError here.
    """

    def __init__(self, transform: Compose, mixer: Mixer | None = None):
        kinds = [_step_kind(step) for step in transform.transforms]
        if kinds != sorted(set(kinds), key=STEP_ORDER.index) or not set(kinds) >= REQUIRED_STEPS:
            raise ValueError(
                f"the GPU augmentation path needs the train steps in the order {STEP_ORDER} "
                f"(resize and spec optional), got {kinds}"
            )
        steps = dict(zip(kinds, transform.transforms))
        self.pad: OneOf = steps["pad"]
        self.crop: int = steps["crop"].size
        if any(pad.size != self.crop for pad in self.pad.transforms):
            raise ValueError("the GPU augmentation path needs the pad size equal to the crop size")
        self.resize: UseWithProb | None = steps.get("resize")
        self.spec: UseWithProb | None = steps.get("spec")
        self.num_mask = self.spec.transform.num_mask if self.spec else 0
        _check_mixer(mixer)
        self.mixer = mixer

    def window(self, spectrogram: np.ndarray, rng: np.random.Generator) -> Raw:
        """One clip's raw window and parameters, drawn as OneOf(pads), RandomCrop and the
        UseWithProb(RandomResizedCrop / SpecAugment) steps draw them."""
        height = spectrogram.shape[0]
        pad_index = int(rng.choice(len(self.pad.transforms), p=self.pad.p))
        window, length = raw_window(spectrogram, self.crop, rng)
        box = np.array([0, 0, height, self.crop], dtype=np.int64)
        if self.resize is not None and rng.random() < self.resize.prob:
            box[:] = self.resize.transform.sample_box(height, self.crop, rng)
        bands = np.zeros((self.num_mask, 4), dtype=np.int64)
        if self.spec is not None and rng.random() < self.spec.prob:
            for row, band in enumerate(self.spec.transform.sample_bands(height, self.crop, rng)):
                bands[row] = band
        return {
            "window": window,
            "length": length,
            "wrap": self.pad.transforms[pad_index].mode == "wrap",
            "box": box,
            "bands": bands,
        }

    def empty_window(self, height: int) -> Raw:
        """The dummy partner of an unmixed sample: zeros, identity parameters."""
        return {
            "window": np.zeros((height, self.crop), dtype=np.float32),
            "length": self.crop,
            "wrap": False,
            "box": np.array([0, 0, height, self.crop], dtype=np.int64),
            "bands": np.zeros((self.num_mask, 4), dtype=np.int64),
        }

    def mix(self, rng: np.random.Generator) -> MixWeights | None:
        """The mixer's draw (None: no mix); the caller draws the partner clip afterwards, as
        the CPU mixers do after drawing their own parameter."""
        return _draw_mix(self.mixer, rng, self.crop)

    def no_mix(self) -> MixWeights:
        """Weights that keep the primary sample unchanged: image 1 and 0, target 1 and 0."""
        image = np.zeros((2, self.crop), dtype=np.float32)
        image[0] = 1
        return image, np.array([1, 0], dtype=np.float32)


# --------------------------------------------------------------------------------------
# Device side: deterministic batched transforms
# --------------------------------------------------------------------------------------


def pad_windows(windows: torch.Tensor, lengths: torch.Tensor, wrap: torch.Tensor) -> torch.Tensor:
    """PadToSize on left-aligned windows (B, H, W) of `lengths` valid frames, per-sample mode.

    Left pad (W - length)//2 as PadToSize; `wrap` is numpy's periodic padding (index modulo
    the length, equal to np.pad(mode='wrap') however long the pad), otherwise the pad is the
    clip's own minimum. Full-length windows come back unchanged.
    """
    batch, height, width = windows.shape
    columns = torch.arange(width, device=windows.device)
    lengths = lengths[:, None]
    source = columns - (width - lengths) // 2  # (B, W): the clip frame each column shows
    inside = (source >= 0) & (source < lengths)
    # modulo: periodic for wrap; for constant padding only the inside columns are kept
    index = source.remainder(lengths)[:, None, :].expand(batch, height, width)
    padded = windows.gather(2, index)
    valid = (columns < lengths)[:, None, :]
    minimum = windows.masked_fill(~valid, torch.inf).amin(dim=(1, 2), keepdim=True)
    keep = (inside | wrap[:, None])[:, None, :]
    return torch.where(keep, padded, minimum)


def linear_taps(
    in_sizes: torch.Tensor, offsets: torch.Tensor, out_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample linear interpolation taps of `bilinear_matrix(in, out, offset)`, batched.

    Returns (lower, upper, lower_weight, upper_weight), each (B, out_size): output i is
    lower_weight * v[lower] + upper_weight * v[upper]. Same float64 formulas as
    `bilinear_matrix` (half-pixel centres, clamping), weights cast to float32 like its matrix.
    """
    positions = torch.arange(out_size, device=in_sizes.device, dtype=torch.float64)
    scale = in_sizes.to(torch.float64)[:, None] / out_size
    source = ((positions + 0.5) * scale - 0.5).clamp(min=0.0)
    last = in_sizes[:, None] - 1
    lower = source.floor().long().minimum(last)
    upper = (lower + 1).minimum(last)
    upper_weight = source - lower
    offsets = offsets[:, None]
    return (
        offsets + lower,
        offsets + upper,
        (1.0 - upper_weight).float(),
        upper_weight.float(),
    )


def _interpolate(x: torch.Tensor, dim: int, taps) -> torch.Tensor:
    """Resample axis `dim` (1 or 2) of (B, H, W) with per-sample taps of shape (B, n)."""
    lower, upper, lower_weight, upper_weight = taps
    shape = list(x.shape)
    shape[dim] = lower.shape[1]

    def spread(t: torch.Tensor) -> torch.Tensor:  # (B, n) -> broadcast along the other axis
        return (t[:, :, None] if dim == 1 else t[:, None, :]).expand(shape)

    below = x.gather(dim, spread(lower)) * spread(lower_weight)
    return below + x.gather(dim, spread(upper)) * spread(upper_weight)


def resize_boxes(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """`resized_crop` per sample: crop box (top, left, height, width) of (B, H, W), resized
    back to (H, W) bilinearly, rows then columns as `resized_crop`. A whole-image box is an
    exact identity (weights 1 and 0)."""
    _, height, width = x.shape
    top, left, box_height, box_width = boxes.unbind(1)
    x = _interpolate(x, 1, linear_taps(box_height, top, height))
    return _interpolate(x, 2, linear_taps(box_width, left, width))


def _in_bands(positions: torch.Tensor, starts: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """(B, n) mask: position inside any band [start, start + width) of (B, M) bands."""
    positions = positions[None, None, :]
    ends = (starts + widths)[..., None]
    return ((positions >= starts[..., None]) & (positions < ends)).any(dim=1)


def mask_bands(x: torch.Tensor, bands: torch.Tensor) -> torch.Tensor:
    """SpecAugment with given bands (B, M, 4): rows and columns set to the sample's minimum,
    computed before masking, as the original did. Samples without bands (zero widths) are
    unchanged."""
    _, height, width = x.shape
    rows = _in_bands(torch.arange(height, device=x.device), bands[..., 0], bands[..., 1])
    columns = _in_bands(torch.arange(width, device=x.device), bands[..., 2], bands[..., 3])
    masked = rows[:, :, None] | columns[:, None, :]
    return torch.where(masked, x.amin(dim=(1, 2), keepdim=True), x)


def augment_windows(windows: Raw) -> torch.Tensor:
    """Pad, resized crop, SpecAugment and deltas of a collated window dict -> (B, 3, H, W)."""
    x = pad_windows(windows["window"], windows["length"], windows["wrap"])
    x = resize_boxes(x, windows["box"])
    x = mask_bands(x, windows["bands"])
    return stack_deltas(x)


def augment_batch(
    raw: Raw, target: torch.Tensor, noisy: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The GPU path's batch transform (`FreesoundModel.batch_transform`).

    Primary and partner windows go through the steps together (one batch of 2B), then the mix
    with the drawn weights. Returns (input (B, 3, H, W) float32, target in [0, 1], noisy).
    """
    if not isinstance(raw, dict):
        raise TypeError(
            "augment_batch needs the raw batches of RawWindowClips (the GPU path's train set), "
            f"got {type(raw).__name__}"
        )
    primary, partner = raw["primary"], raw["partner"]
    both = {key: torch.cat([primary[key], partner[key]]) for key in primary}
    images, others = augment_windows(both).chunk(2)
    weights = raw["image_weights"][:, :, None, None, :]  # (B, 2, 1, 1, W): over channels, mels
    images = weights[:, 0] * images + weights[:, 1] * others
    target_weights = raw["target_weights"]
    target = target_weights[:, :1] * target + target_weights[:, 1:] * raw["partner_target"]
    return images, target.clamp(0, 1), noisy
