"""Messages that lead somewhere, as a new user meets them: every command a message suggests
parses with its script's own parser and gets past the error it answers (or runs); unknown
names get a did-you-mean; a device this machine lacks, a file of the wrong kind, a refused
configuration are one line; partial imports are used with --folds or refused with what needs
all five folds; --no-progress is quiet; ensemble_pipeline.sh passes own-data options on."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from src.config import FAT2019_CLASSES, Vocabulary
from tests.helpers import REPO_ROOT, tone, write_wav
from tests.test_clean_errors import one_error_line
from tests.test_cli_convention import script_module

ORIGINAL = REPO_ROOT.parent / "shared" / "data" / "original-checkpoints"


def run(data: Path | None, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if data is not None:
        environment["FREESOUND_DATA_DIR"] = str(data)
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def suggested(text: str) -> list[str]:
    """The commands a message suggests: its `python ...` spans."""
    return [c for c in re.findall(r"`([^`]+)`", text) if re.search(r"\bpython \S+\.py", c)]


def parse_suggestion(command: str):
    """(script, its parsed arguments, environment assignments) of a suggested command,
    parsed by the script's own build_parser(): what running it would parse."""
    words = shlex.split(command)
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    assert words[0] == "python", command
    script, argv = words[1], words[2:]
    assert (REPO_ROOT / script).is_file(), command
    return script, script_module(script).build_parser().parse_args(argv), env


@pytest.fixture(scope="module")
def partial_import(tmp_path_factory) -> Path:
    """A data directory with a few synthetic test clips of the 80 classes and the
    original-format fixture experiments imported as they come: fold 0 only."""
    if not (ORIGINAL / "experiments").is_dir():
        pytest.skip(f"original-format checkpoints not found at {ORIGINAL}")
    from src.data.synthetic_dataset import generate_dataset
    from src.tools.import_weights import import_source

    data = tmp_path_factory.mktemp("partial") / "data"
    generate_dataset(
        data, curated_per_class=1, noisy_per_class=0, n_test=3, max_seconds=2.0, progress=False
    )
    results = import_source(
        ORIGINAL / "experiments", data / "experiments", Vocabulary(FAT2019_CLASSES)
    )
    assert all(r.error is None and r.folds == [0] for r in results)
    assert run(data, "make_folds.py").returncode == 0
    return data


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("clip") / "tone.wav", tone(2.0))


# --------------------------------------------------------------------------------------
# Item: hints that run as printed
# --------------------------------------------------------------------------------------


def test_a_partial_import_points_to_folds_and_the_right_training_script(partial_import):
    refused = run(partial_import, "stacking_predict.py", "--no-oof", "--no-progress")
    line = one_error_line(refused)
    assert "pass --folds 0" in line
    (command,) = suggested(line)
    script, args, _ = parse_suggestion(command)
    assert script == "stacking_train.py" and args.folds == "1,2,3,4"
    # The suggested training gets past "is not a cnn experiment": it asks for what it needs.
    trained = run(partial_import, *shlex.split(command)[1:], "--device", "cpu")
    assert "is not a" not in trained.stderr
    line = one_error_line(trained)
    assert "out-of-fold predictions of 'auxiliary_016' fold 0 are missing" in line
    commands = [parse_suggestion(c)[:2] for c in suggested(line)]
    assert [script for script, _ in commands] == ["train_folds.py", "predict_folds.py"]
    assert commands[0][1].folds == "1,2,3,4" and commands[1][1].experiment == "auxiliary_016"

    used = run(partial_import, "stacking_predict.py", "--no-oof", "--folds", "0", "--no-progress")
    assert used.returncode == 0, used.stderr
    assert "Warning" not in used.stderr  # no library warning (read-only arrays)
    submission = pd.read_csv(partial_import / "submission.csv")
    assert len(submission) == 3 and list(submission.columns[1:]) == list(FAT2019_CLASSES)


