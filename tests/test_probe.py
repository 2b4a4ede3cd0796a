"""train_probe.py and src.tools.probe on real recordings (FSDD digits laid out by
make_dataset.py): the probe learns, its checkpoints are the source's trunk with the regression
as the head, its experiment tags, scores, predicts and streams as any other, embeddings are
cached, and a wrong source is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.config import FAT2019_CLASSES
from src.data.store import SpectrogramStore
from src.library_internals import plain_module
from src.prediction.tiling import Predictor, load_checkpoint
from src.runs import best_checkpoint, read_params
from tests.helpers import REPO_ROOT, fsdd_dataset, random_experiment

CHANCE = sum(1 / rank for rank in range(1, 6)) / 5  # lwlrap of random scores, 5 single labels


def run_script(script: str, data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=REPO_ROOT,
        env={**os.environ, "FREESOUND_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def probe(data: Path, source: str, name: str = "probe", *args: str):
    return run_script(
        "train_probe.py", data, "--init-from", source, "--experiment", name, "--device", "cpu",
        "--no-progress", *args,
    )  # fmt: skip


@pytest.fixture(scope="module")
def probed(tmp_path_factory, fsdd) -> tuple[Path, subprocess.CompletedProcess]:
    """FSDD digits 5-9 (4 clips per digit of 5 speakers, 6 per digit of a sixth for test), an
    untrained two-fold 80-class source, and the probe of all five folds on its fold 0."""
    data = fsdd_dataset(fsdd, tmp_path_factory.mktemp("probe"))
    random_experiment(data / "experiments", "source", FAT2019_CLASSES, folds=(0, 1))
    result = probe(data, "source:0")
    assert result.returncode == 0, result.stderr
    return data, result


def fold_scores(stdout: str) -> dict[int, float]:
    lines = [line.split() for line in stdout.splitlines() if line.startswith("fold ")]
    return {int(words[1].rstrip(":")): float(words[4]) for words in lines}


def test_the_probe_learns_spoken_digits_from_frozen_features(probed):
    data, result = probed
    scores = fold_scores(result.stdout)
    assert sorted(scores) == [0, 1, 2, 3, 4]
    assert np.mean(list(scores.values())) > CHANCE + 0.15, scores
    experiment = data / "experiments" / "probe"
    for fold, score in scores.items():
        finished = json.loads((experiment / f"fold_{fold}" / "finished.json").read_text())
        assert finished["best_val_lwlrap"] == pytest.approx(score, abs=5e-5)
        recorded = finished["best_val_lwlrap"]
        assert best_checkpoint(experiment / f"fold_{fold}")[1] == pytest.approx(recorded, abs=1e-6)
    record = read_params(experiment)
    source = data / "experiments" / "source" / "fold_0"
    assert record["source"]["probe_of"] == "source:0"
    assert record["classes"] == [f"digit_{d}" for d in range(5, 10)]
    checkpoint = best_checkpoint(source)[0]
    import hashlib

    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert {c["sha256"] for c in record["source"]["checkpoints"].values()} == {digest}


def test_a_fold_checkpoint_is_the_source_trunk_with_the_regression_as_head(probed):
    """The network on disk gives scikit-learn's own probabilities (a StandardScaler +
    LogisticRegression per class fitted here on the cached embeddings), and its validation
    lwlrap is what tag_audio.py --model scores on the fold's clips."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data, _ = probed
    fold = 2
    checkpoint = best_checkpoint(data / "experiments" / "probe" / f"fold_{fold}")[0]
    source = load_checkpoint(best_checkpoint(data / "experiments" / "source" / "fold_0")[0])
    network = load_checkpoint(checkpoint)
    ours = plain_module(network.get_nn_module()).state_dict()
    theirs = plain_module(source.get_nn_module()).state_dict()
    trunk = [k for k in ours if not k.startswith("fc.")]
    assert trunk and all(np.array_equal(ours[k], theirs[k]) for k in trunk)
    assert ours["fc.weight"].shape == (5, 32)

    (cached,) = (data / "cache" / "embeddings").glob("*.npz")
    embeddings = np.load(cached)
    folds = pd.read_csv(data / "train_folds.csv")
    fnames = list(embeddings["fnames"])
    fold_of = dict(zip(folds["fname"], folds["fold"]))
    labels = dict(zip(folds["fname"], folds["labels"]))
    classes = [f"digit_{d}" for d in range(5, 10)]
    clip = embeddings["clip"]
    train = np.array([fold_of[fnames[c]] != fold for c in clip])
    weights = 1.0 / np.bincount(clip[train], minlength=len(fnames))[clip[train]]
    store = SpectrogramStore(next((data / "cache").glob("curated-*")))
    validation = [f for f in fnames if fold_of[f] == fold]
    predictor = Predictor(checkpoint, "cpu")
    tiles = np.concatenate(predictor.predict_tiles([np.array(store[f]) for f in validation]))
    features = embeddings["tiles"][np.isin(clip, [fnames.index(f) for f in validation])]
    for index, name in enumerate(classes):
        target = np.array([labels[fnames[c]] == name for c in clip[train]])
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        pipeline.fit(
            embeddings["tiles"][train], target,
            standardscaler__sample_weight=weights, logisticregression__sample_weight=weights,
        )  # fmt: skip
        np.testing.assert_allclose(
            tiles[:, index], pipeline.predict_proba(features)[:, 1], atol=2e-5
        )

    truth = data / "fold_labels.csv"
    pd.DataFrame({"fname": validation, "labels": [labels[f] for f in validation]}).to_csv(
        truth, index=False
    )
    scored = run_script(
        "tag_audio.py", data, str(data / "train_curated"), "--model", str(checkpoint),
        "--score", str(truth), "--device", "cpu", "--no-progress",
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    line = next(x for x in scored.stdout.splitlines() if x.startswith("scored"))
    assert f"scored {len(validation)} file(s)" in line
    recorded = json.loads((checkpoint.parent / "finished.json").read_text())["best_val_lwlrap"]
    assert float(line.split("lwlrap ")[1].split(",")[0]) == pytest.approx(recorded, abs=1e-4)


def test_the_probe_experiment_tags_scores_predicts_and_streams(probed, tmp_path):
    data, _ = probed
    scored = run_script(
        "tag_audio.py", data, str(data / "test"), "--experiment", "probe", "--score",
        str(data / "test_labels.csv"), "--device", "cpu", "--no-progress",
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    assert "with the experiment probe (geometric mean of 5 of 5 folds)" in scored.stderr
    assert "scored 30 file(s)" in scored.stdout
    lines = scored.stdout.splitlines()[:30]
    assert all("yweweler" in line.split("\t")[0] for line in lines)  # the user's own names
    predicted = run_script(
        "predict_folds.py", data, "--experiment", "probe", "--device", "cpu", "--no-progress"
    )
    assert predicted.returncode == 0, predicted.stderr
    assert (data / "predictions" / "probe" / "probs.csv").is_file()
    short = sorted((data / "test").glob("*.wav"))[0]
    streamed = run_script(
        "demo.py", data, "--experiment", "probe", "--input", str(short), "--fast", "--headless"
    )
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout.splitlines()[0].startswith("   1s\t")
    assert any(f"digit_{d}" in streamed.stdout for d in range(5, 10))


def test_a_rerun_resumes_a_changed_source_is_refused_and_embeddings_are_cached(probed, tmp_path):
    data, _ = probed
    again = probe(data, "source:0")
    assert again.returncode == 0 and again.stdout.count("(already probed)") == 5
    changed = probe(data, "source:1", "probe", "--folds", "0")
    assert changed.returncode == 1
    assert "already holds a run with a different" in changed.stderr
    assert "source" in changed.stderr.splitlines()[-1]
    fresh = probe(data, "source:0", "probe_again", "--folds", "0,3")
    assert fresh.returncode == 0, fresh.stderr
    assert "reusing the embeddings" in fresh.stdout  # the log
    assert fold_scores(fresh.stdout)[3] == pytest.approx(
        json.loads((data / "experiments/probe/fold_3/finished.json").read_text())[
            "best_val_lwlrap"
        ],
        abs=5e-5,  # printed with 4 decimals
    )
    assert len(list((data / "cache" / "embeddings").glob("*.npz"))) == 1


def test_a_wrong_source_is_one_line(probed, tmp_path):
    data, _ = probed
    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("not a checkpoint")
    cases = {
        "sourse": "did you mean",
        "source": "no checkpoint for fold(s) 2,3,4",
        "source:7": "no checkpoint for fold 7",
        "source:x": "NAME:K",
        str(tmp_path / "missing.pth"): "checkpoint not found",
        str(not_a_checkpoint): "notes.pth: ",  # named; the reason is read_checkpoint's
    }
    for spec, expected in cases.items():
        result = probe(data, spec, "wrong")
        assert result.returncode == 1, spec
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert expected in lines[0], lines[0]
        assert not (data / "experiments" / "wrong").exists()  # nothing written
    hint = probe(data, "source", "wrong").stderr
    assert "--init-from source:K" in hint


def test_the_probe_experiment_packs_into_a_kernel(probed, tmp_path, monkeypatch):
    """The single kernel (predict mode) of the probe writes, on Kaggle's layout, the
    submission that the Python API's tags of the test clips are."""
    import zipfile

    from src.kaggle.build import build_kernels, package_weights
    from src.kaggle.runtime import KernelPlan
    from src.tagger import Tagger
    from tests.helpers import COMPETITION, kaggle_root, run_kernel

    data, _ = probed
    monkeypatch.setenv("FREESOUND_DATA_DIR", str(data))
    (kernel,) = build_kernels(tmp_path / "kernel", [KernelPlan("single", ("probe",), device="cpu")])
    weights = package_weights(data / "experiments", ["probe"], tmp_path / "weights.zip").path
    inputs = tmp_path / "input"
    (inputs / COMPETITION).mkdir(parents=True)
    (inputs / COMPETITION / "test").symlink_to(data / "test", target_is_directory=True)
    (inputs / COMPETITION / "sample_submission.csv").symlink_to(data / "sample_submission.csv")
    with zipfile.ZipFile(weights) as archive:
        archive.extractall(inputs / "freesound-train")
    root = kaggle_root(tmp_path / "run", {p.name: p for p in inputs.iterdir()})
    result = run_kernel(kernel, root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    submission = pd.read_csv(root / "kaggle" / "working" / "submission.csv").set_index("fname")
    tags = Tagger.load("probe", device="cpu", data_dir=data).tag(data / "test")
    tags.index = [Path(p).name for p in tags.index]
    assert list(submission.columns) == list(tags.columns)
    np.testing.assert_allclose(submission.loc[tags.index].to_numpy(), tags.to_numpy(), atol=1e-6)
