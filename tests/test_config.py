from pathlib import Path

import numpy as np
import pytest

from src.config import (
    AUDIO,
    FAT2019_CLASSES,
    AudioConfig,
    ConfigError,
    Vocabulary,
    get_paths,
    load_vocabulary,
)


def test_audio_constants_match_the_original():
    assert (AUDIO.sampling_rate, AUDIO.hop_length, AUDIO.n_fft, AUDIO.n_mels) == (
        44100,
        690,
        2560,
        128,
    )
    assert (AUDIO.fmin, AUDIO.fmax, AUDIO.min_samples) == (20, 22050, 22050)
    assert AUDIO.n_frames(22050) == 32  # the minimum clip (0.5 s) gives 32 frames


def test_config_hash_equals_the_originals():
    # Spec 1.1: the original's audio config hashes to 6413967.
    assert AUDIO.hash() == "6413967"
    assert AudioConfig(short_clip_rule="centered").hash() != "6413967"
    with pytest.raises(ConfigError, match="short_clip_rule"):
        AudioConfig(short_clip_rule="middle")


def test_vocabulary_is_the_80_sorted_classes():
    vocabulary = Vocabulary()
    assert len(vocabulary) == 80 and list(FAT2019_CLASSES) == sorted(FAT2019_CLASSES)
    assert vocabulary.index("Accordion") == 1 and vocabulary.index("Zipper_(clothing)") == 79
    target = vocabulary.encode("Bark,Zipper_(clothing)")
    assert target.dtype == np.float32 and target.sum() == 2 and target[4] == 1 and target[79] == 1
    assert vocabulary.decode(target) == "Bark,Zipper_(clothing)"
    with pytest.raises(ConfigError, match="unknown label 'Barking'"):
        vocabulary.encode("Barking")


def test_vocabulary_from_a_datasets_own_sample_submission(tmp_path):
    path = tmp_path / "sample_submission.csv"
    path.write_text("fname,cat,dog,bird\na.wav,0,0,0\n")
    assert Vocabulary.from_sample_submission(path).classes == ("cat", "dog", "bird")
    path.write_text("id,cat\n")
    with pytest.raises(ConfigError, match="sample_submission.csv: expected a header"):
        Vocabulary.from_sample_submission(path)


def test_load_vocabulary_prefers_the_data_dirs_sample_submission(tmp_path):
    assert load_vocabulary().classes == FAT2019_CLASSES  # no data yet: FAT2019 defaults
    data = Path(get_paths().input_dir)
    data.mkdir(parents=True)
    (data / "sample_submission.csv").write_text("fname,a,b\n")
    assert load_vocabulary().classes == ("a", "b")


def test_local_paths_follow_freesound_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FREESOUND_DATA_DIR", str(tmp_path / "elsewhere"))
    paths = get_paths()
    assert paths.input_dir == paths.save_dir == tmp_path / "elsewhere"
    assert paths.train_curated_csv == tmp_path / "elsewhere/train_curated.csv"
    assert paths.experiments_dir == tmp_path / "elsewhere/experiments"
    assert paths.folds_csv.parent == paths.save_dir and not paths.kernel


def test_kaggle_predict_paths_under_a_simulated_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MODE", "predict")
    monkeypatch.setenv("FREESOUND_KAGGLE_ROOT", str(tmp_path))
    kaggle_input = tmp_path / "kaggle/input"
    paths = get_paths()
    assert paths.input_dir == kaggle_input / "freesound-audio-tagging-2019"
    assert paths.save_dir == tmp_path / "kaggle/working"
    assert paths.experiments_dir == kaggle_input / "freesound-train/experiments"
    # The first freesound-train* dataset is used when freesound-train itself is absent.
    (kaggle_input / "freesound-train-v3/experiments").mkdir(parents=True)
    assert get_paths().experiments_dir == kaggle_input / "freesound-train-v3/experiments"
    (kaggle_input / "freesound-train/experiments").mkdir(parents=True)
    assert get_paths().experiments_dir == kaggle_input / "freesound-train/experiments"


def test_kaggle_train_mode_and_bad_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("FREESOUND_KAGGLE_ROOT", str(tmp_path))
    monkeypatch.setenv("MODE", "train")
    assert get_paths().input_dir == tmp_path / "kaggle/input"  # the original's layout
    (tmp_path / "kaggle/input/freesound-audio-tagging-2019").mkdir(parents=True)
    assert get_paths().input_dir == tmp_path / "kaggle/input/freesound-audio-tagging-2019"
    assert get_paths().experiments_dir == tmp_path / "kaggle/working/experiments"
    monkeypatch.setenv("MODE", "inference")
    with pytest.raises(ConfigError, match="MODE must be one of"):
        get_paths()
