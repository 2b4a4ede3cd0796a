"""Losses against hand computations in numpy."""

import numpy as np
import pytest
import torch

from src.models.losses import (
    LOSSES,
    AuxWeightedLoss,
    BCEMaxOutlierLoss,
    BCEWithLogits,
    LqLoss,
    LSoftLoss,
    NoisyCuratedLoss,
    OnlyNoisyLqLoss,
    OnlyNoisyLSoftLoss,
)

LOGITS = np.array(
    [
        [0.5, -1.0, 2.0],
        [0.0, 3.0, -2.0],
        [-0.7, 1.5, 0.2],
        [1.2, -0.3, -2.5],
    ]
)
TARGET = np.array(
    [
        [1.0, 0.0, 1.0],
        [0.0, 1.0, 0.0],
        [0.5, 0.5, 0.0],  # a soft (mixed) target
        [1.0, 0.0, 0.0],
    ]
)
NOISY = np.array([1, 0, 1, 1], dtype=np.uint8)


# ----------------------------------------------------------------------- numpy references


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def bce_elements(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    return -(t * np.log(p) + (1.0 - t) * np.log(1.0 - p))


def np_bce_with_logits(z: np.ndarray, y: np.ndarray) -> float:
    return float(bce_elements(sigmoid(z), y).mean())


def np_lsoft(z: np.ndarray, y: np.ndarray, beta: float) -> float:
    p = np.clip(sigmoid(z), 1e-7, 1.0)
    soft_target = beta * y + (1.0 - beta) * p
    return float(bce_elements(p, soft_target).mean())


def np_lq(z: np.ndarray, y: np.ndarray, q: float) -> float:
    return float(((1.0 - (sigmoid(z) * y + 1e-7) ** q) / q).mean())


def tensors(z=LOGITS, y=TARGET, noisy=NOISY, requires_grad=False):
    logits = torch.tensor(z, dtype=torch.float32, requires_grad=requires_grad)
    return logits, torch.tensor(y, dtype=torch.float32), torch.tensor(noisy)


# ----------------------------------------------------------------------- Lsoft and Lq


def test_lsoft_value():
    logits, target, _ = tensors()
    assert LSoftLoss(beta=0.7)(logits, target).item() == pytest.approx(
        np_lsoft(LOGITS, TARGET, 0.7), rel=1e-5
    )


def test_lsoft_gradient_does_not_flow_through_soft_target():
    logits, target, _ = tensors(requires_grad=True)
    LSoftLoss(beta=0.7)(logits, target).backward()
    p = sigmoid(LOGITS)
    soft_target = 0.7 * TARGET + 0.3 * p
    # d/dz BCE(p, t) with t constant is (p - t) / N; a gradient through t would differ.
    expected = (p - soft_target) / LOGITS.size
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-4, atol=1e-7)


def test_lsoft_keeps_the_originals_clamps():
    # p = sigmoid(100) = 1.0 exactly in float32: log(1 - p) is clamped to -100 by BCE, so with
    # y = 0 and beta = 0.7 the element is -(0.3 * log 1 + 0.7 * (-100)) = 70.
    saturated = LSoftLoss(beta=0.7)(torch.tensor([[100.0]]), torch.tensor([[0.0]]))
    assert saturated.item() == pytest.approx(70.0, rel=1e-6)
    # p = sigmoid(-100) is clamped up to 1e-7: with y = 1 the soft target is 0.7 + 0.3e-7.
    p, t = 1e-7, 0.7 + 0.3e-7
    expected = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    tiny = LSoftLoss(beta=0.7)(torch.tensor([[-100.0]]), torch.tensor([[1.0]]))
    assert tiny.item() == pytest.approx(expected, rel=1e-5)


def test_lq_value_and_negatives_get_no_gradient():
    logits, target, _ = tensors(requires_grad=True)
    loss = LqLoss(q=0.5)(logits, target)
    assert loss.item() == pytest.approx(np_lq(LOGITS, TARGET, 0.5), rel=1e-5)
    loss.backward()
    grad = logits.grad.numpy()
    assert np.all(grad[TARGET == 0] == 0)
    assert np.all(grad[TARGET > 0] < 0)  # positives are always pushed up


# ----------------------------------------------------------------------- noisy / curated split


