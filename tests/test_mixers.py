import numpy as np
import pytest
import torch

from src.augment.mixers import (
    AddMixer,
    RandomMixer,
    SigmoidConcatMixer,
    UseMixerWithProb,
    get_mixer,
    sigmoid_mask,
)

SHAPE = (3, 4, 16)  # (channels, mels, time): tiny on purpose


class FakeDataset:
    """Hands out one fixed 'other' sample and counts the draws."""

    def __init__(self, image: torch.Tensor, target: torch.Tensor):
        self.image = image
        self.target = target
        self.draws = 0

    def random_transformed(self, rng: np.random.Generator):
        self.draws += 1
        return self.image.clone(), self.target.clone()


def zeros_and_ones(width: int = SHAPE[-1]):
    """Primary = ones, other = zeros, so a mixed image equals the primary's weight."""
    shape = (*SHAPE[:2], width)
    primary = torch.ones(shape), torch.tensor([1.0, 0.0, 0.0, 1.0])
    dataset = FakeDataset(torch.zeros(shape), torch.tensor([0.0, 1.0, 0.0, 1.0]))
    return primary, dataset


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


# --- AddMixer --------------------------------------------------------------------------


def add_mixer_alphas(alpha_dist: str, draws: int, seed: int) -> np.ndarray:
    (image, target), dataset = zeros_and_ones()
    mixer = AddMixer(alpha_dist)
    rng = np.random.default_rng(seed)
    alphas = []
    for _ in range(draws):
        mixed, mixed_target = mixer(dataset, image, target, rng)
        weight = float(mixed[0, 0, 0])  # 1 - alpha
        torch.testing.assert_close(mixed, torch.full_like(image, weight))
        alpha = 1.0 - weight
        # soft target: (1 - alpha) * target + alpha * other
        expected = torch.tensor([1.0 - alpha, alpha, 0.0, 1.0])
        torch.testing.assert_close(mixed_target, expected, atol=1e-6, rtol=0)
        alphas.append(alpha)
    assert dataset.draws == draws
    return np.array(alphas)


def test_add_mixer_uniform_alpha_is_in_zero_half():
    alphas = add_mixer_alphas("uniform", 3000, seed=0)
    assert alphas.min() >= 0.0 and alphas.max() < 0.5 + 1e-6
    assert alphas.min() < 0.01 and alphas.max() > 0.49
    assert abs(alphas.mean() - 0.25) < 0.01


def test_add_mixer_beta_alpha_is_u_shaped_on_zero_one():
    alphas = add_mixer_alphas("beta", 3000, seed=1)
    assert alphas.min() >= -1e-6 and alphas.max() <= 1.0 + 1e-6
    assert alphas.max() > 0.9  # beyond the uniform option's 0.5
    assert abs(alphas.mean() - 0.5) < 0.03  # Beta(0.4, 0.4) is symmetric
    # U-shaped: the outer fifths hold more mass than the middle fifth
    outer = np.mean((alphas < 0.2) | (alphas > 0.8))
    middle = np.mean((alphas > 0.4) & (alphas < 0.6))
    assert outer > 2 * middle


def test_add_mixer_keeps_dtype_and_inputs():
    (image, target), dataset = zeros_and_ones()
    mixed, mixed_target = AddMixer()(dataset, image, target, np.random.default_rng(0))
    assert mixed.dtype == mixed_target.dtype == torch.float32
    assert torch.equal(image, torch.ones(SHAPE))


def test_add_mixer_rejects_unknown_distribution():
    with pytest.raises(ValueError, match="alpha_dist"):
        AddMixer("normal")


# --- sigmoid mask and SigmoidConcatMixer -----------------------------------------------


@pytest.mark.parametrize(
    ("radius", "first", "last"), [(3, 0.047426, 0.951504), (12, 6.1442e-6, 0.9999933)]
)
def test_sigmoid_mask_edge_values(radius, first, last):
    mask = sigmoid_mask(radius, 256)
    # the original's mask: about 0.047 -> 0.952 for r=3 and 6e-6 -> 0.999993 for r=12
    assert mask[0] == pytest.approx(first, rel=1e-4)
    assert mask[-1] == pytest.approx(last, abs=1e-6)
    assert mask[128] == 0.5  # x = 0 at the centre frame


def test_sigmoid_mask_equals_original_arange_formula_at_256():
    for radius in range(3, 13):
        x = np.arange(-radius, radius, 2 * radius / 256)
        expected = (1 / (1 + np.exp(-x))).astype(np.float32)
        np.testing.assert_array_equal(sigmoid_mask(radius, 256), expected)


@pytest.mark.parametrize("width", [1, 7, 10, 33, 100, 255, 256, 1000])
def test_sigmoid_mask_has_exactly_width_increasing_values(width):
    for radius in range(3, 13):
        mask = sigmoid_mask(radius, width)
        assert mask.shape == (width,) and mask.dtype == np.float32
        assert mask[0] == pytest.approx(1 / (1 + np.exp(radius)), rel=1e-5)
        assert np.all(np.diff(mask) >= 0) and np.all((mask > 0) & (mask < 1))


