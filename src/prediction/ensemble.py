"""The final ensemble: first-level test predictions, the stacking MLPs on them, one blend.

The final prediction is the geometric mean, with equal weights, of the first-level
experiments' test predictions (each the geometric mean over its folds of tile means at a step
of half the crop) and of the stacking experiments' predictions (each the geometric mean over
its folds of the MLP applied to the first-level predictions side by side). `final_blend` is
that formula, used by stacking_predict.py and by tag_audio.py --ensemble alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from src.config import N_FOLDS, ConfigError, Paths, Vocabulary
from src.data.labels import load_folds, read_labels_csv
from src.data.store import test_store
from src.experiments import tile_steps
from src.prediction.experiment import fold_blend, fold_blend_frames, predict_set_cached
from src.prediction.tables import aligned_arrays, cv_scores, gmean_frames, probs_frame
from src.prediction.tiling import Predictor, check_outputs, load_checkpoint, output_count
from src.runs import (
    align_columns,
    check_experiment_classes,
    check_oof_inputs,
    checkpoint_classes,
    class_order,
    find_experiment,
    fold_dir,
    read_oof,
    read_oof_tiles,
)
from src.utils import geometric_mean


def predict_mlp(model, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities of a stacking MLP for (rows, n_experiments * n_classes) inputs."""
    outputs = []
    for start in range(0, len(inputs), batch_size):
        # A copy: the inputs may be read-only maps of prediction files.
        batch = torch.from_numpy(np.array(inputs[start : start + batch_size], dtype=np.float32))
        output = model.predict(batch).float().cpu()
        name = getattr(model, "checkpoint_path", "a stacking MLP")
        outputs.append(check_outputs(output, name).numpy())
    return (
        np.concatenate(outputs)
        if outputs
        else np.zeros((0, model.params["nn_module"][1]["num_classes"]))
    )


@dataclass
class StackingModels:
    """The fold models of one stacking experiment (fold -> model), the classes they output in
    order, and the first-level experiments whose predictions they take."""

    name: str
    classes: tuple[str, ...]
    models: dict[int, object]
    inputs: list[str]


def final_blend(
    first_level: Sequence[np.ndarray], stacking: Sequence[StackingModels], classes: Sequence[str]
) -> np.ndarray:
    """(rows, n_classes) per first-level experiment, columns `classes`, and the stacking
    experiments -> the final (rows, n_classes) probabilities, columns `classes`.

    Each stacking experiment gets its inputs in its own recorded class order and its output is
    brought back to `classes`, by name (`src.runs.class_order`)."""
    second = []
    for experiment in stacking:
        own = f"stacking experiment {experiment.name}"
        into = class_order(classes, experiment.classes, "the first-level predictions", own)
        back = class_order(experiment.classes, classes, own, "the first-level predictions")
        inputs = np.concatenate([f[:, into] for f in first_level], axis=1)
        outputs = fold_blend([predict_mlp(model, inputs) for model in experiment.models.values()])
        second.append(outputs[:, back])
    return geometric_mean([*first_level, *second])


def load_stacking(
    experiments_dir: Path, name: str, device: str, folds: Sequence[int] = range(N_FOLDS)
) -> StackingModels:
    """The fold models (`folds`) of a stacking experiment, loaded for prediction, with their
    classes."""
    experiment = find_experiment(experiments_dir, name, folds)
    models = {}
    for fold, checkpoint in experiment.checkpoints(folds).items():
        model = load_checkpoint(checkpoint, device)
        if checkpoint_classes(checkpoint, output_count(model)) != experiment.classes:
            raise ConfigError(f"{checkpoint}: its classes differ from {experiment.directory}'s")
        models[fold] = model
    return StackingModels(name, experiment.classes, models, list(experiment.config["inputs"]))


def stacking_oof(name: str, paths: Paths, device: str) -> pd.DataFrame:
    """Out-of-fold predictions of a stacking experiment on every curated clip, named by its
    recorded classes."""
    stacking = load_stacking(paths.experiments_dir, name, device)
    folds = load_folds(paths)
    inputs = read_oof_tiles(
        paths.predictions_dir,
        stacking.inputs,
        folds["fname"],
        folds["fold"],
        stacking.classes,
        f"stacking experiment {name}",
    )
    means = np.stack([x.mean(axis=0) for x in inputs])
    predictions = np.zeros((len(folds), len(stacking.classes)))
    for fold, model in stacking.models.items():
        rows = (folds["fold"] == fold).to_numpy()
        predictions[rows] = predict_mlp(model, means[rows])
    return probs_frame(folds["fname"].tolist(), predictions, stacking.classes)


