"""Model sources: what predicts the tags of spectrograms, built from paths and names alone.

Three sources, each reusing the pipeline's own pieces:

* one checkpoint: `Predictor` tiles (step crop/4, as predict_folds.py), clip = tile mean;
* an experiment: the best checkpoint of every fold, clip = the fold blend of the tile means
  (`src.prediction.experiment.fold_blend`, as predict_folds.py blends folds), tiles = the fold
  blend of each tile;
* the stacking ensemble (`src.prediction.ensemble`, as stacking_predict.py): the first-level
  experiments at step crop/2, each blended over its folds; their concatenation goes through
  every stacking model (`final_blend`); the result is the geometric mean of all of them. Per
  tile, the same blend is applied to each tile's first-level probabilities (the stacking
  models were trained on means over random tile subsets, single tiles included).

A source's `predict` takes log-mel spectrograms (`src.tools.tagging.clips`) and gives one
`Tags` per spectrogram; `tile` and `step` say how its tiles are laid out. With
`embeddings=True` the tags also hold the pooled features the main head sees (the network's
`embed`), from the same pass: one checkpoint's tile mean per clip, and for an experiment the
arithmetic mean over its folds (of the clip vectors, and of each tile's). The stacking
ensemble has none: its networks see probabilities, not audio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.config import N_FOLDS, ConfigError
from src.experiments import tile_steps
from src.prediction.ensemble import final_blend, load_stacking
from src.prediction.experiment import fold_blend
from src.prediction.tiling import Predictor
from src.runs import checkpoint_file, class_order, find_experiment
from src.tools.tagging.trained import model_classes


@dataclass
class Tags:
    """Predictions of one clip: the clip's probabilities and one row per tile."""

    clip: np.ndarray  # (n_classes,)
    tiles: np.ndarray  # (n_tiles, n_classes)
    embedding: np.ndarray | None = None  # (n_features,) when asked for
    tile_embeddings: np.ndarray | None = None  # (n_tiles, n_features) when asked for


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

    embeds = True  # a CNN's pooled features can be asked for

    def predict(self, spectrograms: Sequence[np.ndarray], embeddings: bool = False) -> list[Tags]:
        per_model = [
            self._predictor(c).predict_tiles_and_embeddings(spectrograms)
            if embeddings
            else (self._predictor(c).predict_tiles(spectrograms), [])
            for c in self.checkpoints
        ]
        tags = []
        for index in range(len(spectrograms)):
            tiles = [model[0][index] for model in per_model]  # float32, as predict_folds saves
            if len(tiles) == 1:  # one model: the clip is its tile mean
                tag = Tags(tiles[0].mean(axis=0), tiles[0])
            else:  # the fold blend of the folds' tile means, and of each tile
                tag = Tags(fold_blend([t.mean(axis=0) for t in tiles]), fold_blend(tiles))
            if embeddings:
                features = np.stack([model[1][index] for model in per_model])
                tag.tile_embeddings = features.mean(axis=0)  # the fold mean of each tile
                tag.embedding = features.mean(axis=1).mean(axis=0)  # of the tile means
            tags.append(tag)
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
        folds: Sequence[int] = range(N_FOLDS),
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
            checkpoints = experiment.checkpoints(folds).values()
            step = tile_steps(experiment.config)["stacking_test"]
            self.first_level.append(
                FoldBlend(list(checkpoints), device, batch_size, step, resident=False)
            )
        self.stacking = [load_stacking(experiments_dir, e.name, device, folds) for e in stacking]
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

    embeds = False  # its networks see first-level probabilities, not audio

    def predict(self, spectrograms: Sequence[np.ndarray], embeddings: bool = False) -> list[Tags]:
        if embeddings:
            raise ConfigError(
                "the stacking ensemble has no embeddings: use one of its experiments (--experiment)"
            )
        per_experiment = [blend.predict(spectrograms) for blend in self.first_level]
        tags = []
        for index in range(len(spectrograms)):
            clip = self.blend([e[index].clip[None] for e in per_experiment])[0]
            tags.append(Tags(clip, self.blend([e[index].tiles for e in per_experiment])))
        return tags


@dataclass
class ModelSource:
    """What tags are predicted with: a description, the classes naming the predictions'
    columns, and the predictor (`predict`, and `tile`, `step`: its tile layout)."""

    description: str
    classes: tuple[str, ...]
    predictor: FoldBlend | StackingEnsemble

    @property
    def embeds(self) -> bool:
        """Whether `predict(..., embeddings=True)` can give embeddings."""
        return bool(self.predictor.embeds)

    def predict(self, spectrograms: Sequence[np.ndarray], embeddings: bool = False) -> list[Tags]:
        return self.predictor.predict(spectrograms, embeddings)


def checkpoint_source(path: Path, device: str, batch_size: int) -> ModelSource:
    path = checkpoint_file(path, "--model")
    blend = FoldBlend([path], device, batch_size, tile_step=None)
    return ModelSource(f"checkpoint {path}", blend.classes, blend)


def experiment_source(
    experiments_dir: Path,
    name: str,
    device: str,
    batch_size: int,
    folds: Sequence[int] | None = None,
) -> ModelSource:
    experiment = find_experiment(experiments_dir, name)
    if experiment.kind != "cnn":
        raise ConfigError(f"{name} is a stacking experiment: use --ensemble")
    # Default: the folds trained so far (one fold at --scale cpu is a usable tagger).
    folds = sorted(experiment.folds) if folds is None else folds
    checkpoints = list(experiment.checkpoints(folds).values())
    step = tile_steps(experiment.config)["test"]
    blend = FoldBlend(checkpoints, device, batch_size, step)
    description = f"experiment {name} (geometric mean of {len(checkpoints)} of 5 folds)"
    return ModelSource(description, blend.classes, blend)


def ensemble_source(
    experiments_dir: Path,
    stacking_names: Sequence[str],
    device: str,
    batch_size: int,
    folds: Sequence[int] = range(N_FOLDS),
) -> ModelSource:
    ensemble = StackingEnsemble(experiments_dir, stacking_names, device, batch_size, folds)
    description = f"stacking ensemble ({len(ensemble.names)} experiments)"
    return ModelSource(description, ensemble.classes, ensemble)
