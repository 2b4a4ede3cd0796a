"""Predictions of an experiment's fold models: out-of-fold, test, blends, CV (spec 10.2).

Layout under <data>/predictions/<experiment>/:

    fold_<k>/val/<fname>.npy    (n_tiles, n_classes) tile probabilities of out-of-fold clips
    fold_<k>/val/probs.csv      fname + one column per class: the tile mean of each clip
    fold_<k>/test/...           the same for the test clips
    probs.csv                   the geometric mean over folds of the test predictions
    val_lwlrap.json             overall and per-class lwlrap of the out-of-fold predictions
    val_lwlrap.png              the per-class values as a bar chart
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from src.config import N_FOLDS, ConfigError, Paths, Vocabulary
from src.metrics import lwlrap_per_class
from src.utils import (
    best_checkpoint,
    geometric_mean,
    save_npy_atomic,
    write_csv_atomic,
    write_json_atomic,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Probability tables
# --------------------------------------------------------------------------------------


def probs_frame(
    fnames: Sequence[str], probabilities: np.ndarray, classes: Sequence[str]
) -> pd.DataFrame:
    frame = pd.DataFrame(np.asarray(probabilities, dtype=np.float64), columns=list(classes))
    frame.insert(0, "fname", list(fnames))
    return frame


def read_probs(path: str | os.PathLike, classes: Sequence[str] | None = None) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: predictions not found")
    frame = pd.read_csv(path, dtype={"fname": str})
    if classes is not None and list(frame.columns[1:]) != list(classes):
        raise ConfigError(f"{path}: its class columns differ from the dataset's vocabulary")
    return frame


def gmean_frames(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Geometric mean of probability tables, aligned on the first table's fname order.

    Builds a new table (the original wrote into the first one in place, which pandas'
    copy-on-write silently ignores: quirk Q17).
    """
    if not frames:
        raise ValueError("nothing to blend")
    order = frames[0]["fname"]
    aligned = []
    for frame in frames:
        indexed = frame.set_index("fname")
        missing = set(order) - set(indexed.index)
        if missing:
            raise ConfigError(
                f"predictions to blend cover different clips, e.g. {sorted(missing)[:3]}"
            )
        aligned.append(indexed.loc[order].to_numpy(dtype=np.float64))
    return probs_frame(order.tolist(), geometric_mean(aligned), frames[0].columns[1:])


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def fold_checkpoints(
    experiment_dir: Path, name: str, folds: Sequence[int] = range(N_FOLDS)
) -> dict[int, Path]:
    """The best checkpoint of each fold, or a clear error naming what to run."""
    if not experiment_dir.is_dir():
        raise ConfigError(
            f"experiment {name!r} has no trained models in {experiment_dir}; "
            f"run `python train_folds.py --experiment {name}` first"
        )
    found, missing = {}, []
    for fold in folds:
        best = best_checkpoint(experiment_dir / f"fold_{fold}")
        if best is None:
            missing.append(fold)
        else:
            found[fold] = best[0]
    if missing:
        folds_text = ",".join(map(str, missing))
        raise ConfigError(
            f"experiment {name!r} has no checkpoint for fold(s) {folds_text} in {experiment_dir}; "
            f"run `python train_folds.py --experiment {name} --folds {folds_text}`"
        )
    return found


def experiment_config(experiment_dir: Path) -> dict:
    params = experiment_dir / "params.json"
    if not params.is_file():
        raise ConfigError(f"{experiment_dir}: no params.json; is this a trained experiment?")
    return json.loads(params.read_text())["config"]


# --------------------------------------------------------------------------------------
# Predicting a set of clips with one model
# --------------------------------------------------------------------------------------


