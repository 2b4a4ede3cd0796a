"""show.py augmentations: one clip through an experiment's training augmentations.

Everything drawn comes from the objects training builds from the configuration
(`src.training.first_level.train_augmentations`: `get_transforms(True, ...)` and
`get_mixer(...)`), never from a copy of them:

* the model input once: the validation transform's three channels (log-mel, delta,
  delta-delta: `src.augment.deltas`), shown in dB (the tensor times 100);
* each step of the train transform alone, on the clip padded (each pad mode of the OneOf) and
  randomly cropped to the crop size: RandomResizedCrop and SpecAugment applied for sure (their
  UseWithProb's inner transform), then each mixer of the RandomMixer with the second clip;
* the whole training pipeline, sample by sample: `ClipDataset.transformed` then the mixer, as
  `ClipDataset.sample` makes a training sample, with `np.random.default_rng(seed)` for seeds
  0..N-1. Without a second clip the partner of the mixers is the clip itself (as a training set
  of one clip), and each sample is exactly `ClipDataset.sample(0, rng)`.

The targets of a sample say what the mixer did: the clip is class 0, the second clip class 1
(1 / 0: not mixed; 1 / 1: sigmoid-concat, labels merged; 1 - a / a: added with weight a).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from src.augment.deltas import TENSOR_SCALE
from src.augment.mixers import AddMixer, RandomMixer, SigmoidConcatMixer, UseMixerWithProb
from src.augment.transforms import (
    Compose,
    OneOf,
    PadToSize,
    RandomCrop,
    RandomResizedCrop,
    SpecAugment,
    ToTensor,
    UseWithProb,
    get_transforms,
)
from src.config import AUDIO, ConfigError
from src.tools.pictures.axes import DPI, draw_log_mel, save_figure, short_name, value_range
from src.training.datasets import ClipDataset
from src.training.first_level import train_augmentations

SEEDS = 6  # --seeds's default
PANEL_SIZE = (2.3, 1.7)  # inches per panel


@dataclass
class Panel:
    title: str
    image: np.ndarray  # (n_mels, frames), in dB (or dB per frame for the deltas)


@dataclass
class AugmentationViews:
    """What the picture shows, as computed; the figure draws these arrays as they are."""

    name: str
    experiment: str
    crop: int
    frames: int  # of the whole clip
    second: str | None
    clip: Panel | None = None  # the whole clip, as read
    channels: list[Panel] = field(default_factory=list)
    alone: list[Panel] = field(default_factory=list)
    pipeline: list[Panel] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def as_db(image: torch.Tensor, channel: int = 0) -> np.ndarray:
    """A model-input channel in the units of the spectrogram (the input is dB / 100)."""
    return image[channel].numpy() * np.float32(TENSOR_SCALE)


def _percent(value: float) -> str:
    return f"{100 * value:g} %"


def describe(step: object) -> tuple[str, str]:
    """A transform's or mixer's name and its settings, for a panel's title."""
    match step:
        case PadToSize(mode=mode, size=size):
            return f"{mode} pad to {size}", "+ random crop"
        case RandomResizedCrop(scale=scale, ratio=ratio):
            return (
                "RandomResizedCrop",
                f"scale {scale[0]:g}-{scale[1]:g}, ratio {ratio[0]:g}-{ratio[1]:g}",
            )
        case SpecAugment(num_mask=n, freq_masking=f, time_masking=t):
            return "SpecAugment", f"<= {n} masks, {_percent(f)} freq, {_percent(t)} time"
        case SigmoidConcatMixer(sigmoid_range=(low, high)):
            return "SigmoidConcatMixer", f"radius {low}-{high}"
        case AddMixer(alpha_dist=dist):
            return "AddMixer", f"alpha {'U(0, 0.5)' if dist == 'uniform' else 'Beta(0.4, 0.4)'}"
    return type(step).__name__, ""


class _FixedPartner:
    """A mixers' MixSource that always gives one prepared (image, target)."""

    def __init__(self, image: torch.Tensor, target: torch.Tensor) -> None:
        self.sample = (image, target)

    def random_transformed(self, rng: np.random.Generator):
        return self.sample