def test_only_noisy_lsoft_weights_parts_by_batch_share():
    logits, target, noisy = tensors()
    loss = OnlyNoisyLSoftLoss(beta=0.7)(logits, target, noisy)
    is_noisy = NOISY == 1
    expected = 0.5 * np_lsoft(LOGITS[is_noisy], TARGET[is_noisy], 0.7) * 3 / 4
    expected += 0.5 * np_bce_with_logits(LOGITS[~is_noisy], TARGET[~is_noisy]) * 1 / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_noisy_curated_custom_weights_and_bool_flags():
    logits, target, noisy = tensors()
    loss = OnlyNoisyLqLoss(q=0.7, noisy_weight=1.0, curated_weight=0.25)
    is_noisy = NOISY == 1
    expected = 1.0 * np_lq(LOGITS[is_noisy], TARGET[is_noisy], 0.7) * 3 / 4
    expected += 0.25 * np_bce_with_logits(LOGITS[~is_noisy], TARGET[~is_noisy]) * 1 / 4
    assert loss(logits, target, noisy).item() == pytest.approx(expected, rel=1e-5)
    assert loss(logits, target, noisy.bool()).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("flag", "reference"),
    [
        (0, lambda z, y: np_bce_with_logits(z, y)),
        (1, lambda z, y: np_lsoft(z, y, 0.7)),
    ],
    ids=["all-curated", "all-noisy"],
)
def test_single_kind_batch_is_half_of_its_loss_and_backward_works(flag, reference):
    logits, target, _ = tensors(requires_grad=True)
    noisy = torch.full((4,), flag, dtype=torch.uint8)
    loss = OnlyNoisyLSoftLoss(beta=0.7)(logits, target, noisy)
    assert loss.item() == pytest.approx(0.5 * reference(LOGITS, TARGET), rel=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_noisy_flags_must_match_batch():
    logits, target, _ = tensors()
    with pytest.raises(ValueError, match="noisy flags"):
        OnlyNoisyLSoftLoss(beta=0.7)(logits, target, torch.zeros(3, dtype=torch.uint8))


def test_noisy_curated_accepts_any_two_argument_losses():
    logits, target, noisy = tensors()
    loss = NoisyCuratedLoss(LqLoss(0.5), LSoftLoss(0.4), noisy_weight=0.3, curated_weight=0.9)
    is_noisy = NOISY == 1
    expected = 0.3 * np_lq(LOGITS[is_noisy], TARGET[is_noisy], 0.5) * 3 / 4
    expected += 0.9 * np_lsoft(LOGITS[~is_noisy], TARGET[~is_noisy], 0.4) * 1 / 4
    assert loss(logits, target, noisy).item() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------- BCE and outliers


def test_bce_with_logits_ignores_noisy_flags():
    logits, target, noisy = tensors()
    expected = np_bce_with_logits(LOGITS, TARGET)
    assert BCEWithLogits()(logits, target, noisy).item() == pytest.approx(expected, rel=1e-5)
    assert BCEWithLogits()(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_bce_max_outlier_drops_only_noisy_samples_above_threshold():
    # Rows of constant logits c with all-positive targets: sample loss = log(1 + exp(-c)).
    row_logits = np.array([3.0, 0.0, -3.0, -2.5])
    z = np.repeat(row_logits[:, None], 3, axis=1)
    y = np.ones_like(z)
    per_sample = np.log1p(np.exp(-row_logits))  # [0.049, 0.693, 3.049, 2.579]
    # threshold 0.8 * 3.049 = 2.439: sample 2 (noisy) is dropped, sample 3 (curated) is kept.
    logits, target, noisy = tensors(z, y, np.array([1, 1, 1, 0], np.uint8), requires_grad=True)
    loss = BCEMaxOutlierLoss(alpha=0.8)(logits, target, noisy)
    assert loss.item() == pytest.approx(per_sample[[0, 1, 3]].mean(), rel=1e-5)
    loss.backward()
    assert torch.all(logits.grad[2] == 0)
    assert torch.all(logits.grad[[0, 1, 3]] != 0)


def test_bce_max_outlier_all_removed_is_an_attached_zero():
    # Equal losses everywhere: every noisy sample is above 0.8 * max, so all are dropped.
    logits, target, noisy = tensors(
        np.zeros((4, 3)), TARGET, np.ones(4, np.uint8), requires_grad=True
    )
    loss = BCEMaxOutlierLoss(alpha=0.8)(logits, target, noisy)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(4, 3))


# ----------------------------------------------------------------------- aux weighting


def test_aux_weighted_loss_is_weighted_sum_over_outputs():
    rng = np.random.default_rng(0)
    outputs_np = [LOGITS + rng.normal(size=LOGITS.shape) for _ in range(4)]
    outputs = tuple(torch.tensor(o, dtype=torch.float32) for o in outputs_np)
    _, target, noisy = tensors()
    weights = [1.0, 0.4, 0.2, 0.1]
    loss = AuxWeightedLoss(BCEWithLogits(), weights)(outputs, target, noisy)
    expected = sum(w * np_bce_with_logits(o, TARGET) for w, o in zip(weights, outputs_np))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_aux_weighted_loss_on_single_output_is_the_plain_loss():
    logits, target, noisy = tensors()
    loss = AuxWeightedLoss(BCEWithLogits(), [1.0, 0.4, 0.2, 0.1])(logits, target, noisy)
    assert loss.item() == pytest.approx(np_bce_with_logits(LOGITS, TARGET), rel=1e-5)


def test_aux_weighted_loss_rejects_mismatched_counts():
    logits, target, noisy = tensors()
    with pytest.raises(ValueError, match="3 outputs but 4"):
        AuxWeightedLoss(BCEWithLogits(), [1.0, 0.4, 0.2, 0.1])((logits,) * 3, target, noisy)


# ----------------------------------------------------------------------- registry and dtypes

CONFIGURED = {
    "OnlyNoisyLSoftLoss": {"beta": 0.7, "noisy_weight": 0.5, "curated_weight": 0.5},
    "OnlyNoisyLqLoss": {"q": 0.5},
    "BCEMaxOutlierLoss": {"alpha": 0.8},
    "BCEWithLogits": {},
}


def test_registry_names():
    assert set(LOSSES) == set(CONFIGURED)


@pytest.mark.parametrize("name", sorted(CONFIGURED))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_logits_are_computed_in_float32(name, dtype):
    loss = LOSSES[name](**CONFIGURED[name])
    logits, target, noisy = tensors()
    low = loss(logits.to(dtype), target.to(dtype), noisy)
    assert low.dtype == torch.float32
    # Computed on the rounded inputs in float32, so only the input rounding differs.
    assert low.item() == pytest.approx(loss(logits, target, noisy).item(), rel=2e-2)


@pytest.mark.parametrize("name", sorted(CONFIGURED))
def test_losses_run_inside_autocast(name):
    loss = LOSSES[name](**CONFIGURED[name])
    logits, target, noisy = tensors()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(logits.bfloat16(), target, noisy)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(loss(logits, target, noisy).item(), rel=2e-2)
