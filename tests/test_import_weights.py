"""import_weights.py on checkpoints in the original solution's exact format.

The fixtures (small widths, random weights, reference logits of the original classes) live in
../shared/data/original-checkpoints/; the tests skip when it is absent and never copy it into
the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from src.config import FAT2019_CLASSES, Vocabulary
from src.prediction.tiling import load_checkpoint
from src.runs import best_checkpoint
from src.tools.import_weights import import_source
from tests.helpers import REPO_ROOT

ORIGINAL = Path(
    os.environ.get(
        "FREESOUND_ORIGINAL_CHECKPOINTS", REPO_ROOT.parent / "shared/data/original-checkpoints"
    )
)
VOCABULARY = Vocabulary(FAT2019_CLASSES)
RNN_FOLD = "corr_noisy_003/fold_0/model-042-0.871234.pth"


@pytest.fixture(scope="module")
def original() -> Path:
    if not (ORIGINAL / "manifest.json").is_file():
        pytest.skip(f"original-format checkpoints not found at {ORIGINAL}")
    return ORIGINAL


@pytest.fixture(scope="module")
def manifest(original) -> dict:
    return json.loads((original / "manifest.json").read_text())


@pytest.fixture(scope="module")
def imported(original, tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("imported") / "experiments"
    return out, import_source(original / "experiments", out, VOCABULARY)


def one_experiment(original: Path, tmp_path: Path, relative: str) -> Path:
    """A source folder holding a copy of one fixture experiment; returns the copied file."""
    experiment = relative.split("/")[0]
    shutil.copytree(original / "experiments" / experiment, tmp_path / "src" / experiment)
    return tmp_path / "src" / relative


def save_legacy(checkpoint: dict, path: Path) -> None:
    """As the original's torch wrote it: the legacy (non-zip) serialisation."""
    path.chmod(0o644)
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)


def test_all_experiments_import(imported, manifest):
    out, results = imported
    assert [r.experiment for r in results] == sorted(manifest["experiments"])
    assert all(r.error is None and r.folds == [0] for r in results), results
    for name, entry in manifest["experiments"].items():
        result = next(r for r in results if r.experiment == name)
        assert result.architecture == entry["nn_module"]
        params = json.loads((out / name / "params.json").read_text())
        assert params["classes"] == list(FAT2019_CLASSES)
        assert params["source"]["original_params"]["nn_module"][0] == entry["nn_module"]
        # The checkpoint's widths, not the registry's (base_size 8/16 here, 64/512 there).
        assert params["config"]["model"]["params"]["base_size"] in (8, 16)
        assert (out / name / "fold_0" / "finished.json").is_file()
    assert not list(out.parent.glob(".*")), "staging folders left behind"


def test_imported_checkpoints_reproduce_the_original_logits(imported, manifest, original):
    out, _ = imported
    for name, entry in manifest["experiments"].items():
        checkpoint = best_checkpoint(out / name / "fold_0")[0]
        raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
        assert all(v.dtype != torch.float16 for v in raw["nn_state_dict"].values())
        model = load_checkpoint(checkpoint, "cpu")
        x = torch.from_numpy(np.load(original / entry.get("input", manifest["input"])))
        with torch.no_grad():
            output = model.get_nn_module().eval()(x)
        outputs = output if isinstance(output, tuple) else (output,)
        got = np.stack([o.numpy() for o in outputs])
        expected = np.load(original / entry["expected"])
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0, err_msg=name)
        # The pipeline's own predict path: float32 probabilities of the main output.
        probabilities = model.predict(x)
        assert probabilities.dtype == torch.float32
        np.testing.assert_allclose(
            probabilities.numpy(), 1 / (1 + np.exp(-expected[0])), atol=1e-5, err_msg=name
        )


def test_truncated_file_fails_and_writes_nothing(original, tmp_path):
    path = one_experiment(original, tmp_path, RNN_FOLD)
    data = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "experiments"
    [result] = import_source(tmp_path / "src", out, VOCABULARY)
    assert "cannot read (truncated or corrupt file?)" in result.error
    assert "corr_noisy_003" in result.error
    assert not (out / "corr_noisy_003").exists()
    assert not out.exists() or not any(out.iterdir())


def test_unknown_architecture_fails_and_writes_nothing(original, tmp_path):
    path = one_experiment(original, tmp_path, RNN_FOLD)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["params"]["nn_module"] = ("ResNeXtAttention", checkpoint["params"]["nn_module"][1])
    save_legacy(checkpoint, path)
    out = tmp_path / "experiments"
    [result] = import_source(tmp_path / "src", out, VOCABULARY)
    assert "unknown architecture 'ResNeXtAttention'" in result.error
    assert not out.exists() or not any(out.iterdir())