def test_the_ensemble_tags_with_the_folds_of_a_partial_import(partial_import, clip):
    refused = run(partial_import, "tag_audio.py", str(clip), "--ensemble", "--no-progress")
    line = one_error_line(refused)
    assert "pass --folds 0" in line
    script, args, _ = parse_suggestion(suggested(line)[0])
    assert script == "train_folds.py" and args.folds == "1,2,3,4"
    tagged = run(partial_import, "tag_audio.py", str(clip), "--ensemble", "--folds", "0")
    assert tagged.returncode == 0, tagged.stderr
    assert tagged.stdout.startswith(str(clip))


def test_what_needs_all_five_folds_says_so_in_one_line(partial_import, tmp_path):
    packaged = run(partial_import, "package_weights.py", "--out", str(tmp_path / "w.zip"))
    line = one_error_line(packaged)
    assert (
        "five fold models" in line and "corr_noisy_007 (no checkpoint for fold(s) 1,2,3,4)" in line
    )
    assert not (tmp_path / "w.zip").exists()
    built = run(partial_import, "build_kernel.py", "--out", str(tmp_path / "kernel"))
    line = one_error_line(built)
    assert "not trained in" in line and "--kernels" in line
    assert not (tmp_path / "kernel").exists()
    # A train-mode single kernel needs no weights: what the message offers builds.
    single = ["--kernels", "single", "--mode", "train"]
    built = run(partial_import, "build_kernel.py", "--out", str(tmp_path / "kernel"), *single)
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "kernel" / "single_kernel.py").is_file()


def test_build_kernel_refuses_an_untrained_experiment(tmp_path):
    built = run(tmp_path / "data", "build_kernel.py", "--out", str(tmp_path / "k"))
    line = one_error_line(built)
    assert "corr_noisy_007 (not trained)" in line and "stacking_008_fcnet_43040" in line
    assert not (tmp_path / "k").exists()


def test_a_missing_data_directory_says_how_to_make_one(tmp_path):
    missing = tmp_path / "nope"
    result = run(missing, "train_folds.py", "--experiment", "corr_noisy_007", "--smoke")
    line = one_error_line(result)
    assert f"the data directory {missing} does not exist" in line
    commands = {parse_suggestion(c)[0]: parse_suggestion(c)[1] for c in suggested(line)}
    assert set(commands) == {
        "make_dataset.py",
        "make_synthetic.py",
        "make_folds.py",
        "import_weights.py",
    }
    assert commands["make_synthetic.py"].out == str(missing)
    assert commands["make_dataset.py"].out == str(missing)
    assert not missing.exists()  # nothing written


def test_no_trained_model_mentions_the_weights_and_the_data_directory(tmp_path, clip):
    result = run(tmp_path / "empty", "tag_audio.py", str(clip))
    line = one_error_line(result)
    assert "data directory" in line and "--data-dir" in line
    scripts = [parse_suggestion(c)[0] for c in suggested(line)]
    assert scripts == ["import_weights.py", "train_folds.py"]
    _, args, _ = parse_suggestion(suggested(line)[1])
    assert args.scale == "cpu" and args.experiment == "corr_noisy_007"


def test_a_hint_for_an_experiment_from_a_file_names_the_file(tiny_data, tmp_path):
    spec = tmp_path / "my_exp.json"
    spec.write_text(json.dumps({"base": "corr_noisy_003", "epoch_size": 32}))
    train = ["train_folds.py", "--experiment", str(spec), "--smoke", "--folds", "0"]
    train += ["--set", "max_epochs=1", "--set", "batch_size=8", "--workers", "0"]
    trained = run(None, *train, "--device", "cpu", "--no-progress")
    assert trained.returncode == 0, trained.stderr
    # Quiet means quiet: no bar (the log-mel extraction's included), no library warning.
    assert "log-mel" not in trained.stderr + trained.stdout
    assert "it/s" not in trained.stderr and "Warning" not in trained.stderr

    refused = run(None, "predict_folds.py", "--experiment", "my_exp", "--device", "cpu")
    line = one_error_line(refused)
    assert "pass --folds 0" in line
    script, args, _ = parse_suggestion(suggested(line)[0])
    assert script == "train_folds.py" and args.experiment == str(spec.resolve())
    from src.experiment_files import load_experiment

    assert load_experiment(args.experiment, scale="smoke")["name"] == "my_exp"  # not 'unknown'


