"""Probability tables (fname + one column per class): blends, CV scores, the submission."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import ConfigError, Paths, Vocabulary
from src.models.metrics import lwlrap_per_class
from src.runs import align_columns
from src.utils import geometric_mean, write_json_atomic

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


def aligned_arrays(frames: Sequence[pd.DataFrame]) -> tuple[list[str], list[np.ndarray]]:
    """The probabilities of each table as a float64 array, rows in the first table's fname
    order and columns in its class order (matched by name); an error when the tables cover
    different clips or classes."""
    if not frames:
        raise ValueError("nothing to blend")
    order = frames[0]["fname"]
    classes = frames[0].columns[1:]
    aligned = []
    for number, frame in enumerate(frames):
        frame = align_columns(frame, classes, f"predictions {number + 1}", "predictions 1")
        indexed = frame.set_index("fname")
        missing = set(order) - set(indexed.index)
        if missing:
            raise ConfigError(
                f"predictions to blend cover different clips, e.g. {sorted(missing)[:3]}"
            )
        aligned.append(indexed.loc[order].to_numpy(dtype=np.float64))
    return order.tolist(), aligned


def gmean_frames(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Geometric mean of probability tables, aligned on the first table's fname order.

    Builds a new table: the original wrote the mean into the first table in place, which
    pandas' copy-on-write now silently ignores (docs/original.md, quirk "Blending in place").
    """
    fnames, arrays = aligned_arrays(frames)
    return probs_frame(fnames, geometric_mean(arrays), frames[0].columns[1:])


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


def align_to_sample_submission(
    probs: pd.DataFrame, paths: Paths, fill_missing: bool = False
) -> pd.DataFrame:
    """Rows in the order of sample_submission.csv, with exactly its columns: the class columns
    of `probs` matched by name (`src.runs.class_order`), a class set that differs an error.

    Clips of the sample submission without a prediction (for example audio that could not
    be decoded) are an error, unless `fill_missing`: then they get the mean prediction of the
    other clips and a warning names them.
    """
    sample_path = paths.sample_submission
    if not sample_path.is_file():
        return probs
    sample = pd.read_csv(sample_path, dtype={"fname": str}, encoding="utf-8-sig")
    probs = align_columns(probs, sample.columns[1:], "the predictions", sample_path)
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
