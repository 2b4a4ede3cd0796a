import subprocess
import sys

import librosa
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.augment.deltas import delta_matrices
from src.augment.transforms import (
    Box,
    CenterCrop,
    Compose,
    OneOf,
    PadToSize,
    RandomCrop,
    RandomResizedCrop,
    SpecAugment,
    ToTensor,
    UseWithProb,
    bilinear_matrix,
    get_transforms,
    resized_crop,
)
from tests.helpers import REPO_ROOT


def spectrogram(width: int, height: int = 128, seed: int = 0) -> np.ndarray:
    """A random dB-like clip with values in [-80, 0)."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-80.0, 0.0, size=(height, width))).astype(np.float32)


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


class Recorder:
    """A transform that counts its calls and marks its output."""

    def __init__(self, mark: float = 0.0):
        self.calls = 0
        self.mark = mark

    def __call__(self, x, rng=None):
        self.calls += 1
        return x + self.mark


# --- padding and cropping --------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 10, 100, 255])
def test_constant_pad_fills_with_clip_minimum(width):
    x = spectrogram(width)
    out = PadToSize(256, "constant")(x)
    left = (256 - width) // 2
    assert out.shape == (128, 256)
    np.testing.assert_array_equal(out[:, left : left + width], x)
    pad = np.concatenate([out[:, :left], out[:, left + width :]], axis=1)
    assert pad.shape[1] == 256 - width
    assert np.all(pad == x.min())


@pytest.mark.parametrize("width", [1, 10, 100, 255])
def test_wrap_pad_is_numpy_periodic(width):
    x = spectrogram(width)
    out = PadToSize(256, "wrap")(x)
    padding = 256 - width
    expected = np.pad(x, ((0, 0), (padding // 2, padding - padding // 2)), mode="wrap")
    np.testing.assert_array_equal(out, expected)
    # periodic: every column equals the clip column at the same phase
    left = padding // 2
    for col in (0, 255, left - 1 if left else 0):
        np.testing.assert_array_equal(out[:, col], x[:, (col - left) % width])


@pytest.mark.parametrize("mode", ["constant", "wrap"])
@pytest.mark.parametrize("width", [256, 300])
def test_pad_leaves_long_clips_untouched(mode, width):
    x = spectrogram(width)
    assert PadToSize(256, mode)(x) is x


def test_pad_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        PadToSize(256, "reflect")


def test_random_crop_start_covers_inclusive_range():
    width, size = 20, 16  # starts 0..4
    x = np.tile(np.arange(width, dtype=np.float32), (3, 1))
    rng = np.random.default_rng(1)
    starts = []
    for _ in range(500):
        out = RandomCrop(size)(x, rng)
        assert out.shape == (3, size)
        np.testing.assert_array_equal(out[0], np.arange(out[0, 0], out[0, 0] + size))
        starts.append(int(out[0, 0]))
    assert set(starts) == {0, 1, 2, 3, 4}


def test_random_crop_of_exact_size_is_identity_and_short_clip_fails():
    x = spectrogram(16)
    np.testing.assert_array_equal(RandomCrop(16)(x, np.random.default_rng(0)), x)
    with pytest.raises(ValueError, match="PadToSize"):
        RandomCrop(17)(x, np.random.default_rng(0))


@pytest.mark.parametrize(("width", "start"), [(300, 22), (257, 0), (1000, 372), (513, 128)])
def test_center_crop_offset(width, start):
    x = spectrogram(width)
    np.testing.assert_array_equal(CenterCrop(256)(x), x[:, start : start + 256])


@pytest.mark.parametrize("width", [100, 256])
def test_center_crop_leaves_short_clips_unchanged(width):
    x = spectrogram(width)
    assert CenterCrop(256)(x) is x


# --- RandomResizedCrop -----------------------------------------------------------------


def box_sizes(crop: RandomResizedCrop, draws: int, seed: int):
    rng = np.random.default_rng(seed)
    boxes = [crop.sample_box(128, 256, rng) for _ in range(draws)]
    for box in boxes:
        assert 0 <= box.top <= 128 - box.height
        assert 0 <= box.left <= 256 - box.width
    return np.array([b.width for b in boxes]), np.array([b.height for b in boxes])


@pytest.mark.parametrize(
    ("scale", "ratio", "w_range", "h_range"),
    [
        ((0.8, 1.0), (1.7, 2.3), (211, 256), (107, 128)),
        ((0.75, 1.0), (1.6, 2.4), (198, 256), (101, 128)),
    ],
)
def test_resized_crop_box_sizes_match_simulated_ranges(scale, ratio, w_range, h_range):
    widths, heights = box_sizes(RandomResizedCrop(scale, ratio), 20000, seed=2)
    assert widths.min() >= w_range[0] and widths.max() <= w_range[1]
    assert heights.min() >= h_range[0] and heights.max() <= h_range[1]
    # the extremes are actually reached (or nearly), not just bounded
    assert widths.min() <= w_range[0] + 3 and widths.max() >= w_range[1] - 2
    assert heights.min() <= h_range[0] + 2 and heights.max() == h_range[1]


def test_resized_crop_box_means_match_spec():
    widths, heights = box_sizes(RandomResizedCrop((0.8, 1.0), (1.7, 2.3)), 20000, seed=3)
    assert abs(widths.mean() - 238) < 1.0
    assert abs(heights.mean() - 120) < 1.0


def test_resized_crop_box_offsets_cover_full_range():
    crop = RandomResizedCrop((0.25, 0.25), (1.0, 1.0))  # always 91 x 91 on 128 x 256 (A/4)
    rng = np.random.default_rng(4)
    boxes = [crop.sample_box(128, 256, rng) for _ in range(3000)]
    assert {(b.height, b.width) for b in boxes} == {(91, 91)}
    assert {b.top for b in boxes} == set(range(128 - 91 + 1))
    assert min(b.left for b in boxes) == 0 and max(b.left for b in boxes) == 256 - 91


@pytest.mark.parametrize(
    ("scale", "ratio", "expected"),
    [
        # every attempt too wide (w = 314): ratio 2 is below 3 -> full width, h = round(256/3)
        ((1.0, 1.0), (3.0, 3.0), Box(21, 0, 85, 256)),
        # every attempt too tall (h = 181): ratio 2 is above 1 -> full height, w = 128
        ((1.0, 1.0), (1.0, 1.0), Box(0, 64, 128, 128)),
        # every attempt larger than the image, ratio 2 within range -> identity
        ((1.5, 1.5), (1.9, 2.1), Box(0, 0, 128, 256)),
    ],
)
def test_resized_crop_fallback(scale, ratio, expected):
    box = RandomResizedCrop(scale, ratio).sample_box(128, 256, np.random.default_rng(0))
    assert box == expected


def test_resized_crop_uses_bankers_rounding():
    # target 2 * 2 * 1.5625 -> sqrt = 2.5 for both sides: round(2.5) == 2 (half to even)
    crop = RandomResizedCrop((6.25 / 16, 6.25 / 16), (1.0, 1.0))
    box = crop.sample_box(4, 4, np.random.default_rng(0))
    assert (box.height, box.width) == (2, 2)


def test_bilinear_matrix_of_same_size_is_identity():
    np.testing.assert_array_equal(bilinear_matrix(7, 7), np.eye(7, dtype=np.float32))
    m = bilinear_matrix(5, 5, offset=3, total=10)
    np.testing.assert_array_equal(m, np.eye(10, dtype=np.float32)[3:8])


def test_bilinear_matrix_rows_are_convex_weights_inside_slice():
    m = bilinear_matrix(37, 128, offset=50, total=200)
    assert m.shape == (128, 200)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(m >= 0) and not m[:, :50].any() and not m[:, 87:].any()


def test_bilinear_matrix_rejects_slice_outside_vector():
    with pytest.raises(ValueError, match="invalid slice"):
        bilinear_matrix(10, 20, offset=5, total=12)


def test_bilinear_matrices_match_torch_interpolate_on_random_crops():
    rng = np.random.default_rng(5)
    x = spectrogram(256, seed=5)
    for _ in range(40):
        box = RandomResizedCrop((0.05, 1.0), (0.3, 6.0)).sample_box(128, 256, rng)
        ours = resized_crop(x, box)
        crop = torch.from_numpy(x)[box.top : box.top + box.height, box.left : box.left + box.width]
        theirs = F.interpolate(
            crop[None, None], size=(128, 256), mode="bilinear", align_corners=False
        )[0, 0].numpy()
        assert ours.dtype == np.float32
        assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize(("in_size", "out_size"), [(1, 9), (3, 8), (16, 5), (100, 33)])
def test_bilinear_matrix_matches_torch_1d_including_downscale(in_size, out_size):
    v = np.random.default_rng(in_size).normal(size=in_size + 4)
    ours = bilinear_matrix(in_size, out_size, offset=2, total=in_size + 4, dtype=np.float64) @ v
    theirs = F.interpolate(
        torch.from_numpy(v[2 : 2 + in_size])[None, None],
        size=out_size,
        mode="linear",
        align_corners=False,
    )[0, 0].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_resized_crop_preserves_shape_and_full_box_is_identity():
    x = spectrogram(256)
    np.testing.assert_array_equal(resized_crop(x, Box(0, 0, 128, 256)), x)
    rng = np.random.default_rng(6)
    for _ in range(5):
        assert RandomResizedCrop()(x, rng).shape == (128, 256)


# --- SpecAugment -----------------------------------------------------------------------


def test_spec_augment_applies_sampled_bands_with_input_minimum():
    x = spectrogram(256)
    spec = SpecAugment()
    for seed in range(20):
        bands = spec.sample_bands(128, 256, np.random.default_rng(seed))
        out = spec(x, np.random.default_rng(seed))
        expected = x.copy()
        masked = np.zeros(x.shape, dtype=bool)
        for band in bands:
            masked[band.freq_start : band.freq_start + band.freq_width] = True
            masked[:, band.time_start : band.time_start + band.time_width] = True
        expected[masked] = x.min()
        np.testing.assert_array_equal(out, expected)
        # masking changes exactly the masked cells (except the minimum cell itself)
        assert np.array_equal(out != x, masked & (x != x.min()))


def test_spec_augment_does_not_modify_input():
    x = spectrogram(256)
    before = x.copy()
    SpecAugment(2, 0.5, 0.5)(x, np.random.default_rng(0))
    np.testing.assert_array_equal(x, before)


def test_spec_augment_band_statistics():
    spec = SpecAugment(num_mask=2, freq_masking=0.15, time_masking=0.20)
    rng = np.random.default_rng(7)
    counts, freq_widths, time_widths = [], [], []
    for _ in range(4000):
        bands = spec.sample_bands(128, 256, rng)
        counts.append(len(bands))
        for band in bands:
            assert 0 <= band.freq_start <= 128 - band.freq_width
            assert 0 <= band.time_start <= 256 - band.time_width
            freq_widths.append(band.freq_width)
            time_widths.append(band.time_width)
    assert set(counts) == {1, 2}
    assert within_binomial(counts.count(2), 4000, 0.5)
    assert min(freq_widths) == 0 and max(freq_widths) == 19  # int(0.15 * 128)
    assert min(time_widths) == 0 and max(time_widths) == 51  # int(0.20 * 256)


def test_spec_augment_zero_width_band_can_start_anywhere():
    spec = SpecAugment(num_mask=1, freq_masking=1e-9, time_masking=1e-9)
    rng = np.random.default_rng(8)
    starts = {spec.sample_bands(16, 16, rng)[0].freq_start for _ in range(2000)}
    assert starts == set(range(16))


# --- deltas and tensors ----------------------------------------------------------------


@pytest.mark.parametrize("width", [9, 10, 37, 256])
def test_delta_matrices_reproduce_librosa(width):
    x = spectrogram(width, height=6, seed=width)
    d1, d2 = delta_matrices(width)
    assert d1.shape == d2.shape == (width, width) and d1.dtype == np.float32
    np.testing.assert_allclose(x @ d1, librosa.feature.delta(x), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(x @ d2, librosa.feature.delta(x, order=2), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("width", [9, 10, 11, 17, 64, 128, 257])
def test_delta_matrices_are_librosas_bit_for_bit(width):
    """librosa's deltas of the identity are the matrices (row s: the response to an impulse at
    frame s); computed without librosa, they must still be the same float32 numbers, or every
    CPU training run's numbers would move."""
    identity = np.eye(width)
    for order, matrix in zip((1, 2), delta_matrices(width), strict=True):
        expected = librosa.feature.delta(identity, width=9, order=order, axis=-1, mode="interp")
        np.testing.assert_array_equal(matrix, expected.astype(np.float32))


