"""Audio read into clips exactly as the pipeline reads them (`read_audio`: decode, mono,
44.1 kHz, trim, short-clip rule; then the torch log-mel of the spectrogram cache), from files
or from samples in memory (`Samples`), and where each tile of a clip starts in its file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.config import AUDIO, AudioConfig, ConfigError
from src.data.audio import (
    AUDIO_EXTENSIONS,
    AudioDecodeError,
    MelExtractor,
    file_failure,
    load_audio,
    make_extractor,
    nonsilent_bounds,
    resample_audio,
    trim_audio,
)
from src.prediction.tiling import tile_layout
from src.utils import readable_files


@dataclass(frozen=True)
class Samples:
    """Audio already in memory, tagged like a file: `samples` (samples,) or (samples,
    channels) at `sample_rate`, reported under `name`."""

    name: str
    samples: np.ndarray
    sample_rate: int = AUDIO.sampling_rate


@dataclass(frozen=True)
class Clip:
    path: Path
    spectrogram: np.ndarray  # (n_mels, T) log-mel of the trimmed clip
    offset: float  # seconds of leading silence trimmed away: frame 0 starts here in the file


def collect_audio_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded to their audio files (recursively, sorted).

    A missing audio file is kept: reading it reports it as skipped. A missing path that names
    no audio file (a folder, a typo) is an error: nothing inside it could be tagged. In a
    folder, what is not a readable file (a FIFO, a socket, a broken link, ...) is named and left
    out.
    """
    files: list[Path] = []
    for given, item in zip(map(str, inputs), map(Path, inputs)):
        if not item.exists() and (
            given.endswith(("/", os.sep)) or item.suffix.lower() not in AUDIO_EXTENSIONS
        ):
            raise ConfigError(f"{given}: no such file or folder")
        if item.is_dir():
            names = (p for p in item.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
            found = readable_files(p for p in names if not p.is_dir())[0]
            if not found:
                raise ConfigError(f"{item}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) inside")
            files.extend(found)
        else:
            files.append(item)
    return files


def default_extractor() -> MelExtractor:
    """The spectrogram cache's extractor (torch, float64), so tags match the pipeline's."""
    return make_extractor("torch")


def trim_offset(audio: np.ndarray, config: AudioConfig = AUDIO) -> float:
    """Where the trimmed clip starts in the file, in seconds (0 for the short-clip rule, whose
    window starts at sample 0: docs/original.md, "Short clips")."""
    start, end = nonsilent_bounds(audio)
    return 0.0 if end - start < config.min_samples else float(start) / config.sampling_rate


def audio_clip(
    path: Path, audio: np.ndarray, extractor: MelExtractor, config: AudioConfig = AUDIO
) -> Clip:
    """The clip of decoded audio (mono, `config.sampling_rate`), named `path`: trimmed as
    `read_audio` trims (the short-clip rule included), then its log-mel."""
    clip = trim_audio(audio, config)
    return Clip(path, extractor([clip])[0], trim_offset(audio, config))


def read_clip(path: Path, extractor: MelExtractor, config: AudioConfig = AUDIO) -> Clip:
    """`read_audio` (decode, trim, short-clip rule) + log-mel; raises AudioDecodeError for
    anything that goes wrong with the file (a non-finite log-mel included)."""
    with file_failure(path):
        # == read_audio(path) + log-mel, without decoding twice
        return audio_clip(path, load_audio(path, config.sampling_rate), extractor, config)


def samples_clip(item: Samples, extractor: MelExtractor, config: AudioConfig = AUDIO) -> Clip:
    """The clip of samples in memory, as `read_clip` reads a file: channels averaged,
    resampled to `config.sampling_rate`, trimmed, log-mel; AudioDecodeError naming it when
    they are empty or not finite."""
    with file_failure(item.name):
        audio = np.asarray(item.samples, dtype=np.float32)
        if audio.ndim == 2:  # (samples, channels), as soundfile reads
            audio = audio.mean(axis=1)
        if audio.ndim != 1 or audio.size == 0:
            shape = tuple(np.shape(item.samples))
            wanted = "(samples,) or (samples, channels)"
            raise AudioDecodeError(item.name, f"expected samples {wanted}, got shape {shape}")
        if not np.all(np.isfinite(audio)):
            raise AudioDecodeError(item.name, "audio contains NaN or infinite samples")
        audio = resample_audio(audio, int(item.sample_rate), config.sampling_rate, item.name)
        return audio_clip(Path(item.name), audio, extractor, config)


def tile_starts(clip: Clip, tile: int, step: int, config: AudioConfig = AUDIO) -> np.ndarray:
    """Start of each tile in seconds from the start of the file.

    Tiles are laid out over the clip padded on both sides (docs/original.md, "Tiled
    prediction"); a tile starting in the left padding starts at the clip's first frame.
    """
    n_tiles, left, _ = tile_layout(clip.spectrogram.shape[1], tile, step)
    frames = np.maximum(np.arange(n_tiles) * step - left, 0)
    return clip.offset + frames * config.hop_length / config.sampling_rate
