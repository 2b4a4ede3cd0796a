"""The GPU augmentation path against the CPU path (src/transforms.py, src/mixers.py).

Exact references where they exist (np.pad, bilinear_matrix, resized_crop, SpecAugment,
ToTensor, the mixers), the whole path against the CPU path sample by sample, and the drawn
parameters' ranges and frequencies against the configured distributions.
"""

import librosa
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from src.augment.deltas import (
    DELTA_WIDTH,
    stack_deltas,
)
from src.augment.gpu import (
    TrainDraws,
    augment_batch,
    linear_taps,
    mask_bands,
    pad_windows,
    raw_window,
    resize_boxes,
)
from src.augment.mixers import AddMixer, SigmoidConcatMixer, get_mixer, sigmoid_mask
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
from src.experiments import resolve
from src.training.datasets import ClipDataset, ProbabilityMix, RawWindowClips

HEIGHT, CROP = 16, 32  # tiny images for the exact comparisons
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spectrogram(width: int, height: int = HEIGHT, seed: int = 0) -> np.ndarray:
    """A random dB-like clip with values in [-80, 0)."""
    return np.random.default_rng(seed).uniform(-80.0, 0.0, (height, width)).astype(np.float32)


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


def same_mean(a: np.ndarray, b: np.ndarray, sigmas: float = 4.0) -> bool:
    """Means of two independent samples agree within `sigmas` standard errors."""
    error = np.sqrt(a.var() / len(a) + b.var() / len(b))
    return abs(a.mean() - b.mean()) <= sigmas * error


def train_pipeline(config: dict, crop: int = CROP):
    """The train transform and mixer of an experiment config, built as first_level does."""
    mixer = config["mixer"]
    return (
        get_transforms(True, crop, **config["transforms"]),
        get_mixer(
            mixer["prob"], tuple(mixer["sigmoid_range"]), tuple(mixer["p"]), mixer["alpha_dist"]
        ),
    )


# --- raw windows ------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [CROP, CROP + 1, CROP + 9])
def test_raw_window_is_random_crop_of_long_clips(frames):
    x = spectrogram(frames)
    starts = set()
    for seed in range(200):
        rng, reference_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        window, length = raw_window(x, CROP, rng)
        expected = RandomCrop(CROP)(PadToSize(CROP)(x), reference_rng)
        np.testing.assert_array_equal(window, expected)
        assert length == CROP and window.dtype == np.float32
        assert rng.random() == reference_rng.random()  # same draws consumed
        starts.add(int(np.flatnonzero((x == window[:, :1]).all(axis=0))[0]))
    assert starts == set(range(frames - CROP + 1))  # every start of [0, T - crop] occurs


@pytest.mark.parametrize("frames", [1, 7, CROP - 1])
def test_raw_window_ships_short_clips_whole(frames):
    x = spectrogram(frames)
    rng, reference_rng = np.random.default_rng(3), np.random.default_rng(3)
    window, length = raw_window(x, CROP, rng)
    RandomCrop(CROP)(PadToSize(CROP)(x), reference_rng)
    assert length == frames and window.shape == (HEIGHT, CROP)
    np.testing.assert_array_equal(window[:, :frames], x)
    assert not window[:, frames:].any()
    assert rng.random() == reference_rng.random()


def test_raw_window_start_distribution_is_uniform():
    x = spectrogram(CROP + 4)
    rng = np.random.default_rng(0)
    starts = [
        int(np.flatnonzero((x == raw_window(x, CROP, rng)[0][:, :1]).all(axis=0))[0])
        for _ in range(2000)
    ]
    counts = np.bincount(starts, minlength=5)
    assert all(within_binomial(int(c), 2000, 1 / 5) for c in counts)


# --- padding ----------------------------------------------------------------------------


