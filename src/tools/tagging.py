"""Tagging any audio files with trained models: one checkpoint, one experiment, or the ensemble.

Three model sources, each reusing the pipeline's own pieces:

* one checkpoint: `Predictor` tiles (step crop/4, as predict_folds.py), clip = tile mean;
* an experiment: the best checkpoint of every fold, clip = geometric mean over folds of the
  tile means (as predict_folds.py blends folds), tiles = geometric mean over folds of each tile;
* the stacking ensemble (`src.prediction.ensemble`, as stacking_predict.py): the first-level
  experiments at step crop/2, geometric mean over folds; their concatenation goes through
  every stacking model (`predict_mlp`, geometric mean over folds); the result is the
  geometric mean of all of them. Per tile, the same blend is applied to each tile's
  first-level probabilities (the stacking models were trained on means over random tile
  subsets, single tiles included).

Clips are read exactly as the pipeline reads them (`read_audio`: decode, mono, 44.1 kHz, trim,
short-clip rule; then the torch log-mel of the spectrogram cache).

The module also finds trained models in `<data>/experiments` for the demo and for tag_audio.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import AUDIO, AudioConfig, ConfigError
from src.data.audio import (
    AUDIO_EXTENSIONS,
    AudioDecodeError,
    MelExtractor,
    file_failure,
    load_audio,
    make_extractor,
    nonsilent_bounds,
    trim_audio,
)
from src.experiments import tile_steps
from src.prediction.ensemble import final_blend, load_stacking
from src.prediction.experiment import fold_blend
from src.prediction.tiling import Predictor, output_count, tile_layout
from src.runs import (
    TrainedExperiment,
    checkpoint_classes,
    class_order,
    find_experiment,
    fold_checkpoints,
    trained_experiments,
)

# --------------------------------------------------------------------------------------
# Finding trained models
# --------------------------------------------------------------------------------------

TRAIN_HINT = (
    "train one with `python train_folds.py --experiment corr_noisy_007` (or `make smoke` for a "
    "quick one, then set FREESOUND_DATA_DIR=data/synthetic), or pass --model PATH"
)


def best_experiment(experiments_dir: Path) -> TrainedExperiment:
    """The first-level experiment with the highest mean validation score over its folds.

    The mean over folds rather than the best single fold: fold scores differ with the fold's
    difficulty, so a single lucky fold says little about the experiment.
    """
    candidates = [e for e in trained_experiments(experiments_dir) if e.kind == "cnn"]
    if not candidates:
        raise ConfigError(f"no trained model found in {experiments_dir}: {TRAIN_HINT}")
    return max(candidates, key=lambda e: (e.mean_score, e.name))


def model_classes(model, checkpoint: Path) -> tuple[str, ...]:
    """Names of a loaded checkpoint's outputs (`src.runs.checkpoint_classes`)."""
    return checkpoint_classes(checkpoint, output_count(model))


# --------------------------------------------------------------------------------------
# Top classes, as the original demo printed them
# --------------------------------------------------------------------------------------


def top_classes(
    probabilities: np.ndarray, classes: Sequence[str], k: int
) -> list[tuple[str, float]]:
    """The k most probable classes, highest first (ties: class order)."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [(classes[i], float(probabilities[i])) for i in order]


def format_top(top: Sequence[tuple[str, float]]) -> str:
    """'<name right-justified to 20> - <p with 2 decimals>' entries joined by tabs."""
    return "\t".join(f"{name:>20} - {probability:.2f}" for name, probability in top)


# --------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    path: Path
    spectrogram: np.ndarray  # (n_mels, T) log-mel of the trimmed clip
    offset: float  # seconds of leading silence trimmed away: frame 0 starts here in the file


def collect_audio_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded to their audio files (recursively, sorted).

    A path that does not exist is kept: reading it reports it as skipped.
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
            )
            if not found:
                raise ConfigError(f"{item}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) inside")
            files.extend(found)
        else:
            files.append(item)
    return files


def trim_offset(audio: np.ndarray, config: AudioConfig = AUDIO) -> float:
    """Where the trimmed clip starts in the file, in seconds (0 for the short-clip rule, whose
    window starts at sample 0: docs/original.md, "Short clips")."""
    start, end = nonsilent_bounds(audio)
    return 0.0 if end - start < config.min_samples else float(start) / config.sampling_rate


def read_clip(path: Path, extractor: MelExtractor, config: AudioConfig = AUDIO) -> Clip:
    """`read_audio` (decode, trim, short-clip rule) + log-mel; raises AudioDecodeError for
    anything that goes wrong with the file (a non-finite log-mel included)."""
    with file_failure(path):
        audio = load_audio(path, config.sampling_rate)
        clip = trim_audio(audio, config)  # == read_audio(path), without decoding twice
        return Clip(path, extractor([clip])[0], trim_offset(audio, config))


# --------------------------------------------------------------------------------------
# Model sources
# --------------------------------------------------------------------------------------


@dataclass
class Tags:
    """Predictions of one clip: the clip's probabilities and one row per tile."""

    clip: np.ndarray  # (n_classes,)
    tiles: np.ndarray  # (n_tiles, n_classes)


