"""The Python API (src.tagger.Tagger) and what tag_audio.py builds on it: embeddings (per file,
per tile, fold mean, ONNX), the same numbers from the API and the script, arrays in memory,
and the output rules (aligned columns, --json, --threshold, make_dataset.py's names)."""

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
import torch

from src.augment.deltas import stack_deltas
from src.config import FAT2019_CLASSES
from src.data.audio import AudioDecodeError, make_extractor, read_audio
from src.library_internals import plain_module
from src.prediction.tiling import load_checkpoint, make_tiles
from src.runs import best_checkpoint
from src.tagger import Samples, Tagger
from tests.helpers import REPO_ROOT, fsdd_dataset, random_experiment, tone, write_wav

LONG_NAME = "Accelerating_and_revving_and_vroom"  # 34 characters: longer than the column


def run_script(script: str, *args: str, data: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if data is not None:
        env["FREESOUND_DATA_DIR"] = str(data)
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory, fsdd) -> Path:
    """FSDD digits laid out by make_dataset.py, and an untrained two-fold 80-class experiment
    `random80` (FAT2019's names, the longest 34 characters)."""
    work = tmp_path_factory.mktemp("api")
    data = fsdd_dataset(fsdd, work, per_speaker=2, test_per_class=2)
    random_experiment(data / "experiments", "random80", FAT2019_CLASSES, folds=(0, 1))
    return data


@pytest.fixture(scope="module")
def files(tree, fsdd) -> list[Path]:
    """Two short FSDD digits (one tile each) and a 3 s tone (several tiles at crop 32)."""
    digits = sorted((tree / "test").glob("*.wav"))[:2]
    long = write_wav(tree.parent / "long" / "tone.wav", tone(3.0, 660.0))
    return [*digits, long]