def first_level_test(
    name: str,
    paths: Paths,
    test,
    device: str,
    batch_size: int,
    progress: bool,
    folds: Sequence[int] = range(N_FOLDS),
) -> pd.DataFrame:
    """Test tile means of every fold model (`folds`) at step crop/2, geometric mean over
    folds; columns named by the experiment's recorded classes."""
    experiment = find_experiment(paths.experiments_dir, name, folds)
    step = tile_steps(experiment.config)["stacking_test"]
    frames = []
    for fold, checkpoint in experiment.checkpoints(folds).items():
        predictor = Predictor(checkpoint, device, batch_size, tile_step=step)
        out_dir = fold_dir(paths.prediction_dir(name), fold) / f"test_step{step}"
        frames.append(
            predict_set_cached(
                predictor,
                test,
                test.fnames,
                out_dir,
                checkpoint_classes(checkpoint, predictor.n_outputs),
                checkpoint,
                f"{name} fold {fold}",
                progress,
            )
        )
    return fold_blend_frames(frames)


@dataclass
class EnsembleResult:
    submission: pd.DataFrame
    table: pd.DataFrame  # level, experiment, oof_lwlrap


def ensemble_predict(
    paths: Paths,
    vocabulary: Vocabulary,
    stacking_names: Sequence[str],
    device: str = "cpu",
    batch_size: int = 64,
    progress: bool = True,
    with_oof: bool = True,
    folds: Sequence[int] = range(N_FOLDS),
) -> EnsembleResult:
    """The final blend of the test set (see the module's docstring), of the fold models
    `folds` of every experiment; the out-of-fold table needs all of them."""
    if with_oof and list(folds) != list(range(N_FOLDS)):
        raise ConfigError("the out-of-fold table needs all five folds of every experiment")
    configs = [find_experiment(paths.experiments_dir, name).config for name in stacking_names]
    inputs = configs[0]["inputs"]
    if any(c["inputs"] != inputs for c in configs):
        raise ConfigError("the stacking experiments must share their first-level inputs")
    check_experiment_classes(paths, vocabulary, [*inputs, *stacking_names])
    if with_oof:  # say what is missing before predicting anything
        try:
            check_oof_inputs(paths.predictions_dir, inputs, range(N_FOLDS))
        except ConfigError as error:
            raise ConfigError(f"{error}; or pass --no-oof to skip the out-of-fold table") from None
    stacking = [load_stacking(paths.experiments_dir, n, device, folds) for n in stacking_names]
    classes = stacking[0].classes
    test = test_store(paths)
    first = [
        align_columns(
            first_level_test(n, paths, test, device, batch_size, progress, folds),
            classes,
            f"{n}'s test predictions",
            f"stacking experiment {stacking_names[0]}",
        )
        for n in inputs
    ]
    fnames, arrays = aligned_arrays(first)
    submission = probs_frame(fnames, final_blend(arrays, stacking, classes), classes)
    table = (
        oof_table(paths, vocabulary, inputs, stacking_names, device) if with_oof else pd.DataFrame()
    )
    return EnsembleResult(submission, table)


def oof_table(
    paths: Paths, vocabulary: Vocabulary, inputs, stacking_names, device: str
) -> pd.DataFrame:
    """Out-of-fold lwlrap of each experiment of both levels, of the first-level experiments'
    blend (what select_ensemble.py scores the same set) and of the whole blend, against the
    original curated labels."""
    truth = read_labels_csv(paths.train_curated_csv, vocabulary)
    frames, rows = [], []
    for name in inputs:
        oof = read_oof(paths.predictions_dir, name, vocabulary.classes)
        frames.append(oof)
        rows.append(("first level", name, cv_scores(oof, truth, vocabulary)["overall_lwlrap"]))
    first_level = gmean_frames(frames)
    rows.append(
        (
            "first-level blend",
            f"geometric mean of the {len(frames)} first-level",
            cv_scores(first_level, truth, vocabulary)["overall_lwlrap"],
        )
    )
    for name in stacking_names:
        oof = stacking_oof(name, paths, device)
        frames.append(oof)
        rows.append(("stacking", name, cv_scores(oof, truth, vocabulary)["overall_lwlrap"]))
    blend = gmean_frames(frames)
    rows.append(
        (
            "blend",
            f"geometric mean of {len(frames)}",
            cv_scores(blend, truth, vocabulary)["overall_lwlrap"],
        )
    )
    return pd.DataFrame(rows, columns=["level", "experiment", "oof_lwlrap"])