class FoldBlend:
    """Checkpoints of one first-level experiment (or a single checkpoint) tiling clips alike.

    `resident=False` loads each model again for every call instead of keeping it: the
    ensemble's 35 full-size CNNs then never sit in memory together.
    """

    def __init__(
        self,
        checkpoints: Sequence[Path],
        device: str,
        batch_size: int,
        tile_step: int | None,
        resident: bool = True,
    ) -> None:
        self.checkpoints = list(checkpoints)
        self.device, self.batch_size, self.tile_step = device, batch_size, tile_step
        self.resident = resident
        first = Predictor(self.checkpoints[0], device, batch_size, tile_step)
        self.tile, self.step = first.tile, first.step
        self.classes = model_classes(first.model, self.checkpoints[0])
        self._loaded = {self.checkpoints[0]: first} if resident else {}

    def _predictor(self, checkpoint: Path):
        predictor = self._loaded.get(checkpoint)
        if predictor is None:
            predictor = Predictor(checkpoint, self.device, self.batch_size, self.tile_step)
            if predictor.tile != self.tile:
                raise ConfigError(f"{checkpoint}: crop {predictor.tile} differs from {self.tile}")
            if self.resident:
                self._loaded[checkpoint] = predictor
        return predictor

    def predict(self, spectrograms: Sequence[np.ndarray]) -> list[Tags]:
        per_model = [self._predictor(c).predict_tiles(spectrograms) for c in self.checkpoints]
        tags = []
        for index in range(len(spectrograms)):
            tiles = [model[index] for model in per_model]  # float32, as predict_folds saves
            if len(tiles) == 1:  # one model: the clip is its tile mean
                tags.append(Tags(tiles[0].mean(axis=0), tiles[0]))
            else:  # the fold blend of the folds' tile means, and of each tile
                tags.append(Tags(fold_blend([t.mean(axis=0) for t in tiles]), fold_blend(tiles)))
        return tags


class StackingEnsemble:
    """First-level experiments + stacking MLPs, blended with equal weight (docs/original.md,
    "Blending")."""

    def __init__(
        self,
        experiments_dir: Path,
        stacking_names: Sequence[str],
        device: str,
        batch_size: int,
    ) -> None:
        stacking = [find_experiment(experiments_dir, name) for name in stacking_names]
        if any(e.kind != "stacking" for e in stacking):
            raise ConfigError(f"not all of {', '.join(stacking_names)} are stacking experiments")
        inputs = stacking[0].config["inputs"]
        if any(e.config["inputs"] != inputs for e in stacking):
            raise ConfigError("the stacking experiments must share their first-level inputs")
        self.first_level = []
        for name in inputs:
            experiment = find_experiment(experiments_dir, name)
            checkpoints = fold_checkpoints(experiment.directory, name).values()
            step = tile_steps(experiment.config)["stacking_test"]
            self.first_level.append(
                FoldBlend(list(checkpoints), device, batch_size, step, resident=False)
            )
        self.stacking = [load_stacking(e.directory, e.name, device) for e in stacking]
        # Named by the first stacking experiment's classes; every other experiment's outputs
        # are matched to them by name (a class set that differs is an error).
        self.classes = self.stacking[0].classes
        self.orders = [
            class_order(
                b.classes, self.classes, f"experiment {name}", f"experiment {stacking_names[0]}"
            )
            for name, b in zip(inputs, self.first_level)
        ]
        self.tile, self.step = self.first_level[0].tile, self.first_level[0].step
        self.names = [*inputs, *stacking_names]

    def blend(self, first_level: list[np.ndarray]) -> np.ndarray:
        """(rows, n_classes) per first-level experiment, each in its own class order -> the
        final (rows, n_classes), columns `self.classes`."""
        aligned = [p[:, order] for p, order in zip(first_level, self.orders)]
        return final_blend(aligned, self.stacking, self.classes)

    def predict(self, spectrograms: Sequence[np.ndarray]) -> list[Tags]:
        per_experiment = [blend.predict(spectrograms) for blend in self.first_level]
        tags = []
        for index in range(len(spectrograms)):
            clip = self.blend([e[index].clip[None] for e in per_experiment])[0]
            tags.append(Tags(clip, self.blend([e[index].tiles for e in per_experiment])))
        return tags


