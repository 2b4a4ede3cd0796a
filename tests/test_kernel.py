"""Kaggle kernels: built from the repository, then run as Kaggle runs them, from a temporary
directory laid out like Kaggle's (<root>/kaggle/input/..., <root>/kaggle/working), with a plain
`python` whose sys.path does not hold the repository."""

from __future__ import annotations

import ast
import base64
import gzip
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.config import ConfigError
from src.experiments import STACKING
from src.kaggle.build import (
    DEFAULT_BLEND,
    DEFAULT_SINGLE,
    build_kernels,
    default_plans,
    package_weights,
)
from src.kaggle.estimate import Sample, extrapolate, report_lines
from src.kaggle.runtime import KernelPlan, Step, script_steps
from tests.helpers import (
    COMPETITION,
    REPO_ROOT,
    copy_tree,
    kaggle_env,
    kaggle_root,
    run_kernel,
)

CHECKPOINT = re.compile(r"^model-\d+-(-?\d+(?:\.\d+)?)\.pth$")


# --------------------------------------------------------------------------------------
# Fixtures: the kernels, the weights zip, /kaggle/input
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("build") / "kernel"
    plans = default_plans(device="cpu")
    return {plan.kind: path for plan, path in zip(plans, build_kernels(out, plans))}


@pytest.fixture(scope="module")
def weights_zip(smoke_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("weights") / "freesound-train.zip"
    return package_weights(smoke_tree / "experiments", STACKING, out).path


@pytest.fixture(scope="module")
def kaggle_input(smoke_tree, weights_zip, tmp_path_factory) -> Path:
    """/kaggle/input: the competition's test audio and sample submission, and the weights
    dataset as Kaggle mounts an uploaded zip (unpacked under the dataset's name)."""
    root = tmp_path_factory.mktemp("input")
    competition = root / COMPETITION
    shutil.copytree(smoke_tree / "test", competition / "test")
    shutil.copy(smoke_tree / "sample_submission.csv", competition)
    with zipfile.ZipFile(weights_zip) as archive:
        archive.extractall(root / "freesound-train")
    return root


def working_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "kaggle" / "working").iterdir())


def read_submission(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"fname": str})


def kernel_payload(kernel: Path) -> tuple[str, int, str]:
    """(hash, size, payload) from the final `main(...)` call of a kernel script."""
    tree = ast.parse(kernel.read_text())
    call = tree.body[-1].value
    assert isinstance(call, ast.Call) and call.func.id == "main"
    return tuple(arg.value for arg in call.args)


# --------------------------------------------------------------------------------------
# What a kernel carries
# --------------------------------------------------------------------------------------


