"""The Python API of tagging: load a trained model once, then tag or embed files and audio in
memory. tag_audio.py is built on it (`Tagger.results`), so the numbers are the script's.

    from src.tagger import Tagger

    tagger = Tagger.load("corr_noisy_007")            # an experiment: the fold blend
    tagger = Tagger.load("model-072-0.886906.pth")    # one checkpoint
    tagger = Tagger.load("corr_noisy_007.onnx")       # an ONNX export (ONNX Runtime)
    tagger = Tagger.load("ensemble")                  # the stacking ensemble
    tags = tagger.tag(["dog.wav", "clips/"])          # DataFrame: rows files, columns classes
    tags = tagger.tag(samples, sample_rate=16000)     # a waveform (or a list of them)
    vectors = tagger.embed(["dog.wav"])               # DataFrame: rows files, columns features

Files are read as the pipeline reads its clips (any format librosa decodes, mono, 44.1 kHz,
silence trimmed, the short-clip rule), folders are searched recursively; arrays are
(samples,) or (samples, channels) at `sample_rate`. A file that cannot be decoded raises
AudioDecodeError (`errors="skip"` leaves it out instead).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import AUDIO, N_FOLDS, ConfigError, get_paths
from src.data.audio import AudioDecodeError
from src.tools.tagging.clips import Samples, collect_audio_files
from src.tools.tagging.files import TaggedFile, tag_files
from src.tools.tagging.sources import (
    ModelSource,
    checkpoint_source,
    ensemble_source,
    experiment_source,
)

Audio = str | os.PathLike | np.ndarray | Samples  # one input of `tag` and `embed`
ENSEMBLE = "ensemble"  # Tagger.load's name of the stacking ensemble


class Tagger:
    """A loaded model source: its classes, how it tiles clips, and tagging/embedding."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source

    # ----------------------------------------------------------------------------------
    # Loading
    # ----------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        model: str | os.PathLike | None = None,
        device: str | None = None,
        batch_size: int = 64,
        data_dir: str | os.PathLike | None = None,
        folds: Sequence[int] | None = None,
    ) -> Tagger:
        """`model`: a checkpoint (.pth), an ONNX export (.onnx), an experiment's name (under
        `<data_dir>/experiments`, default the data directory of the scripts) or folder,
        "ensemble", or None for the trained experiment with the best validation score.
        `device`: "auto" (None: cuda when available), "cpu", "cuda", "cuda:N". `folds`: the
        folds an experiment or the ensemble blends (None: an experiment's trained folds, the
        ensemble's five)."""
        text = None if model is None else str(model)
        if text is not None and text.endswith(".onnx"):
            return cls.from_onnx(text, batch_size)
        if text is not None and (text.endswith(".pth") or Path(text).is_file()):
            return cls.from_checkpoint(text, device, batch_size)
        if text is not None and Path(text).is_dir():  # an experiment folder
            folder = Path(text)
            source = experiment_source(
                folder.parent, folder.name, _device(device), batch_size, folds
            )
            return cls(source)
        if text == ENSEMBLE:
            return cls.from_ensemble(device, batch_size, data_dir, folds)
        return cls.from_experiment(text, device, batch_size, data_dir, folds)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | None = None, batch_size: int = 64
    ) -> Tagger:
        """One checkpoint: a clip is the mean of its tiles."""
        return cls(checkpoint_source(Path(path), _device(device), batch_size))

    @classmethod
    def from_experiment(
        cls,
        name: str | None = None,
        device: str | None = None,
        batch_size: int = 64,
        data_dir: str | os.PathLike | None = None,
        folds: Sequence[int] | None = None,
    ) -> Tagger:
        """An experiment's folds (`folds`, default those trained), blended as predict_folds.py
        blends them; `name` None: the best trained experiment."""
        from src.tools.tagging.trained import best_experiment

        folder = _experiments_dir(data_dir)
        name = name or best_experiment(folder).name
        return cls(experiment_source(folder, name, _device(device), batch_size, folds))

    @classmethod
    def from_ensemble(
        cls,
        device: str | None = None,
        batch_size: int = 64,
        data_dir: str | os.PathLike | None = None,
        folds: Sequence[int] | None = None,
    ) -> Tagger:
        """The stacking ensemble (7 first-level + 3 stacking experiments) over `folds` (default
        all five)."""
        from src.experiments import STACKING

        folder = _experiments_dir(data_dir)
        folds = range(N_FOLDS) if folds is None else folds
        return cls(ensemble_source(folder, STACKING, _device(device), batch_size, folds))

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, batch_size: int = 64) -> Tagger:
        """A network exported by export_onnx.py, run by ONNX Runtime on the CPU."""
        from src.tools.onnx_export import onnx_source

        return cls(onnx_source(path, batch_size))

    # ----------------------------------------------------------------------------------
    # What it is
    # ----------------------------------------------------------------------------------

    @property
    def classes(self) -> tuple[str, ...]:
        return self.source.classes

    @property
    def description(self) -> str:
        return self.source.description

    @property
    def tile_seconds(self) -> float:
        """The length of one tile, in seconds."""
        return self.source.predictor.tile * AUDIO.hop_length / AUDIO.sampling_rate

    # ----------------------------------------------------------------------------------
    # Tagging
    # ----------------------------------------------------------------------------------

    def results(
        self, inputs: Sequence[Path | Samples], embeddings: bool = False
    ) -> Iterator[TaggedFile | AudioDecodeError]:
        """Per input in order, as it is tagged: its `TaggedFile` (clip and tile
        probabilities, tile start times, and with `embeddings` the clip's and tiles'
        embeddings) or the AudioDecodeError saying why it could not be read."""
        if embeddings and not self.source.embeds:
            raise ConfigError(f"the {self.description} gives no embeddings")
        yield from tag_files(inputs, self.source, embeddings=embeddings)

    def tag(
        self, audio: Audio | Sequence[Audio], sample_rate: int | None = None, errors: str = "raise"
    ) -> pd.DataFrame:
        """Class probabilities: one row per file (or array), indexed by its path (arrays:
        "array 0", ... or a `Samples` name), one column per class."""
        tagged = self._tagged(audio, sample_rate, errors, embeddings=False)
        rows = [t.tags.clip for t in tagged]
        return _frame(rows, [str(t.clip.path) for t in tagged], list(self.classes))

    def tag_tiles(
        self, audio: Audio | Sequence[Audio], sample_rate: int | None = None, errors: str = "raise"
    ) -> pd.DataFrame:
        """Per tile: path, tile, start_s, end_s (seconds from the start of the file) and one
        column per class."""
        from src.tools.tagging.output import tiles_frame

        tagged = self._tagged(audio, sample_rate, errors, embeddings=False)
        return tiles_frame(tagged, self.classes, self.tile_seconds)

    def embed(
        self,
        audio: Audio | Sequence[Audio],
        sample_rate: int | None = None,
        errors: str = "raise",
        tiles: bool = False,
    ) -> pd.DataFrame:
        """The pooled features the main head sees: one row per file (the mean over its tiles;
        an experiment: the mean over its folds), indexed as `tag`; with `tiles`, one row per
        tile, indexed by (path, tile). `.to_numpy()` gives the (rows, n_features) array."""
        tagged = self._tagged(audio, sample_rate, errors, embeddings=True)
        if not tiles:
            rows = [t.tags.embedding for t in tagged]
            width = len(rows[0]) if rows else 0
            return _frame(rows, [str(t.clip.path) for t in tagged], list(range(width)))
        index = pd.MultiIndex.from_tuples(
            [(str(t.clip.path), i) for t in tagged for i in range(len(t.tile_starts))],
            names=["path", "tile"],
        )
        stacked = [t.tags.tile_embeddings for t in tagged]
        width = stacked[0].shape[1] if stacked else 0
        values = np.concatenate(stacked) if stacked else np.zeros((0, 0), np.float32)
        return pd.DataFrame(values, index=index, columns=list(range(width)))

    def _tagged(
        self, audio, sample_rate: int | None, errors: str, embeddings: bool
    ) -> list[TaggedFile]:
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        tagged = []
        for result in self.results(_inputs(audio, sample_rate), embeddings):
            if isinstance(result, AudioDecodeError):
                if errors == "raise":
                    raise result
                continue
            tagged.append(result)
        return tagged