def predict_clips(
    predictor,
    store,
    fnames: Sequence[str],
    out_dir: Path,
    classes: Sequence[str],
    desc: str,
    progress: bool = True,
    save_tiles: bool = True,
) -> pd.DataFrame:
    """Tile means of `fnames` saved as probs.csv, and with `save_tiles` each clip's tile
    predictions as <fname>.npy."""
    means = []
    chunk = 32  # clips per call: tiles of several clips share the model's batches
    bar = tqdm(total=len(fnames), desc=desc, unit="clip", disable=not progress, leave=False)
    for start in range(0, len(fnames), chunk):
        names = fnames[start : start + chunk]
        for fname, tiles in zip(names, predictor.predict_tiles([store[f] for f in names])):
            if save_tiles:
                save_npy_atomic(tiles.astype(np.float32), out_dir / f"{fname}.npy")
            means.append(tiles.mean(axis=0))
        bar.update(len(names))
    bar.close()
    frame = probs_frame(
        list(fnames), np.stack(means) if means else np.zeros((0, len(classes))), classes
    )
    write_csv_atomic(frame, out_dir / "probs.csv")
    return frame


def cv_scores(oof: pd.DataFrame, truth_table: pd.DataFrame, vocabulary: Vocabulary) -> dict:
    """Overall and per-class lwlrap of out-of-fold probabilities against a labels table."""
    truth = truth_table.set_index("fname").loc[oof["fname"], "labels"]
    per_class, weights = lwlrap_per_class(
        vocabulary.encode_many(truth.tolist()), oof[list(vocabulary.classes)].to_numpy()
    )
    return {
        "overall_lwlrap": float(np.sum(per_class * weights)),
        "per_class_lwlrap": {c: float(v) for c, v in zip(vocabulary.classes, per_class)},
    }


def save_cv(scores: dict, directory: Path, title: str) -> None:
    from src.plots import plot_per_class

    write_json_atomic(scores, directory / "val_lwlrap.json")
    plot_per_class(
        scores["per_class_lwlrap"],
        directory / "val_lwlrap.png",
        f"{title}: out-of-fold lwlrap {scores['overall_lwlrap']:.4f}",
    )


# --------------------------------------------------------------------------------------
# Submission
# --------------------------------------------------------------------------------------


def align_to_sample_submission(
    probs: pd.DataFrame, paths: Paths, fill_missing: bool = False
) -> pd.DataFrame:
    """Rows in the order of sample_submission.csv, with exactly its columns.

    Clips of the sample submission without a prediction (for example audio that could not
    be decoded) are an error, unless `fill_missing`: then they get the mean prediction of the
    other clips and a warning names them.
    """
    sample_path = paths.sample_submission
    if not sample_path.is_file():
        return probs
    sample = pd.read_csv(sample_path, dtype={"fname": str})
    if list(sample.columns[1:]) != list(probs.columns[1:]):
        raise ConfigError(f"{sample_path}: class columns differ from the predictions' columns")
    predicted = probs.set_index("fname")
    missing = [f for f in sample["fname"] if f not in predicted.index]
    extra = sorted(set(predicted.index) - set(sample["fname"]))
    if extra:
        raise ConfigError(
            f"{sample_path}: {len(extra)} predicted clips are not in it, e.g. {extra[:3]}"
        )
    if missing:
        if not fill_missing:
            raise ConfigError(
                f"{sample_path}: no prediction for {len(missing)} clips, e.g. {missing[:3]} "
                "(undecodable audio? see the test store's failures.csv)"
            )
        log.warning(
            "filling %d clips without prediction with the mean prediction: %s",
            len(missing),
            missing[:10],
        )
        mean = predicted.mean(axis=0)
        predicted = pd.concat([predicted, pd.DataFrame([mean] * len(missing), index=missing)])
    aligned = predicted.loc[sample["fname"]].reset_index(names="fname")
    return aligned


def check_submission(frame: pd.DataFrame, classes: Sequence[str], n_rows: int) -> None:
    if list(frame.columns) != ["fname", *classes]:
        raise ConfigError("submission columns must be fname followed by the class columns")
    if len(frame) != n_rows or frame["fname"].duplicated().any():
        raise ConfigError(
            f"submission must have one row per test clip ({n_rows}), got {len(frame)}"
        )
    values = frame[list(classes)].to_numpy()
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise ConfigError("submission values must be probabilities in [0, 1]")