def test_pad_windows_equals_numpy_padding_per_sample():
    lengths = [1, 2, 5, 10, 13, CROP - 1, CROP, 1, 3, 9, 16, CROP]
    clips = [spectrogram(n, seed=i) for i, n in enumerate(lengths)]
    wrap = [i % 2 == 0 for i in range(len(lengths))]
    windows = np.full((len(clips), HEIGHT, CROP), -1000.0, dtype=np.float32)  # must not leak
    for window, clip in zip(windows, clips):
        window[:, : clip.shape[1]] = clip
    out = pad_windows(torch.from_numpy(windows), torch.tensor(lengths), torch.tensor(wrap))
    for i, clip in enumerate(clips):
        expected = PadToSize(CROP, "wrap" if wrap[i] else "constant")(clip)
        np.testing.assert_array_equal(out[i].numpy(), expected)


# --- resized crop -----------------------------------------------------------------------


def test_linear_taps_equal_bilinear_matrix():
    cases = [(size, offset) for size in range(1, CROP + 1) for offset in range(CROP - size + 1)]
    sizes, offsets = (torch.tensor(column) for column in zip(*cases))
    lower, upper, lower_weight, upper_weight = linear_taps(sizes, offsets, CROP)
    for i, (size, offset) in enumerate(cases):
        matrix = np.zeros((CROP, CROP), dtype=np.float32)
        rows = np.arange(CROP)
        np.add.at(matrix, (rows, lower[i].numpy()), lower_weight[i].numpy())
        np.add.at(matrix, (rows, upper[i].numpy()), upper_weight[i].numpy())
        expected = bilinear_matrix(size, CROP, offset, CROP)
        np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-7)


def test_resize_boxes_equals_resized_crop():
    sampler = RandomResizedCrop((0.3, 1.0), (1.0, 3.0))
    rng = np.random.default_rng(0)
    boxes = [sampler.sample_box(HEIGHT, CROP, rng) for _ in range(30)]
    boxes += [Box(0, 0, 1, 1), Box(HEIGHT - 1, CROP - 1, 1, 1), Box(0, 0, HEIGHT, CROP)]
    images = np.stack([spectrogram(CROP, seed=i) for i in range(len(boxes))])
    out = resize_boxes(torch.from_numpy(images), torch.tensor(boxes)).numpy()
    for image, box, resized in zip(images, boxes, out):
        np.testing.assert_allclose(resized, resized_crop(image, box), rtol=0, atol=2e-5)
    np.testing.assert_array_equal(out[-1], images[-1])  # the whole-image box is an identity


# --- SpecAugment ------------------------------------------------------------------------


def test_mask_bands_equals_spec_augment():
    augment = SpecAugment(num_mask=3, freq_masking=0.4, time_masking=0.4)
    images = np.stack([spectrogram(CROP, seed=i) for i in range(40)])
    bands = np.zeros((len(images), 3, 4), dtype=np.int64)
    expected = images.copy()
    for i, image in enumerate(images[:-5]):  # the last five: no bands, unchanged
        drawn = augment.sample_bands(HEIGHT, CROP, np.random.default_rng(i))
        bands[i, : len(drawn)] = drawn
        expected[i] = augment(image, np.random.default_rng(i))
    out = mask_bands(torch.from_numpy(images), torch.from_numpy(bands))
    np.testing.assert_array_equal(out.numpy(), expected)
    assert (bands[:, :, [1, 3]] > 0).any(axis=(1, 2)).sum() > 25  # real masks were tested


# --- deltas -----------------------------------------------------------------------------


@pytest.mark.parametrize("width", [DELTA_WIDTH, DELTA_WIDTH + 1, CROP, 100])
def test_stack_deltas_equals_librosa_deltas(width):
    # ToTensor is this function now: the reference is librosa's deltas, computed directly.
    images = np.stack([spectrogram(width, seed=i) for i in range(4)])
    out = stack_deltas(torch.from_numpy(images))
    expected = torch.from_numpy(
        np.stack(
            [
                np.stack([x, *(librosa.feature.delta(x, order=o, mode="interp") for o in (1, 2))])
                / 100
                for x in images.astype(np.float64)
            ]
        ).astype(np.float32)
    )
    assert out.shape == (4, 3, HEIGHT, width) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(out[:, 0], expected[:, 0])


# --- mixing -----------------------------------------------------------------------------