def _leaf_mixers(mixer: object, probability: float = 1.0) -> list[tuple[object, float]]:
    """The mixers a mixer tree applies, each with the probability that it is the one."""
    match mixer:
        case None:
            return []
        case UseMixerWithProb(mixer=inner, prob=prob):
            return _leaf_mixers(inner, probability * prob)
        case RandomMixer(mixers=mixers, p=p):
            shares = p or [1.0 / len(mixers)] * len(mixers)
            return [
                leaf for m, s in zip(mixers, shares) for leaf in _leaf_mixers(m, probability * s)
            ]
    return [(mixer, probability)]


def _targets(target: torch.Tensor) -> str:
    values = target.numpy()
    if len(values) == 1:
        return ""
    return f"target {values[0]:.2f} / {values[1]:.2f}"


def _title(name: str, settings: str = "", probability: float | None = None, extra: str = "") -> str:
    """Two lines: the name (and p), then the settings (and what came out)."""
    first = name if probability is None else f"{name} (p {probability:.2g})"
    second = ", ".join(part for part in (settings, extra) if part)
    return f"{first}\n{second}" if second else first


def check_first_level(config: dict) -> None:
    if config.get("kind") != "cnn":
        raise ConfigError(
            f"{config.get('name')} is a stacking experiment: its inputs are predictions, not "
            "spectrograms; pick a first-level experiment"
        )


