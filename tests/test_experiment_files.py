"""Experiments from a file (--experiment my_exp.json) and from the command line (--set)."""

import copy
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
import soundfile

import build_kernel
import package_weights
import predict_folds
import tag_audio
from src.config import WEIGHTS_DATASET_PREFIX, ConfigError, get_paths
from src.experiment_files import load_experiment, parse_set
from src.experiments import EXPERIMENTS, FINETUNE_DEFAULTS, resolve
from src.training.command import train_command
from tests.helpers import COMPETITION, REPO_ROOT, kaggle_root, run_kernel


def write(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def test_a_file_overrides_nested_settings_of_its_base(tmp_path):
    spec = write(
        tmp_path / "my_exp.json",
        {
            "base": "corr_noisy_007",
            "max_epochs": 30,
            "model": {"params": {"base_size": 32}},
            "datasets": {"noisy": 0, "corrected": 0.0, "curated": 1},
            "optimizer": {"params": {"lr": 1}},  # an int where a float was: accepted
        },
    )
    config = load_experiment(spec)
    base = resolve("corr_noisy_007")
    assert config["name"] == "my_exp" and config["base"] == "corr_noisy_007"
    assert config["max_epochs"] == 30 and config["model"]["params"]["base_size"] == 32
    assert config["model"]["params"]["dropout"] == base["model"]["params"]["dropout"]  # merged
    assert config["model"]["name"] == base["model"]["name"]
    assert config["datasets"] == {"noisy": 0.0, "corrected": 0.0, "curated": 1.0}
    assert config["optimizer"]["params"]["lr"] == 1.0 and config["loss"] == base["loss"]
    assert config["overrides"]["model"] == {"params": {"base_size": 32}}


def test_set_overrides_after_the_file_and_smoke_before_it(tmp_path):
    # a crop of 96 frames needs its own resize range (test_a_crop_the_resize_range_misses_...)
    changes = {"crop_size": 96, "transforms": {"resize_ratio": [0.64, 0.86]}}
    spec = write(tmp_path / "x.json", {"base": "auxiliary_016", "name": "renamed", **changes})
    sets = ["model.params.base_size=16", "max_epochs=3", "transforms.resize_scale=[0.5, 1]"]
    sets += ["corrections.noisy=noisy_corrections.json", "aux_weights=null"]
    config = load_experiment(spec, scale="smoke", sets=sets)
    assert config["name"] == "renamed" and config["scale"] == "smoke"
    assert config["crop_size"] == 96  # the file wins over the smoke scale
    assert config["model"]["params"]["base_size"] == 16 and config["max_epochs"] == 3
    assert config["transforms"]["resize_scale"] == [0.5, 1]
    assert config["corrections"]["noisy"] == "noisy_corrections.json"
    assert config["aux_weights"] is None
    assert config["overrides"]["model"] == {"params": {"base_size": 16}}
    # A registered name with --set keeps its name; with nothing changed, no base/overrides.
    assert load_experiment("auxiliary_016", sets=["max_epochs=5"])["name"] == "auxiliary_016"
    assert load_experiment("auxiliary_016") == resolve("auxiliary_016")


def test_stacking_inputs_as_a_comma_separated_list():
    config = load_experiment("stacking_008_fcnet_43040", sets=["inputs=mine,auxiliary_016"])
    assert config["inputs"] == ["mine", "auxiliary_016"]
    assert parse_set("inputs=a", config) == {"inputs": ["a"]}


@pytest.mark.parametrize(
    ("sets", "file", "message"),
    [
        (["model.params.base_sise=32"], None, "unknown setting 'model.params.base_sise'"),
        (["max_epochs=lots"], None, "setting 'max_epochs' takes int.*got str \"lots\""),
        (["max_epochs=2.5"], None, "setting 'max_epochs' takes int"),
        (["model=3"], None, "setting 'model' takes dict"),
        (["mixer.alpha_dist=3"], None, None),  # text setting: read as the text "3"
        (["kind=stacking"], None, "setting 'kind' cannot be overridden"),
        (["max_epochs"], None, "--set takes KEY.SUB=VALUE"),
        (
            [],
            {"base": "corr_noisy_007", "loss": {"params": {"beta": "high"}}},
            "'loss.params.beta'",
        ),
        ([], {"base": "corr_noisy_007", "epochs": 3}, "unknown setting 'epochs'"),
        ([], {"base": "no_such_experiment"}, "'base' must name a registered experiment"),
        ([], {"base": "corr_noisy_007", "name": "a b/c"}, "experiment name 'a b/c'"),
        ([], [1, 2], "holds a JSON object"),
    ],
)
def test_bad_keys_and_types_are_refused_with_their_name(tmp_path, sets, file, message):
    spec = "corr_noisy_007" if file is None else write(tmp_path / "bad.json", file)
    if message is None:
        assert load_experiment(spec, sets=sets)["mixer"]["alpha_dist"] == "3"
        return
    with pytest.raises(ConfigError, match=message):
        load_experiment(spec, sets=sets)


def test_a_file_experiment_trains_lands_in_params_json_and_is_predicted_and_tagged(
    tiny_data, tmp_path, capsys
):
    spec = write(
        tmp_path / "my_exp.json",
        {"base": "corrections_002", "model": {"params": {"base_size": 4}}, "epoch_size": 32},
    )
    args = ["--experiment", spec, "--smoke", "--folds", "0", "--set", "batch_size=8"]
    args += ["--set", "max_epochs=1", "--workers", "0", "--no-progress", "--device", "cpu"]
    assert train_command(args, "", kind="cnn") == 0
    paths = get_paths()
    params = json.loads((paths.experiment_dir("my_exp") / "params.json").read_text())
    config = params["config"]
    assert config["name"] == "my_exp" and config["base"] == "corrections_002"
    assert config["model"]["params"]["base_size"] == 4 and config["batch_size"] == 8
    assert config["overrides"] == {
        "model": {"params": {"base_size": 4}},
        "epoch_size": 32,
        "batch_size": 8,
        "max_epochs": 1,
    }
    assert params["runtime"]["set"] == ["batch_size=8", "max_epochs=1"]
    # Tagging works with the folds trained so far.
    clip = sorted((tiny_data / "test").iterdir())[0]
    assert tag_audio.main([str(clip), "--experiment", "my_exp", "--device", "cpu"]) == 0
    assert "geometric mean of 1 of 5 folds" in capsys.readouterr().err
    # Not in the registry: prediction and tagging read params.json. (Folds 1-4 reuse fold 0's
    # model: what is tested here is finding the experiment, not training it.)
    for fold in range(1, 5):
        shutil.copytree(
            paths.experiment_dir("my_exp") / "fold_0",
            paths.experiment_dir("my_exp") / f"fold_{fold}",
        )
    assert predict_folds.main(["--experiment", "my_exp", "--device", "cpu", "--no-progress"]) == 0
    assert (paths.prediction_dir("my_exp") / "probs.csv").is_file()
    out_csv = tmp_path / "tags.csv"
    argv = [str(clip), "--experiment", "my_exp", "--device", "cpu", "--csv", str(out_csv)]
    assert tag_audio.main(argv) == 0
    assert out_csv.is_file() and "my_exp" in capsys.readouterr().err
    # The same file with another --set is another configuration: refused without --force.
    assert train_command([*args, "--set", "optimizer.params.lr=0.002"], "", kind="cnn") == 1
    assert "different config" in capsys.readouterr().err


def test_a_file_experiment_streams_through_the_demo_and_runs_in_a_kernel(tiny_data, tmp_path):
    """Not in the registry: the demo, package_weights.py, build_kernel.py and the single kernel
    it builds all read the experiment from its params.json."""
    spec = write(tmp_path / "my_exp.json", {"base": "corr_noisy_003", "epoch_size": 32})
    args = ["--experiment", spec, "--smoke", "--folds", "0", "--set", "max_epochs=1"]
    args += ["--set", "batch_size=8", "--workers", "0", "--no-progress", "--device", "cpu"]
    assert train_command(args, "", kind="cnn") == 0
    paths = get_paths()
    for fold in range(1, 5):  # the other folds reuse fold 0's model (finding is tested here)
        shutil.copytree(
            paths.experiment_dir("my_exp") / "fold_0",
            paths.experiment_dir("my_exp") / f"fold_{fold}",
        )
    assert predict_folds.main(["--experiment", "my_exp", "--device", "cpu", "--no-progress"]) == 0

    clip = sorted((tiny_data / "test").iterdir())[0]
    command = [sys.executable, "demo.py", "--experiment", "my_exp", "--input", str(clip)]
    demo = subprocess.run(
        [*command, "--fast", "--headless", "--device", "cpu"],
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    assert f"model: {paths.experiment_dir('my_exp')}" in demo.stderr
    lines = demo.stdout.splitlines()  # one line per whole second of the clip
    assert len(lines) == int(soundfile.info(clip).duration) >= 1
    assert lines[0].strip().startswith("1s\t")

    archive = tmp_path / "weights.zip"
    assert package_weights.main(["--experiments", "my_exp", "--out", str(archive)]) == 0
    with zipfile.ZipFile(archive) as packed:
        names = packed.namelist()
        assert "experiments/my_exp/params.json" in names
        assert sum(name.endswith(".pth") for name in names) == 5
        packed.extractall(tmp_path / "weights")
    out = tmp_path / "kernel"
    argv = ["--out", str(out), "--experiment", "my_exp", "--kernels", "single"]
    assert build_kernel.main(argv) == 0

    competition = tmp_path / "competition"
    shutil.copytree(tiny_data / "test", competition / "test")
    shutil.copy(tiny_data / "sample_submission.csv", competition)
    inputs = {COMPETITION: competition, WEIGHTS_DATASET_PREFIX: tmp_path / "weights"}
    root = kaggle_root(tmp_path / "kaggle_root", inputs)
    result = run_kernel(out / "single_kernel.py", root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    submission = pd.read_csv(root / "kaggle" / "working" / "submission.csv", dtype={"fname": str})
    local = pd.read_csv(paths.prediction_dir("my_exp") / "probs.csv", dtype={"fname": str})
    local = local.set_index("fname").loc[submission["fname"], submission.columns[1:]]
    np.testing.assert_allclose(submission.iloc[:, 1:].to_numpy(), local.to_numpy(), atol=1e-6)


def test_the_cpu_scale_and_smoke_as_a_scale(capsys):
    from src.experiments import CPU_CNN

    config = load_experiment("corr_noisy_007", scale="cpu", sets=["max_epochs=12"])
    assert config["scale"] == "cpu"
    assert config["model"]["params"]["base_size"] == CPU_CNN.changes["model"]["params"]["base_size"]
    assert config["crop_size"] == CPU_CNN.changes["crop_size"] and config["mixer"]["prob"] == 0.0
    assert config["max_epochs"] == 12  # --set wins over the scale
    assert config["model"]["name"] == resolve("corr_noisy_007")["model"]["name"]
    assert load_experiment("corr_noisy_007", scale="smoke") == resolve("corr_noisy_007", "smoke")
    with pytest.raises(ConfigError, match="--scale cpu is for first-level experiments"):
        load_experiment("stacking_008_fcnet_43040", scale="cpu")
    args = ["--experiment", "corr_noisy_007", "--smoke", "--scale", "cpu"]
    assert train_command(args, "", kind="cnn") == 1
    assert "--smoke is --scale smoke" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("experiment", "scale"),
    [("corr_noisy_007", "cpu"), ("auxiliary_019", "cpu"), ("corr_noisy_007", "smoke")],
)
def test_resized_crops_stay_random_when_a_scale_narrows_the_crop(experiment, scale):
    """The original's aspect range [1.7, 2.3] is for 256-frame crops over 128 mel bands. Kept on
    a scale's 64-frame crop, no box fits and every resized crop was one fixed centre box (38 mel
    bands stretched over 128). The range follows the crop: the same spread around its aspect."""
    from src.augment.transforms import RandomResizedCrop

    full, config = resolve(experiment), load_experiment(experiment, scale=scale)
    factor = config["crop_size"] / full["crop_size"]
    np.testing.assert_allclose(
        config["transforms"]["resize_ratio"],
        np.array(full["transforms"]["resize_ratio"]) * factor,
    )
    transforms = config["transforms"]
    crop = RandomResizedCrop(tuple(transforms["resize_scale"]), tuple(transforms["resize_ratio"]))
    rng = np.random.default_rng(0)
    boxes = {crop.sample_box(128, config["crop_size"], rng) for _ in range(300)}
    assert len(boxes) > 100
    # every box covers the scale's share of the area with its aspect in the range: no fall-back
    smallest = transforms["resize_scale"][0] * 128 * config["crop_size"] * 0.95
    for box in boxes:
        assert smallest <= box.height * box.width
        low, high = transforms["resize_ratio"]
        assert low * 0.9 <= box.width / box.height <= high * 1.1


def test_a_crop_the_resize_range_misses_is_refused():
    message = r"transforms.resize_ratio \[1.7, 2.3\] does not contain the crop's aspect"
    with pytest.raises(ConfigError, match=message):
        load_experiment("corr_noisy_007", sets=["crop_size=128"])
    config = load_experiment(
        "corr_noisy_007", sets=["crop_size=128", "transforms.resize_ratio=[0.85,1.15]"]
    )
    assert config["crop_size"] == 128
    # without RandomResizedCrop the range does not matter
    assert load_experiment("corrections_002", sets=["crop_size=128"])["crop_size"] == 128


RESOLVED_BEFORE = json.loads(
    (REPO_ROOT / "tests" / "data" / "resolved_experiments_before.json").read_text()
)


@pytest.mark.parametrize("key", sorted(RESOLVED_BEFORE))
def test_every_registered_experiment_resolves_at_every_scale_as_before(key):
    """The registry's one recursive merge and its one scale table resolve every experiment at
    every scale to the dict the one-level `_derive` and the two scale routes gave (recorded in
    tests/data before the change), apart from what changed on purpose: `scale` replaces the
    `smoke` flag, model arguments the one-level merge dropped are now recorded (they must be the
    network's own defaults, so the network is the same), and corrections_002/003 at the cpu
    scale resolve (the dropped `base_size` made the cpu scale fail on them). Settings added
    since, each at a value that leaves the run as it was: a first-level experiment's
    `finetune` (no source: random weights) and `scheduler.warm_restarts` (None: the plateau
    scheduler)."""
    import inspect

    from src.models import MODELS

    name, scale = key.split("@")
    before = copy.deepcopy(RESOLVED_BEFORE[key])
    if scale == "cpu" and EXPERIMENTS[name]["kind"] == "stacking":
        with pytest.raises(ConfigError, match="--scale cpu is for first-level experiments"):
            load_experiment(name, scale=scale)
        return
    after = json.loads(json.dumps(load_experiment(name, scale=scale)))
    assert after.pop("scale") == scale
    if after["kind"] == "cnn":
        assert after.pop("finetune") == FINETUNE_DEFAULTS and FINETUNE_DEFAULTS["init_from"] is None
        assert after["scheduler"].pop("warm_restarts") is None
    if "error" in before:
        assert "unknown setting 'model.params.base_size'" in before["error"]
        assert name in ("corrections_002", "corrections_003") and scale == "cpu"
        full = copy.deepcopy(RESOLVED_BEFORE[f"{name}@full"])
        full.pop("smoke")
        scaled = {k: v for k, v in after.items() if k not in CPU_SCALED}
        assert scaled == {k: v for k, v in full.items() if k not in CPU_SCALED}
        assert after["model"]["params"]["base_size"] == 16 and after["crop_size"] == 64
        return
    assert before.pop("smoke") == (scale == "smoke")
    assert before.pop("scale", scale) == scale  # recorded before for the cpu scale only
    if after["kind"] == "cnn":
        network = MODELS[after["model"]["name"]]
        defaults = {
            parameter.name: parameter.default
            for parameter in inspect.signature(network).parameters.values()
        }
        params_before, params_after = before["model"]["params"], after["model"]["params"]
        for added in set(params_after) - set(params_before):
            assert params_after[added] == defaults[added], (key, added)
        before["model"]["params"] = {**params_after, **params_before}
    assert after == before


# Settings the cpu scale sets or derives (src/experiments.py, CPU_CNN and follow_crop).
CPU_SCALED = {
    "model",
    "crop_size",
    "batch_size",
    "val_batch_size",
    "epoch_size",
    "max_epochs",
    "early_stopping",
    "scheduler",
    "optimizer",
    "mixer",
    "transforms",
}
