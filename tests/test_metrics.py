import numpy as np
import pytest
import torch
from sklearn.metrics import label_ranking_average_precision_score

from src.models.metrics import (
    Bce,
    Lwlrap,
    MultiAccuracy,
    PositiveLabels,
    binary_cross_entropy,
    lwlrap,
    lwlrap_per_class,
    multi_accuracy,
    per_clip_lwlrap,
)


def direct_lwlrap(truth, scores):
    """The definition, one positive label at a time (independent of the vectorised code)."""
    n_classes = truth.shape[1]
    sums, counts = np.zeros(n_classes), np.zeros(n_classes)
    for labels, row in zip(truth, scores):
        ranks = {c: 1 + sum(row[o] > row[c] for o in range(n_classes)) for c in range(n_classes)}
        positives = [c for c in range(n_classes) if labels[c] > 0]
        for c in positives:
            hits = sum(ranks[o] <= ranks[c] for o in positives)
            sums[c] += hits / ranks[c]
            counts[c] += 1
    per_class = sums / np.maximum(1, counts)
    weights = counts / counts.sum()
    return per_class, weights


def random_problem(seed, n=60, classes=12):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n, classes)) < 0.15).astype(np.float32)
    truth[np.arange(n), rng.integers(0, classes, n)] = 1  # at least one label each
    scores = rng.random((n, classes))  # continuous: no ties
    return truth, scores


@pytest.mark.parametrize("seed", range(5))
def test_lwlrap_equals_the_direct_definition(seed):
    truth, scores = random_problem(seed)
    per_class, weights = lwlrap_per_class(truth, scores)
    expected_per_class, expected_weights = direct_lwlrap(truth, scores)
    np.testing.assert_allclose(per_class, expected_per_class, atol=1e-12)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-12)
    assert lwlrap(truth, scores) == pytest.approx(float(expected_per_class @ expected_weights))


@pytest.mark.parametrize("seed", range(5))
def test_lwlrap_equals_sklearn_lrap_weighted_by_positives(seed):
    truth, scores = random_problem(seed)
    expected = label_ranking_average_precision_score(truth, scores, sample_weight=truth.sum(axis=1))
    assert lwlrap(truth, scores) == pytest.approx(expected, abs=1e-12)