@dataclass
class ModelSource:
    """What tag_audio.py predicts with: a description, the classes, and the predictor."""

    description: str
    classes: tuple[str, ...]
    predictor: FoldBlend | StackingEnsemble

    def predict(self, spectrograms: Sequence[np.ndarray]) -> list[Tags]:
        return self.predictor.predict(spectrograms)


def checkpoint_source(path: Path, device: str, batch_size: int) -> ModelSource:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    blend = FoldBlend([Path(path)], device, batch_size, tile_step=None)
    return ModelSource(f"checkpoint {path}", blend.classes, blend)


def experiment_source(
    experiments_dir: Path, name: str, device: str, batch_size: int
) -> ModelSource:
    experiment = find_experiment(experiments_dir, name)
    if experiment.kind != "cnn":
        raise ConfigError(f"{name} is a stacking experiment: use --ensemble")
    # The folds trained so far (one fold at --scale cpu is a usable tagger).
    folds = sorted(experiment.folds)
    checkpoints = list(fold_checkpoints(experiment.directory, name, folds).values())
    step = tile_steps(experiment.config)["test"]
    blend = FoldBlend(checkpoints, device, batch_size, step)
    description = f"experiment {name} (geometric mean of {len(checkpoints)} of 5 folds)"
    return ModelSource(description, blend.classes, blend)


def ensemble_source(
    experiments_dir: Path, stacking_names: Sequence[str], device: str, batch_size: int
) -> ModelSource:
    ensemble = StackingEnsemble(experiments_dir, stacking_names, device, batch_size)
    description = f"stacking ensemble ({len(ensemble.names)} experiments)"
    return ModelSource(description, ensemble.classes, ensemble)


# --------------------------------------------------------------------------------------
# Tile times
# --------------------------------------------------------------------------------------


def tile_starts(clip: Clip, tile: int, step: int, config: AudioConfig = AUDIO) -> np.ndarray:
    """Start of each tile in seconds from the start of the file.

    Tiles are laid out over the clip padded on both sides (docs/original.md, "Tiled
    prediction"); a tile starting in the left padding starts at the clip's first frame.
    """
    n_tiles, left, _ = tile_layout(clip.spectrogram.shape[1], tile, step)
    frames = np.maximum(np.arange(n_tiles) * step - left, 0)
    return clip.offset + frames * config.hop_length / config.sampling_rate


def default_extractor() -> MelExtractor:
    """The spectrogram cache's extractor (torch, float64), so tags match the pipeline's."""
    return make_extractor("torch")


# --------------------------------------------------------------------------------------
# Tagging files
# --------------------------------------------------------------------------------------

FILES_PER_CHUNK = 32  # files decoded and predicted together (their tiles share batches)
# ... or fewer, so that a chunk's spectrograms stay small (2**16 frames: 34 min, 34 MB).
FRAMES_PER_CHUNK = 2**16


@dataclass
class TaggedFile:
    clip: Clip
    tags: Tags
    tile_starts: np.ndarray  # (n_tiles,) seconds from the start of the file


