"""make_dataset.py: folders or a CSV of one's own recordings -> the Kaggle layout."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from make_dataset import main
from src.config import ConfigError, Vocabulary
from src.data.dataset_maker import clean_class_name, make_dataset
from src.data.labels import read_labels_csv
from tests.helpers import REPO_ROOT, write_wav


def noise(seed: int, seconds: float = 0.3, sr: int = 16000) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).normal(size=int(seconds * sr))).astype(np.float32)


@pytest.fixture
def tree(tmp_path):
    """Class folders with nesting, spaces and non-ASCII names, an empty class, a duplicate,
    an undecodable file and a text file."""
    root = tmp_path / "my sounds"
    seed = 0
    for name, n in (("dog bark", 5), ("Vögel, im Wald", 5), ("猫", 5)):
        for i in range(n):
            seed += 1
            sub = ("deeper/still deeper",) if i % 2 else ()
            write_wav(root.joinpath(name, *sub, f"clip {i} ñ.wav"), noise(seed), sr=16000)
    (root / "empty class").mkdir()
    shutil.copy(root / "dog bark" / "clip 0 ñ.wav", root / "dog bark" / "again.wav")
    (root / "猫" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    (root / "猫" / "README.txt").write_text("notes")
    return root


def test_class_folders_become_the_kaggle_layout(tree, tmp_path, capsys):
    out = tmp_path / "dataset"
    assert main([str(tree), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    vocabulary = Vocabulary.from_sample_submission(out / "sample_submission.csv")
    assert vocabulary.classes == ("Vögel_im_Wald", "dog_bark", "猫")
    table = read_labels_csv(out / "train_curated.csv", vocabulary, out / "train_curated")
    assert len(table) == 15  # 5 + 5 + 5; the duplicate once, the broken file left out
    assert table["labels"].value_counts().to_dict() == {"Vögel_im_Wald": 5, "dog_bark": 5, "猫": 5}
    assert table["fname"].is_unique and all(f.isascii() for f in table["fname"])
    assert all((out / "train_curated" / f).is_symlink() for f in table["fname"])
    for line in (
        "'Vögel, im Wald' -> 'Vögel_im_Wald'",
        "empty classes, left out (1): empty_class",
        "undecodable files, left out (1):",
        "broken.wav",
        "duplicate recordings, kept once (1):",
        "again.wav",
        "README.txt",
    ):
        assert line in printed, line
    record = json.loads((out / "dataset.json").read_text())
    assert record["clips"] == {"curated": 15} and "broken.wav" in record["report"]["undecodable"][0]
    sources = pd.read_csv(out / "sources.csv")
    assert len(sources) == 15 and sources["source"].str.contains("still deeper").sum() == 6
    assert not (out / "test").exists() and not (out / "train_noisy.csv").exists()


def test_a_multi_label_csv_with_relative_paths_and_a_held_out_share(tmp_path):
    audio = tmp_path / "csv source" / "audio"
    rows = []
    for i in range(20):
        write_wav(audio / f"é {i}.flac", noise(100 + i), sr=22050)
        labels = ["a b", "c"][i % 2] + (",Zebra" if i % 5 == 0 else "")
        rows.append((f"audio/é {i}.flac", labels))
    csv = tmp_path / "csv source" / "labels.csv"
    pd.DataFrame(rows, columns=["path", "labels"]).to_csv(csv, index=False)
    out = tmp_path / "out"
    made = make_dataset(csv, out, test_share=0.25, seed=3, mode="copy")
    assert made.classes == ["Zebra", "a_b", "c"] and made.clips == {"curated": 15, "test": 5}
    vocabulary = Vocabulary.from_sample_submission(out / "sample_submission.csv")
    train = read_labels_csv(out / "train_curated.csv", vocabulary, out / "train_curated")
    test = read_labels_csv(out / "test_labels.csv", vocabulary, out / "test")
    assert (train["labels"] == "a_b,Zebra").sum() + (test["labels"] == "a_b,Zebra").sum() == 2
    assert not (out / "train_curated" / train["fname"][0]).is_symlink()  # copied
    # Stratified: each class keeps training clips; the sample submission lists the test clips.
    assert set(made.counts.set_index("class")["curated"]) and (made.counts["curated"] > 0).all()
    assert (made.counts.set_index("class")["test"] >= 1).all()
    submission = pd.read_csv(out / "sample_submission.csv")
    assert sorted(submission["fname"]) == sorted(test["fname"])
    # The seed fixes the split.
    again = make_dataset(csv, tmp_path / "again", test_share=0.25, seed=3)
    other = make_dataset(csv, tmp_path / "other", test_share=0.25, seed=4)
    assert pd.read_csv(tmp_path / "again" / "test_labels.csv").equals(test)
    assert not pd.read_csv(tmp_path / "other" / "test_labels.csv").equals(test)
    assert again.clips == other.clips


def test_test_and_noisy_sources_and_labels_outside_the_classes(tree, tmp_path):
    held_out = tmp_path / "held out"
    write_wav(held_out / "dog bark" / "t1.wav", noise(501), sr=16000)
    write_wav(held_out / "unseen class" / "t2.wav", noise(502), sr=16000)
    noisy = tmp_path / "noisy.csv"
    write_wav(tmp_path / "n" / "n1.ogg", noise(601), sr=16000, subtype="VORBIS")
    write_wav(tmp_path / "n" / "n2.wav", noise(602), sr=16000)
    pd.DataFrame(
        {"fname": ["n/n1.ogg", "n/n2.wav", "n/missing.wav"], "label": ["猫", "x", "猫"]}
    ).to_csv(noisy, index=False)
    made = make_dataset(tree, tmp_path / "out", test=held_out, noisy=noisy)
    out = made.out
    assert made.clips == {"curated": 15, "noisy": 1, "test": 1}
    assert pd.read_csv(out / "test_labels.csv")["labels"].tolist() == ["dog_bark"]
    assert pd.read_csv(out / "train_noisy.csv")["labels"].tolist() == ["猫"]
    assert (out / "train_noisy" / pd.read_csv(out / "train_noisy.csv")["fname"][0]).exists()
    assert len(made.report.unknown_labels) == 2 and made.report.missing == ["n/missing.wav"]
    assert made.report.empty_classes == ["empty_class"]  # not the test source's classes


def test_errors_leave_nothing_half_written(tree, tmp_path, capsys):
    out = tmp_path / "out"
    (tree / "dog_bark").mkdir()  # cleans to the same column as 'dog bark'
    write_wav(tree / "dog_bark" / "x.wav", noise(9), sr=16000)
    assert main([str(tree), "--out", str(out)]) == 1
    assert "'dog bark' and 'dog_bark' both become 'dog_bark'" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    shutil.rmtree(tree / "dog_bark")
    # An existing folder is replaced only with --force and only when make_dataset made it.
    assert main([str(tree), "--out", str(out)]) == 0
    assert main([str(tree), "--out", str(out)]) == 1 and "--force" in capsys.readouterr().err
    assert main([str(tree), "--out", str(out), "--force", "--test-share", "0.2"]) == 0
    assert (out / "test_labels.csv").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    assert main([str(tree), "--out", str(foreign), "--force"]) == 1
    assert (foreign / "precious.txt").read_text() == "keep me"
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 1
    assert "no such folder or CSV file" in capsys.readouterr().err


def test_class_name_cleaning():
    assert clean_class_name("  Bathtub (filling or washing) ") == "Bathtub_(filling_or_washing)"
    assert clean_class_name('a,"b"\tc') == "a_b_c" and clean_class_name("Hi-hat") == "Hi-hat"
    with pytest.raises(ConfigError, match="no usable character"):
        clean_class_name(" ,, ")


def test_the_output_feeds_make_folds(tree, tmp_path):
    out = tmp_path / "out"
    assert main([str(tree), "--out", str(out)]) == 0
    env = {**os.environ, "FREESOUND_DATA_DIR": str(out)}
    result = subprocess.run(
        [sys.executable, "make_folds.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(out / "train_folds.csv")) == 15
