import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from src.config import ConfigError, Vocabulary, get_paths
from src.data.labels import make_folds, read_labels_csv
from tests.helpers import REPO_ROOT, tone, write_wav


def test_folds_equal_a_seeded_shuffle_cut_in_chunks():
    # Spec 7.3: KFold(5, shuffle, 42) over 4,970 rows = RandomState(42) shuffle of arange,
    # cut into five consecutive chunks of 994.
    curated = pd.DataFrame({"fname": [f"{i:08x}.wav" for i in range(4970)], "labels": "Bark"})
    folds = make_folds(curated)
    assert folds["fold"].value_counts().sort_index().tolist() == [994] * 5
    order = np.arange(4970)
    np.random.RandomState(42).shuffle(order)
    for k in range(5):
        expected = set(order[k * 994 : (k + 1) * 994])
        assert set(np.flatnonzero(folds["fold"].to_numpy() == k)) == expected
    assert folds["fname"].tolist() == curated["fname"].tolist()  # file order kept


def test_folds_need_enough_clips():
    with pytest.raises(ConfigError, match="at least 5"):
        make_folds(pd.DataFrame({"fname": ["a.wav"], "labels": ["Bark"]}))


def write_dataset(data, rows, audio=True):
    data.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["fname", "labels"]).to_csv(data / "train_curated.csv", index=False)
    if audio:
        for fname, _ in rows:
            write_wav(data / "train_curated" / fname, tone(0.1))


def run_make_folds():
    return subprocess.run(
        [sys.executable, "make_folds.py"], cwd=REPO_ROOT, capture_output=True, text=True
    )


def test_make_folds_script_writes_relative_paths():
    data = get_paths().input_dir
    rows = [(f"{i:08x}.wav", "Bark,Meow" if i % 3 else "Purr") for i in range(12)]
    write_dataset(data, rows)
    result = run_make_folds()
    assert result.returncode == 0, result.stderr
    folds = pd.read_csv(data / "train_folds.csv")
    assert list(folds.columns) == ["fname", "labels", "fold", "file_path"]
    assert folds["file_path"][0] == "train_curated/00000000.wav"
    assert sorted(folds["fold"].value_counts().tolist()) == [2, 2, 2, 3, 3]
    assert folds["labels"][1] == "Bark,Meow"


@pytest.mark.parametrize(
    ("rows", "header", "audio", "message"),
    [
        ([("a.wav", "Bark")], "fname,label", True, "missing column"),
        ([("a.wav", "Bark"), ("a.wav", "Meow")], None, True, "duplicate fnames"),
        ([("a.wav", "Bark,Barking")], None, True, "unknown labels"),
        ([("a.wav", "Bark")], None, False, "audio files missing"),
    ],
)
def test_bad_curated_csv_is_reported_with_the_file(rows, header, audio, message):
    data = get_paths().input_dir
    write_dataset(data, rows, audio)
    if header:
        csv = data / "train_curated.csv"
        lines = csv.read_text().splitlines()
        csv.write_text("\n".join([header, *lines[1:]]) + "\n")
    with pytest.raises(ConfigError, match=message) as error:
        read_labels_csv(data / "train_curated.csv", Vocabulary(), data / "train_curated")
    assert "train_curated.csv" in str(error.value)
    result = run_make_folds()
    assert result.returncode == 1 and message in result.stderr
    assert not (data / "train_folds.csv").exists()
