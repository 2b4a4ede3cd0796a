"""Correction files: format, validation (also through training's loader), scoring, the
resumable review, the noisy selection, and make_corrections.py end to end on the smoke tree."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from src.config import ConfigError, Vocabulary, get_paths
from src.data.corrections import (
    REMOVE,
    apply_corrections,
    count_entries,
    load_corrections,
    relabelled_only,
    save_corrections,
)
from src.data.labels import load_label_tables
from src.prediction.tables import probs_frame
from src.tools.corrections import (
    confident_labels,
    label_scores,
    lowest_scores,
    score_clips,
    select_noisy,
    selection_corrections,
    selection_summary,
    top_predictions,
    write_review_list,
)
from src.tools.review import ReviewItem, ReviewSession, parse_labels, run_review
from tests.helpers import use_copy_of

VOCABULARY = Vocabulary(("Bark", "Meow", "Purr"))


@pytest.fixture
def cli(capsys, monkeypatch):
    """Runs make_corrections.py in this process (in a subprocess its start-up imports cost
    seconds), with the answers piped through stdin."""
    import make_corrections

    def run(*args: str, stdin: str = "") -> SimpleNamespace:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        capsys.readouterr()
        status = make_corrections.main(list(args))
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=status, stdout=out, stderr=err)

    return run


# --------------------------------------------------------------------------------------
# Format and validation
# --------------------------------------------------------------------------------------


def test_saved_file_is_the_original_flat_format_and_round_trips(tmp_path):
    corrections = {"b.wav": "Meow,Bark", "a.wav": REMOVE}
    path = tmp_path / "corrections.json"
    save_corrections(corrections, path)
    # Spec 7.6: one JSON object fname -> "remove" or a comma-separated label string.
    assert json.loads(path.read_text()) == {"a.wav": "remove", "b.wav": "Meow,Bark"}
    assert list(json.loads(path.read_text())) == ["a.wav", "b.wav"]  # sorted for stable diffs
    assert load_corrections(path, VOCABULARY, ["a.wav", "b.wav"]) == corrections
    assert count_entries(corrections) == {"entries": 2, "remove": 1, "relabel": 1}


def test_apply_and_relabelled_only_follow_the_original_rules():
    table = pd.DataFrame({"fname": ["a", "b", "c"], "labels": ["Bark", "Meow", "Purr"]})
    corrections = {"a": REMOVE, "b": "Bark,Purr"}
    applied = apply_corrections(table, corrections)
    assert applied.to_dict("list") == {"fname": ["b", "c"], "labels": ["Bark,Purr", "Purr"]}
    assert relabelled_only(table, corrections).to_dict("list") == {
        "fname": ["b"],
        "labels": ["Bark,Purr"],
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"a.wav": "Bark", "ghost.wav": "remove"}',
            r"fnames not in the dataset \(1\).*ghost\.wav",
        ),
        ('{"a.wav": "Bark,Growl"}', r"unknown labels \(1\): 'Growl' \(a\.wav\)"),
        ('{"a.wav": ["Bark"]}', r"values must be 'remove' or a label string.*a\.wav"),
        ('["a.wav"]', "expected a JSON object"),
        ('{"a.wav": "Bark",', "not valid JSON"),
    ],
)
def test_validation_errors_name_the_file_and_the_culprits(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as error:
        load_corrections(path, VOCABULARY, known_fnames=["a.wav", "b.wav"])
    assert str(path) in str(error.value)


def write_training_tables(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    folds = pd.DataFrame(
        {"fname": ["c1.wav", "c2.wav"], "labels": ["Bark", "Meow"], "fold": [0, 1]}
    )
    folds["file_path"] = "train_curated/" + folds["fname"]
    folds.to_csv(data / "train_folds.csv", index=False)
    noisy = pd.DataFrame({"fname": ["n1.wav", "n2.wav", "n3.wav"], "labels": ["Bark"] * 3})
    noisy.to_csv(data / "train_noisy.csv", index=False)
    (data / "train_noisy").mkdir()
    for fname in noisy["fname"]:  # the noisy labels are read with a check that the audio exists
        (data / "train_noisy" / fname).touch()


@pytest.mark.parametrize(
    ("which", "content", "culprits"),
    [
        ("curated", {"c1.wav": "Purr", "n1.wav": "remove"}, ["n1.wav", "fnames not in"]),
        ("curated", {"c1.wav": "Woof"}, ["'Woof'", "c1.wav", "unknown labels"]),
        ("noisy", {"n1.wav": "Bark", "c1.wav": "remove"}, ["c1.wav", "fnames not in"]),
        ("noisy", {"n2.wav": "Meow,Hiss"}, ["'Hiss'", "n2.wav", "unknown labels"]),
    ],
)
def test_training_loader_rejects_bad_correction_files(which, content, culprits):
    paths = get_paths()
    write_training_tables(paths.save_dir)
    path = paths.corrections_dir / f"{which}.json"
    save_corrections(content, path)
    files = {which: path.name, "noisy_labels": "corrected"}
    with pytest.raises(ConfigError) as error:
        load_label_tables(paths, VOCABULARY, files, need_noisy=True)
    for text in [str(path), *culprits]:
        assert text in str(error.value)


def test_training_loader_names_a_missing_file_and_the_tool():
    paths = get_paths()
    write_training_tables(paths.save_dir)
    with pytest.raises(ConfigError, match=r"noisy_corrections\.json.*make_corrections\.py"):
        load_label_tables(paths, VOCABULARY, {"noisy": "noisy_corrections.json"}, True)


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


def test_label_scores_are_ranking_precisions_of_the_labels():
    probabilities = np.array([[0.9, 0.5, 0.1]] * 5)
    labels = ["Bark", "Meow", "Purr", "Bark,Purr", "Bark,Meow"]
    # Bark ranks 1st, Meow 2nd, Purr 3rd: a single label at rank r scores 1/r; two labels at
    # ranks 1 and 3 score (1/1 + 2/3) / 2; the top two classes score 1.
    expected = [1.0, 0.5, 1 / 3, (1 + 2 / 3) / 2, 1.0]
    assert label_scores(labels, probabilities, VOCABULARY) == pytest.approx(expected)


def test_top_predictions_rank_by_probability_with_ties_in_class_order():
    assert top_predictions(np.array([0.2, 0.7, 0.2]), VOCABULARY.classes, k=3) == [
        ("Meow", 0.7),
        ("Bark", 0.2),
        ("Purr", 0.2),
    ]


def test_score_clips_sorts_lowest_first_and_lists_predictions():
    table = pd.DataFrame(
        {"fname": ["a", "b", "c", "x"], "labels": ["Bark", "Purr", "Meow", "Bark"]}
    )
    probs = probs_frame(
        ["a", "b", "c"], [[0.9, 0.2, 0.1], [0.8, 0.6, 0.3], [0.1, 0.3, 0.2]], VOCABULARY.classes
    )
    scored = score_clips(table, probs, VOCABULARY, k=2)  # "x" has no prediction: left out
    assert scored["fname"].tolist() == ["b", "a", "c"]
    assert scored["score"].tolist() == pytest.approx([1 / 3, 1.0, 1.0])
    assert scored.loc[0, ["pred_1", "prob_1", "pred_2", "prob_2"]].tolist() == [
        "Bark",
        0.8,
        "Meow",
        0.6,
    ]
    assert lowest_scores(scored, count=2)["fname"].tolist() == ["b", "a"]
    assert lowest_scores(scored, max_score=0.5)["fname"].tolist() == ["b"]
    assert lowest_scores(scored, count=1, max_score=1.0)["fname"].tolist() == ["b"]


# --------------------------------------------------------------------------------------
# The review: save after every answer, resume
# --------------------------------------------------------------------------------------


def make_items(n: int = 4) -> list[ReviewItem]:
    return [
        ReviewItem(f"c{i}.wav", "Bark", 0.1 * i, [("Meow", 0.8), ("Purr", 0.4)]) for i in range(n)
    ]


class Script:
    """Scripted answers; before each one, records what the files on disk hold."""

    def __init__(self, answers, state_path: Path):
        self.answers = list(answers)
        self.state_path = state_path
        self.seen_decisions: list[int] = []
        self.output: list[str] = []

    def ask(self, prompt: str) -> str:
        state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else None
        self.seen_decisions.append(len(state["decisions"]) if state else 0)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)

    def say(self, text: str) -> None:
        self.output.append(text)


def test_review_saves_every_answer_and_resumes_where_it_stopped(tmp_path):
    out, state = tmp_path / "corrections.json", tmp_path / "review" / "review_state.json"
    save_corrections({"c3.wav": "Purr", "other.wav": REMOVE}, out)  # an earlier file
    known = [f"c{i}.wav" for i in range(4)] + ["other.wav"]
    session = ReviewSession(make_items(), VOCABULARY, out, state, known)
    # c0 keep; c1 replace: unknown name, then a name in lower case plus prediction number 2;
    # then quit at c2.
    script = Script(["k", "r", "Barkk", "bark,2", "q"], state)
    assert run_review(session, script.ask, script.say) is False
    # Each question is asked after the previous answer is on disk.
    assert script.seen_decisions == [0, 1, 1, 1, 2]
    assert any("unknown label 'Barkk' (did you mean Bark" in line for line in script.output)
    assert json.loads(out.read_text()) == {
        "c1.wav": "Bark,Purr",
        "c3.wav": "Purr",
        "other.wav": "remove",
    }
    decisions = json.loads(state.read_text())["decisions"]
    assert decisions == {
        "c0.wav": {"decision": "keep"},
        "c1.wav": {"decision": "relabel", "labels": "Bark,Purr"},
    }

    resumed = ReviewSession(make_items(), VOCABULARY, out, state, known)
    assert [item.fname for item in resumed.pending()] == ["c2.wav", "c3.wav"]
    script = Script(["s", "k"], state)  # skip c2; keep c3 deletes its earlier entry
    assert run_review(resumed, script.ask, script.say) is True
    assert any("in the file: Purr" in line for line in script.output)  # the existing entry
    assert json.loads(out.read_text()) == {"c1.wav": "Bark,Purr", "other.wav": "remove"}
    assert [item.fname for item in resumed.pending()] == ["c2.wav"]  # skipped comes back
    assert resumed.counts() == {"keep": 2, "relabel": 1, "remove": 0, "pending": 1}

    script = Script(["d"], state)
    run_review(ReviewSession(make_items(), VOCABULARY, out, state, known), script.ask, script.say)
    assert load_corrections(out, VOCABULARY, known) == {
        "c1.wav": "Bark,Purr",
        "c2.wav": "remove",
        "other.wav": "remove",
    }


def test_review_stops_cleanly_when_input_ends(tmp_path):
    out, state = tmp_path / "corrections.json", tmp_path / "state.json"
    session = ReviewSession(make_items(2), VOCABULARY, out, state)
    script = Script(["d"], state)  # one answer, then the input ends
    assert run_review(session, script.ask, script.say) is False
    assert json.loads(out.read_text()) == {"c0.wav": "remove"}
    assert "input ended" in script.output[-1]


def test_parse_labels_explains_what_is_wrong():
    predictions = [("Meow", 0.9)]
    assert parse_labels("purr, 1, Purr", VOCABULARY, predictions) == ("Purr,Meow", None)
    labels, problem = parse_labels("Mew,7", VOCABULARY, predictions)
    assert labels is None
    assert "unknown label 'Mew' (did you mean Meow?)" in problem
    assert "unknown label '7'" in problem
    assert parse_labels(" , ", VOCABULARY, predictions) == (None, "no labels given")


def test_review_state_with_bad_decisions_is_an_error(tmp_path):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"decisions": {"c0.wav": {"decision": "relabel", "labels": "X"}}}))
    with pytest.raises(ConfigError, match=r"state\.json: bad decisions for 1 clips.*c0\.wav"):
        ReviewSession(make_items(), VOCABULARY, tmp_path / "out.json", state)


def test_review_list_naming_clips_outside_the_dataset_is_an_error(tmp_path):
    known = ["c0.wav", "c1.wav", "c2.wav"]
    with pytest.raises(ConfigError, match=r"1 clips that are not in the dataset: \['c3\.wav'\]"):
        ReviewSession(make_items(), VOCABULARY, tmp_path / "o.json", tmp_path / "s.json", known)


def test_review_command_resumes_across_runs_with_piped_answers(cli):
    paths = get_paths()
    data = paths.save_dir
    data.mkdir(parents=True)
    pd.DataFrame(columns=["fname", *VOCABULARY.classes]).to_csv(
        data / "sample_submission.csv", index=False
    )
    pd.DataFrame({"fname": ["a.wav", "b.wav", "c.wav"], "labels": "Bark"}).to_csv(
        data / "train_curated.csv", index=False
    )
    scored = score_clips(
        pd.read_csv(data / "train_curated.csv"),
        probs_frame(["a.wav", "b.wav", "c.wav"], np.eye(3)[[1, 2, 0]], VOCABULARY.classes),
        VOCABULARY,
    )
    list_path = paths.corrections_dir / "review" / "review_list.csv"
    write_review_list(scored, list_path)
    assert pd.read_csv(list_path)["fname"].tolist() == ["a.wav", "b.wav", "c.wav"]

    first = cli("review", "--play", stdin="r\nMeow\nq\n")
    assert first.returncode == 0, first.stderr
    assert "audio playback is not available" in first.stdout or "[p]lay again" in first.stdout
    assert "1 still to review" not in first.stdout and "2 still to review" in first.stdout
    second = cli("review", stdin="d\nk\n")
    assert second.returncode == 0, second.stderr
    assert "2 of 3 clips to review" in second.stdout
    assert "review finished: kept 1, relabelled 1, removed 1, 0 still to review" in second.stdout
    corrections = json.loads((paths.corrections_dir / "corrections.json").read_text())
    assert corrections == {"a.wav": "Meow", "b.wav": "remove"}


def test_review_command_without_a_list_says_how_to_make_one(cli):
    result = cli("review")
    assert result.returncode == 1
    assert (
        "review list not found" in result.stderr and "make_corrections.py curated" in result.stderr
    )


# --------------------------------------------------------------------------------------
# Noisy selection
# --------------------------------------------------------------------------------------


def noisy_case():
    table = pd.DataFrame(
        {"fname": ["n1", "n2", "n3", "n4"], "labels": ["Bark", "Meow", "Purr", "Meow,Purr"]}
    )
    probs = probs_frame(
        ["n1", "n2", "n4"],
        [[0.9, 0.2, 0.1], [0.9, 0.6, 0.1], [0.2, 0.3, 0.4]],
        VOCABULARY.classes,
    )
    return table, probs  # scores: n1 1.0, n2 0.5, n3 none, n4 1.0


def test_noisy_selection_keeps_clips_at_or_above_the_threshold():
    table, probs = noisy_case()
    selection = select_noisy(table, probs, VOCABULARY, threshold=1.0)
    assert selection["score"].tolist()[:2] == pytest.approx([1.0, 0.5])
    assert np.isnan(selection["score"][2])
    assert selection_corrections(selection) == {
        "n1": "Bark",
        "n2": REMOVE,
        "n3": REMOVE,
        "n4": "Meow,Purr",
    }
    assert selection_summary(selection) == {
        "clips": 4,
        "kept": 2,
        "relabelled": 0,
        "removed": 2,
        "without_predictions": 1,
    }
    lower = select_noisy(table, probs, VOCABULARY, threshold=0.5)
    assert lower["kept"].tolist() == [True, True, False, True]


def test_noisy_relabel_uses_confident_predictions_and_at_least_the_top_one():
    table, probs = noisy_case()
    selection = select_noisy(
        table, probs, VOCABULARY, threshold=0.5, relabel=True, label_threshold=0.5
    )
    # n2 predicted Bark 0.9 and Meow 0.6 -> both; n4's best is Purr 0.4 < 0.5 -> Purr alone.
    assert selection_corrections(selection) == {
        "n1": "Bark",
        "n2": "Bark,Meow",
        "n3": REMOVE,
        "n4": "Purr",
    }
    assert selection["relabelled"].tolist() == [False, True, False, True]
    assert confident_labels(np.array([0.1, 0.3, 0.2]), VOCABULARY.classes, 0.9) == "Meow"
    with pytest.raises(ConfigError, match="threshold"):
        select_noisy(table, probs, VOCABULARY, threshold=1.5)


def test_noisy_file_feeds_training_with_exactly_the_kept_clips():
    paths = get_paths()
    write_training_tables(paths.save_dir)
    table = pd.read_csv(paths.save_dir / "train_noisy.csv")
    probs = probs_frame(
        table["fname"], [[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.8, 0.1, 0.1]], VOCABULARY.classes
    )
    selection = select_noisy(table, probs, VOCABULARY, threshold=1.0)
    save_corrections(selection_corrections(selection), paths.corrections_dir / "noisy.json")
    files = {"noisy": "noisy.json", "noisy_labels": "corrected"}
    tables = load_label_tables(paths, VOCABULARY, files, need_noisy=True)
    assert tables.noisy["fname"].tolist() == ["n1.wav", "n3.wav"]
    assert tables.corrected["fname"].tolist() == ["n1.wav", "n3.wav"]


# --------------------------------------------------------------------------------------
# End to end on a copy of the smoke tree
# --------------------------------------------------------------------------------------


def test_make_corrections_end_to_end_on_the_smoke_tree(cli, smoke_tree, tmp_path, monkeypatch):
    use_copy_of(smoke_tree, tmp_path / "data", monkeypatch)
    paths = get_paths()
    noisy_fnames = pd.read_csv(paths.train_noisy_csv)["fname"].tolist()

    result = cli("noisy", "--experiments", "auxiliary_016", "--no-progress")
    assert result.returncode == 0, result.stderr
    out = paths.corrections_dir / "noisy_corrections.json"
    corrections = json.loads(out.read_text())
    assert sorted(corrections) == sorted(noisy_fnames)  # every noisy clip is decided
    counts = count_entries(corrections)
    assert (
        f"noisy clips: {len(noisy_fnames)}; kept {counts['relabel']} (relabelled 0), "
        f"removed {counts['remove']}" in result.stdout
    )
    cached = paths.predictions_dir / "noisy" / "auxiliary_016" / "fold_4" / "probs.csv"
    stamp = cached.stat().st_mtime_ns
    again = cli(
        "noisy", "--experiments", "auxiliary_016", "--threshold", "0", "--relabel", "--out",
        str(tmp_path / "all.json"),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert cached.stat().st_mtime_ns == stamp  # the fold predictions came from the cache
    assert count_entries(json.loads((tmp_path / "all.json").read_text()))["remove"] == 0

    result = cli("curated", "--experiments", "auxiliary_016,auxiliary_019", "--count", "3")
    assert result.returncode == 0, result.stderr
    listed = pd.read_csv(paths.corrections_dir / "review" / "review_list.csv")
    assert len(listed) == 3 and listed["score"].is_monotonic_increasing
    assert listed["labels"].tolist() == [
        labels
        for fname in listed["fname"]
        for labels in pd.read_csv(paths.train_curated_csv).set_index("fname").loc[[fname], "labels"]
    ]
    for picture in listed["spectrogram"]:
        assert (paths.corrections_dir / "review" / picture).stat().st_size > 1000
