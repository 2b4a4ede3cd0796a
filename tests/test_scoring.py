"""tag_audio.py --score / --plot and src.tools.scoring, against a direct computation."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import src.tools.tagging.api
import tag_audio
from src.config import ConfigError
from src.tools.scoring import read_truth, score_tags
from src.tools.tagging.api import Tagger
from src.tools.tagging.clips import Clip
from src.tools.tagging.files import TaggedFile
from src.tools.tagging.sources import ModelSource, Tags
from tests.helpers import tone, write_wav

CLASSES = ("dog", "cat", "bird", "car")


def direct_lwlrap(truth: np.ndarray, scores: np.ndarray) -> float:
    """The competition's definition, written out: for each positive label of each clip, the
    share of positives among the classes ranked at or above it; the mean over all positives."""
    precisions = []
    for t, s in zip(truth, scores):
        for c in np.nonzero(t)[0]:
            above = s >= s[c]
            precisions.append(t[above].sum() / above.sum())
    return float(np.mean(precisions))


def example(seed=0, n=40):
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, len(CLASSES)))
    truth[np.arange(n), rng.integers(len(CLASSES), size=n)] = 1
    truth[rng.random(n) < 0.25, 3] = 1  # some multi-label clips
    scores = rng.random((n, len(CLASSES))) + 0.8 * truth * rng.random((n, 1))
    labels = [",".join(c for c, v in zip(CLASSES, row) if v) for row in truth]
    table = pd.DataFrame({"fname": [f"f{i}.wav" for i in range(n)], "labels": labels})
    return truth, scores, table


def test_scores_match_a_direct_computation():
    truth, scores, table = example()
    paths = [f"/some/where/{f}" for f in table["fname"]]
    score = score_tags(paths, scores, CLASSES, table)
    assert score.lwlrap == pytest.approx(direct_lwlrap(truth, scores))
    top = scores.argmax(axis=1)
    assert score.top1 == pytest.approx(np.mean([truth[i, top[i]] > 0 for i in range(len(top))]))
    per_class = score.per_class.set_index("class")
    for c, name in enumerate(CLASSES):
        mine = truth[:, c] > 0
        assert per_class.loc[name, "files"] == mine.sum()
        assert per_class.loc[name, "top1_recall"] == pytest.approx(np.mean(top[mine] == c))
        assert per_class.loc[name, "top1_precision"] == pytest.approx(np.mean(mine[top == c]))
        # Per-class lwlrap: the same precisions, over this class's positives only.
        precisions = [
            truth[i][scores[i] >= scores[i, c]].sum() / (scores[i] >= scores[i, c]).sum()
            for i in np.nonzero(mine)[0]
        ]
        assert per_class.loc[name, "lwlrap"] == pytest.approx(np.mean(precisions))
    assert score.confusion.to_numpy().sum() == truth.sum()
    assert score.confusion.loc["dog", "dog"] == np.sum((truth[:, 0] > 0) & (top == 0))


def test_unmatched_and_unknown_files_are_reported():
    _, scores, table = example(n=10)
    paths = [*table["fname"][:8], "extra.wav"]
    score = score_tags(paths, np.vstack([scores[:8], scores[:1]]), CLASSES, table)
    assert score.n_files == 8 and score.unmatched == ["extra.wav"]
    assert score.untagged == ["f8.wav", "f9.wav"]
    with pytest.raises(ConfigError, match="does not know.*'horse'"):
        score_tags(
            ["a.wav"], scores[:1], CLASSES, pd.DataFrame({"fname": ["a.wav"], "labels": ["horse"]})
        )
    with pytest.raises(ConfigError, match="none of the tagged files"):
        score_tags(["zzz.wav"], scores[:1], CLASSES, table)


def test_tag_audio_score_and_plot(tmp_path, monkeypatch, capsys):
    """The command line: tags of a (stand-in) model scored against a labels CSV, and the PNG."""
    truth, scores, table = example(seed=1, n=12)
    folder = tmp_path / "test"
    for fname in table["fname"]:
        write_wav(folder / fname, tone(0.6))
    labels = tmp_path / "test_labels.csv"
    table.to_csv(labels, index=False)
    by_name = dict(zip(table["fname"], scores))

    def fake_tag_files(files, source, embeddings=False):
        for path in files:
            probabilities = by_name[Path(path).name]
            yield TaggedFile(
                Clip(Path(path), np.zeros((128, 10)), 0.0),
                Tags(probabilities, probabilities[None]),
                np.zeros(1),
            )

    source = ModelSource(
        "stand-in model", CLASSES, predictor=SimpleNamespace(tile=128, embeds=False)
    )
    monkeypatch.setattr(tag_audio, "load_tagger", lambda args: Tagger(source))
    monkeypatch.setattr(src.tools.tagging.api, "tag_files", fake_tag_files)
    plots = tmp_path / "plots"
    argv = [str(folder), "--score", str(labels), "--plot", str(plots), "--no-progress"]
    assert tag_audio.main(argv) == 0
    out = capsys.readouterr().out
    expected = direct_lwlrap(truth, scores)
    assert f"scored 12 file(s): lwlrap {expected:.4f}" in out
    assert "top1_recall" in out and "dog" in out
    png = plots / "confusion_matrix.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"
    # --plot without --score, and a labels file that is not one, are refused.
    with pytest.raises(SystemExit):
        tag_audio.main([str(folder), "--plot", str(plots)])
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert tag_audio.main([str(folder), "--score", str(bad)]) == 1
    assert "expected columns fname,labels" in capsys.readouterr().err
    assert read_truth(labels).equals(table)