class FixedPartner:
    """The CPU mixers' dataset: hands out one fixed partner sample."""

    def __init__(self, image: torch.Tensor, target: torch.Tensor):
        self.sample = image, target

    def random_transformed(self, rng):
        return self.sample


def full_windows(images: np.ndarray) -> dict:
    """Collated raw windows that pass through pad, resize and masks unchanged."""
    batch = len(images)
    return {
        "window": torch.from_numpy(images),
        "length": torch.full((batch,), CROP),
        "wrap": torch.zeros(batch, dtype=torch.bool),
        "box": torch.tensor([[0, 0, HEIGHT, CROP]] * batch),
        "bands": torch.zeros((batch, 2, 4), dtype=torch.int64),
    }


@pytest.mark.parametrize(
    "mixer", [SigmoidConcatMixer((3, 12)), AddMixer("uniform"), AddMixer("beta")]
)
def test_mix_equals_cpu_mixer(mixer):
    batch = 12
    draws = TrainDraws(get_transforms(True, CROP, resize_prob=0, spec_prob=0), mixer)
    images = np.stack([spectrogram(CROP, seed=i) for i in range(batch)])
    others = np.stack([spectrogram(CROP, seed=100 + i) for i in range(batch)])
    targets = torch.tensor(np.random.default_rng(0).random((batch, 5)) < 0.4, dtype=torch.float32)
    other_targets = targets.roll(1, dims=0)
    weights = [draws.mix(np.random.default_rng(seed)) for seed in range(batch)]
    raw = {
        "primary": full_windows(images),
        "partner": full_windows(others),
        "partner_target": other_targets,
        "image_weights": torch.from_numpy(np.stack([w[0] for w in weights])),
        "target_weights": torch.from_numpy(np.stack([w[1] for w in weights])),
    }
    out, out_target, _ = augment_batch(raw, targets, torch.zeros(batch))
    for i in range(batch):
        partner = FixedPartner(ToTensor()(others[i]), other_targets[i])
        rng = np.random.default_rng(i)
        expected, expected_target = mixer(partner, ToTensor()(images[i]), targets[i], rng)
        torch.testing.assert_close(out[i], expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out_target[i], expected_target, rtol=0, atol=1e-7)


# --- the whole path against the CPU path, sample by sample ------------------------------

CLIP_FRAMES = [1, 3, 10, 20, CROP - 1, CROP, CROP + 1, 50, 90, 200]


def two_sets(transform, mixer):
    """Two ClipDatasets over a dict store (noisy flags 0 and 1), their CPU and GPU mixes."""
    rng = np.random.default_rng(7)
    store = {f"clip{i}": spectrogram(n, seed=i) for i, n in enumerate(CLIP_FRAMES)}
    names = list(store)
    targets = (rng.random((len(names), 6)) < 0.3).astype(np.float32)
    sets = [
        ClipDataset(store, names, targets, 0, transform, mixer),
        ClipDataset(store, names[:5], targets[:5], 1, transform, mixer),
    ]
    cpu = ProbabilityMix(sets, [0.6, 0.4], 10_000, seed=(11, 2))
    gpu = ProbabilityMix([RawWindowClips(s) for s in sets], [0.6, 0.4], 10_000, seed=(11, 2))
    return cpu, gpu


def compare_paths(transform, mixer, keys) -> dict:
    cpu, gpu = two_sets(transform, mixer)
    cpu_samples = [cpu[k] for k in keys]
    raw, target, noisy = default_collate([gpu[k] for k in keys])
    images, mixed_target, out_noisy = augment_batch(raw, target, noisy)
    assert images.shape == (len(keys), 3, HEIGHT, CROP) and images.dtype == torch.float32
    expected = torch.stack([s[0] for s in cpu_samples])
    torch.testing.assert_close(images, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed_target, torch.stack([s[1] for s in cpu_samples]))
    assert torch.equal(out_noisy, torch.stack([s[2] for s in cpu_samples]))
    assert mixed_target.min() >= 0 and mixed_target.max() <= 1
    return raw


