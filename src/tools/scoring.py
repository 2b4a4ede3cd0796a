"""Scoring tags against known labels: `tag_audio.py ... --score test_labels.csv [--plot DIR]`.

Files are matched to the labels CSV (`fname,labels`, as make_dataset.py writes test_labels.csv)
by file name. Reported: lwlrap (the competition metric), top-1 accuracy (the share of files whose
most probable class is one of their labels) and per class: its files, its lwlrap, and the
top-1 recall (its files whose top class is it) and precision (files whose top class is it that
carry it). The confusion matrix counts, for each true label of each file, the top class. Per
file: its label-ranking precision (for each of its labels, the share of its labels among the
classes ranked at or above it, averaged over its labels: 1 when its labels are its top classes;
lwlrap is their mean weighted by each file's number of labels), which picks the worst clips
of --plot.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import ConfigError, Vocabulary
from src.models.metrics import lwlrap, lwlrap_per_class, per_clip_lwlrap


@dataclass
class Score:
    lwlrap: float
    top1: float
    n_files: int
    per_class: pd.DataFrame  # class, files, lwlrap, top1_recall, top1_precision
    confusion: pd.DataFrame  # true class x top class, counts
    per_file: pd.DataFrame  # path, labels, precision (the file's label-ranking precision)
    unmatched: list[str]  # tagged files without labels (not scored)
    untagged: list[str]  # labelled files that were not tagged


def read_truth(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: labels file not found")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"fname", "labels"} <= set(table.columns):
        raise ConfigError(f"{path}: expected columns fname,labels, found {list(table.columns)}")
    return table


def score_tags(
    paths: Sequence[str], probabilities: np.ndarray, classes: Sequence[str], truth: pd.DataFrame
) -> Score:
    """Score per-file class probabilities (rows in `paths` order) against `truth`."""
    vocabulary = Vocabulary(tuple(classes))
    labels_of = dict(zip(truth["fname"], truth["labels"]))
    names = [Path(p).name for p in paths]
    rows = [i for i, name in enumerate(names) if name in labels_of]
    if not rows:
        raise ConfigError("none of the tagged files is listed in the labels file")
    unknown = sorted({u for i in rows for u in vocabulary.unknown(labels_of[names[i]])})
    if unknown:
        raise ConfigError(f"labels the model does not know: {unknown[:10]}")
    target = vocabulary.encode_many([labels_of[names[i]] for i in rows])
    scores = np.asarray(probabilities, dtype=np.float64)[rows]
    top = scores.argmax(axis=1)
    hit = target[np.arange(len(rows)), top] > 0
    per_class_lwlrap, _ = lwlrap_per_class(target, scores)
    files = target.sum(axis=0).astype(int)
    predicted = np.bincount(top, minlength=len(classes))
    recall = np.array(
        [(top[target[:, c] > 0] == c).mean() if files[c] else np.nan for c in range(len(classes))]
    )
    precision = np.array(
        [(target[top == c, c] > 0).mean() if predicted[c] else np.nan for c in range(len(classes))]
    )
    per_class = pd.DataFrame(
        {
            "class": list(classes),
            "files": files,
            "lwlrap": np.where(files > 0, per_class_lwlrap, np.nan),
            "top1_recall": recall,
            "top1_precision": precision,
        }
    )
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    for truth_row, predicted_class in zip(target, top):
        for true_class in np.nonzero(truth_row)[0]:
            confusion[true_class, predicted_class] += 1
    scored = {names[i] for i in rows}
    per_file = pd.DataFrame(
        {
            "path": [paths[i] for i in rows],
            "labels": [labels_of[names[i]] for i in rows],
            "precision": per_clip_lwlrap(target, scores),
        }
    )
    return Score(
        lwlrap=lwlrap(target, scores),
        top1=float(hit.mean()),
        n_files=len(rows),
        per_class=per_class,
        confusion=pd.DataFrame(confusion, index=list(classes), columns=list(classes)),
        per_file=per_file,
        unmatched=[p for p, name in zip(paths, names) if name not in labels_of],
        untagged=[f for f in truth["fname"] if f not in scored],
    )


def format_score(score: Score) -> str:
    lines = [
        f"scored {score.n_files} file(s): lwlrap {score.lwlrap:.4f}, top-1 accuracy "
        f"{score.top1:.4f}",
        score.per_class.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"),
    ]
    if score.unmatched:
        lines.append(
            f"not in the labels file, not scored ({len(score.unmatched)}): {score.unmatched[:5]}"
        )
    if score.untagged:
        lines.append(f"labelled but not tagged ({len(score.untagged)}): {score.untagged[:5]}")
    return "\n".join(lines)


def plot_confusion(score: Score, png_path: str | os.PathLike, title: str = "") -> None:
    """The confusion matrix (true label rows, top class columns) with counts in the cells."""
    from src.plots import _save, plt

    matrix = score.confusion.to_numpy()
    n = len(matrix)
    size = max(5.0, 0.35 * n + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    rows = matrix.sum(axis=1, keepdims=True)
    axis.imshow(matrix / np.maximum(rows, 1), cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    color = "white" if matrix[i, j] > 0.5 * max(rows[i, 0], 1) else "black"
                    axis.text(
                        j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=color
                    )
    labels = list(score.confusion.index)
    axis.set_xticks(range(n), labels, rotation=90, fontsize=7)
    axis.set_yticks(range(n), labels, fontsize=7)
    axis.set_xlabel("top class")
    axis.set_ylabel("true label")
    axis.set_title(title or f"lwlrap {score.lwlrap:.4f}, top-1 accuracy {score.top1:.4f}")
    _save(figure, png_path)