def test_sigmoid_concat_radius_covers_three_to_twelve():
    (image, target), dataset = zeros_and_ones(width=256)
    mixer = SigmoidConcatMixer((3, 12))
    rng = np.random.default_rng(2)
    radii = []
    for _ in range(1000):
        mixed, _ = mixer(dataset, image, target, rng)
        first = float(mixed[0, 0, 0])  # = sigmoid(-r)
        radius = round(-np.log(first / (1 - first)))
        np.testing.assert_array_equal(
            mixed.numpy(), np.broadcast_to(sigmoid_mask(radius, 256), mixed.shape)
        )
        radii.append(radius)
    assert set(radii) == set(range(3, 13))
    assert all(within_binomial(radii.count(r), 1000, 0.1) for r in range(3, 13))


def test_sigmoid_concat_early_side_from_other_and_labels_union():
    shape = (3, 4, 256)
    primary = torch.full(shape, 10.0)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0])
    dataset = FakeDataset(torch.full(shape, -10.0), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    mixed, mixed_target = SigmoidConcatMixer()(dataset, primary, target, np.random.default_rng(3))
    assert mixed.shape == shape and mixed.dtype == torch.float32
    assert torch.all(mixed[..., 0] < -9.0)  # early frames: mostly `other`
    assert torch.all(mixed[..., -1] > 9.0)  # late frames: mostly the primary
    assert torch.all(mixed[..., 128].abs() < 1e-5)  # equal weights at the centre
    # identical across channels and mel bands: the mask is a row over time
    assert torch.equal(mixed, mixed[:1, :1].expand(shape))
    torch.testing.assert_close(mixed_target, torch.tensor([1.0, 1.0, 1.0, 0.0]))
    assert mixed_target.max() == 1.0  # clipped, not 2


@pytest.mark.parametrize("width", [10, 33])
def test_sigmoid_concat_works_at_small_widths(width):
    (image, target), dataset = zeros_and_ones(width=width)
    mixed, _ = SigmoidConcatMixer()(dataset, image, target, np.random.default_rng(4))
    assert mixed.shape == (*SHAPE[:2], width)


def test_sigmoid_concat_rejects_bad_range():
    with pytest.raises(ValueError, match="sigmoid_range"):
        SigmoidConcatMixer((12, 3))


# --- choosing and gating ---------------------------------------------------------------


class Tagger:
    """A mixer that adds its tag to the target so the choice is visible."""

    def __init__(self, tag: float):
        self.tag = tag
        self.calls = 0

    def __call__(self, dataset, image, target, rng):
        self.calls += 1
        return image, target + self.tag


def test_random_mixer_frequencies():
    first, second = Tagger(1.0), Tagger(2.0)
    mixer = RandomMixer([first, second], p=[0.6, 0.4])
    rng = np.random.default_rng(5)
    tags = {float(mixer(None, torch.zeros(1), torch.zeros(1), rng)[1]) for _ in range(5000)}
    assert tags == {1.0, 2.0}
    assert first.calls + second.calls == 5000
    assert within_binomial(first.calls, 5000, 0.6)


def test_random_mixer_rejects_mismatched_probabilities():
    with pytest.raises(ValueError, match="probabilities"):
        RandomMixer([Tagger(1.0)], p=[0.6, 0.4])


@pytest.mark.parametrize("prob", [0.5, 0.8])
def test_use_mixer_with_prob_frequency(prob):
    tagger = Tagger(1.0)
    mixer = UseMixerWithProb(tagger, prob)
    rng = np.random.default_rng(6)
    image, target = torch.zeros(1), torch.zeros(1)
    unchanged = 0
    for _ in range(5000):
        out_image, out_target = mixer(None, image, target, rng)
        if out_target is target:
            unchanged += 1
            assert out_image is image
    assert unchanged + tagger.calls == 5000
    assert within_binomial(tagger.calls, 5000, prob)


def test_get_mixer_builds_the_experiment_configuration():
    assert get_mixer(0.0) is None
    mixer = get_mixer(0.8)
    assert isinstance(mixer, UseMixerWithProb) and mixer.prob == 0.8
    chooser = mixer.mixer
    assert isinstance(chooser, RandomMixer) and chooser.p == [0.6, 0.4]
    sigmoid, add = chooser.mixers
    assert isinstance(sigmoid, SigmoidConcatMixer) and sigmoid.sigmoid_range == (3, 12)
    assert isinstance(add, AddMixer) and add.alpha_dist == "uniform"
    custom = get_mixer(0.66, sigmoid_range=(2, 5), p=(0.3, 0.7), alpha_dist="beta").mixer
    assert custom.p == [0.3, 0.7]
    assert custom.mixers[0].sigmoid_range == (2, 5) and custom.mixers[1].alpha_dist == "beta"


def test_get_mixer_end_to_end_is_reproducible():
    shape = (3, 4, 256)
    rng = np.random.default_rng(7)
    dataset = FakeDataset(
        torch.from_numpy(rng.normal(size=shape).astype(np.float32)), torch.tensor([0.0, 1.0])
    )
    image, target = torch.ones(shape), torch.tensor([1.0, 0.0])
    runs = []
    for _ in range(2):
        seeded = np.random.default_rng(8)
        runs.append([get_mixer(0.8)(dataset, image, target, seeded) for _ in range(20)])
    for (a_image, a_target), (b_image, b_target) in zip(*runs):
        assert torch.equal(a_image, b_image) and torch.equal(a_target, b_target)