def test_making_the_delta_matrices_imports_neither_librosa_nor_scipy_signal():
    code = (
        "import sys; from src.augment.deltas import delta_matrices; delta_matrices(64); "
        "print(sorted(m for m in ('librosa.feature', 'scipy.signal') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_delta_matrices_interior_coefficients_match_savitzky_golay():
    d1, d2 = delta_matrices(32)
    np.testing.assert_allclose(d1[12:21, 16], np.arange(-4, 5) / 60, atol=1e-7)
    c2 = np.array([28, 7, -8, -17, -20, -17, -8, 7, 28]) / 462
    np.testing.assert_allclose(d2[12:21, 16], c2, atol=1e-7)


def test_delta_matrices_are_cached_and_read_only():
    assert delta_matrices(40) is delta_matrices(40)
    with pytest.raises(ValueError):
        delta_matrices(40)[0][0, 0] = 1.0


def test_delta_matrices_need_nine_frames():
    with pytest.raises(ValueError, match="at least 9"):
        delta_matrices(8)


def test_to_tensor_stacks_librosa_deltas_over_100():
    x = spectrogram(256)
    out = ToTensor()(x)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.shape == (3, 128, 256)
    np.testing.assert_allclose(out[0].numpy(), x / 100, rtol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), librosa.feature.delta(x) / 100, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        out[2].numpy(), librosa.feature.delta(x, order=2) / 100, rtol=1e-5, atol=1e-5
    )


