"""lwlrap (label-weighted label-ranking average precision) and multi-label accuracy.

lwlrap follows the DCASE 2019 task 2 definition: for every positive label c of a
sample, the precision of the sample's ranked class list cut at c; per-class values average those
precisions over the class's positives, and the overall value weights classes by their number of
positives (equivalently: the mean over all positive labels pooled together). Scores are ranked
with a stable sort, so ties break by class index instead of arbitrarily
(docs/original.md, quirk "Metric ties").
"""

from __future__ import annotations

import numpy as np
from argus.metrics import Metric


def lwlrap_per_class(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class lwlrap and class weights for (samples, classes) truth and scores.

    Truth entries > 0 count as positive (soft targets from mixing are positives too).
    Returns (per_class, weights); classes without positives get value 0 and weight 0.
    """
    truth = np.asarray(truth)
    scores = np.asarray(scores, dtype=np.float64)
    if truth.shape != scores.shape or truth.ndim != 2:
        raise ValueError(
            f"truth and scores must be equal 2-D shapes, got {truth.shape} and {scores.shape}"
        )
    n_classes = scores.shape[1]
    positive = truth > 0
    # Rank 1 = highest score; a stable sort of the negated scores keeps ties in class order.
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked_positive = np.take_along_axis(positive, order, axis=1)
    hits_so_far = np.cumsum(ranked_positive, axis=1)
    precision = hits_so_far / np.arange(1, n_classes + 1)[None, :]
    rows, ranks = np.nonzero(ranked_positive)
    classes = order[rows, ranks]
    sums = np.bincount(classes, weights=precision[rows, ranks], minlength=n_classes)
    counts = np.bincount(classes, minlength=n_classes).astype(np.float64)
    per_class = sums / np.maximum(1.0, counts)
    weights = counts / max(1.0, counts.sum())
    return per_class, weights


def lwlrap(truth: np.ndarray, scores: np.ndarray) -> float:
    per_class, weights = lwlrap_per_class(truth, scores)
    return float(np.sum(per_class * weights))


def per_clip_lwlrap(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Label-ranking average precision of each clip (NaN for clips without positives).

    Used to score how well a clip's labels agree with predictions (label corrections).
    """
    truth = np.asarray(truth) > 0
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked_positive = np.take_along_axis(truth, order, axis=1)
    precision = np.cumsum(ranked_positive, axis=1) / np.arange(1, scores.shape[1] + 1)[None, :]
    n_positive = ranked_positive.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            n_positive > 0, (precision * ranked_positive).sum(axis=1) / n_positive, np.nan
        )


def multi_accuracy(truth: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Share of samples whose thresholded scores equal the labels on every class."""
    truth = np.asarray(truth) > 0
    if len(truth) == 0:
        raise ValueError("multi_accuracy needs at least one sample")
    return float(np.mean(np.all((np.asarray(scores) > threshold) == truth, axis=1)))


class _Accumulating(Metric):
    """Collects predictions and targets over an epoch, computes once at the end.

    Under DDP each rank sees a shard of the validation set: `gather` (set by the trainer)
    concatenates the shards so every rank computes the metric on the whole set.
    """

    name = ""  # argus registers metrics by name; this base class is not one

    def __init__(self, gather=None) -> None:
        super().__init__()
        self.gather = gather  # (truth, scores) -> (truth, scores) of every rank, or None
        self.reset()

    def reset(self) -> None:
        self.predictions: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []

    def update(self, step_output: dict) -> None:
        self.predictions.append(step_output["prediction"].detach().float().cpu().numpy())
        self.targets.append(step_output["target"].detach().float().cpu().numpy())

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        truth, scores = np.concatenate(self.targets), np.concatenate(self.predictions)
        if self.gather is not None:
            truth, scores = self.gather(truth, scores)
        return truth, scores


class Lwlrap(_Accumulating):
    name = "lwlrap"
    better = "max"

    def compute(self) -> float:
        return lwlrap(*self.arrays())


class MultiAccuracy(_Accumulating):
    name = "multi_accuracy"
    better = "max"

    def compute(self) -> float:
        return multi_accuracy(*self.arrays())