# --------------------------------------------------------------------------------------
# Item: unknown names, devices, wrong kinds of file, configurations
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["tag_audio.py", "CLIP", "--experiment", "corr_noisy_07", "--device", "cpu"],
        ["predict_folds.py", "--experiment", "corr_noisy_07", "--device", "cpu"],
        ["train_folds.py", "--experiment", "corr_noisy_07", "--smoke", "--device", "cpu"],
        ["demo.py", "--experiment", "corr_noisy_07", "--input", "CLIP", "--headless"],
        ["blend_predict.py", "--experiments", "corr_noisy_003,corr_noisy_07"],
    ],
    ids=lambda command: command[0],
)
def test_an_unknown_experiment_gets_a_did_you_mean(tiny_data, clip, command):
    result = run(None, *[str(clip) if w == "CLIP" else w for w in command])
    line = one_error_line(result)
    assert "unknown experiment 'corr_noisy_07'; did you mean corr_noisy_007" in line
    assert "registered: auxiliary_016" in line


def test_an_unknown_stacking_input_gets_a_did_you_mean(tiny_data):
    command = ["stacking_train.py", "--experiment", "stacking_008_fcnet_43040", "--smoke"]
    result = run(None, *command, "--set", "inputs=corr_noisy_007,auxiliary_16")
    line = one_error_line(result)
    assert "unknown experiment 'auxiliary_16'; did you mean auxiliary_016" in line
    assert not (tiny_data / "experiments" / "stacking_008_fcnet_43040").exists()


DEVICE_COMMANDS = [
    ["train_folds.py", "--experiment", "corr_noisy_007", "--smoke"],
    ["stacking_train.py", "--experiment", "stacking_008_fcnet_43040", "--smoke"],
    ["predict_folds.py", "--experiment", "corr_noisy_007"],
    ["stacking_predict.py"],
    ["tag_audio.py", "CLIP"],
    ["demo.py", "--input", "CLIP", "--headless"],
    ["make_corrections.py", "noisy"],
    ["show.py", "spectrograms", "CLIP", "--experiment", "corr_noisy_007", "--out", "x.png"],
]


@pytest.mark.parametrize("command", DEVICE_COMMANDS, ids=[c[0] for c in DEVICE_COMMANDS])
def test_a_cuda_device_without_cuda_is_one_line(tmp_path, clip, command):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = [str(clip) if w == "CLIP" else w for w in command]
    result = run(tmp_path / "data", *argv, "--device", "cuda")
    assert one_error_line(result) == (
        "error: --device cuda: CUDA is not available on this machine "
        f"({'this torch has no CUDA' if torch.version.cuda is None else 'no GPU is visible'})"
    )


def test_wrong_kinds_of_file_are_named(partial_import, clip, tmp_path):
    fold = partial_import / "experiments" / "corr_noisy_007" / "fold_0"
    checkpoint = next(fold.glob("model-*.pth"))
    exported = run(None, "export_onnx.py", str(fold))
    line = one_error_line(exported)
    assert "is a folder, not a checkpoint" in line and str(checkpoint) in line

    onnx = tmp_path / "cnn.onnx"
    assert run(None, "export_onnx.py", str(checkpoint), "--out", str(onnx)).returncode == 0
    as_model = run(partial_import, "tag_audio.py", str(clip), "--model", str(onnx))
    assert "an ONNX network (export_onnx.py's output), not a checkpoint" in one_error_line(as_model)
    as_onnx = run(partial_import, "tag_audio.py", str(clip), "--onnx", str(checkpoint))
    assert "a checkpoint: give it to --model" in one_error_line(as_onnx)

    stacking = next(
        (partial_import / "experiments" / "stacking_008_fcnet_43040").glob("fold_0/*.pth")
    )
    mlp = tmp_path / "mlp.onnx"
    assert run(None, "export_onnx.py", str(stacking), "--out", str(mlp)).returncode == 0
    for script in (["tag_audio.py", str(clip)], ["demo.py", "--input", str(clip), "--headless"]):
        result = run(partial_import, *script, "--onnx", str(mlp))
        assert "a stacking network (FCNet, input of rank 2)" in one_error_line(result), script

    missing = run(partial_import, "tag_audio.py", str(tmp_path / "no_such_folder") + "/")
    assert "no_such_folder/: no such file or folder" in one_error_line(missing)