# --- composition -----------------------------------------------------------------------


def test_use_with_prob_frequency():
    recorder = Recorder()
    rng = np.random.default_rng(9)
    transform = UseWithProb(recorder, 0.33)
    for _ in range(10000):
        transform(np.zeros(1), rng)
    assert within_binomial(recorder.calls, 10000, 0.33)


def test_use_with_prob_extremes():
    never, always = Recorder(), Recorder()
    rng = np.random.default_rng(10)
    for _ in range(200):
        UseWithProb(never, 0.0)(np.zeros(1), rng)
        UseWithProb(always, 1.0)(np.zeros(1), rng)
    assert (never.calls, always.calls) == (0, 200)


def test_one_of_frequencies_and_single_application():
    first, second = Recorder(1.0), Recorder(10.0)
    rng = np.random.default_rng(11)
    transform = OneOf([first, second], p=[0.2, 0.8])
    outputs = [float(transform(np.zeros(1), rng)[0]) for _ in range(10000)]
    assert set(outputs) == {1.0, 10.0}
    assert first.calls + second.calls == 10000
    assert within_binomial(first.calls, 10000, 0.2)


def test_one_of_rejects_mismatched_probabilities():
    with pytest.raises(ValueError, match="probabilities"):
        OneOf([Recorder()], p=[0.5, 0.5])