def branches(raw: dict) -> dict[str, int]:
    """How many primaries took each branch of the pipeline."""
    primary, weights = raw["primary"], raw["image_weights"]
    short = primary["length"] < CROP
    whole = torch.tensor([0, 0, HEIGHT, CROP])
    row = weights[:, 0]
    mixed = weights[:, 1].amax(dim=1) > 0
    constant = (row == row[:, :1]).all(dim=1)
    return {
        "short wrap": int((short & primary["wrap"]).sum()),
        "short constant": int((short & ~primary["wrap"]).sum()),
        "long": int((~short).sum()),
        "resized": int((primary["box"] != whole).any(dim=1).sum()),
        "masked": int((primary["bands"][..., [1, 3]] > 0).any(dim=(1, 2)).sum()),
        "sigmoid": int((mixed & ~constant).sum()),
        "add": int((mixed & constant).sum()),
        "unmixed": int((~mixed).sum()),
    }


@pytest.mark.parametrize("experiment", ["auxiliary_016", "auxiliary_019", "corrections_002"])
def test_gpu_path_reproduces_cpu_path(experiment):
    config = resolve(experiment)
    raw = compare_paths(*train_pipeline(config), keys=range(160))
    taken = branches(raw)
    if config["transforms"]["resize_prob"] == 0:
        assert taken.pop("resized") == 0
    assert all(count > 0 for count in taken.values()), taken


def test_gpu_path_reproduces_cpu_path_with_beta_mixup():
    config = resolve("auxiliary_016")
    config["mixer"] = {**config["mixer"], "alpha_dist": "beta", "p": [0.3, 0.7]}
    compare_paths(*train_pipeline(config), keys=range(100, 160))


