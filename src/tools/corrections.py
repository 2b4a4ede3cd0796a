"""Making label-correction files from the predictions of trained experiments.

Follows the winning solution's two ideas: review by hand the curated clips whose labels score
low under out-of-fold predictions, and keep the noisy clips whose labels score high under the
predictions of the trained fold models. The score of a clip is the per-clip lwlrap of its
labels (label-ranking average precision). The interactive review is in `src.tools.review`;
docs/corrections.md describes the workflow, `src.data.corrections` the file format.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from src.cli import command_line
from src.config import N_FOLDS, ConfigError, Paths, Vocabulary, vocabulary_source
from src.data.corrections import REMOVE, Corrections, save_corrections
from src.data.labels import read_labels_csv
from src.data.store import curated_store, noisy_store
from src.experiments import tile_steps
from src.models.metrics import per_clip_lwlrap
from src.prediction.experiment import predict_set_cached, present
from src.prediction.tables import gmean_frames
from src.prediction.tiling import Predictor
from src.runs import (
    PROBS_FILE,
    align_columns,
    check_experiment_classes,
    checkpoint_classes,
    find_experiment,
    fold_dir,
    read_oof,
)
from src.utils import write_csv_atomic

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Scoring labels against predictions
# --------------------------------------------------------------------------------------

TOP_K = 5


def label_scores(labels: Sequence[str], probabilities: np.ndarray, vocabulary: Vocabulary):
    """Per-clip lwlrap of each clip's label string under its predicted probabilities.

    1.0 when the clip's labels are its top-ranked classes; 1/r for a single label ranked r.
    """
    return per_clip_lwlrap(vocabulary.encode_many(list(labels)), probabilities)


def top_predictions(
    probabilities: np.ndarray, classes: Sequence[str], k: int = TOP_K
) -> list[tuple[str, float]]:
    """The k most probable classes of one clip, most probable first (ties in class order)."""
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")[:k]
    return [(classes[i], float(probabilities[i])) for i in order]


def score_clips(
    table: pd.DataFrame, probs: pd.DataFrame, vocabulary: Vocabulary, k: int = TOP_K
) -> pd.DataFrame:
    """fname, labels, score and the top-k predictions (pred_i, prob_i) of every clip of `table`
    that has predictions, lowest score first (ties by fname)."""
    classes = list(vocabulary.classes)
    merged = table[["fname", "labels"]].merge(probs, on="fname", how="inner")
    values = merged[classes].to_numpy(dtype=np.float64)
    scored = merged[["fname", "labels"]].copy()
    scored["score"] = label_scores(scored["labels"], values, vocabulary)
    tops = [top_predictions(row, classes, k) for row in values]
    for i in range(min(k, len(classes))):
        scored[f"pred_{i + 1}"] = [top[i][0] for top in tops]
        scored[f"prob_{i + 1}"] = [round(top[i][1], 4) for top in tops]
    return scored.sort_values(["score", "fname"], kind="stable").reset_index(drop=True)


def lowest_scores(
    scored: pd.DataFrame, count: int | None = None, max_score: float | None = None
) -> pd.DataFrame:
    """The first `count` rows of a score-sorted table, and/or those scoring <= `max_score`."""
    if count is not None and count < 1:
        raise ConfigError(f"--count must be at least 1, got {count}")
    selected = scored if max_score is None else scored[scored["score"] <= max_score]
    return (selected if count is None else selected.head(count)).reset_index(drop=True)


# --------------------------------------------------------------------------------------
# Curated clips: out-of-fold predictions -> review list
# --------------------------------------------------------------------------------------

REVIEW_DIR = "review"
REVIEW_LIST = "review_list.csv"
SPECTROGRAM_DIR = "spectrograms"


def default_review_list(paths: Paths) -> Path:
    return paths.corrections_dir / REVIEW_DIR / REVIEW_LIST


def blended_oof(paths: Paths, experiments: Sequence[str], classes: Sequence[str]):
    """Geometric mean of the experiments' out-of-fold predictions."""
    if not experiments:
        raise ConfigError("name at least one experiment")
    return gmean_frames([read_oof(paths.predictions_dir, name, classes) for name in experiments])


