"""lwlrap (label-weighted label-ranking average precision) and multi-label accuracy.

lwlrap follows the DCASE 2019 task 2 definition: for every positive label c of a
sample, the precision of the sample's ranked class list cut at c; per-class values average those
precisions over the class's positives, and the overall value weights classes by their number of
positives (equivalently: the mean over all positive labels pooled together). Classes are ranked
by score, ties broken by class index (the order a stable sort gives) instead of arbitrarily
(docs/original.md, quirk "Metric ties").

`PositiveLabels` is the one implementation: the positive labels of a truth table, found once,
score any number of score tables (the ensemble selection scores thousands of blends against the
same labels). A label's rank is counted, not sorted: one plus the classes of its clip scored
above it, or equal to it with a lower index, so a table costs a few passes over its entries
whatever its number of clips.
"""

from __future__ import annotations

import numpy as np
from argus.metrics import Metric


class PositiveLabels:
    """The positive labels (truth > 0; soft targets from mixing count too) of a (samples,
    classes) truth table, prepared to score score tables of the same shape."""

    def __init__(self, truth: np.ndarray) -> None:
        truth = np.asarray(truth)
        if truth.ndim != 2:
            raise ValueError(f"truth must be 2-D (samples, classes), got shape {truth.shape}")
        self.shape = truth.shape
        n_samples, n_classes = truth.shape
        # Row-major: each class's precisions are summed in sample order, as a sort would list them.
        self.rows, self.classes = np.nonzero(truth > 0)
        self.counts = np.bincount(self.classes, minlength=n_classes).astype(np.float64)
        self.weights = self.counts / max(1.0, self.counts.sum())
        per_row = np.bincount(self.rows, minlength=n_samples)
        first = np.cumsum(per_row) - per_row
        nth = np.arange(len(self.rows)) - first[self.rows]  # 0 for a sample's first label, ...
        # Pass m ranks the m-th label of every sample that has one: (labels, their samples,
        # their classes, whether those samples are all the rows in order).
        self.passes = []
        for m in range(int(per_row.max()) if len(self.rows) else 0):
            labels = np.flatnonzero(nth == m)
            rows = self.rows[labels]
            whole = len(rows) == n_samples  # then rows is 0..n-1: the table itself, no copy
            self.passes.append((labels, rows, self.classes[labels], whole))
        # The labels of samples with several, one column per such sample (-1 padded), for
        # their hit counts: transposed, so that each count is a sum of contiguous rows.
        multi = np.flatnonzero(per_row > 1)
        depth = int(per_row.max()) if len(multi) else 0
        self.multi = np.full((depth, len(multi)), -1, dtype=np.int64)
        for m in range(depth):
            has = per_row[multi] > m
            self.multi[m, has] = first[multi[has]] + m

    def ranks(self, scores_t: np.ndarray) -> np.ndarray:
        """The rank (1 = top) of every positive label within its sample, in label order: one
        plus the classes scored above it, or equal to it with a lower class index.

        `scores_t` is the score table transposed, (classes, samples) and C-contiguous: every
        comparison then runs along a contiguous row and the counts are sums of whole rows,
        several times faster than per-sample counts in the (samples, classes) layout."""
        n_classes = self.shape[1]
        count = np.uint8 if n_classes < 256 else np.int64  # a sum of n_classes flags
        ranks = np.empty(len(self.rows), dtype=np.int64)
        for labels, rows, classes, whole in self.passes:
            block = scores_t if whole else scores_t[:, rows]
            value = scores_t[classes, rows]
            above = np.add.reduce((block > value).view(np.uint8), axis=0, dtype=count)
            above = above.astype(np.int64)
            equal = block == value
            if np.count_nonzero(equal) != len(rows):  # some label ties with another class
                tied = np.flatnonzero(np.count_nonzero(equal, axis=0) != 1)
                lower = np.arange(n_classes)[:, None] < classes[None, tied]
                above[tied] += np.count_nonzero(equal[:, tied] & lower, axis=0)
            ranks[labels] = above + 1
        return ranks

    def precisions(self, scores_t: np.ndarray) -> np.ndarray:
        """Each positive label's precision: the share of positives among the classes ranked at
        or above it (`scores_t` as for `ranks`)."""
        ranks = self.ranks(scores_t)
        hits = np.ones(len(ranks), dtype=np.int64)
        if self.multi.size:
            valid = self.multi >= 0
            own = np.where(valid, ranks[self.multi], self.shape[1] + 1)  # padding ranks last
            for m, labels in enumerate(self.multi):
                counted = np.add.reduce((own <= own[m]).view(np.uint8), axis=0, dtype=np.int64)
                hits[labels[valid[m]]] = counted[valid[m]]
        return hits / ranks

    def per_class(
        self, scores: np.ndarray, transposed: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-class lwlrap and class weights of a (samples, classes) score table, or of its
        transpose (`transposed`, C-contiguous: see `ranks`)."""
        scores_t = scores if transposed else np.ascontiguousarray(scores.T)
        sums = np.bincount(self.classes, weights=self.precisions(scores_t), minlength=self.shape[1])
        return sums / np.maximum(1.0, self.counts), self.weights

    def lwlrap(self, scores: np.ndarray, transposed: bool = False) -> float:
        per_class, weights = self.per_class(scores, transposed)
        return float(np.sum(per_class * weights))

    def per_sample(self, scores: np.ndarray) -> np.ndarray:
        """Label-ranking average precision of each sample (NaN for samples without labels)."""
        n_samples = self.shape[0]
        precisions = self.precisions(np.ascontiguousarray(scores.T))
        sums = np.bincount(self.rows, weights=precisions, minlength=n_samples)
        counts = np.bincount(self.rows, minlength=n_samples)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / counts, np.nan)


def _checked(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """`scores` as float64 with NaN ranked last (as -inf), after the shape check."""
    truth, scores = np.asarray(truth), np.asarray(scores, dtype=np.float64)
    if truth.shape != scores.shape or truth.ndim != 2:
        raise ValueError(
            f"truth and scores must be equal 2-D shapes, got {truth.shape} and {scores.shape}"
        )
    nan = np.isnan(scores)
    return np.where(nan, -np.inf, scores) if nan.any() else scores


def lwlrap_per_class(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class lwlrap and class weights for (samples, classes) truth and scores.

    Truth entries > 0 count as positive (soft targets from mixing are positives too).
    Returns (per_class, weights); classes without positives get value 0 and weight 0.
    """
    scores = _checked(truth, scores)
    return PositiveLabels(truth).per_class(scores)


def lwlrap(truth: np.ndarray, scores: np.ndarray) -> float:
    per_class, weights = lwlrap_per_class(truth, scores)
    return float(np.sum(per_class * weights))


def per_clip_lwlrap(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Label-ranking average precision of each clip (NaN for clips without positives).

    Used to score how well a clip's labels agree with predictions (label corrections).
    """
    scores = _checked(truth, scores)
    return PositiveLabels(truth).per_sample(scores)


def multi_accuracy(truth: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Share of samples whose thresholded scores equal the labels on every class."""
    truth = np.asarray(truth) > 0
    if len(truth) == 0:
        raise ValueError("multi_accuracy needs at least one sample")
    return float(np.mean(np.all((np.asarray(scores) > threshold) == truth, axis=1)))


def binary_cross_entropy(truth: np.ndarray, scores: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities `scores` (clipped to [eps, 1 - eps]) against
    `truth` (0/1 or soft labels), over every sample and class."""
    truth = np.asarray(truth, dtype=np.float64)
    if truth.size == 0:
        raise ValueError("binary_cross_entropy needs at least one sample")
    scores = np.clip(np.asarray(scores, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(truth * np.log(scores) + (1 - truth) * np.log1p(-scores)))


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


class Bce(_Accumulating):
    """The main output's binary cross-entropy: the same on every loss setting and, under DDP,
    computed on every rank's predictions (the early stopping breaks ties on it, and every rank
    must take the same decision)."""

    name = "bce"
    better = "min"

    def compute(self) -> float:
        return binary_cross_entropy(*self.arrays())