def test_without_augmentation_the_path_is_validation_processing():
    transform = get_transforms(True, CROP, wrap_pad_prob=0, resize_prob=0, spec_prob=0)
    _, gpu = two_sets(transform, get_mixer(0))
    raw, target, noisy = default_collate([gpu[k] for k in range(40)])
    images, mixed_target, _ = augment_batch(raw, target, noisy)
    validation = get_transforms(False, CROP)
    for image, window, length in zip(images, raw["primary"]["window"], raw["primary"]["length"]):
        if length < CROP:  # whole clips: the random crop has no choice
            expected = validation(window[:, :length].numpy())
            torch.testing.assert_close(image, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(mixed_target, target)


def test_samples_are_reproducible_and_independent_of_the_batch():
    transform, mixer = train_pipeline(resolve("auxiliary_016"))
    _, gpu = two_sets(transform, mixer)
    _, again = two_sets(transform, mixer)
    keys = range(24)
    batch = default_collate([gpu[k] for k in keys])
    repeated = default_collate([again[k] for k in keys])
    images, target, _ = augment_batch(*batch)
    images_again, target_again, _ = augment_batch(*repeated)
    assert torch.equal(images, images_again) and torch.equal(target, target_again)
    for k in (0, 5, 23):
        alone, alone_target, _ = augment_batch(*default_collate([gpu[k]]))
        assert torch.equal(alone[0], images[k]) and torch.equal(alone_target[0], target[k])
    other_seed = ProbabilityMix(gpu.datasets, gpu.probabilities, gpu.size, seed=(12, 2))
    assert not torch.equal(
        augment_batch(*default_collate([other_seed[k] for k in keys]))[0], images
    )


# --- distributions of the drawn parameters, at the original's size ----------------------


def draw_parameters(draws: TrainDraws, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Parameters of `count` samples of a short and a long clip (windows dropped)."""
    clips = [spectrogram(100, height=128), spectrogram(400, height=128)]
    rng = np.random.default_rng(seed)
    boxes, bands, wrap, mixes = [], [], [], []
    for i in range(count):
        window = draws.window(clips[i % 2], rng)
        boxes.append(window["box"])
        bands.append(window["bands"])
        wrap.append(window["wrap"])
        mixes.append(draws.mix(rng))
    return {"box": np.array(boxes), "bands": np.array(bands), "wrap": np.array(wrap), "mix": mixes}


def test_drawn_parameters_follow_the_cpu_distributions():
    transform, mixer = train_pipeline(resolve("auxiliary_016"), crop=256)
    count = 3000
    params = draw_parameters(TrainDraws(transform, mixer), count)
    rng = np.random.default_rng(99)

    assert within_binomial(int(params["wrap"].sum()), count, 0.5)

    box = params["box"]
    resized = (box != [0, 0, 128, 256]).any(axis=1)
    assert within_binomial(int(resized.sum()), count, 0.33)
    top, left, height, width = box[resized].T
    cpu_boxes = np.array(
        [RandomResizedCrop((0.8, 1.0), (1.7, 2.3)).sample_box(128, 256, rng) for _ in range(1000)]
    )
    assert width.min() >= 211 and width.max() <= 256  # the original's ranges
    assert height.min() >= 107 and height.max() <= 128
    assert (top + height <= 128).all() and (left + width <= 256).all()
    for ours, theirs in zip(box[resized].T, cpu_boxes.T):
        assert same_mean(ours.astype(float), theirs.astype(float))

    bands = params["bands"]
    used = (bands != 0).any(axis=2)  # an all-zero used band has probability < 1e-3
    masked = used.any(axis=1)
    assert within_binomial(int(masked.sum()), count, 0.5)
    assert within_binomial(int((used.sum(axis=1) == 2).sum()), int(masked.sum()), 0.5)
    freq_start, freq_width, time_start, time_width = bands[used].T
    assert freq_width.max() <= 19 and time_width.max() <= 51  # int(0.15*128), int(0.2*256)
    assert (freq_start + freq_width <= 128).all() and (time_start + time_width <= 256).all()
    augment = SpecAugment(2, 0.15, 0.20)
    cpu_bands = np.array([b for _ in range(1000) for b in augment.sample_bands(128, 256, rng)])
    for ours, theirs in zip(bands[used].T, cpu_bands.T):
        assert same_mean(ours.astype(float), theirs.astype(float))

    mixes = [m for m in params["mix"] if m is not None]
    assert within_binomial(len(mixes), count, 0.8)
    sigmoid = [m for m in mixes if m[0][0, 0] != m[0][0, -1]]
    add = [m for m in mixes if m[0][0, 0] == m[0][0, -1]]
    assert within_binomial(len(sigmoid), len(mixes), 0.6)
    radii = {round(float(np.log(1 / m[0][0, 0] - 1))) for m in sigmoid}  # m0 = sigmoid(-r)
    assert radii == set(range(3, 13))
    for radius in radii:
        assert any(np.array_equal(m[0][0], sigmoid_mask(radius, 256)) for m in sigmoid)
    alphas = np.array([float(m[1][1]) for m in add])
    cpu_alphas = np.array([AddMixer("uniform").sample_alpha(rng) for _ in range(1000)])
    assert alphas.min() >= 0 and alphas.max() < 0.5
    assert same_mean(alphas, cpu_alphas)


# --- what the path cannot mirror ---------------------------------------------------------


@pytest.mark.parametrize(
    "steps",
    [
        [PadToSize(CROP), CenterCrop(CROP), ToTensor()],  # the validation pipeline
        [OneOf([PadToSize(CROP, "wrap")]), ToTensor()],  # no crop
        [
            OneOf([PadToSize(CROP, "wrap")]),
            RandomCrop(CROP),
            UseWithProb(SpecAugment()),
            UseWithProb(RandomResizedCrop()),
            ToTensor(),
        ],  # masks before the resized crop
        [OneOf([PadToSize(2 * CROP, "wrap")]), RandomCrop(CROP), ToTensor()],
    ],
)
def test_unmirrorable_pipelines_are_refused(steps):
    with pytest.raises(ValueError, match="GPU augmentation path"):
        TrainDraws(Compose(steps))


def test_unknown_mixers_are_refused():
    class OtherMixer:
        def __call__(self, dataset, image, target, rng):
            return image, target

    with pytest.raises(ValueError, match="cannot mirror the mixer"):
        TrainDraws(get_transforms(True, CROP), OtherMixer())


def test_augment_batch_refuses_cpu_augmented_batches():
    with pytest.raises(TypeError, match="RawWindowClips"):
        augment_batch(torch.zeros(2, 3, HEIGHT, CROP), torch.zeros(2, 5), torch.zeros(2))