def test_lwlrap_known_values():
    truth = np.array([[1, 0, 0], [0, 1, 1]])
    scores = np.array([[0.9, 0.5, 0.1], [0.9, 0.5, 0.1]])
    # Sample 1: class 0 at rank 1 -> 1.
    # Sample 2: class 1 at rank 2 -> 1/2, class 2 at rank 3 -> 2/3.
    per_class, weights = lwlrap_per_class(truth, scores)
    np.testing.assert_allclose(per_class, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(weights, [1 / 3, 1 / 3, 1 / 3])
    assert lwlrap(truth, scores) == pytest.approx((1 + 0.5 + 2 / 3) / 3)
    assert lwlrap(truth, truth.astype(float)) == pytest.approx(1.0)


def test_samples_without_labels_are_ignored_and_ties_break_by_class_index():
    truth = np.array([[0, 0, 0], [1, 0, 0]])
    scores = np.array([[0.3, 0.3, 0.3], [0.5, 0.5, 0.5]])
    # Stable ranking: class 0 is ranked first among equal scores.
    assert lwlrap(truth, scores) == 1.0
    with pytest.raises(ValueError, match="equal 2-D shapes"):
        lwlrap(truth, scores[:, :2])


def test_per_clip_lwlrap_matches_sklearn_per_sample():
    truth, scores = random_problem(7, n=20)
    expected = [
        label_ranking_average_precision_score(t[None], s[None]) for t, s in zip(truth, scores)
    ]
    np.testing.assert_allclose(per_clip_lwlrap(truth, scores), expected, atol=1e-12)
    assert np.isnan(per_clip_lwlrap(np.zeros((1, 3)), np.ones((1, 3))))[0]


def test_multi_accuracy_requires_every_class_to_match():
    truth = np.array([[1, 0], [1, 1], [0, 0]])
    scores = np.array([[0.9, 0.1], [0.9, 0.4], [0.2, 0.2]])
    assert multi_accuracy(truth, scores) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        multi_accuracy(np.zeros((0, 2)), np.zeros((0, 2)))


def test_argus_metric_wrappers_accumulate_batches():
    truth, scores = random_problem(3)
    for metric, reference in ((Lwlrap(), lwlrap), (MultiAccuracy(), multi_accuracy)):
        metric.reset()
        for start in range(0, len(truth), 16):
            metric.update(
                {
                    "prediction": torch.tensor(scores[start : start + 16]),
                    "target": torch.tensor(truth[start : start + 16]),
                }
            )
        assert metric.compute() == pytest.approx(reference(truth, scores))
    assert (Lwlrap.name, Lwlrap.better, MultiAccuracy.name) == ("lwlrap", "max", "multi_accuracy")


def test_bce_is_torchs_binary_cross_entropy_over_batches():
    truth, scores = random_problem(4)
    truth[:5] = 0.25  # soft labels count as in torch
    reference = torch.nn.functional.binary_cross_entropy(
        torch.tensor(scores, dtype=torch.float64), torch.tensor(truth, dtype=torch.float64)
    ).item()
    assert binary_cross_entropy(truth, scores) == pytest.approx(reference, rel=1e-9)
    metric = Bce()
    metric.reset()
    for start in range(0, len(truth), 16):
        metric.update(
            {
                "prediction": torch.tensor(scores[start : start + 16]),
                "target": torch.tensor(truth[start : start + 16]),
            }
        )
    assert metric.compute() == pytest.approx(reference, rel=1e-6)
    assert (Bce.name, Bce.better) == ("bce", "min")


def test_bce_of_saturated_probabilities_is_finite_and_ranks_confidence():
    truth = np.array([[1.0, 0.0], [0.0, 1.0]])
    certain_and_right = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    certain_and_wrong = 1 - certain_and_right
    unsure = np.full((2, 2), 0.5)
    assert 0 <= binary_cross_entropy(truth, certain_and_right) < 1e-6
    assert binary_cross_entropy(truth, unsure) == pytest.approx(np.log(2))
    assert np.isfinite(binary_cross_entropy(truth, certain_and_wrong))
    assert binary_cross_entropy(truth, certain_and_wrong) > binary_cross_entropy(truth, unsure)


# ----------------------------------------------------------------------------------------------
# Ties, and the rank-counting implementation against two independent references
# ----------------------------------------------------------------------------------------------


def direct_lwlrap_ties_by_index(truth, scores):
    """The definition with the project's tie rule written out: class o ranks above class c
    when it scores higher, or equal with a lower index (what a stable sort gives)."""
    n_classes = truth.shape[1]
    sums, counts = np.zeros(n_classes), np.zeros(n_classes)
    for labels, row in zip(truth, scores):
        rank = {
            c: 1 + sum(row[o] > row[c] or (row[o] == row[c] and o < c) for o in range(n_classes))
            for c in range(n_classes)
        }
        positives = [c for c in range(n_classes) if labels[c] > 0]
        for c in positives:
            sums[c] += sum(rank[o] <= rank[c] for o in positives) / rank[c]
            counts[c] += 1
    return sums / np.maximum(1, counts), counts / max(1, counts.sum())


def sorted_lwlrap(truth, scores):
    """lwlrap by a stable sort of each row (the implementation the project used before it
    counted ranks): bit-for-bit the reference of the counting one."""
    positive = np.asarray(truth) > 0
    scores = np.asarray(scores, dtype=np.float64)
    n_classes = scores.shape[1]
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked_positive = np.take_along_axis(positive, order, axis=1)
    precision = np.cumsum(ranked_positive, axis=1) / np.arange(1, n_classes + 1)[None, :]
    rows, ranks = np.nonzero(ranked_positive)
    classes = order[rows, ranks]
    sums = np.bincount(classes, weights=precision[rows, ranks], minlength=n_classes)
    counts = np.bincount(classes, minlength=n_classes).astype(np.float64)
    return sums / np.maximum(1.0, counts), counts / max(1.0, counts.sum())


def tied_problem(seed):
    """Random labels (some samples without any, some with many) and scores from a few levels,
    so that most rows hold ties, also between labelled classes."""
    rng = np.random.default_rng(seed)
    n, classes = int(rng.integers(1, 40)), int(rng.integers(1, 12))
    truth = (rng.random((n, classes)) < rng.uniform(0.05, 0.6)).astype(np.float32)
    levels = int(rng.integers(1, 5))
    scores = rng.integers(0, levels + 1, (n, classes)) / max(levels, 1)
    return truth, scores


@pytest.mark.parametrize("seed", range(40))
def test_lwlrap_with_ties_equals_the_definition_and_the_stable_sort(seed):
    truth, scores = tied_problem(seed)
    per_class, weights = lwlrap_per_class(truth, scores)
    expected, expected_weights = direct_lwlrap_ties_by_index(truth, scores)
    np.testing.assert_allclose(per_class, expected, atol=1e-12)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-12)
    sorted_per_class, sorted_weights = sorted_lwlrap(truth, scores)
    np.testing.assert_array_equal(per_class, sorted_per_class)  # to the last bit
    np.testing.assert_array_equal(weights, sorted_weights)


def test_lwlrap_at_the_competition_size_equals_the_stable_sort_bit_for_bit():
    rng = np.random.default_rng(11)
    truth = np.zeros((4970, 80))
    truth[np.arange(4970), rng.integers(0, 80, 4970)] = 1
    truth.flat[rng.choice(truth.size, 800, replace=False)] = 1
    scores = rng.random((4970, 80))
    scores[:500, :40] = 0.25  # a block of ties
    per_class, weights = lwlrap_per_class(truth, scores)
    np.testing.assert_array_equal(per_class, sorted_lwlrap(truth, scores)[0])
    assert lwlrap(truth, scores) == float(np.sum(per_class * weights))


def test_prepared_labels_score_a_transposed_table_the_same():
    truth, scores = tied_problem(3)
    labels = PositiveLabels(truth)
    transposed = np.ascontiguousarray(scores.T)
    assert labels.lwlrap(transposed, transposed=True) == lwlrap(truth, scores)
    np.testing.assert_array_equal(labels.per_class(scores)[0], lwlrap_per_class(truth, scores)[0])


def test_nan_scores_rank_last():
    truth = np.array([[0, 1, 0]])
    assert lwlrap(truth, np.array([[np.nan, 0.2, 0.1]])) == 1.0
    assert lwlrap(truth, np.array([[0.5, np.nan, 0.1]])) == pytest.approx(1 / 3)