def test_kernel_embeds_the_sources_scripts_and_argus_only(kernels, tmp_path):
    import argus

    sha, size, payload = kernel_payload(kernels["stacking"])
    assert hashlib.sha256(payload.encode()).hexdigest() == sha and len(payload) == size
    files = {}
    for line in payload.splitlines()[1:]:
        name, data = line.split(" ")
        files[name] = gzip.decompress(base64.b64decode(data))

    argus_dir = Path(argus.__file__).parent
    expected = {
        f"src/{p.relative_to(REPO_ROOT / 'src').as_posix()}": p
        for p in (REPO_ROOT / "src").rglob("*.py")
        if "__pycache__" not in p.parts and "templates" not in p.parts
    }
    expected |= {
        f"argus/{p.relative_to(argus_dir).as_posix()}": p
        for p in argus_dir.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    scripts = ["make_folds.py", "train_folds.py", "predict_folds.py", "blend_predict.py"]
    expected |= {name: REPO_ROOT / name for name in [*scripts, "stacking_predict.py"]}
    assert set(files) == set(expected)
    assert all(files[name] == path.read_bytes() for name, path in expected.items())
    # the three kernels carry the same sources, and a rebuild gives the same payload
    assert {kernel_payload(path)[0] for path in kernels.values()} == {sha}
    (rebuilt,) = build_kernels(tmp_path, [KernelPlan("stacking", STACKING)])
    assert kernel_payload(rebuilt)[0] == sha


def test_weights_zip_holds_the_best_checkpoint_of_each_fold(smoke_tree, weights_zip):
    experiments = smoke_tree / "experiments"
    first_level = json.loads((experiments / STACKING[0] / "params.json").read_text())["config"][
        "inputs"
    ]
    expected = set()
    for name in [*first_level, *STACKING]:
        expected.add(f"experiments/{name}/params.json")
        for fold in range(5):
            scored = [
                (float(m.group(1)), p.name)
                for p in (experiments / name / f"fold_{fold}").iterdir()
                if (m := CHECKPOINT.match(p.name))
            ]
            expected.add(f"experiments/{name}/fold_{fold}/{max(scored)[1]}")
    with zipfile.ZipFile(weights_zip) as archive:
        assert set(archive.namelist()) == expected
    assert len(expected) == 10 * 6


def test_packaging_names_what_is_missing(smoke_tree, tmp_path):
    experiments = copy_tree(smoke_tree / "experiments", tmp_path / "experiments")
    shutil.rmtree(experiments / "corr_noisy_004" / "fold_2")
    with pytest.raises(ConfigError, match=r"corr_noisy_004 \(no checkpoint for fold\(s\) 2\)"):
        package_weights(experiments, STACKING, tmp_path / "weights.zip")
    with pytest.raises(ConfigError, match=r"not_trained \(not trained\)"):
        package_weights(experiments, ["not_trained"], tmp_path / "weights.zip")
    assert not (tmp_path / "weights.zip").exists()


# --------------------------------------------------------------------------------------
# Running the kernels
# --------------------------------------------------------------------------------------


def test_stacking_kernel_reproduces_stacking_predict(
    kernels, kaggle_input, smoke_tree, tmp_path, monkeypatch
):
    root = kaggle_root(tmp_path / "kaggle_root", {p.name: p for p in kaggle_input.iterdir()})
    # The kernel's interpreter cannot see the repository.
    code = "import json, os, sys; print(json.dumps([os.path.realpath(p) for p in sys.path]))"
    probe = subprocess.run(
        [sys.executable, "-c", f"{code}; import src"],
        cwd=root / "kaggle" / "working",
        env=kaggle_env(root),
        capture_output=True,
        text=True,
    )
    assert "No module named 'src'" in probe.stderr
    repo = str(REPO_ROOT.resolve())
    assert repo not in json.loads(probe.stdout)

    result = run_kernel(kernels["stacking"], root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    working = root / "kaggle" / "working"
    sources = working / "kernel_sources"
    assert f"sources: {sources} (argus" in result.stdout
    assert f"from {sources / 'argus'})" in result.stdout
    assert re.search(r"^estimated total: \d+\.\d min \(Kaggle limit 60 min\)$", result.stdout, re.M)
    assert re.search(r"^elapsed: \d+\.\d min$", result.stdout, re.M)
    assert working_files(root) == ["submission.csv"]  # sources, cache, predictions removed
    kernel_submission = read_submission(working / "submission.csv")

    data = copy_tree(smoke_tree, tmp_path / "data")
    (data / "submission.csv").unlink(missing_ok=True)
    monkeypatch.setenv("FREESOUND_DATA_DIR", str(data))
    import stacking_predict

    assert stacking_predict.main(["--device", "cpu", "--no-progress"]) == 0
    local = read_submission(data / "submission.csv")
    assert list(kernel_submission.columns) == list(local.columns)
    assert kernel_submission["fname"].tolist() == local["fname"].tolist()
    difference = kernel_submission.iloc[:, 1:].to_numpy() - local.iloc[:, 1:].to_numpy()
    assert np.abs(difference).max() <= 1e-6


def test_single_and_blend_kernels_write_the_experiment_blends(
    kernels, kaggle_input, smoke_tree, tmp_path
):
    """The single kernel's submission is the experiment's fold blend predict_folds.py wrote
    locally; the blend kernel's is the geometric mean of three of them."""
    sample = read_submission(smoke_tree / "sample_submission.csv")

    def local_probs(name: str) -> np.ndarray:
        probs = read_submission(smoke_tree / "predictions" / name / "probs.csv")
        return probs.set_index("fname").loc[sample["fname"]].to_numpy()

    expected = {
        "single": local_probs(DEFAULT_SINGLE),
        "blend": np.exp(np.mean([np.log(local_probs(n)) for n in DEFAULT_BLEND], axis=0)),
    }
    for kind, values in expected.items():
        root = kaggle_root(tmp_path / kind, {p.name: p for p in kaggle_input.iterdir()})
        result = run_kernel(kernels[kind], root)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert working_files(root) == ["submission.csv"]
        submission = read_submission(root / "kaggle" / "working" / "submission.csv")
        assert list(submission.columns) == list(sample.columns)
        assert submission["fname"].tolist() == sample["fname"].tolist()
        predicted = submission.iloc[:, 1:].to_numpy()
        assert predicted.min() >= 0 and predicted.max() <= 1
        assert np.abs(predicted - values).max() <= 1e-6, kind


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_an_edited_kernel_refuses_to_run(kernels, tmp_path):
    text = kernels["single"].read_text()
    at = text.index("src/config.py ") + len("src/config.py ") + 40  # inside its base64
    replacement = "B" if text[at] != "B" else "C"
    edited = tmp_path / "edited.py"
    edited.write_text(text[:at] + replacement + text[at + 1 :])
    root = kaggle_root(tmp_path / "root", {})
    result = run_kernel(edited, root)
    assert result.returncode != 0
    assert (
        f"{kernels['single'].as_posix()} was edited or truncated: content hash mismatch"
        in result.stderr
    )
    assert "rebuild it with python build_kernel.py" in result.stderr
    assert working_files(root) == []  # nothing unpacked

    truncated = tmp_path / "truncated.py"
    truncated.write_text(text[: len(text) * 2 // 3])
    result = run_kernel(truncated, root)
    assert result.returncode != 0
    assert "this file was truncated: rebuild it with python build_kernel.py" in result.stderr
    assert working_files(root) == []


def test_missing_inputs_are_reported(kernels, kaggle_input, tmp_path):
    competition = kaggle_input / COMPETITION
    weights = kaggle_input / "freesound-train"

    # no weights dataset: the message lists what /kaggle/input holds
    root = kaggle_root(tmp_path / "no_weights", {COMPETITION: competition})
    result = run_kernel(kernels["single"], root)
    assert result.returncode == 1
    assert "no weights dataset found" in result.stderr
    assert f"{COMPETITION}/\n    sample_submission.csv\n    test/" in result.stderr
    assert working_files(root) == []

    # a fold of one of the stacking kernel's first-level inputs is missing
    broken = copy_tree(weights, tmp_path / "broken_weights")
    shutil.rmtree(broken / "experiments" / "corrections_003" / "fold_3")
    root = kaggle_root(tmp_path / "no_fold", {COMPETITION: competition, "freesound-train": broken})
    result = run_kernel(kernels["stacking"], root)
    assert result.returncode == 1
    assert "experiment corrections_003 fold 3: no checkpoint" in result.stderr
    assert working_files(root) == []

    # a test folder without audio
    empty = tmp_path / "empty_competition"
    (empty / "test").mkdir(parents=True)
    shutil.copy(competition / "sample_submission.csv", empty)
    root = kaggle_root(tmp_path / "no_audio", {COMPETITION: empty, "freesound-train": weights})
    result = run_kernel(kernels["single"], root)
    assert result.returncode == 1
    assert "the test folder holds no audio files" in result.stderr
    assert working_files(root) == []


def test_a_failing_step_leaves_nothing_to_submit(tmp_path, monkeypatch, capsys):
    """A step that fails after another wrote submission.csv: the kernel deletes it and its
    intermediate outputs, keeps what was there before, and fails with the step's status."""
    import src.kaggle.runtime as runtime

    root = kaggle_root(tmp_path, {})
    working = root / "kaggle" / "working"
    (working / "predictions").mkdir()  # not the kernel's: kept
    write = (
        f"import pathlib; w = pathlib.Path({str(working)!r}); "
        "(w / 'submission.csv').write_text('fname'); (w / 'cache').mkdir()"
    )
    steps = [
        Step(["-c", "raise SystemExit(5)"], "estimate", required=False),
        Step(["-c", write], "first script"),
        Step(["-c", "raise SystemExit(3)"], "second script"),
    ]
    monkeypatch.setattr(runtime, "kernel_steps", lambda plan, started: steps)
    monkeypatch.setattr(runtime, "check_predict_inputs", lambda plan, paths: {})
    monkeypatch.setenv("MODE", "predict")
    monkeypatch.setenv("FREESOUND_KAGGLE_ROOT", str(root))
    assert runtime.run_kernel(KernelPlan("single", ["x"]), time.time()) == 3
    out = capsys.readouterr()
    assert "warning: estimate failed (see above); the kernel goes on" in out.out
    assert "error: `second script` failed with exit status 3" in out.err
    assert working_files(root) == ["predictions"]


# --------------------------------------------------------------------------------------
# Parameters, steps and the time estimate
# --------------------------------------------------------------------------------------


def test_kernel_steps_follow_the_kind_and_mode():
    train = KernelPlan("single", ["corr_noisy_007"], mode="train", train_args=["--folds", "0"])
    assert script_steps(train) == [
        ["make_folds.py"],
        ["train_folds.py", "--experiment", "corr_noisy_007", "--no-progress", "--folds", "0"],
    ]
    blend = KernelPlan("blend", ["a", "b"], device="cuda", fill_undecodable=False)
    run = ["--device", "cuda", "--batch-size", "64", "--no-progress"]
    assert script_steps(blend) == [
        ["predict_folds.py", "--experiment", "a", *run],
        ["predict_folds.py", "--experiment", "b", *run],
        ["blend_predict.py", "--experiments", "a,b"],
    ]
    stacking = KernelPlan("stacking", ["s1", "s2"])
    assert script_steps(stacking) == [
        ["stacking_predict.py", "--experiments", "s1,s2", "--batch-size", "64", "--no-progress",
         "--fill-undecodable"]
    ]  # fmt: skip
    assert KernelPlan.from_parameters(stacking.to_parameters()) == stacking


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"kind": "blend", "experiments": ["a"]}, "at least two"),
        ({"kind": "single", "experiments": ["a", "b"]}, "exactly one"),
        ({"kind": "stacking", "experiments": ["s"], "mode": "train"}, "single-experiment"),
        ({"kind": "single", "experiments": ["a"], "seed": 1}, "unknown kernel parameter"),
    ],
)
def test_bad_kernel_parameters_are_refused(parameters, message):
    with pytest.raises(ConfigError, match=message):
        KernelPlan.from_parameters(parameters)