def tag_files(
    files: Sequence[Path],
    source: ModelSource,
    extractor: MelExtractor | None = None,
    chunk: int | None = None,
) -> Iterator[TaggedFile | AudioDecodeError]:
    """For each file in order, its tags or the reason it could not be decoded.

    Files are read and predicted a chunk at a time (`chunk` files or FRAMES_PER_CHUNK frames,
    whichever comes first): memory holds one chunk's spectrograms, whatever the number of files.
    """
    extractor = extractor or default_extractor()
    chunk = chunk or FILES_PER_CHUNK
    tile, step = source.predictor.tile, source.predictor.step

    def predicted(
        results: list[Clip | AudioDecodeError],
    ) -> Iterator[TaggedFile | AudioDecodeError]:
        clips = [r for r in results if isinstance(r, Clip)]
        tags = iter(source.predict([c.spectrogram for c in clips]) if clips else ())
        for result in results:
            if isinstance(result, Clip):
                yield TaggedFile(result, next(tags), tile_starts(result, tile, step))
            else:
                yield result

    results: list[Clip | AudioDecodeError] = []
    frames = 0
    for path in files:
        try:
            results.append(read_clip(Path(path), extractor))
            frames += results[-1].spectrogram.shape[1]
        except AudioDecodeError as error:
            results.append(error)
        if len(results) >= chunk or frames >= FRAMES_PER_CHUNK:
            yield from predicted(results)
            results, frames = [], 0
    yield from predicted(results)


def probabilities_frame(
    paths: Sequence[str], probabilities: Sequence[np.ndarray], classes: Sequence[str]
) -> pd.DataFrame:
    """path + one probability column per class, one row per file."""
    frame = pd.DataFrame(np.stack(probabilities).astype(np.float64), columns=list(classes))
    frame.insert(0, "path", list(paths))
    return frame


def clips_frame(tagged: Sequence[TaggedFile], classes: Sequence[str]) -> pd.DataFrame:
    """path + one probability column per class, one row per file."""
    return probabilities_frame(
        [str(t.clip.path) for t in tagged], [t.tags.clip for t in tagged], classes
    )


def tiles_frame(
    tagged: Sequence[TaggedFile], classes: Sequence[str], tile_seconds: float
) -> pd.DataFrame:
    """path, tile, start_s, end_s + one probability column per class, one row per tile."""
    frame = pd.DataFrame(
        np.concatenate([t.tags.tiles for t in tagged]).astype(np.float64), columns=list(classes)
    )
    starts = np.concatenate([t.tile_starts for t in tagged])
    frame.insert(0, "path", [str(t.clip.path) for t in tagged for _ in t.tile_starts])
    frame.insert(1, "tile", [i for t in tagged for i in range(len(t.tile_starts))])
    frame.insert(2, "start_s", starts)
    frame.insert(3, "end_s", starts + tile_seconds)
    return frame


class RowWriter:
    """--csv and --tiles-csv written as files are tagged: each file's rows are appended and
    flushed at once, so an interrupted run leaves CSVs complete up to the last file tagged
    (the same text as `clips_frame`/`tiles_frame` of all files written at the end). A CSV is
    created with the first row: a run that tags nothing leaves an existing file alone."""

    def __init__(
        self,
        clips_csv: Path | None,
        tiles_csv: Path | None,
        classes: Sequence[str],
        tile_seconds: float,
    ) -> None:
        self.paths = [p for p in (clips_csv, tiles_csv) if p is not None]
        self.clips_csv, self.tiles_csv = clips_csv, tiles_csv
        self.classes, self.tile_seconds = classes, tile_seconds
        self.rows = 0
        self._handles: dict[Path, object] = {}

    def _append(self, path: Path | None, frame: pd.DataFrame) -> None:
        if path is None:
            return
        handle = self._handles.get(path)
        first = handle is None
        if first:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = self._handles[path] = path.open("w", newline="")
        frame.to_csv(handle, header=first, index=False)
        handle.flush()

    def write(self, tagged: TaggedFile) -> None:
        self._append(self.clips_csv, clips_frame([tagged], self.classes))
        if self.tiles_csv is not None:
            self._append(self.tiles_csv, tiles_frame([tagged], self.classes, self.tile_seconds))
        self.rows += 1

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
