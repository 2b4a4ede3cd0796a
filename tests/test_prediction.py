"""Tiling, blending, submission checks and the stacking model's pieces."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from src.augment.deltas import stack_deltas
from src.augment.transforms import get_transforms
from src.config import ConfigError, get_paths
from src.models.fcnet import FCNet
from src.prediction.experiment import fold_blend, fold_blend_frames
from src.prediction.tables import (
    align_to_sample_submission,
    check_submission,
    gmean_frames,
    probs_frame,
)
from src.prediction.tiling import make_tiles, tile_layout
from src.runs import find_experiment
from src.training.datasets import random_tile_subset


@pytest.mark.parametrize(
    ("width", "step", "expected"),
    [
        # tile counts and margins (left, right) of the padding with the clip's minimum
        (1, 64, (1, 127, 128)),
        (100, 64, (1, 78, 78)),
        (256, 64, (1, 0, 0)),
        (257, 64, (2, 31, 32)),
        (431, 64, (4, 8, 9)),
        (1000, 64, (13, 12, 12)),
        (1, 128, (1, 127, 128)),
        (100, 128, (1, 78, 78)),
        (256, 128, (1, 0, 0)),
        (257, 128, (2, 63, 64)),
        (431, 128, (3, 40, 41)),
        (1000, 128, (7, 12, 12)),
    ],
)
def test_tile_counts_and_margins(width, step, expected):
    assert tile_layout(width, 256, step) == expected
    n, left, right = expected
    assert left + width + right == step * n + (256 - step)  # tiles cover the padded clip exactly


def test_tiles_are_padded_with_the_clip_minimum_and_step_apart():
    rng = np.random.default_rng(0)
    spec = torch.tensor(rng.normal(size=(128, 431)), dtype=torch.float32)
    tiles = make_tiles(spec, 256, 64)
    assert tiles.shape == (4, 128, 256)
    padded = torch.nn.functional.pad(spec, (8, 9), value=float(spec.min()))
    for k in range(4):
        assert torch.equal(tiles[k], padded[:, k * 64 : k * 64 + 256])
    assert torch.all(tiles[0][:, :8] == spec.min())


def test_tile_inputs_equal_the_validation_transform():
    rng = np.random.default_rng(1)
    tile = rng.normal(-40, 10, size=(128, 256)).astype(np.float32)
    expected = get_transforms(False, 256)(tile)
    np.testing.assert_allclose(
        stack_deltas(torch.from_numpy(tile)[None])[0].numpy(), expected.numpy(), atol=1e-5
    )


def test_geometric_mean_blend_aligns_on_fnames():
    classes = ["a", "b"]
    first = probs_frame(["x.wav", "y.wav"], np.array([[0.2, 0.5], [0.9, 0.1]]), classes)
    second = probs_frame(["y.wav", "x.wav"], np.array([[0.4, 0.3], [0.8, 0.5]]), classes)
    blend = gmean_frames([first, second])
    assert blend["fname"].tolist() == ["x.wav", "y.wav"]
    expected = scipy.stats.gmean([[[0.2, 0.5], [0.9, 0.1]], [[0.8, 0.5], [0.4, 0.3]]], axis=0)
    np.testing.assert_allclose(blend[classes].to_numpy(), expected)
    # inputs untouched (docs/original.md, quirk "Blending in place")
    assert first[classes].to_numpy()[0, 0] == 0.2
    with pytest.raises(ConfigError, match="different clips"):
        gmean_frames([first, probs_frame(["z.wav"], np.ones((1, 2)), classes)])


def test_fold_blend_is_the_geometric_mean_over_folds_of_aligned_rows():
    classes = ["a", "b"]
    fold_0 = probs_frame(["x.wav", "y.wav"], np.array([[0.2, 0.5], [0.9, 0.1]]), classes)
    fold_1 = probs_frame(["y.wav", "x.wav"], np.array([[0.4, 0.3], [0.8, 0.5]]), classes)
    blend = fold_blend_frames([fold_0, fold_1])
    assert blend["fname"].tolist() == ["x.wav", "y.wav"]
    expected = scipy.stats.gmean([[[0.2, 0.5], [0.9, 0.1]], [[0.8, 0.5], [0.4, 0.3]]], axis=0)
    np.testing.assert_allclose(blend[classes].to_numpy(), expected)
    # the same formula on arrays, row by row (one clip's tile means, or its tiles)
    np.testing.assert_array_equal(
        fold_blend([np.array([[0.2, 0.5]]), np.array([[0.8, 0.5]])]), blend[classes][:1]
    )


def test_submission_must_match_sample_submission():
    paths = get_paths()
    paths.input_dir.mkdir(parents=True)
    pd.DataFrame({"fname": ["b.wav", "a.wav"], "c1": 0, "c2": 0}).to_csv(
        paths.sample_submission, index=False
    )
    probs = probs_frame(["a.wav", "b.wav"], np.array([[0.1, 0.2], [0.3, 0.4]]), ["c1", "c2"])
    aligned = align_to_sample_submission(probs, paths)
    assert aligned["fname"].tolist() == ["b.wav", "a.wav"] and aligned["c1"].tolist() == [0.3, 0.1]
    check_submission(aligned, ["c1", "c2"], 2)
    with pytest.raises(ConfigError, match="no prediction for 1 clips"):
        align_to_sample_submission(probs.iloc[:1], paths)
    filled = align_to_sample_submission(probs.iloc[:1], paths, fill_missing=True)
    assert filled["c2"].tolist() == [0.2, 0.2]
    with pytest.raises(ConfigError, match="not in it"):
        align_to_sample_submission(probs_frame(["zz.wav"], np.ones((1, 2)), ["c1", "c2"]), paths)
    with pytest.raises(ConfigError, match="probabilities"):
        check_submission(aligned.assign(c1=1.5), ["c1", "c2"], 2)
    with pytest.raises(ConfigError, match="one row per test clip"):
        check_submission(aligned, ["c1", "c2"], 3)


def test_missing_checkpoints_name_what_to_run(tmp_path):
    # a registered name: an unknown one is refused with the closest names instead (runs.py)
    with pytest.raises(
        ConfigError, match="run `python train_folds.py --experiment corr_noisy_007` first"
    ):
        find_experiment(tmp_path, "corr_noisy_007", range(5))
    (tmp_path / "corr_noisy_007/fold_0").mkdir(parents=True)
    (tmp_path / "corr_noisy_007/fold_0/model-003-0.500000.pth").write_bytes(b"")
    record = {"config": {"kind": "cnn"}, "classes": ["a"]}
    (tmp_path / "corr_noisy_007/params.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match=r"fold\(s\) 1,2,3,4.*--folds 1,2,3,4"):
        find_experiment(tmp_path, "corr_noisy_007", range(5))


@pytest.mark.parametrize(
    ("reduction", "expected"), [(16, 1_180_101), (2, 1_454_746), (1, 1_768_626)]
)
def test_fcnet_parameter_counts(reduction, expected):
    # the original's runs: 7 experiments x 80 classes in, base 512
    model = FCNet(560, 80, base_size=512, reduction_scale=reduction, p_dropout=0.1)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert model(torch.rand(4, 560)).shape == (4, 80)


def test_random_tile_subsets():
    tiles = np.arange(10)[:, None] * np.ones((1, 3))
    rng = np.random.default_rng(0)
    contiguous = [random_tile_subset(tiles, rng, 1.0, 0.0)[:, 0] for _ in range(500)]
    assert all(np.all(np.diff(c) == 1) for c in contiguous)
    assert {len(c) for c in contiguous} == set(range(1, 11))
    strided = [random_tile_subset(tiles, rng, 0.0, 1.0)[:, 0] for _ in range(500)]
    assert all(len(set(s)) == len(s) for s in strided)  # distinct tiles
    assert {len(s) for s in strided} == set(range(1, 11))
    untouched = random_tile_subset(tiles, rng, 0.0, 0.0)
    assert np.array_equal(untouched, tiles)


def test_an_unknown_experiment_name_lists_the_closest_ones(tmp_path):
    (tmp_path / "my_run").mkdir()
    (tmp_path / "my_run/params.json").write_text(json.dumps({"config": {}, "classes": ["a"]}))
    with pytest.raises(ConfigError) as raised:
        find_experiment(tmp_path, "corr_noisy_07")
    message = str(raised.value)
    assert message.startswith("unknown experiment 'corr_noisy_07'; did you mean corr_noisy_007")
    assert "trained: my_run" in message and "registered: auxiliary_016" in message
    with pytest.raises(ConfigError, match="did you mean my_run"):
        find_experiment(tmp_path, "my_rnu")


class FoldMarker:
    """A stand-in for fold k's stacking MLP: every probability it gives is (k + 1) / 10."""

    def __init__(self, fold: int, n_classes: int) -> None:
        self.fold, self.n_classes = fold, n_classes

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.full((len(batch), self.n_classes), (self.fold + 1) / 10)


