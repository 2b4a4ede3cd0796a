"""Class columns: a model's outputs are named by its own recorded
classes and matched to any other list by name; a class set that differs is one clear error."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import blend_predict
import predict_folds
import src.data.store as store_module
from src.config import ConfigError, get_paths, load_vocabulary
from src.data.labels import has_noisy_set, read_labels_csv
from src.data.store import find_test_files, get_store
from src.kaggle.runtime import KernelPlan, check_predict_inputs
from src.runs import DONE_FILE, class_order, read_oof_tiles
from src.training.command import train_command
from tests.helpers import copy_tree, tone, use_copy_of, write_wav

TRAIN = [
    "--experiment",
    "corrections_002",
    "--smoke",
    "--folds",
    "0",
    "--workers",
    "0",
    "--no-progress",
    "--device",
    "cpu",
    *("--set", "max_epochs=1", "--set", "epoch_size=32", "--set", "batch_size=8"),
    *("--set", "model.params.base_size=4"),
]
PREDICT = ["--experiment", "corrections_002", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def trained_tree(tiny_tree, tmp_path_factory) -> Path:
    """The tiny dataset with a tiny corrections_002 trained (fold 0, copied to folds 1-4: what
    is tested is naming the outputs, not training)."""
    data = copy_tree(tiny_tree, tmp_path_factory.mktemp("classes") / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FREESOUND_DATA_DIR", str(data))
        patch.delenv("MODE", raising=False)
        # Six-clip stores: a pool of decoding processes costs more than it saves.
        patch.setattr(store_module, "default_extraction_workers", lambda: 1)
        assert train_command(TRAIN, "", kind="cnn") == 0
        paths = get_paths()  # the copies reuse the test store (same names, sizes, mtimes)
        get_store("test", find_test_files(paths), paths.cache_dir, progress=False)
    experiment = data / "experiments" / "corrections_002"
    for fold in range(1, 5):
        shutil.copytree(experiment / "fold_0", experiment / f"fold_{fold}")
    return data


@pytest.fixture
def trained(trained_tree, tmp_path, monkeypatch) -> Path:
    return use_copy_of(trained_tree, tmp_path / "trained", monkeypatch)


def rewrite_header(path: Path, change) -> list[str]:
    """Apply `change` to the class columns of a CSV (every row alike); the new header."""
    rows = list(csv.reader(path.open()))
    order = change(list(range(1, len(rows[0]))))
    rows = [[row[0], *(row[i] for i in order)] for row in rows]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return rows[0]


def swap_two(columns: list[int]) -> list[int]:
    return [columns[1], columns[0], *columns[2:]]


def test_reordered_sample_submission_keeps_every_class_with_its_column(trained, capsys):
    paths = get_paths()
    assert predict_folds.main(PREDICT) == 0
    out = paths.prediction_dir("corrections_002")
    before = pd.read_csv(out / "probs.csv").set_index("fname")
    cv_before = json.loads((out / "val_lwlrap.json").read_text())
    header = rewrite_header(paths.sample_submission, swap_two)  # after training
    shutil.rmtree(paths.predictions_dir)  # computed afresh under the new column order
    assert predict_folds.main(PREDICT) == 0
    after = pd.read_csv(out / "probs.csv").set_index("fname")
    pd.testing.assert_frame_equal(after[before.columns], before)  # by class name
    cv_after = json.loads((out / "val_lwlrap.json").read_text())
    assert cv_after == cv_before
    # Reused predictions and the submission: the sample's columns, each class's own values.
    assert predict_folds.main(PREDICT) == 0
    assert blend_predict.main(["--experiments", "corrections_002"]) == 0
    submission = pd.read_csv(paths.submission)
    assert list(submission.columns) == header
    pd.testing.assert_frame_equal(submission.set_index("fname")[before.columns], before)


def test_a_different_class_set_is_one_error_naming_missing_and_extra(trained, capsys):
    paths = get_paths()
    sample = pd.read_csv(paths.sample_submission)
    dropped = list(sample.columns[1:3])
    # Two classes out, one unknown class in: 5 columns against 6 trained classes.
    sample.drop(columns=dropped).assign(Zither=0).to_csv(paths.sample_submission, index=False)
    assert predict_folds.main(PREDICT) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert "params.json has 6 classes" in error and "sample_submission.csv 5" in error
    assert f"missing (in {paths.sample_submission} only): ['Zither']" in error
    assert f"only): {dropped}" in error
    assert not paths.prediction_dir("corrections_002").exists()  # checked before any work


def test_outputs_that_do_not_match_the_recorded_classes_are_refused(trained, capsys):
    """An 80-class record (and sample submission) for a 6-output checkpoint."""
    paths = get_paths()
    params = paths.experiment_dir("corrections_002") / "params.json"
    record = json.loads(params.read_text())
    record["classes"] = [f"c{i}" for i in range(80)]
    params.write_text(json.dumps(record))
    sample = pd.read_csv(paths.sample_submission)[["fname"]]
    sample.assign(**dict.fromkeys(record["classes"], 0)).to_csv(
        paths.sample_submission, index=False
    )
    assert predict_folds.main(PREDICT) == 1
    error = capsys.readouterr().err.strip()
    assert "Traceback" not in error and error.startswith("error: ")
    assert "model-" in error and "6 outputs, but" in error and "records 80 classes" in error


def test_class_order_matches_by_name():
    assert class_order(["b", "a", "c"], ["a", "b", "c"], "x", "y").tolist() == [1, 0, 2]
    outputs = np.array([[0.2, 0.1, 0.3]])  # named b, a, c
    assert outputs[:, class_order(["b", "a", "c"], ["a", "b", "c"], "x", "y")].tolist() == [
        [0.1, 0.2, 0.3]
    ]
    with pytest.raises(ConfigError, match=r"missing \(in y only\): \['d'\]; extra \(in x only\)"):
        class_order(["a", "b"], ["a", "d"], "x", "y")


def test_stacking_inputs_are_matched_by_name(tmp_path):
    """The .npy tiles are in the model's order; done.json says which: the stacking input is
    put in the asked order."""
    folder = tmp_path / "exp" / "fold_0" / "val"
    folder.mkdir(parents=True)
    np.save(folder / "x.wav.npy", np.array([[0.9, 0.1]], dtype=np.float32))  # b, a
    (folder / DONE_FILE).write_text(json.dumps({"classes": ["b", "a"]}))
    (inputs,) = read_oof_tiles(tmp_path, ["exp"], ["x.wav"], [0], ["a", "b"])
    assert inputs.tolist() == [[pytest.approx(0.1), pytest.approx(0.9)]]
    with pytest.raises(ConfigError, match=r"missing .*\['c'\]"):
        read_oof_tiles(tmp_path, ["exp"], ["x.wav"], [0], ["a", "c"])


def test_byte_order_marks_are_accepted(tmp_path):
    """Spreadsheets save CSVs with a UTF-8 byte-order mark."""
    paths = get_paths()
    paths.input_dir.mkdir(parents=True)
    bom = "\ufeff"
    paths.sample_submission.write_text(f"{bom}fname,a,b\nx.wav,0,0\n", encoding="utf-8")
    paths.train_curated_csv.write_text(f'{bom}fname,labels\nx.wav,"a,b"\n', encoding="utf-8")
    paths.train_noisy_csv.write_text(f"{bom}fname,labels\ny.wav,b\n", encoding="utf-8")
    vocabulary = load_vocabulary(paths)
    assert vocabulary.classes == ("a", "b")
    assert read_labels_csv(paths.train_curated_csv, vocabulary)["fname"].tolist() == ["x.wav"]
    assert read_labels_csv(paths.train_noisy_csv, vocabulary)["labels"].tolist() == ["b"]
    assert has_noisy_set(paths)


# --------------------------------------------------------------------------------------
# The prediction cache (item 2): keyed by what shapes the predictions
# --------------------------------------------------------------------------------------

FOLD_0 = [*PREDICT, "--folds", "0"]


def said(capsys) -> str:
    output = capsys.readouterr()
    return output.out + output.err


def fold_0_test(paths) -> Path:
    return paths.prediction_dir("corrections_002") / "fold_0" / "test"


def test_a_renamed_test_clip_is_predicted_again(trained, capsys):
    paths = get_paths()
    assert predict_folds.main(FOLD_0) == 0
    assert "fold 0 test: predicting into" in said(capsys)
    assert predict_folds.main(FOLD_0) == 0
    assert "fold 0 test: reusing" in said(capsys)
    first = pd.read_csv(fold_0_test(paths) / "probs.csv")

    # A test clip renamed: its predictions come under the new name, the old name's are gone.
    old = first["fname"][0]
    (paths.test_dir / old).rename(paths.test_dir / "renamed.wav")
    assert predict_folds.main(FOLD_0) == 0
    assert "fold 0 test: predicting into" in said(capsys)
    renamed = pd.read_csv(fold_0_test(paths) / "probs.csv")
    assert "renamed.wav" in set(renamed["fname"]) and old not in set(renamed["fname"])
    assert (fold_0_test(paths) / "renamed.wav.npy").is_file()
    assert not (fold_0_test(paths) / f"{old}.npy").exists()
    same = renamed.set_index("fname").drop(index="renamed.wav")
    pd.testing.assert_frame_equal(same, first.set_index("fname").loc[same.index])


def test_a_replaced_checkpoint_is_predicted_again(trained, capsys):
    """Another checkpoint under the same name (a copy, a retrained fold): predicted again."""
    paths = get_paths()
    assert predict_folds.main(FOLD_0) == 0
    before = pd.read_csv(fold_0_test(paths) / "probs.csv")
    (checkpoint,) = (paths.experiment_dir("corrections_002") / "fold_0").glob("model-*.pth")
    state = torch.load(checkpoint, weights_only=True)
    for name, tensor in state["nn_state_dict"].items():
        if tensor.is_floating_point() and name.endswith("weight"):
            tensor.mul_(1.5)
    torch.save(state, checkpoint)
    assert predict_folds.main(FOLD_0) == 0
    assert "fold 0 test: predicting into" in said(capsys)
    replaced = pd.read_csv(fold_0_test(paths) / "probs.csv")
    assert replaced["fname"].tolist() == before["fname"].tolist()
    assert np.abs(replaced.iloc[:, 1:].to_numpy() - before.iloc[:, 1:].to_numpy()).max() > 1e-4
    done = json.loads((fold_0_test(paths) / DONE_FILE).read_text())
    assert done["checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()


def test_the_kernel_checks_classes_by_the_same_rule(tmp_path, monkeypatch):
    root = tmp_path / "root"
    competition = root / "kaggle" / "input" / "freesound-audio-tagging-2019"
    write_wav(competition / "test" / "x.wav", tone(0.5))
    experiment = root / "kaggle" / "input" / "freesound-train" / "experiments" / "exp"
    for fold in range(5):
        (experiment / f"fold_{fold}").mkdir(parents=True)
        (experiment / f"fold_{fold}" / "model-000-0.500000.pth").write_bytes(b"")
    (experiment / "params.json").write_text(json.dumps({"config": {}, "classes": ["a", "b"]}))
    monkeypatch.setenv("MODE", "predict")
    monkeypatch.setenv("FREESOUND_KAGGLE_ROOT", str(root))
    sample = competition / "sample_submission.csv"
    sample.write_text("fname,b,a\nx.wav,0,0\n")  # another order: matched by name
    assert len(check_predict_inputs(KernelPlan("single", ["exp"]), get_paths())["exp"]) == 5
    sample.write_text("fname,b,c\nx.wav,0,0\n")
    with pytest.raises(ConfigError, match=r"missing \(in .*sample_submission.csv only\): \['c'\]"):
        check_predict_inputs(KernelPlan("single", ["exp"]), get_paths())
