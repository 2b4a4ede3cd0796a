"""tag_audio.py and src.tools.tagging: real recordings, model sources, CSVs, bad files, defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from scipy.stats import gmean

from src.config import AUDIO, ConfigError
from src.data.audio import make_extractor, read_audio
from src.prediction.tiling import Predictor, tile_layout
from src.runs import best_checkpoint
from src.tools.tagging.clips import collect_audio_files
from src.tools.tagging.trained import best_experiment
from tests.helpers import tone, write_wav

REPO_ROOT = Path(__file__).resolve().parents[1]
HOP_SECONDS = AUDIO.hop_length / AUDIO.sampling_rate


def run_tag_audio(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "tag_audio.py", *args, "--device", "cpu"],
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def mixed_folder(tmp_path, librosa_examples, fsdd) -> Path:
    """Real OGGs (22,050 Hz), FSDD WAVs (8 kHz, < 0.5 s), a stereo 48 kHz FLAC starting with
    1 s of silence, an undecodable file, and a text file, in nested folders."""
    folder = tmp_path / "inputs"
    for name in (
        "456440__inspectorj__bird-whistling-robin-single-13",
        "sorohanro_-_solo-trumpet-06",
    ):
        (folder / "ogg").mkdir(parents=True, exist_ok=True)
        (folder / "ogg" / f"{name}.ogg").symlink_to(
            fsdd.parent / "librosa-examples" / f"{name}.ogg"
        )
    short = [
        p for p in sorted((fsdd / "recordings").glob("*.wav")) if soundfile.info(p).duration < 0.5
    ]
    (folder / "digits").mkdir()
    for path in short[:2]:
        (folder / "digits" / path.name).symlink_to(path)
    silence_then_tone = np.concatenate([np.zeros(48000, np.float32), tone(1.5, 440, sr=48000)])
    write_wav(folder / "late_tone.flac", np.stack([silence_then_tone] * 2, axis=1), sr=48000)
    (folder / "broken.wav").write_bytes(b"RIFF but not really a wave file")
    (folder / "notes.txt").write_text("not audio")
    return folder


def fold_tiles(experiment_dir: Path, paths: list[Path]) -> list[list[np.ndarray]]:
    """Per file, each fold's tile probabilities: read_audio, torch log-mel, Predictor at step
    crop/4, one fold's best checkpoint at a time (the reference for the experiment source)."""
    extractor = make_extractor("torch")
    spectrograms = [extractor([read_audio(p)])[0] for p in paths]
    per_fold = []
    for fold_dir in sorted(experiment_dir.glob("fold_*")):
        predictor = Predictor(best_checkpoint(fold_dir)[0], "cpu")
        per_fold.append(predictor.predict_tiles(spectrograms))
    return [[fold[i] for fold in per_fold] for i in range(len(paths))]


