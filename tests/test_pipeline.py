"""The whole smoke pipeline (tests/conftest.py `smoke_tree`): outputs, learning at every level,
and the errors users hit when a step's inputs are missing."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from src.config import Vocabulary
from src.experiments import FIRST_LEVEL, STACKING
from src.models.metrics import lwlrap
from src.prediction.tiling import tile_layout
from tests.helpers import REPO_ROOT, copy_tree, run_smoke_pipeline


def chance_lwlrap(data) -> tuple[float, float]:
    """Mean and standard deviation of the lwlrap of random scores on the curated labels."""
    vocabulary = Vocabulary.from_sample_submission(data / "sample_submission.csv")
    truth = vocabulary.encode_many(pd.read_csv(data / "train_curated.csv")["labels"].tolist())
    rng = np.random.default_rng(0)
    draws = [lwlrap(truth, rng.random(truth.shape)) for _ in range(200)]
    return float(np.mean(draws)), float(np.std(draws))


def test_submission_has_a_row_per_test_clip_and_the_sample_columns(smoke_tree):
    submission = pd.read_csv(smoke_tree / "submission.csv")
    sample = pd.read_csv(smoke_tree / "sample_submission.csv")
    assert list(submission.columns) == list(sample.columns)
    assert submission["fname"].tolist() == sample["fname"].tolist()
    values = submission.iloc[:, 1:].to_numpy()
    assert np.all((values >= 0) & (values <= 1)) and len(submission) == len(
        list((smoke_tree / "test").iterdir())
    )


def test_out_of_fold_lwlrap_is_well_above_chance_at_every_level(smoke_tree):
    table = pd.read_csv(smoke_tree / "predictions" / "ensemble_oof_lwlrap.csv")
    assert table["experiment"].tolist()[:7] + table["experiment"].tolist()[8:11] == (
        FIRST_LEVEL + STACKING
    )
    levels = ["first level"] * 7 + ["first-level blend"] + ["stacking"] * 3 + ["blend"]
    assert table["level"].tolist() == levels
    chance, spread = chance_lwlrap(smoke_tree)
    assert 0.1 < chance < 0.3 and 0.005 < spread < 0.05  # 20 classes, 160 clips
    # "Well above chance": 5 standard deviations of random scores above their mean (random
    # scores get there with a probability under 1e-6). Smoke models of 4 short epochs land
    # between about 6 and 16 deviations above it.
    well_above = chance + 5 * spread
    assert (table["oof_lwlrap"] > well_above).all(), (chance, spread, table)
    for name in FIRST_LEVEL:  # train_folds --smoke reached a clearly-above-chance validation lwlrap
        scores = [
            json.loads((smoke_tree / f"experiments/{name}/fold_{k}/finished.json").read_text())[
                "best_val_lwlrap"
            ]
            for k in range(5)
        ]
        assert np.mean(scores) > well_above, (name, scores)


def test_prediction_layout(smoke_tree):
    out = smoke_tree / "predictions" / "corr_noisy_007"
    cv = json.loads((out / "val_lwlrap.json").read_text())
    assert set(cv) == {"overall_lwlrap", "per_class_lwlrap"} and len(cv["per_class_lwlrap"]) == 20
    assert (out / "val_lwlrap.png").stat().st_size > 10_000
    probs = pd.read_csv(out / "fold_0" / "val" / "probs.csv")
    frames = pd.read_csv(next((smoke_tree / "cache").glob("curated-*")) / "index.csv").set_index(
        "fname"
    )["frames"]
    for fname in probs["fname"][:5]:
        tiles = np.load(out / "fold_0" / "val" / f"{fname}.npy")
        assert tiles.shape == (tile_layout(int(frames[fname]), 64, 16)[0], 20)  # step crop/4
        np.testing.assert_allclose(
            tiles.mean(axis=0), probs.set_index("fname").loc[fname].to_numpy(), atol=1e-6
        )
    blend = pd.read_csv(out / "probs.csv")
    assert len(blend) == len(list((smoke_tree / "test").iterdir()))


def run(script, data, *args):
    env = {**os.environ, "FREESOUND_DATA_DIR": str(data)}
    return subprocess.run(
        [sys.executable, script, *args, "--no-progress"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def broken_tree(smoke_tree, tmp_path_factory):
    return copy_tree(smoke_tree, tmp_path_factory.mktemp("broken") / "data")


def test_stacking_refuses_missing_out_of_fold_predictions(broken_tree):
    (broken_tree / "predictions/corr_noisy_004/fold_2/val/probs.csv").unlink()
    result = run(
        "stacking_train.py",
        broken_tree,
        "--experiment",
        "stacking_008_fcnet_43040",
        "--smoke",
        "--force",
    )
    assert result.returncode == 1
    assert "out-of-fold predictions of 'corr_noisy_004' fold 2 are missing" in result.stderr
    assert "python predict_folds.py --experiment corr_noisy_004" in result.stderr


def test_predict_refuses_missing_checkpoints_and_empty_test_folder(broken_tree):
    for checkpoint in (broken_tree / "experiments/auxiliary_019/fold_3").glob("model-*.pth"):
        checkpoint.unlink()
    result = run("predict_folds.py", broken_tree, "--experiment", "auxiliary_019")
    assert result.returncode == 1 and "no checkpoint for fold(s) 3" in result.stderr
    result = run("predict_folds.py", broken_tree, "--experiment", "auxiliary_999")
    assert result.returncode == 1
    assert "unknown experiment 'auxiliary_999'; did you mean auxiliary_019" in result.stderr
    (broken_tree / "experiments/never_trained").mkdir()
    result = run("predict_folds.py", broken_tree, "--experiment", "never_trained")
    assert result.returncode == 1 and "has no trained models" in result.stderr
    for clip in (broken_tree / "test").iterdir():
        clip.unlink()
    result = run("predict_folds.py", broken_tree, "--experiment", "auxiliary_016")
    assert result.returncode == 1 and "the test folder holds no audio files" in result.stderr


def test_rerunning_the_pipeline_skips_finished_steps(smoke_tree, tmp_path):
    data = copy_tree(smoke_tree, tmp_path / "data")
    result = run_smoke_pipeline(data, tmp_path / "kernel")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        result.stdout.count("(skipped: trained)") == 10
        and result.stdout.count("(skipped: predicted)") == 7
    )
    assert "submission: " in result.stdout and (tmp_path / "kernel").is_dir()