def pipeline_samples(
    spectrogram: np.ndarray,
    transform: Compose,
    mixer,
    seeds: Sequence[int],
    second: np.ndarray | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(image, target) of training samples of the clip, one per seed (generator
    `default_rng(seed)`), made as `ClipDataset.sample` makes them; the mixers' partner is
    `second` (target class 1) or, without it, the clip itself."""
    if second is None:
        clips = ClipDataset({"clip": spectrogram}, ["clip"], np.ones((1, 1)), 0, transform, mixer)
        return [clips.sample(0, np.random.default_rng(seed))[:2] for seed in seeds]
    primary = ClipDataset({"clip": spectrogram}, ["clip"], np.array([[1.0, 0.0]]), 0, transform)
    partner = ClipDataset({"second": second}, ["second"], np.array([[0.0, 1.0]]), 0, transform)
    samples = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        image, target = primary.transformed(0, rng)
        if mixer is not None:
            image, target = mixer(partner, image, target, rng)
        samples.append((image, target))
    return samples


def augmentation_views(
    spectrogram: np.ndarray,
    config: dict,
    name: str = "clip",
    second: np.ndarray | None = None,
    second_name: str | None = None,
    seeds: int = SEEDS,
) -> AugmentationViews:
    """The panels of the picture for a first-level experiment's resolved `config`."""
    check_first_level(config)
    transform, mixer = train_augmentations(config)
    crop = int(config["crop_size"])
    views = AugmentationViews(
        name,
        config["name"],
        crop,
        spectrogram.shape[1],
        second_name if second is not None else None,
    )
    labels = ("log-mel (dB)", "delta (dB per frame)", "delta-delta (dB per frame²)")
    model_input = get_transforms(False, crop)(spectrogram)
    seconds = spectrogram.shape[1] * AUDIO.hop_length / AUDIO.sampling_rate
    views.clip = Panel(f"the clip\n{spectrogram.shape[1]} frames, {seconds:.1f} s", spectrogram)
    views.channels = [
        Panel(f"model input {c}\n{label}", as_db(model_input, c)) for c, label in enumerate(labels)
    ]

    steps = transform.transforms
    crops = [s for s in steps if isinstance(s, RandomCrop)]
    pads = next((s for s in steps if isinstance(s, OneOf)), None)
    if not crops or pads is None:
        raise ConfigError(f"{config['name']}: the train transform has no pad + random crop")
    crop_step = crops[0]
    pad_share = pads.p or [1.0 / len(pads.transforms)] * len(pads.transforms)

    def window(image: np.ndarray, pad, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return crop_step(pad(image, rng), rng)

    for pad, share in zip(pads.transforms, pad_share):
        views.alone.append(Panel(_title(*describe(pad), share), window(spectrogram, pad)))
    base = window(spectrogram, pads.transforms[0])
    for step in steps:
        if isinstance(step, UseWithProb):
            image = step.transform(base, np.random.default_rng(0))
            views.alone.append(Panel(_title(*describe(step.transform), step.prob), image))
        elif not isinstance(step, OneOf | RandomCrop | ToTensor):
            image = step(base, np.random.default_rng(0))
            views.alone.append(Panel(_title(*describe(step)), image))
    leaves = _leaf_mixers(mixer)
    if not leaves:
        views.notes.append("no mixing in this experiment (mixer.prob 0)")
    partner_image = second if second is not None else spectrogram
    primary = ToTensor()(base)
    partner_target = torch.tensor([0.0, 1.0]) if second is not None else torch.tensor([1.0])
    partner = _FixedPartner(
        ToTensor()(window(partner_image, pads.transforms[0], seed=1)), partner_target
    )
    primary_target = torch.tensor([1.0, 0.0]) if second is not None else torch.tensor([1.0])
    for leaf, probability in leaves:
        image, target = leaf(partner, primary, primary_target, np.random.default_rng(0))
        views.alone.append(
            Panel(_title(*describe(leaf), probability, _targets(target)), as_db(image))
        )

    for seed, (image, target) in zip(
        range(seeds), pipeline_samples(spectrogram, transform, mixer, range(seeds), second)
    ):
        views.pipeline.append(Panel(_title(f"seed {seed}", _targets(target)), as_db(image)))
    return views


def augmentation_figure(views: AugmentationViews):
    """Three rows: the model input's channels, each augmentation alone, the whole pipeline.
    Each panel's AxesImage holds its array as it is (`get_array()`)."""
    from src.plots import plt

    first = ([views.clip] if views.clip is not None else []) + views.channels
    columns = max(len(views.alone), len(views.pipeline), len(first), 1)
    width, height = PANEL_SIZE
    figure = plt.figure(figsize=(width * columns + 1.2, 3 * (height + 0.6)), layout="constrained")
    rows = figure.subfigures(3, 1)
    # The clip and the model input's channels, each on its own scale (the deltas are signed).
    axes = rows[0].subplots(1, columns, squeeze=False)[0]
    for index, (axis, panel) in enumerate(zip(axes, first)):
        signed = panel in views.channels[1:]
        limit = float(np.abs(panel.image).max()) or 1.0
        drawn = draw_log_mel(
            axis,
            panel.image,
            vmin=-limit if signed else None,
            vmax=limit if signed else None,
            cmap="RdBu_r" if signed else "magma",
            hz_axis=index == 0,
        )
        axis.set_title(panel.title, fontsize=7, loc="left")
        rows[0].colorbar(drawn, ax=axis, shrink=0.85)
    for axis in axes[len(first) :]:
        axis.set_axis_off()
    second = short_name(views.second, 30) if views.second else "the clip itself"
    rows[0].suptitle(
        f"{short_name(views.name, 60)} and {views.experiment}'s training augmentations on "
        f"{views.crop}-frame crops (the mixers' second clip: {second})",
        fontsize=9,
    )
    # One dB scale for the augmented images.
    vmin, vmax = value_range([p.image for p in [*views.alone, *views.pipeline]])
    for row, panels, heading in (
        (
            rows[1],
            views.alone,
            "each augmentation alone (seed 0; the second clip cropped with seed 1)",
        ),
        (rows[2], views.pipeline, "the whole training pipeline, one sample per seed"),
    ):
        axes = row.subplots(1, columns, squeeze=False)[0]
        drawn = None
        for index, (axis, panel) in enumerate(zip(axes, panels)):
            drawn = draw_log_mel(axis, panel.image, vmin=vmin, vmax=vmax, hz_axis=index == 0)
            axis.set_title(panel.title, fontsize=7, loc="left")
        for axis in axes[len(panels) :]:
            axis.set_axis_off()
        if drawn is not None:
            row.colorbar(drawn, ax=axes.tolist(), label="dB", shrink=0.85)
        note = f" ({'; '.join(views.notes)})" if views.notes and row is rows[1] else ""
        row.suptitle(heading + note, fontsize=9)
    return figure


def show_augmentations(
    clip: str | os.PathLike,
    config: dict,
    out: str | os.PathLike,
    second: str | os.PathLike | None = None,
    seeds: int = SEEDS,
    dpi: int = DPI,
) -> list[str]:
    """Read the clip (and the second), draw, write `out`; returns what to tell the user."""
    from src.tools.pictures.spectrograms import read_panels

    check_first_level(config)
    paths = [Path(clip)] + ([Path(second)] if second is not None else [])
    panels = read_panels(paths)
    views = augmentation_views(
        panels[0].spectrogram,
        config,
        paths[0].name,
        panels[1].spectrogram if second is not None else None,
        paths[1].name if second is not None else None,
        seeds,
    )
    save_figure(augmentation_figure(views), out, dpi)
    return [*views.notes, f"augmentations of {paths[0]} with {config['name']}: {out}"]