def test_tags_real_recordings_with_the_best_experiment(smoke_data, mixed_folder, tmp_path):
    clips_csv, tiles_csv = tmp_path / "tags.csv", tmp_path / "tiles.csv"
    result = run_tag_audio(
        str(mixed_folder), "--csv", str(clips_csv), "--tiles-csv", str(tiles_csv)
    )
    assert result.returncode == 0, result.stderr
    experiment = best_experiment(smoke_data / "experiments")
    assert f"with the experiment {experiment.name} " in result.stderr
    broken = mixed_folder / "broken.wav"
    assert f"skipped {broken}: " in result.stderr
    assert "skipped 1 of 6 file(s)" in result.stderr

    expected_paths = sorted(
        p for p in mixed_folder.rglob("*") if p.suffix in (".ogg", ".wav", ".flac") and p != broken
    )
    frame = pd.read_csv(clips_csv)
    classes = json.loads((experiment.directory / "params.json").read_text())["classes"]
    assert list(frame.columns) == ["path", *classes]
    assert frame["path"].tolist() == [str(p) for p in expected_paths]  # a row per file, sorted

    # One printed line per file: the path (padded to the longest) and the CSV row's top 3, in
    # the demo's format, names padded to the longest class name (at least 20 characters).
    lines = result.stdout.splitlines()
    assert len(lines) == len(expected_paths)
    width = max(20, *map(len, classes))
    for line, (_, row) in zip(lines, frame.iterrows()):
        path, *entries = line.split("\t")
        probabilities = row[classes].to_numpy(dtype=float)
        top = np.argsort(-probabilities, kind="stable")[:3]
        assert path.rstrip() == row["path"]
        assert entries == [f"{classes[i]:>{width}} - {probabilities[i]:.2f}" for i in top]

    # The experiment: geometric mean over folds of each fold's tile mean, and per
    # tile the geometric mean over folds.
    reference = fold_tiles(experiment.directory, expected_paths)
    tiles = pd.read_csv(tiles_csv)
    assert list(tiles.columns) == ["path", "tile", "start_s", "end_s", *classes]
    for path, folds, (_, row) in zip(expected_paths, reference, frame.iterrows()):
        expected = gmean([tiles.mean(axis=0) for tiles in folds], axis=0)
        np.testing.assert_allclose(row[classes].to_numpy(float), expected, rtol=0, atol=1e-6)
        rows = tiles[tiles["path"] == str(path)]
        assert rows["tile"].tolist() == list(range(len(folds[0])))
        np.testing.assert_allclose(
            rows[classes].to_numpy(float), gmean(np.stack(folds), axis=0), rtol=0, atol=1e-6
        )

    # Tile times are seconds from the start of the file: the trimmed second of silence counts.
    late_path = mixed_folder / "late_tone.flac"
    late = tiles[tiles["path"] == str(late_path)]
    crop = Predictor(experiment.checkpoint(), "cpu").tile
    width = make_extractor("torch")([read_audio(late_path)])[0].shape[1]
    n_tiles, left, _ = tile_layout(width, crop, crop // 4)
    offset = late["start_s"].iloc[0]
    assert 1.0 - 2048 / 44100 <= offset <= 1.0  # trim works in frames of 512 samples
    expected_starts = offset + np.maximum(np.arange(n_tiles) * (crop // 4) - left, 0) * HOP_SECONDS
    np.testing.assert_allclose(late["start_s"], expected_starts, atol=1e-9)
    np.testing.assert_allclose(late["end_s"] - late["start_s"], crop * HOP_SECONDS, atol=1e-9)
    # FSDD digits are under 0.5 s: one tile each, from the start of the file.
    digits = tiles[tiles["path"].str.contains("/digits/")]
    assert digits["tile"].tolist() == [0, 0] and (digits["start_s"] == 0).all()


def test_one_checkpoint_gives_the_tile_mean(smoke_data, fsdd, tmp_path, capsys):
    import tag_audio

    experiment = best_experiment(smoke_data / "experiments")
    checkpoint = experiment.checkpoint(0)
    digits = sorted((fsdd / "recordings").glob("*.wav"))[:2]
    clips_csv = tmp_path / "one.csv"
    args = [*map(str, digits), "--model", str(checkpoint), "--csv", str(clips_csv)]
    assert tag_audio.main([*args, "--device", "cpu", "--top", "2"]) == 0
    frame = pd.read_csv(clips_csv)
    extractor = make_extractor("torch")
    tiles = Predictor(checkpoint, "cpu").predict_tiles(
        [extractor([read_audio(p)])[0] for p in digits]
    )
    np.testing.assert_allclose(
        frame.iloc[:, 1:].to_numpy(float), np.stack([t.mean(axis=0) for t in tiles]), atol=1e-7
    )
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_ensemble_equals_the_pipeline_submission(smoke_data, tmp_path):
    """tag_audio.py --ensemble on test clips gives stacking_predict.py's submission rows."""
    import tag_audio

    clips = sorted((smoke_data / "test").glob("*.wav"), key=lambda p: (p.stat().st_size, p))[:2]
    clips_csv = tmp_path / "ensemble.csv"
    args = [*map(str, clips), "--ensemble", "--csv", str(clips_csv), "--device", "cpu"]
    assert tag_audio.main(args) == 0
    frame = pd.read_csv(clips_csv)
    submission = pd.read_csv(smoke_data / "submission.csv").set_index("fname")
    expected = submission.loc[[p.name for p in clips]]
    assert list(frame.columns[1:]) == list(submission.columns)
    np.testing.assert_allclose(frame.iloc[:, 1:].to_numpy(float), expected.to_numpy(), atol=1e-6)


def test_nothing_decodable_exits_1(smoke_data, tmp_path, capsys):
    import tag_audio

    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"OggS?")
    checkpoint = best_experiment(smoke_data / "experiments").checkpoint()
    assert (
        tag_audio.main([str(bad), str(tmp_path / "missing.wav"), "--model", str(checkpoint)]) == 1
    )
    err = capsys.readouterr().err
    assert f"skipped {bad}: " in err and "file not found" in err
    assert "skipped 2 of 2 file(s) that could not be read" in err
    assert "not decodable" not in err  # a missing file is not a decoding failure
    assert "error: no file could be tagged" in err


def test_without_a_trained_model_says_how_to_train_one(tmp_path):
    clip = write_wav(tmp_path / "tone.wav", tone(1.0))
    result = run_tag_audio(str(clip))
    assert result.returncode == 1
    assert "no trained model found in" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------
# Choosing the default model and collecting files
# --------------------------------------------------------------------------------------


def fake_experiment(root: Path, name: str, kind: str, scores: list[float | None]) -> None:
    directory = root / name
    directory.mkdir(parents=True)
    record = {"config": {"kind": kind}, "classes": ["a", "b"]}
    (directory / "params.json").write_text(json.dumps(record))
    for fold, score in enumerate(scores):
        (directory / f"fold_{fold}").mkdir()
        if score is not None:
            (directory / f"fold_{fold}" / f"model-003-{score:.6f}.pth").write_bytes(b"")
            (directory / f"fold_{fold}" / f"model-001-{score / 2:.6f}.pth").write_bytes(b"")


def test_default_is_the_first_level_experiment_with_the_best_mean_fold_score(tmp_path):
    root = tmp_path / "experiments"
    with pytest.raises(ConfigError, match="no trained model found in .*train_folds.py"):
        best_experiment(root)
    fake_experiment(root, "lucky", "cnn", [0.9, 0.1])  # best single fold, mean 0.5
    fake_experiment(root, "steady", "cnn", [0.6, 0.7, None])  # mean 0.65
    fake_experiment(root, "stacked", "stacking", [0.95, 0.95])
    fake_experiment(root, "untrained", "cnn", [None])
    (root / "no_params" / "fold_0").mkdir(parents=True)
    (root / "no_params" / "fold_0" / "model-001-0.990000.pth").write_bytes(b"")
    best = best_experiment(root)
    assert best.name == "steady" and best.best_fold == 1
    assert best.checkpoint().name == "model-003-0.700000.pth"
    with pytest.raises(ConfigError, match="no checkpoint for fold 2"):
        best.checkpoint(2)


def test_folders_are_searched_recursively_and_sorted(tmp_path):
    for name in ("b/z.WAV", "b/a.flac", "a.mp3", "c/d/e.ogg", "c/readme.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = collect_audio_files([tmp_path / "c", tmp_path, tmp_path / "missing.wav"])
    relative = [p.relative_to(tmp_path).as_posix() for p in found]
    # Folders expanded in sorted order; a file given by name is kept (reading reports it).
    assert relative == ["c/d/e.ogg", "a.mp3", "b/a.flac", "b/z.WAV", "c/d/e.ogg", "missing.wav"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no audio files"):
        collect_audio_files([tmp_path / "empty"])