def test_stacking_oof_predicts_each_fold_with_its_own_model(tiny_data, monkeypatch):
    # The models come in an order that is not the folds' (as a dict filled as folds finish):
    # pairing folds and models by position would give fold 0's clips fold 3's model.
    from src.data.labels import load_folds
    from src.prediction import ensemble

    paths = get_paths()
    classes = ("a", "b", "c")
    order = [3, 0, 4, 1, 2]
    models = {fold: FoldMarker(fold, len(classes)) for fold in order}
    stacking = ensemble.StackingModels("stacking_x", classes, models, ["first"])
    monkeypatch.setattr(ensemble, "load_stacking", lambda *args: stacking)
    monkeypatch.setattr(
        ensemble,
        "read_oof_tiles",
        lambda _dir, _inputs, fnames, *rest: (
            [np.zeros((2, len(classes)), np.float32)] * len(fnames)
        ),
    )
    oof = ensemble.stacking_oof("stacking_x", paths, "cpu")
    folds = load_folds(paths).set_index("fname")["fold"]
    assert sorted(folds.unique()) == [0, 1, 2, 3, 4] and list(oof.columns[-3:]) == list(classes)
    for fname, row in oof.set_index("fname").iterrows():
        assert row.to_numpy() == pytest.approx([(folds[fname] + 1) / 10] * 3), fname
