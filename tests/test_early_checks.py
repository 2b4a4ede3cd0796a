"""Inputs that would spoil a run are refused up front, before any spectrogram
is extracted or any folder written, with the file and the culprit named."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

import predict_folds
import train_folds
from src.config import ConfigError, Vocabulary, get_paths
from src.data.corrections import load_corrections
from src.data.store import curated_store, noisy_store
from tests.helpers import REPO_ROOT


def make_folds(*args: str) -> None:
    subprocess.run(
        [sys.executable, "make_folds.py", *args], cwd=REPO_ROOT, check=True, capture_output=True
    )


def train(capsys, experiment: str = "auxiliary_016", *args: str) -> tuple[int, str]:
    argv = ["--experiment", experiment, "--smoke", "--workers", "0", "--no-progress", *args]
    code = train_folds.main(argv)
    return code, capsys.readouterr().err


def assert_nothing_done(data) -> None:
    """No spectrogram store extracted, no experiment or prediction folder made."""
    for folder in ("cache", "experiments", "predictions"):
        assert not (data / folder).exists(), folder


def test_train_refuses_a_fold_that_train_folds_csv_lacks(tiny_data, capsys):
    make_folds("--n-folds", "3")
    code, err = train(capsys, "auxiliary_016", "--folds", "4")
    assert code == 1
    assert "train_folds.csv has no fold 4 (it has folds 0, 1, 2)" in err
    assert "--folds 0,1,2" in err and "make_folds.py" in err
    assert_nothing_done(tiny_data)
    # The default (every fold of the pipeline) is refused the same way.
    code, err = train(capsys)
    assert code == 1 and "train_folds.csv has no fold 3, 4" in err
    assert_nothing_done(tiny_data)


def test_predict_refuses_a_fold_that_train_folds_csv_lacks(tiny_data, capsys):
    make_folds("--n-folds", "3")
    experiment = tiny_data / "experiments" / "fake"
    (experiment / "fold_3").mkdir(parents=True)
    classes = pd.read_csv(tiny_data / "sample_submission.csv", nrows=0).columns[1:].tolist()
    params = {"config": {"crop_size": 64}, "classes": classes}
    (experiment / "params.json").write_text(json.dumps(params))
    (experiment / "fold_3" / "model-001-0.500000.pth").write_bytes(b"never loaded")
    code = predict_folds.main(["--experiment", "fake", "--folds", "3", "--device", "cpu"])
    assert code == 1
    assert "train_folds.csv has no fold 3" in capsys.readouterr().err
    assert not (tiny_data / "cache").exists() and not (tiny_data / "predictions").exists()


def test_stale_folds_are_refused(tiny_data, capsys):
    csv = tiny_data / "train_curated.csv"
    curated = pd.read_csv(csv, dtype=str)
    relabelled, removed = curated["fname"][0], curated["fname"][1]
    curated.loc[0, "labels"] = "Bark" if curated.loc[0, "labels"] != "Bark" else "Meow"
    curated.drop(index=1).to_csv(csv, index=False)
    code, err = train(capsys)
    assert code == 1
    assert "train_folds.csv is stale: train_curated.csv changed since make_folds.py" in err
    assert f"removed (1): ['{removed}']" in err and f"relabelled (1): ['{relabelled}']" in err
    assert "rerun `python make_folds.py`" in err
    assert_nothing_done(tiny_data)
    make_folds()
    from src.data.labels import load_folds

    assert len(load_folds(get_paths())) == len(curated) - 1  # fresh folds pass


def test_added_curated_clip_makes_the_folds_stale(tiny_data):
    csv = tiny_data / "train_curated.csv"
    curated = pd.read_csv(csv, dtype=str)
    extra = pd.DataFrame({"fname": ["new.wav"], "labels": [curated["labels"][0]]})
    pd.concat([curated, extra]).to_csv(csv, index=False)
    from src.data.labels import load_folds

    with pytest.raises(ConfigError, match=r"stale.*added \(1\): \['new.wav'\]"):
        load_folds(get_paths())


def test_noisy_csv_listing_missing_audio_is_refused_before_extraction(tiny_data, capsys):
    noisy = pd.read_csv(tiny_data / "train_noisy.csv", dtype=str)["fname"]
    for fname in noisy[:2]:
        (tiny_data / "train_noisy" / fname).unlink()
    code, err = train(capsys, "corr_noisy_007", "--folds", "0")
    assert code == 1
    assert "train_noisy.csv" in err and "audio files missing" in err
    assert f"(2): ['{noisy[0]}', '{noisy[1]}']" in err
    assert_nothing_done(tiny_data)
    # The set factory itself (make_corrections.py noisy, predictions) checks the same way.
    with pytest.raises(ConfigError, match=r"train_noisy.csv: 2 listed audio file\(s\) missing"):
        noisy_store(get_paths())
    assert not (tiny_data / "cache").exists()


def test_curated_csv_listing_a_folder_instead_of_audio_is_refused(tiny_data):
    fname = pd.read_csv(tiny_data / "train_curated.csv", dtype=str)["fname"][0]
    audio = tiny_data / "train_curated" / fname
    audio.unlink()
    audio.mkdir()  # a folder named like the clip is no clip
    with pytest.raises(
        ConfigError, match=rf"train_curated.csv: 1 listed.*\['{fname} \(a folder, not a file\)'\]"
    ):
        curated_store(get_paths())
    assert not (tiny_data / "cache").exists()


def test_duplicate_key_in_a_corrections_file_is_refused(tmp_path):
    path = tmp_path / "corrections.json"
    path.write_text('{"a.wav": "remove", "b.wav": "Bark", "a.wav": "Meow"}\n')
    with pytest.raises(ConfigError) as error:
        load_corrections(path, Vocabulary())
    message = str(error.value)
    assert str(path) in message and "'a.wav' is listed more than once" in message


def test_folds_remade_after_training_are_refused(tiny_data, capsys):
    """make_folds.py rerun with another seed: the same clips and labels (not stale), another
    split, so the "out-of-fold" predictions would score clips the models trained on."""
    code, err = train(capsys, "auxiliary_016", "--folds", "0", "--set", "max_epochs=1")
    assert code == 0, err
    make_folds("--seed", "7")
    argv = ["--experiment", "auxiliary_016", "--folds", "0", "--device", "cpu", "--no-progress"]
    assert predict_folds.main(argv) == 1
    err = capsys.readouterr().err
    assert "train_folds.csv changed since auxiliary_016 was trained" in err
    assert not (tiny_data / "predictions").exists()
    code, err = train(capsys, "auxiliary_016", "--folds", "0", "--set", "max_epochs=1")
    assert code == 1 and "a different folds" in err
    make_folds()  # the split it was trained on
    assert predict_folds.main(argv) == 0