README_EXPERIMENT = re.compile(r"```json\n(\{\"base\".*?\})\n```", re.S)


def test_the_readme_experiment_file_is_valid_and_a_refused_one_writes_nothing(tiny_data, tmp_path):
    from src.experiment_files import load_experiment

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    example = json.loads(README_EXPERIMENT.search(readme).group(1))
    spec = tmp_path / "my_exp.json"
    spec.write_text(json.dumps(example))
    config = load_experiment(str(spec))
    assert config["datasets"]["curated"] == 1.0 and sum(config["datasets"].values()) == 1.0

    wrong = {**example, "datasets": {"noisy": 0.0, "curated": 1.0}}  # the base's corrected stays
    spec.write_text(json.dumps(wrong))
    result = run(None, "train_folds.py", "--experiment", str(spec), "--smoke", "--device", "cpu")
    line = one_error_line(result)
    assert "datasets" in line and "sum to 1" in line and "corrected" in line
    assert not (tiny_data / "experiments" / "my_exp").exists()


def test_the_fcnet_gate_keeps_one_unit_for_few_inputs():
    import torch

    from src.models.fcnet import FCNet

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Initializing zero-element tensors" would raise
        network = FCNet(4, 3, base_size=8, reduction_scale=8)
    assert network.gate.fc1.out_features == 1
    assert network(torch.ones(2, 4)).shape == (2, 3)


# --------------------------------------------------------------------------------------
# Item: the pipeline script takes what own-data users need
# --------------------------------------------------------------------------------------

RECORDING_PYTHON = """#!/usr/bin/env bash
# Records each script call and runs nothing but the pipeline's own -c look-ups.
if [ "$1" = "-c" ]; then exec "{python}" "$@"; fi
printf '%s\\n' "$*" >> "{log}"
"""


def test_ensemble_pipeline_passes_own_data_options_on(tmp_path):
    log = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(RECORDING_PYTHON.format(python=sys.executable, log=log))
    fake.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train_curated.csv").write_text("fname,labels\n")
    options = ["--scale", "cpu", "--no-corrections", "--set", "max_epochs=3"]
    options += ["--experiments", "corr_noisy_003,corrections_002"]
    options += ["--stacking-experiments", "stacking_008_fcnet_43040", "--gpus", "cpu"]
    result = subprocess.run(
        ["bash", "ensemble_pipeline.sh", *options],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHON": str(fake), "FREESOUND_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    parsed = [(c[0], script_module(c[0]).build_parser().parse_args(c[1:])) for c in calls]
    trained = [args for script, args in parsed if script == "train_folds.py"]
    assert [a.experiment for a in trained] == ["corr_noisy_003", "corrections_002"]
    for args in trained:
        assert args.scale == "cpu" and args.no_corrections and args.set == ["max_epochs=3"]
    (stacking,) = [args for script, args in parsed if script == "stacking_train.py"]
    assert stacking.scale is None and stacking.no_corrections
    assert stacking.set == ["inputs=corr_noisy_003,corrections_002"]
    (final,) = [args for script, args in parsed if script == "stacking_predict.py"]
    assert final.experiments == "stacking_008_fcnet_43040"
    (kernels,) = [args for script, args in parsed if script == "build_kernel.py"]
    assert kernels.blend_experiments == "corr_noisy_003,corrections_002"
    assert set(kernels.kernels) == {"single", "stacking", "blend"}

    log.unlink()
    options = ["--smoke", "--experiments", "corr_noisy_003", "--stacking-experiments", "none"]
    result = subprocess.run(
        ["bash", "ensemble_pipeline.sh", *options, "--gpus", "cpu"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHON": str(fake), "FREESOUND_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    scripts = [shlex.split(line)[0] for line in log.read_text().splitlines()]
    assert "stacking_train.py" not in scripts and "stacking_predict.py" not in scripts
    assert "blend_predict.py" in scripts