def write_review_list(
    selected: pd.DataFrame,
    list_path: str | os.PathLike,
    spectrogram_of: Callable[[str], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Write the review list CSV; with `spectrogram_of`, also one PNG per clip beside it.

    The `spectrogram` column holds each PNG's path relative to the list's folder (empty when
    no picture was drawn), so the folder can be moved or shared as a whole.
    """
    from src.plots import plot_spectrogram  # matplotlib only when pictures are drawn

    list_path = Path(list_path)
    selected = selected.copy()
    pictures = []
    for row in selected.itertuples(index=False):
        if spectrogram_of is None:
            pictures.append("")
            continue
        relative = f"{SPECTROGRAM_DIR}/{Path(row.fname).stem}.png"
        predictions = "  ".join(f"{name} {p:.2f}" for name, p in review_predictions(row._asdict()))
        plot_spectrogram(
            spectrogram_of(row.fname),
            list_path.parent / relative,
            f"{row.fname}   score {row.score:.3f}",
            [f"labels:    {row.labels}", f"predicted: {predictions}"],
        )
        pictures.append(relative)
    selected["spectrogram"] = pictures
    selected["score"] = selected["score"].round(4)
    write_csv_atomic(selected, list_path)
    return selected


def review_predictions(row: Mapping) -> list[tuple[str, float]]:
    """The (class, probability) pairs of a review-list row, most probable first."""
    pairs, i = [], 1
    while row.get(f"pred_{i}"):
        pairs.append((str(row[f"pred_{i}"]), float(row[f"prob_{i}"])))
        i += 1
    return pairs


def read_review_list(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: review list not found; make one with "
            f"`{command_line('make_corrections.py', 'curated')}`"
        )
    table = pd.read_csv(path, dtype={"fname": str, "labels": str}, keep_default_na=False)
    missing = [c for c in ("fname", "labels", "score") if c not in table.columns]
    if missing:
        raise ConfigError(f"{path}: not a review list, missing column(s) {missing}")
    return table


def make_review_list(
    paths: Paths,
    vocabulary: Vocabulary,
    experiments: Sequence[str],
    count: int | None = 100,
    max_score: float | None = None,
    list_path: str | os.PathLike | None = None,
    plots: bool = True,
) -> pd.DataFrame:
    """Score every curated clip's original labels under the blended out-of-fold predictions
    and write the lowest-scoring ones as the review list (with spectrograms)."""

    classes = list(vocabulary.classes)
    curated = read_labels_csv(paths.train_curated_csv, vocabulary)
    oof = blended_oof(paths, experiments, classes)
    unpredicted = sorted(set(curated["fname"]) - set(oof["fname"]))
    if unpredicted:
        log.warning(
            "%d curated clips have no out-of-fold prediction and are not scored: %s",
            len(unpredicted),
            unpredicted[:10],
        )
    selected = lowest_scores(score_clips(curated, oof, vocabulary), count, max_score)
    store = curated_store(paths) if plots else None
    list_path = Path(list_path) if list_path else default_review_list(paths)
    return write_review_list(selected, list_path, store.__getitem__ if store else None)


# --------------------------------------------------------------------------------------
# Noisy clips: predictions of every fold model -> kept / relabelled / removed
# --------------------------------------------------------------------------------------

# Chosen with bench/noisy_selection.py on the synthetic data (docs/corrections.md).
DEFAULT_NOISY_THRESHOLD = 1.0
DEFAULT_LABEL_THRESHOLD = 0.5
NOISY_PREDICTIONS = "noisy"  # folder under <data>/predictions/


def confident_labels(
    probabilities: np.ndarray, classes: Sequence[str], label_threshold: float
) -> str:
    """Classes predicted with probability >= `label_threshold`, at least the most probable
    one, in vocabulary order."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    chosen = probabilities >= label_threshold
    chosen[int(np.argmax(probabilities))] = True
    return ",".join(c for c, keep in zip(classes, chosen) if keep)


def select_noisy(
    table: pd.DataFrame,
    probs: pd.DataFrame,
    vocabulary: Vocabulary,
    threshold: float = DEFAULT_NOISY_THRESHOLD,
    relabel: bool = False,
    label_threshold: float = DEFAULT_LABEL_THRESHOLD,
) -> pd.DataFrame:
    """Decide every clip of `table` (fname, labels): keep it when its labels score at least
    `threshold` under `probs`, otherwise remove it. Clips without predictions are removed.

    Returns fname, labels, score (NaN without predictions), kept, new_labels (the labels a
    kept clip trains with: its own, or with `relabel` the confident predictions; "remove"
    for the others) and relabelled (kept with a different label set).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"the threshold is a per-clip lwlrap in [0, 1], got {threshold}")
    classes = list(vocabulary.classes)
    indexed = probs.set_index("fname")
    predicted = table["fname"].isin(indexed.index).to_numpy()
    selection = table[["fname", "labels"]].reset_index(drop=True)
    scores = np.full(len(selection), np.nan)
    values = indexed.loc[selection["fname"][predicted], classes].to_numpy(dtype=np.float64)
    scores[predicted] = label_scores(selection["labels"][predicted], values, vocabulary)
    selection["score"] = scores
    selection["kept"] = np.nan_to_num(scores, nan=-1.0) >= threshold
    new_labels = selection["labels"].where(selection["kept"], REMOVE)
    if relabel:
        rows = np.flatnonzero(selection["kept"].to_numpy())
        positions = np.cumsum(predicted) - 1  # row of each predicted clip in `values`
        for row in rows:
            new_labels[row] = confident_labels(values[positions[row]], classes, label_threshold)
    selection["new_labels"] = new_labels
    selection["relabelled"] = [
        kept and set(Vocabulary.split(old)) != set(Vocabulary.split(new))
        for kept, old, new in zip(selection["kept"], selection["labels"], new_labels)
    ]
    return selection


def selection_corrections(selection: pd.DataFrame) -> Corrections:
    """Every clip listed: kept ones with their (new) labels, the rest "remove". Kept clips must
    be listed: the corrected-noisy set is made of the listed clips (`relabelled_only`)."""
    return dict(zip(selection["fname"], selection["new_labels"]))


def selection_summary(selection: pd.DataFrame) -> dict[str, int]:
    kept = int(selection["kept"].sum())
    return {
        "clips": len(selection),
        "kept": kept,
        "relabelled": int(selection["relabelled"].sum()),
        "removed": len(selection) - kept,
        "without_predictions": int(selection["score"].isna().sum()),
    }


def predict_noisy(
    paths: Paths,
    vocabulary: Vocabulary,
    experiments: Sequence[str],
    device: str = "cpu",
    batch_size: int = 64,
    progress: bool = True,
) -> pd.DataFrame:
    """Tile-mean probabilities of every noisy clip, geometric mean over every fold model of
    the experiments. Each fold model's predictions are cached under
    <data>/predictions/noisy/<experiment>/fold_<k>/ (reused while its checkpoint is the same),
    the blend is written to <data>/predictions/noisy/probs.csv."""

    if not experiments:
        raise ConfigError("name at least one experiment")
    check_experiment_classes(paths, vocabulary, experiments)
    table = read_labels_csv(paths.train_noisy_csv, vocabulary)
    store = noisy_store(paths)
    fnames = present(table["fname"].tolist(), store, "noisy")
    root = paths.predictions_dir / NOISY_PREDICTIONS
    frames = []
    for name in experiments:
        experiment = find_experiment(paths.experiments_dir, name, range(N_FOLDS))
        checkpoints = experiment.checkpoints()
        step = tile_steps(experiment.config)["oof"]
        for fold, checkpoint in checkpoints.items():
            predictor = Predictor(checkpoint, device, batch_size, tile_step=step)
            # Tile means only: the noisy set is four times the curated one.
            frames.append(
                predict_set_cached(
                    predictor,
                    store,
                    fnames,
                    fold_dir(root / name, fold),
                    checkpoint_classes(checkpoint, predictor.n_outputs),
                    checkpoint,
                    f"{name} fold {fold}",
                    progress,
                    save_tiles=False,
                )
            )
    # Each model's columns are its own classes; the blend's are the dataset's, by name.
    blend = align_columns(
        gmean_frames(frames), vocabulary.classes, "the predictions", vocabulary_source(paths)
    )
    write_csv_atomic(blend, root / PROBS_FILE)
    return blend


def make_noisy_corrections(
    paths: Paths,
    vocabulary: Vocabulary,
    experiments: Sequence[str],
    threshold: float = DEFAULT_NOISY_THRESHOLD,
    relabel: bool = False,
    label_threshold: float = DEFAULT_LABEL_THRESHOLD,
    out_path: str | os.PathLike | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[Path, dict[str, int]]:
    """Predict, score and select the noisy clips; write the noisy correction file."""
    table = read_labels_csv(paths.train_noisy_csv, vocabulary)
    probs = predict_noisy(paths, vocabulary, experiments, device, batch_size, progress)
    selection = select_noisy(table, probs, vocabulary, threshold, relabel, label_threshold)
    out_path = Path(out_path) if out_path else paths.corrections_dir / "noisy_corrections.json"
    save_corrections(selection_corrections(selection), out_path)
    return out_path, selection_summary(selection)
