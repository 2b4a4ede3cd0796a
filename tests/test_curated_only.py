"""Datasets without a noisy part (hand-labelled clips only) train as they are."""

import json
import logging

import pandas as pd
import pytest

from src.config import get_paths, load_vocabulary
from src.data.labels import has_noisy_set
from src.training.command import train_command
from src.training.first_level import build_fold, load_first_level_data
from src.training.parts import RunOptions
from tests.helpers import copy_tree, micro_config, run_smoke_pipeline

MESSAGE = "no noisy set"


def drop_noisy(data, how: str) -> None:
    paths = get_paths()
    if how == "missing":
        paths.train_noisy_csv.unlink()
    elif how == "header only":
        paths.train_noisy_csv.write_text("fname,labels\n")
    else:  # a zero-byte file
        paths.train_noisy_csv.write_text("")


@pytest.mark.parametrize("how", ["missing", "header only", "zero bytes"])
def test_noisy_shares_move_to_curated_when_the_noisy_set_is_absent(tiny_data, how, caplog):
    assert has_noisy_set(get_paths())
    drop_noisy(tiny_data, how)
    paths = get_paths()
    assert not has_noisy_set(paths)
    config = micro_config("corr_noisy_003", epoch_size=16)  # noisy 0.1, corrected 0.2
    with caplog.at_level(logging.WARNING):
        data = load_first_level_data(config, paths, load_vocabulary(paths), "if-present")
    assert data.probabilities == {"noisy": 0.0, "corrected": 0.0, "curated": pytest.approx(1.0)}
    assert data.noisy is None and data.tables.noisy.empty and data.tables.corrected.empty
    assert caplog.text.count(MESSAGE) == 1 and "0.30 moves to the curated set" in caplog.text
    parts = build_fold(data, 0, RunOptions())
    images, _, noisy = next(iter(parts.train_loader))
    assert len(images) == 8 and not noisy.any()  # every sample is a curated clip


def test_quiet_reload_of_a_parallel_fold_worker_says_nothing(tiny_data, caplog):
    drop_noisy(tiny_data, "missing")
    paths = get_paths()
    with caplog.at_level(logging.WARNING):
        data = load_first_level_data(
            micro_config("corr_noisy_007"), paths, load_vocabulary(paths), "if-present", None, False
        )
    assert data.probabilities["curated"] == pytest.approx(1.0) and MESSAGE not in caplog.text


def test_train_folds_on_a_curated_only_dataset_says_it_once(tiny_data, capfd):
    drop_noisy(tiny_data, "missing")
    args = ["--experiment", "corr_noisy_007", "--smoke", "--folds", "0", "--max-epochs", "1"]
    args += ["--workers", "0", "--no-progress", "--device", "cpu"]
    assert train_command(args, "", kind="cnn") == 0
    out = capfd.readouterr().out  # the log goes to stdout
    assert out.count(MESSAGE) == 1, out
    fold = get_paths().experiment_dir("corr_noisy_007") / "fold_0"
    assert json.loads((fold / "finished.json").read_text())["best_checkpoint"]


def test_folds_in_parallel_get_the_resolved_config_and_say_it_once(tiny_data, capfd):
    """--gpus cpu,cpu: the fold workers load the data again from the resolved configuration
    (an --set override included) and stay quiet about the noisy set."""
    drop_noisy(tiny_data, "header only")
    args = ["--experiment", "corr_noisy_007", "--smoke", "--folds", "0,1", "--gpus", "cpu,cpu"]
    args += ["--set", "max_epochs=1", "--set", "epoch_size=32", "--set", "batch_size=8"]
    args += ["--workers", "0", "--no-progress"]
    assert train_command(args, "", kind="cnn") == 0
    out = capfd.readouterr().out
    assert out.count(MESSAGE) == 1, out
    experiment = get_paths().experiment_dir("corr_noisy_007")
    for fold in (0, 1):
        log = pd.read_csv(experiment / f"fold_{fold}" / "log.csv")
        assert len(log) == 1 and (log["train_samples"] == 32).all()


@pytest.mark.slow
def test_ensemble_pipeline_smoke_on_a_curated_only_dataset(tiny_tree, tmp_path):
    """Every first-level experiment, stacking, the final blend and the kernels (minutes)."""
    data = copy_tree(tiny_tree, tmp_path / "data")
    (data / "train_noisy.csv").unlink()
    result = run_smoke_pipeline(data, tmp_path / "kernel")
    assert result.returncode == 0, result.stderr[-3000:]
    submission = pd.read_csv(data / "submission.csv")
    assert len(submission) == len(list((data / "test").iterdir()))
    table = pd.read_csv(data / "predictions" / "ensemble_oof_lwlrap.csv")
    assert len(table) == 7 + 1 + 3 + 1
    assert (tmp_path / "kernel").is_dir()