def reference_embeddings(checkpoint: Path, path: Path) -> np.ndarray:
    """(n_tiles, n_features): read_audio, torch log-mel, tiles at step crop/4, deltas, and the
    network's own `embed`."""
    model = load_checkpoint(checkpoint, "cpu")
    crop = int(model.params["crop_size"])
    spectrogram = torch.as_tensor(make_extractor("torch")([read_audio(path)])[0]).float()
    tiles = make_tiles(spectrogram, crop, crop // 4)
    with torch.no_grad():
        return plain_module(model.get_nn_module()).eval().embed(stack_deltas(tiles)).numpy()


def test_embeddings_are_what_the_main_head_sees_per_file_and_per_tile(tree, files, tmp_path):
    checkpoint = best_checkpoint(tree / "experiments" / "random80" / "fold_0")[0]
    out, tiles_csv, tags_csv = tmp_path / "e.npz", tmp_path / "tiles.csv", tmp_path / "tags.csv"
    args = [*map(str, files), "--model", str(checkpoint), "--device", "cpu", "--no-progress"]
    result = run_script(
        "tag_audio.py", *args, "--embeddings", str(out), "--tiles-csv", str(tiles_csv),
        "--csv", str(tags_csv), data=tree,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    saved = np.load(out)
    sources = pd.read_csv(tree / "sources.csv").set_index("file")["source"]
    shown = [sources[f"test/{f.name}"] for f in files[:2]]
    assert saved["paths"].tolist() == [*shown, str(files[2])]  # the names the user knows
    tiles = pd.read_csv(tiles_csv)
    for index, path in enumerate(files):
        expected = reference_embeddings(checkpoint, path)
        rows = saved["tile_file"] == index
        assert rows.sum() == len(expected) and saved["tile"][rows].tolist() == list(
            range(len(expected))
        )
        np.testing.assert_allclose(saved["tile_embeddings"][rows], expected, atol=1e-5)
        np.testing.assert_allclose(saved["embeddings"][index], expected.mean(axis=0), atol=1e-5)
    assert len(files[2:]) and (saved["tile_file"] == 2).sum() > 1  # the tone has several tiles
    np.testing.assert_allclose(saved["start_s"], tiles["start_s"], atol=1e-12)
    assert saved["embeddings"].shape == (3, 4 * 8) and saved["embeddings"].dtype == np.float32
    # Asking for embeddings leaves the probabilities alone.
    plain = tmp_path / "plain.csv"
    assert run_script("tag_audio.py", *args, "--csv", str(plain), data=tree).returncode == 0
    assert plain.read_text() == tags_csv.read_text()


def test_an_experiments_embedding_is_the_mean_over_its_folds(tree, files):
    experiment = tree / "experiments" / "random80"
    tagger = Tagger.load("random80", device="cpu", data_dir=tree)
    per_fold = [
        [reference_embeddings(best_checkpoint(experiment / f"fold_{k}")[0], f) for f in files]
        for k in (0, 1)
    ]
    vectors = tagger.embed(files)
    assert list(vectors.index) == [str(f) for f in files]
    expected = np.stack([(a.mean(axis=0) + b.mean(axis=0)) / 2 for a, b in zip(*per_fold)])
    np.testing.assert_allclose(vectors.to_numpy(), expected, atol=1e-5)
    assert not np.allclose(per_fold[0][0], per_fold[1][0])  # the folds differ: a real mean
    tiles = tagger.embed(files, tiles=True)
    np.testing.assert_allclose(
        tiles.loc[str(files[2])].to_numpy(), (per_fold[0][2] + per_fold[1][2]) / 2, atol=1e-5
    )


def test_the_api_and_tag_audio_give_the_same_numbers(tree, files, tmp_path):
    csv, out = tmp_path / "tags.csv", tmp_path / "e.npz"
    result = run_script(
        "tag_audio.py", *map(str, files[2:]), "--experiment", "random80", "--device", "cpu",
        "--csv", str(csv), "--embeddings", str(out), "--no-progress", data=tree,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tagger = Tagger.load("random80", device="cpu", data_dir=tree)
    tags = tagger.tag(files[2:])
    script = pd.read_csv(csv).set_index("path")
    assert list(tags.columns) == list(script.columns) == list(FAT2019_CLASSES)
    np.testing.assert_array_equal(tags.to_numpy(), script.to_numpy())
    np.testing.assert_array_equal(tagger.embed(files[2:]).to_numpy(), np.load(out)["embeddings"])
    # An array in memory at its own rate is read as the file is.
    samples, rate = soundfile.read(files[0], dtype="float32")
    from_array = tagger.tag(samples, sample_rate=rate)
    assert list(from_array.index) == ["array 0"]
    np.testing.assert_array_equal(from_array.to_numpy(), tagger.tag(files[0]).to_numpy())
    named = tagger.tag([Samples("mine", np.stack([samples, samples], axis=1), rate)])
    np.testing.assert_allclose(named.loc["mine"], from_array.loc["array 0"], atol=1e-6)
    # A checkpoint path loads as --model does; a file that cannot be read raises or is skipped.
    checkpoint = best_checkpoint(tree / "experiments" / "random80" / "fold_0")[0]
    assert Tagger.load(checkpoint, device="cpu").description == f"checkpoint {checkpoint}"
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    with pytest.raises(AudioDecodeError, match="broken.wav"):
        tagger.tag([files[0], broken])
    assert list(tagger.tag([files[0], broken], errors="skip").index) == [str(files[0])]


def test_onnx_embeddings_equal_torchs(tree, files, tmp_path):
    pytest.importorskip("onnxruntime")
    from src.tools.onnx_export import export_checkpoint

    checkpoint = best_checkpoint(tree / "experiments" / "random80" / "fold_1")[0]
    onnx = export_checkpoint(checkpoint, tmp_path / "random80.onnx").path
    torch_vectors = Tagger.from_checkpoint(checkpoint, "cpu").embed(files, tiles=True)
    onnx_tagger = Tagger.load(onnx)
    np.testing.assert_allclose(
        onnx_tagger.embed(files, tiles=True).to_numpy(), torch_vectors.to_numpy(), atol=1e-4
    )
    # ONNX tagging is what it was: the same probabilities as the checkpoint's.
    np.testing.assert_allclose(
        onnx_tagger.tag(files).to_numpy(),
        Tagger.from_checkpoint(checkpoint, "cpu").tag(files).to_numpy(),
        atol=1e-4,
    )
    out = tmp_path / "onnx.npz"
    result = run_script(
        "tag_audio.py", *map(str, files), "--onnx", str(onnx), "--embeddings", str(out),
        "--no-progress", data=tree,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(
        np.load(out)["embeddings"], onnx_tagger.embed(files).to_numpy(), atol=1e-6
    )


def test_embeddings_are_refused_where_there_are_none(tree, files, tmp_path):
    result = run_script(
        "tag_audio.py", str(files[0]), "--experiment", "random80", "--embeddings",
        str(tmp_path / "e.csv"), data=tree,
    )  # fmt: skip
    assert result.returncode == 2 and "ending in .npz" in result.stderr


# --------------------------------------------------------------------------------------
# Output rules
# --------------------------------------------------------------------------------------


def tagged_lines(tree: Path, *args: str) -> subprocess.CompletedProcess:
    return run_script(
        "tag_audio.py", str(tree / "test"), "--experiment", "random80", "--device", "cpu",
        "--no-progress", *args, data=tree,
    )  # fmt: skip


def test_long_class_names_keep_the_columns_aligned(tree):
    result = tagged_lines(tree, "--top", "80")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    fields = [line.split("\t") for line in lines]
    assert any(LONG_NAME in line for line in lines)
    assert len({len(f[0]) for f in fields}) == 1  # the paths, padded to the longest
    # Every class entry is as wide as the longest name's, so columns line up whatever the order.
    assert {len(entry) for f in fields for entry in f[1:]} == {len(LONG_NAME) + len(" - 0.50")}


def test_files_laid_out_by_make_dataset_are_shown_under_their_own_names(tree, tmp_path):
    sources = pd.read_csv(tree / "sources.csv")
    test_sources = dict(zip(sources["file"], sources["source"]))
    csv = tmp_path / "tags.csv"
    labels = tmp_path / "labels.csv"
    table = pd.read_csv(tree / "test_labels.csv")  # relabelled to a class random80 knows
    extra = pd.DataFrame({"fname": ["missing.wav"], "labels": ["Bark"]})
    pd.concat([table.assign(labels="Bark"), extra]).to_csv(labels, index=False)
    result = tagged_lines(tree, "--csv", str(csv), "--score", str(labels))
    assert result.returncode == 0, result.stderr
    shown = [line.split("\t")[0].rstrip() for line in result.stdout.splitlines()[: len(table)]]
    layout = sorted(f"test/{p.name}" for p in (tree / "test").glob("*.wav"))
    assert shown == [test_sources[f] for f in layout]  # the recordings the user gave
    assert all("yweweler" in name for name in shown)
    assert pd.read_csv(csv)["path"].tolist() == shown
    assert f"scored {len(table)} file(s)" in result.stdout
    assert "labelled but not tagged (1): ['missing.wav']" in result.stdout


def test_json_lines_and_the_threshold_decision(tree, tmp_path):
    csv = tmp_path / "tags.csv"
    result = tagged_lines(tree, "--json", "--threshold", "0.5", "--csv", str(csv), "--top", "2")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    frame = pd.read_csv(csv)
    assert [r["path"] for r in records] == frame["path"].tolist()
    for record, (_, row) in zip(records, frame.iterrows()):
        probabilities = row[list(FAT2019_CLASSES)].to_numpy(float)
        assert [record["probabilities"][c] for c in FAT2019_CLASSES] == pytest.approx(
            probabilities, abs=1e-12
        )
        order = np.argsort(-probabilities, kind="stable")
        assert [t["class"] for t in record["top"]] == [FAT2019_CLASSES[i] for i in order[:2]]
        wanted = [FAT2019_CLASSES[i] for i in order if probabilities[i] >= 0.5]
        assert record["labels"] == wanted and Path(record["file"]).parent == tree / "test"
    assert any(r["labels"] for r in records) and any(len(r["labels"]) < 80 for r in records)
    text = tagged_lines(tree, "--threshold", "0.5")
    for line, record in zip(text.stdout.splitlines(), records):
        assert line.endswith("\tlabels: " + (", ".join(record["labels"]) or "-"))
    assert tagged_lines(tree, "--threshold", "1.5").returncode == 2


def test_demo_streams_a_clip_shorter_than_one_block(tree):
    short = sorted((tree / "test").glob("*.wav"))[0]
    assert soundfile.info(short).duration < 1.0
    result = run_script(
        "demo.py", "--experiment", "random80", "--input", str(short), "--fast", "--headless",
        data=tree,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "padded with silence to one block" in result.stderr
    updates = result.stdout.splitlines()
    assert len(updates) == 1 and updates[0].startswith("   1s\t")
