"""What the pictures share: log-mel panels with seconds and Hz (on the mel scale) axes, a dB
colour bar, short titles, saving at a modest resolution."""

from __future__ import annotations

import os
from collections.abc import Sequence

import librosa
import numpy as np

from src.config import AUDIO, AudioConfig

DPI = 100  # --dpi's default; the README's pictures use less (Makefile, `make pictures`)
# Frequencies labelled on the mel axis (those inside the configuration's fmin..fmax; below
# 1 kHz the Slaney mel scale is linear, so lower ticks would crowd the bottom).
HZ_TICKS = (500, 1000, 2000, 5000, 10000, 20000)
CMAP = "magma"
TITLE_CHARACTERS = 42


def short_name(name: str, width: int = TITLE_CHARACTERS) -> str:
    """`name` cut in the middle to `width` characters (long recording names)."""
    if len(name) <= width:
        return name
    keep = width - 3
    return f"{name[: keep - keep // 2]}...{name[-(keep // 2) :]}"


def mel_band_position(hz: float | np.ndarray, config: AudioConfig = AUDIO) -> np.ndarray:
    """Where a frequency lies on the mel-band axis (band i's centre at i): the filterbank's
    centres are evenly spaced in (Slaney) mel from fmin to fmax, bands 0..n_mels-1 between
    the first and last of n_mels + 2 points (`librosa.filters.mel`)."""
    low, high = librosa.hz_to_mel([config.fmin, config.fmax])
    step = (high - low) / (config.n_mels + 1)
    return (librosa.hz_to_mel(hz) - low) / step - 1.0


def hz_label(hz: float) -> str:
    return f"{hz / 1000:g}k" if hz >= 1000 else f"{hz:g}"


def seconds_per_frame(config: AudioConfig = AUDIO) -> float:
    return config.hop_length / config.sampling_rate


def draw_log_mel(
    axis,
    image: np.ndarray,
    offset: float = 0.0,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = CMAP,
    config: AudioConfig = AUDIO,
    hz_axis: bool = True,
    seconds_axis: bool = True,
):
    """`image` (n_mels, T) as it is (imshow, low bands at the bottom) on `axis`: x in seconds
    from `offset` (frame t centred at offset + t * hop / sr), y in Hz on the mel scale.
    Returns the AxesImage, whose `get_array()` is `image`."""
    step = seconds_per_frame(config)
    n_mels, n_frames = image.shape
    extent = (offset - 0.5 * step, offset + (n_frames - 0.5) * step, -0.5, n_mels - 0.5)
    drawn = axis.imshow(
        image,
        origin="lower",
        aspect="auto",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        extent=extent,
        interpolation="antialiased",
    )
    if hz_axis and n_mels == config.n_mels:
        ticks = [hz for hz in HZ_TICKS if config.fmin <= hz <= config.fmax]
        axis.set_yticks(mel_band_position(np.array(ticks, float), config), map(hz_label, ticks))
        axis.set_ylabel("Hz (mel scale)", fontsize=8)
    elif hz_axis:
        axis.set_ylabel("mel band", fontsize=8)
    else:
        axis.set_yticks([])
    if seconds_axis:
        axis.set_xlabel("seconds", fontsize=8)
    axis.tick_params(labelsize=7)
    return drawn


def value_range(images: Sequence[np.ndarray]) -> tuple[float, float]:
    """One colour scale for several panels: the smallest and largest value of them all."""
    return min(float(i.min()) for i in images), max(float(i.max()) for i in images)


def save_figure(figure, path: str | os.PathLike, dpi: int = DPI) -> None:
    """Written to a temporary name and renamed (`src.plots`) as a 256-colour PNG, then the
    figure is closed."""
    from src.plots import _save

    _save(figure, path, dpi=dpi, palette=True)