# --------------------------------------------------------------------------------------
# A whole experiment
# --------------------------------------------------------------------------------------

DONE_FILE = "done.json"


def predict_set_cached(
    predictor,
    store,
    fnames: Sequence[str],
    out_dir: Path,
    classes,
    checkpoint: Path,
    desc: str,
    progress: bool,
    save_tiles: bool = True,
) -> pd.DataFrame:
    """`predict_clips`, skipped when `out_dir` already holds the same checkpoint's predictions."""
    marker = {"checkpoint": checkpoint.name, "tile_step": predictor.step, "clips": len(fnames)}
    done = out_dir / DONE_FILE
    if done.is_file() and json.loads(done.read_text()) == marker:
        return read_probs(out_dir / "probs.csv", classes)
    frame = predict_clips(predictor, store, fnames, out_dir, classes, desc, progress, save_tiles)
    write_json_atomic(marker, done)
    return frame


def present(fnames: Sequence[str], store, what: str) -> list[str]:
    """The clips that have spectrograms; the others failed to decode and are reported."""
    kept = [f for f in fnames if f in store]
    if len(kept) < len(fnames):
        lost = [f for f in fnames if f not in store]
        log.warning(
            "%s: %d clips could not be decoded and are skipped: %s", what, len(lost), lost[:10]
        )
    return kept


def predict_experiment(
    name: str,
    paths: Paths,
    vocabulary: Vocabulary,
    device: str = "cpu",
    batch_size: int = 64,
    progress: bool = True,
    fill_missing: bool = False,
) -> dict:
    """Out-of-fold and test predictions of every fold model, the fold blend, and the CV."""
    from src.datasets import curated_store, test_store
    from src.experiments import tile_steps
    from src.folds import read_folds, read_labels_csv
    from src.predictor import Predictor

    experiment_dir = paths.experiment_dir(name)
    checkpoints = fold_checkpoints(experiment_dir, name)
    steps = tile_steps(experiment_config(experiment_dir))
    classes = list(vocabulary.classes)
    out = paths.prediction_dir(name)
    test = test_store(paths)
    validate = not paths.kernel  # a kernel predicts the test set only (spec 11)
    if validate:
        folds = read_folds(paths.folds_csv)
        curated = curated_store(paths)

    test_frames, val_frames = [], []
    for fold, checkpoint in checkpoints.items():
        predictor = Predictor(checkpoint, device, batch_size)
        fold_dir = out / f"fold_{fold}"
        if validate:
            # Every clip of the fold, also those the corrections remove (spec 10.2).
            fnames = present(folds.loc[folds["fold"] == fold, "fname"].tolist(), curated, "curated")
            predictor.step = steps["oof"]
            val_frames.append(
                predict_set_cached(
                    predictor,
                    curated,
                    fnames,
                    fold_dir / "val",
                    classes,
                    checkpoint,
                    f"{name} fold {fold} val",
                    progress,
                )
            )
        predictor.step = steps["test"]
        test_frames.append(
            predict_set_cached(
                predictor,
                test,
                test.fnames,
                fold_dir / "test",
                classes,
                checkpoint,
                f"{name} fold {fold} test",
                progress,
            )
        )
    blend = gmean_frames(test_frames)
    write_csv_atomic(blend, out / "probs.csv")
    summary = {"experiment": name, "test_clips": len(blend), "probs": str(out / "probs.csv")}
    if paths.kernel:
        submission = align_to_sample_submission(blend, paths, fill_missing)
        check_submission(submission, classes, len(submission))
        write_csv_atomic(submission, paths.submission)
        summary["submission"] = str(paths.submission)
    else:
        # CV against the original labels of all curated clips (spec 10.2, quirk Q18).
        truth = read_labels_csv(paths.train_curated_csv, vocabulary)
        scores = cv_scores(pd.concat(val_frames, ignore_index=True), truth, vocabulary)
        save_cv(scores, out, name)
        summary["overall_lwlrap"] = scores["overall_lwlrap"]
    return summary