def test_renamed_key_fails_and_writes_nothing(original, tmp_path):
    path = one_experiment(original, tmp_path, RNN_FOLD)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint["nn_state_dict"]
    state["rnn.gru.weight_ih_l0"] = state.pop("rnn.rnn.weight_ih_l0")
    save_legacy(checkpoint, path)
    out = tmp_path / "experiments"
    [result] = import_source(tmp_path / "src", out, VOCABULARY)
    assert "does not load" in result.error
    assert "rnn.gru.weight_ih_l0" in result.error and "lstm.rnn.weight_ih_l0" in result.error
    assert not out.exists() or not any(out.iterdir())


def test_interrupted_write_leaves_nothing(original, tmp_path, monkeypatch):
    path = one_experiment(original, tmp_path, RNN_FOLD)
    (path.parent.parent / "fold_1").mkdir()
    (path.parent.parent / "fold_1" / path.name).symlink_to(path)
    saves, real_save = [], torch.save

    def failing_save(obj, file):
        saves.append(file)
        if len(saves) == 2:
            raise KeyboardInterrupt  # killed while writing fold 1
        real_save(obj, file)

    monkeypatch.setattr("src.tools.import_weights.torch.save", failing_save)
    out = tmp_path / "experiments"
    with pytest.raises(KeyboardInterrupt):
        import_source(tmp_path / "src", out, VOCABULARY)
    assert len(saves) == 2 and saves[0].parent.name == "fold_0"  # fold 0 had been written
    assert not any(out.iterdir())
    assert not list(tmp_path.glob(".import-*"))


def test_unmappable_fcnet_key_and_class_count(original, tmp_path):
    relative = "stacking_008_fcnet_43040/fold_0/model-017-0.905678.pth"
    path = one_experiment(original, tmp_path, relative)
    out = tmp_path / "experiments"
    [result] = import_source(tmp_path / "src", out, Vocabulary(FAT2019_CLASSES[:6]))
    assert "80 classes, but the vocabulary has 6" in result.error
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["nn_state_dict"]["gate.weight"] = checkpoint["nn_state_dict"].pop("relu1.weight")
    save_legacy(checkpoint, path)
    [result] = import_source(tmp_path / "src", out, VOCABULARY)
    assert "cannot map key 'gate.weight' of FCNet" in result.error
    assert not out.exists() or not any(out.iterdir())


def test_cli_from_zip_refuses_overwrite_without_force(original, tmp_path, capsys):
    """A rerun on what is already imported from the same files says so with status 0 and
    touches nothing; another source for the same names needs --force."""
    import import_weights

    archive = tmp_path / "experiments.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name in ("corrections_002", "stacking_008_fcnet_50013"):
            for path in (original / "experiments" / name).rglob("*.pth"):
                handle.write(path, Path("experiments") / path.relative_to(original / "experiments"))
    out = tmp_path / "experiments"
    args = [str(archive), "--out", str(out)]

    assert import_weights.main(args) == 0
    printed = capsys.readouterr()
    assert "corrections_002" in printed.out and "SkipAttention" in printed.out
    assert "2 experiment(s) imported" in printed.out
    marker = out / "corrections_002" / "mine.txt"
    marker.write_text("kept")
    assert import_weights.main(args) == 0
    printed = capsys.readouterr()
    assert "0 experiment(s) imported, 2 already imported" in printed.out, printed
    assert "already imported" in printed.out.splitlines()[2] and not printed.err
    assert marker.is_file()
    unpacked = [
        str(original / "experiments"),
        "--out",
        str(out),
        "--experiments",
        "corrections_002",
    ]
    assert import_weights.main(unpacked) == 1
    assert "already exists (not imported from these files); use --force" in capsys.readouterr().err
    assert marker.is_file()
    assert import_weights.main([*args, "--force"]) == 0
    assert not marker.exists()
    assert best_checkpoint(out / "corrections_002" / "fold_0") is not None