def test_time_estimate_scales_the_sample_by_audio_size():
    sample = Sample(
        clips=20,
        audio_bytes=2_000_000,
        spectrogram_seconds=4.0,
        load_seconds={"a": 1.0, "b": 2.0},
        forward_seconds={"a": 0.5, "b": 1.5},
    )
    estimate = extrapolate(
        sample,
        total_clips=200,
        total_bytes=20_000_000,
        folds=5,
        scripts=2,
        startup_seconds=3.0,
        workers=4,
        elapsed=30.0,
    )
    # x10 audio: spectrograms 4 * 10 / 4 workers; models 5 folds * (load + forward * 10)
    assert estimate.spectrograms == pytest.approx(10.0)
    assert estimate.models == pytest.approx(5 * (1 + 5) + 5 * (2 + 15))
    assert estimate.startup == pytest.approx(6.0)
    assert estimate.total == pytest.approx(30 + 6 + 10 + 115)
    lines = report_lines(estimate)
    assert lines[1] == "estimated total: 2.7 min (Kaggle limit 60 min)"
    assert not any(line.startswith("WARNING") for line in lines)

    late = extrapolate(sample, 200, 20_000_000, 5, 2, 3.0, 4, elapsed=3500.0)  # 3631 s
    lines = report_lines(late)
    assert lines[1] == "estimated total: 60.5 min (Kaggle limit 60 min)"
    assert lines[2].startswith("WARNING: the estimated total (60.5 min) exceeds the Kaggle limit")