def test_compose_applies_in_order_and_passes_rng():
    seen = []

    def step(tag):
        def transform(x, rng):
            seen.append((tag, rng))
            return x * 2 + tag

        return transform

    rng = np.random.default_rng(0)
    assert Compose([step(1), step(2)])(np.array([1.0]), rng)[0] == (1 * 2 + 1) * 2 + 2
    assert seen == [(1, rng), (2, rng)]


# --- pipelines -------------------------------------------------------------------------


def step_types(pipeline: Compose) -> list[type]:
    return [
        type(t.transform) if isinstance(t, UseWithProb) else type(t) for t in pipeline.transforms
    ]


def test_train_pipeline_structure():
    assert step_types(get_transforms(train=True)) == [
        OneOf,
        RandomCrop,
        RandomResizedCrop,
        SpecAugment,
        ToTensor,
    ]
    for kwargs in ({"resize_prob": 0.0}, {"resize_scale": None}):
        assert RandomResizedCrop not in step_types(get_transforms(train=True, **kwargs))
    pipeline = get_transforms(True, wrap_pad_prob=0.3, resize_prob=0.25, spec_prob=0.75)
    assert pipeline.transforms[0].p == [0.3, 0.7]
    assert [pipeline.transforms[i].prob for i in (2, 3)] == [0.25, 0.75]


@pytest.mark.parametrize("width", [10, 256, 1000])
def test_train_pipeline_output_shape(width):
    pipeline = get_transforms(train=True, resize_prob=1.0, spec_prob=1.0)
    out = pipeline(spectrogram(width), np.random.default_rng(width))
    assert out.shape == (3, 128, 256) and out.dtype == torch.float32


def test_train_pipeline_is_reproducible_and_random():
    pipeline = get_transforms(train=True, resize_prob=0.5, spec_prob=0.5)
    x = spectrogram(1000)
    first = pipeline(x, np.random.default_rng(42))
    torch.testing.assert_close(pipeline(x, np.random.default_rng(42)), first, rtol=0, atol=0)
    assert not torch.equal(pipeline(x, np.random.default_rng(43)), first)


def test_train_pipeline_without_augmentation_is_a_crop():
    pipeline = get_transforms(train=True, resize_prob=0.0, spec_prob=0.0)
    x = spectrogram(300)
    out = pipeline(x, np.random.default_rng(0))
    crops = [ToTensor()(x[:, s : s + 256]) for s in range(300 - 256 + 1)]
    assert any(torch.equal(out, crop) for crop in crops)


@pytest.mark.parametrize("width", [10, 256, 1000])
def test_val_pipeline_is_deterministic_pad_and_center_crop(width):
    x = spectrogram(width)
    expected = ToTensor()(CenterCrop(256)(PadToSize(256, "constant")(x)))
    out = get_transforms(train=False)(x)
    assert out.shape == (3, 128, 256)
    assert torch.equal(out, expected)
    assert torch.equal(get_transforms(train=False)(x, np.random.default_rng(0)), expected)