def test_a_data_directory_of_other_classes_is_refused_with_a_command_that_runs(
    original, tmp_path, capsys, monkeypatch
):
    """The released networks predict FAT2019's 80 classes: a data directory of one's own sounds
    (its sample_submission.csv) gets one line and nothing written, and the command in that line
    imports them into a directory of their own, from where --init-from takes them."""
    import shlex

    import import_weights
    import src.cli

    mine = tmp_path / "mine"
    mine.mkdir()
    pd.DataFrame(columns=["fname", "Bark", "my_door"]).to_csv(
        mine / "sample_submission.csv", index=False
    )
    monkeypatch.setattr(import_weights, "REPO_ROOT", tmp_path / "repo")
    monkeypatch.setattr(src.cli, "_data_dir_option", None)
    monkeypatch.setenv("FREESOUND_DATA_DIR", str(mine))
    source = original / "experiments"

    assert import_weights.main([str(source), "--experiments", "corrections_002"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f"{mine} has 2 classes of its own" in err and "FAT2019's 80" in err
    assert not (mine / "experiments").exists()
    command = shlex.split(err.split("`")[1])
    assert command[:2] == ["python", "import_weights.py"]
    assert import_weights.main(command[2:]) == 0
    released = tmp_path / "repo" / "data" / "experiments"
    assert f"--init-from {released}/EXPERIMENT" in err
    assert best_checkpoint(released / "corrections_002" / "fold_0") is not None


# ----------------------------------------------------------------------------------------------
# The imported tree drives the pipeline's prediction scripts
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ensemble_data(original, tmp_path_factory) -> Path:
    """A data directory with a few synthetic test clips of the 80 classes and the fixture
    experiments imported with five folds (fold 0 copied: the released zip has five)."""
    from src.data.synthetic_dataset import generate_dataset

    base = tmp_path_factory.mktemp("ensemble")
    source = base / "released" / "experiments"
    for experiment in (original / "experiments").iterdir():
        checkpoint = next((experiment / "fold_0").glob("model-*.pth"))
        for fold in range(5):
            (source / experiment.name / f"fold_{fold}").mkdir(parents=True)
            (source / experiment.name / f"fold_{fold}" / checkpoint.name).symlink_to(checkpoint)
    data = base / "data"
    generate_dataset(
        data,
        curated_per_class=1,
        noisy_per_class=0,
        n_test=3,
        max_seconds=2.0,
        progress=False,
    )
    results = import_source(source, data / "experiments", VOCABULARY)
    assert all(r.error is None and r.folds == [0, 1, 2, 3, 4] for r in results)
    return data


def run_script(data: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FREESOUND_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args, "--device", "cpu", "--no-progress"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_tag_audio_ensemble_on_imported_weights(ensemble_data, tmp_path):
    clips = sorted((ensemble_data / "test").glob("*.wav"))
    out = tmp_path / "tags.csv"
    result = run_script(
        ensemble_data, "tag_audio.py", str(clips[0]), "--ensemble", "--csv", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "stacking ensemble (10 experiments)" in result.stdout + result.stderr
    frame = pd.read_csv(out)
    assert list(frame.columns[1:]) == list(FAT2019_CLASSES)
    values = frame.iloc[:, 1:].to_numpy()
    assert np.isfinite(values).all() and ((values > 0) & (values < 1)).all()


def test_stacking_predict_on_imported_weights(ensemble_data):
    without_oof = run_script(ensemble_data, "stacking_predict.py")
    assert without_oof.returncode != 0
    assert "out-of-fold predictions of 'auxiliary_016' fold 0 are missing" in without_oof.stderr
    assert "--no-oof" in without_oof.stderr
    result = run_script(ensemble_data, "stacking_predict.py", "--no-oof")
    assert result.returncode == 0, result.stderr
    submission = pd.read_csv(ensemble_data / "submission.csv")
    sample = pd.read_csv(ensemble_data / "sample_submission.csv")
    assert list(submission.columns) == list(sample.columns)
    assert len(submission) == len(sample) == 3


def test_package_weights_takes_the_imported_experiments(ensemble_data, tmp_path, monkeypatch):
    import package_weights

    monkeypatch.setenv("FREESOUND_DATA_DIR", str(ensemble_data))
    out = tmp_path / "freesound-train.zip"
    assert package_weights.main(["--out", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
    assert sum(name.endswith(".pth") for name in names) == 50  # 10 experiments x 5 folds
    assert "experiments/corr_noisy_003/params.json" in names


def test_predict_folds_on_imported_weights(ensemble_data, tmp_path):
    """Out-of-fold + test predictions of an imported experiment (the RNN one), after
    make_folds.py, on a copy of the data directory."""
    data = tmp_path / "data"
    shutil.copytree(ensemble_data, data, symlinks=True)
    env = {**os.environ, "FREESOUND_DATA_DIR": str(data)}
    subprocess.run(
        [sys.executable, "make_folds.py"], cwd=REPO_ROOT, env=env, check=True, capture_output=True
    )
    result = run_script(data, "predict_folds.py", "--experiment", "corr_noisy_003")
    assert result.returncode == 0, result.stderr
    assert "corr_noisy_003: out-of-fold lwlrap" in result.stdout
    probs = pd.read_csv(data / "predictions" / "corr_noisy_003" / "probs.csv")
    assert list(probs.columns[1:]) == list(FAT2019_CLASSES) and len(probs) == 3