def _inputs(audio, sample_rate: int | None) -> list[Path | Samples]:
    """Paths (folders expanded) and arrays as what `tag_files` reads."""
    single = isinstance(audio, str | os.PathLike | Samples) or (
        isinstance(audio, np.ndarray) and audio.dtype != object
    )
    items = [audio] if single else list(audio)
    rate = AUDIO.sampling_rate if sample_rate is None else int(sample_rate)
    inputs: list[Path | Samples] = []
    for number, item in enumerate(items):
        if isinstance(item, Samples):
            inputs.append(item)
        elif isinstance(item, np.ndarray):
            inputs.append(Samples(f"array {number}", item, rate))
        else:
            inputs.extend(collect_audio_files([item]))
    return inputs


def _frame(rows: list[np.ndarray], index: list[str], columns: list) -> pd.DataFrame:
    values = np.stack(rows).astype(np.float64) if rows else np.zeros((0, len(columns)))
    return pd.DataFrame(values, index=pd.Index(index, name="path"), columns=columns)


def _device(device: str | None) -> str:
    from src.cli import resolve_device

    return resolve_device(device)


def _experiments_dir(data_dir: str | os.PathLike | None) -> Path:
    """`<data_dir>/experiments`, or the scripts' (FREESOUND_DATA_DIR, else data/)."""
    return get_paths().experiments_dir if data_dir is None else Path(data_dir) / "experiments"
