"""Fine-tuning (`train_folds.py --init-from`): the heads rebuilt for new classes with the rows
of shared class names copied, strict loading, frozen epochs, the backbone's learning rate, the
source in params.json, a wrong source in one line, and a fine-tuned experiment used as any
other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import demo
import export_onnx
import tag_audio
from src.config import FAT2019_CLASSES, get_paths, load_vocabulary
from src.experiment_files import load_experiment
from src.kaggle.build import build_kernels, package_weights
from src.kaggle.runtime import KernelPlan
from src.models import AuxSkipAttention, RnnAuxSkipAttention, SkipAttention
from src.models.argus_models import FreesoundModel, model_params
from src.models.heads import is_head, output_layers
from src.runs import (
    CheckpointError,
    best_checkpoint,
    checkpoint_digest,
    read_params,
    record_differences,
)
from src.training.command import train_command
from src.training.finetune import adopt_network, initialise, resolve_source, transplant
from src.training.first_level import build_fold, load_first_level_data
from src.training.loop import run_fold
from src.training.parts import RunOptions, Schedule
from tests.helpers import (
    COMPETITION,
    REPO_ROOT,
    FakeSoundDevice,
    copy_tree,
    kaggle_root,
    micro_config,
    run_kernel,
    save_cnn_checkpoint,
    use_copy_of,
)
from tests.test_training import InterruptAfter

ARGS = ["--smoke", "--workers", "0", "--no-progress", "--device", "cpu"]
ORIGINAL = Path(
    os.environ.get(
        "FREESOUND_ORIGINAL_CHECKPOINTS", REPO_ROOT.parent / "shared/data/original-checkpoints"
    )
)


def network(cls, classes, seed):
    torch.manual_seed(seed)
    return cls(num_classes=len(classes), base_size=4, dropout=0.1)


@pytest.mark.parametrize("cls", [AuxSkipAttention, RnnAuxSkipAttention, SkipAttention])
def test_heads_are_rebuilt_and_rows_of_shared_names_copied(cls):
    source_classes = ["Bark", "Meow", "Purr", "Hiss", "Chirp", "Drip"]
    classes = ["Rain", "Meow", "Bark", "Clap"]  # two shared names, in another order
    source, target = network(cls, source_classes, 0), network(cls, classes, 1)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    theirs = source.state_dict()
    copied = transplant(target, theirs, source_classes, classes, "source.pth")
    assert copied == ["Meow", "Bark"]
    outputs = output_layers(target)
    assert len(outputs) == (1 if cls is SkipAttention else 4)
    mine = target.state_dict()
    for key, value in mine.items():
        layer = key.rsplit(".", 1)[0]
        if layer not in outputs:  # the backbone and the heads' hidden layers: the source's
            assert torch.equal(value, theirs[key]), key
            continue
        assert torch.equal(value[1], theirs[key][1]) and torch.equal(value[2], theirs[key][0])
        assert torch.equal(value[0], fresh[key][0]) and torch.equal(value[3], fresh[key][3])
        assert not torch.equal(value[0], theirs[key][0])


def test_no_shared_name_keeps_every_fresh_row():
    source_classes, classes = ["a", "b", "c"], ["x", "y"]
    source, target = (
        network(AuxSkipAttention, source_classes, 0),
        network(AuxSkipAttention, classes, 1),
    )
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    assert transplant(target, source.state_dict(), source_classes, classes, "s") == []
    for layer in output_layers(target):
        for part in ("weight", "bias"):
            key = f"{layer}.{part}"
            assert torch.equal(target.state_dict()[key], fresh[key])
    assert torch.equal(
        target.state_dict()["conv1.conv1.0.weight"], source.state_dict()["conv1.conv1.0.weight"]
    )


def test_everything_but_the_rows_loads_strictly():
    classes = ["a", "b"]
    source, target = network(AuxSkipAttention, classes, 0), network(AuxSkipAttention, classes, 1)
    state = source.state_dict()
    renamed = {("conv1.renamed" if k == "conv1.conv1.0.weight" else k): v for k, v in state.items()}
    with pytest.raises(
        CheckpointError, match="missing key 'conv1.conv1.0.weight', unexpected key 'conv1.renamed'"
    ):
        transplant(target, renamed, classes, classes, "s.pth")
    wider = network(AuxSkipAttention, classes, 0)
    wider_state = dict(state, **{"fc.1.weight": torch.zeros(9, 64)})
    with pytest.raises(CheckpointError, match=r"s.pth: key 'fc.1.weight' has shape \(9, 64\)"):
        transplant(wider, wider_state, classes, classes, "s.pth")
    with pytest.raises(CheckpointError, match="key 'fc.5.weight'"):  # rows but not class names
        transplant(target, state, ["a", "b", "c"], classes, "s.pth")


def test_backbone_lr_scale_reaches_the_optimizer():
    config = load_experiment(
        "auxiliary_016", "smoke", sets=['finetune.init_from="x"', "finetune.backbone_lr_scale=0.25"]
    )
    model = FreesoundModel(model_params(config, 5))
    heads, backbone = model.optimizer.param_groups
    lr = config["optimizer"]["params"]["lr"]
    assert heads["lr"] == lr and backbone["lr"] == pytest.approx(lr * 0.25)
    names = {id(p): n for n, p in model.nn_module.named_parameters()}
    assert all(is_head(names[id(p)]) for p in heads["params"])
    assert not any(is_head(names[id(p)]) for p in backbone["params"])
    assert len(heads["params"]) + len(backbone["params"]) == len(names)
    # without a source: one group, as ever
    plain = FreesoundModel(model_params(load_experiment("auxiliary_016", "smoke"), 5))
    assert len(plain.optimizer.param_groups) == 1


def state_of(path: Path) -> dict:
    return torch.load(path, weights_only=True)["nn_state_dict"]


def experiment_file(tmp_path: Path, name: str, **settings) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"base": "auxiliary_016", **settings}))
    return str(path)


@pytest.fixture(scope="module")
def trained_tree(tiny_tree, tmp_path_factory) -> Path:
    """The tiny set with corrections_002 (SkipAttention) trained on fold 0 for 2 epochs, once
    for the module; each test gets a copy (`source_trained`)."""
    data = copy_tree(tiny_tree, tmp_path_factory.mktemp("finetune-source") / "data")
    args = ["--experiment", "corrections_002", *ARGS, "--folds", "0", "--max-epochs", "2"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FREESOUND_DATA_DIR", str(data))
        assert train_command(args, "", kind="cnn") == 0
    return data


@pytest.fixture
def source_trained(trained_tree, tmp_path, monkeypatch) -> Path:
    """A private copy of `trained_tree` as this test's FREESOUND_DATA_DIR; the source's folder."""
    use_copy_of(trained_tree, tmp_path / "tiny", monkeypatch)
    return get_paths().experiment_dir("corrections_002")


def test_freeze_epochs_train_only_the_heads_and_params_record_the_source(
    source_trained, tmp_path, capsys
):
    spec = experiment_file(tmp_path, "ft", finetune={"freeze_epochs": 2}, max_epochs=2)
    args = ["--experiment", spec, "--init-from", "corrections_002", *ARGS, "--folds", "0"]
    capsys.readouterr()
    assert train_command(args, "", kind="cnn") == 0
    out = capsys.readouterr().out
    assert "the network is the source's, SkipAttention(" in out
    assert "the experiment's model settings (AuxSkipAttention) give way" in out
    assert "all 6 classes' rows from the source" in out
    source_checkpoint = best_checkpoint(source_trained / "fold_0")[0]
    tuned = get_paths().experiment_dir("ft")
    before, after = state_of(source_checkpoint), state_of(best_checkpoint(tuned / "fold_0")[0])
    assert before.keys() == after.keys()
    heads = [k for k in before if is_head(k)]
    backbone = [k for k in before if not is_head(k)]
    assert all(torch.equal(before[k], after[k]) for k in backbone)  # BN statistics included
    assert any(not torch.equal(before[k], after[k]) for k in heads)
    record = read_params(tuned)
    assert record["config"]["model"]["name"] == "SkipAttention"
    assert record["config"]["aux_weights"] is None
    assert record["config"]["finetune"]["init_from"] == "corrections_002"
    assert record["init_from"] == {
        "source": "corrections_002",
        "name": "corrections_002",
        "folds": {
            "0": {
                "fold": 0,
                "checkpoint": source_checkpoint.name,
                "sha256": checkpoint_digest(source_checkpoint),
            }
        },
    }


def test_folds_fine_tuned_in_parallel_each_start_from_the_source(source_trained, tmp_path):
    """--gpus cpu,cpu: each fold's worker process loads the source's weights itself."""
    spec = experiment_file(tmp_path, "ft_par", finetune={"freeze_epochs": 1}, max_epochs=1)
    args = ["--experiment", spec, "--init-from", "corrections_002:0", "--smoke", "--folds", "0,1"]
    args += ["--gpus", "cpu,cpu", "--workers", "0", "--no-progress", "--set", "epoch_size=32"]
    assert train_command(args, "", kind="cnn") == 0
    before = state_of(best_checkpoint(source_trained / "fold_0")[0])
    tuned = get_paths().experiment_dir("ft_par")
    for fold in (0, 1):
        after = state_of(best_checkpoint(tuned / f"fold_{fold}")[0])
        assert after.keys() == before.keys()  # the source's network
        assert all(torch.equal(before[k], after[k]) for k in before if not is_head(k)), fold
    folds = read_params(tuned)["init_from"]["folds"]
    assert {k: v["fold"] for k, v in folds.items()} == {"0": 0, "1": 0}


def test_after_the_frozen_epochs_the_backbone_trains_at_its_share(source_trained, tmp_path):
    spec = experiment_file(
        tmp_path, "ft2", finetune={"freeze_epochs": 1, "backbone_lr_scale": 0.5}, max_epochs=2
    )
    args = ["--experiment", spec, "--init-from", "corrections_002:0", *ARGS, "--folds", "0,1"]
    assert train_command(args, "", kind="cnn") == 0
    before = state_of(best_checkpoint(source_trained / "fold_0")[0])
    for fold in (0, 1):
        folder = get_paths().experiment_dir("ft2") / f"fold_{fold}"
        log = (folder / "log.txt").read_text()
        # the logged lr is the heads' then the backbone's: two groups
        assert "lr: [0.003, 0.0015]" in log
        best = state_of(best_checkpoint(folder)[0])
        changed = [k for k in before if not is_head(k) and not torch.equal(before[k], best[k])]
        epoch = int(best_checkpoint(folder)[0].name.split("-")[1])
        assert bool(changed) == (epoch >= 1)


def test_frozen_epochs_run_under_torchrun(source_trained, tmp_path):
    """Two gloo ranks: DDP is rebuilt when the backbone freezes and when it thaws (a wrapper
    built over every weight fails the frozen epoch; one built over the heads, the next)."""
    spec = experiment_file(tmp_path, "ft_ddp", finetune={"freeze_epochs": 1}, max_epochs=2)
    args = ["--experiment", spec, "--init-from", "corrections_002", *ARGS, "--folds", "0"]
    args += ["--set", "epoch_size=64"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    result = subprocess.run(
        [*torchrun, "--master_port", "29534", "train_folds.py", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folder = get_paths().experiment_dir("ft_ddp") / "fold_0"
    assert len(pd.read_csv(folder / "log.csv")) == 2
    before = state_of(best_checkpoint(source_trained / "fold_0")[0])
    kept = best_checkpoint(folder)[0]
    after = state_of(kept)
    changed = [k for k in before if not is_head(k) and not torch.equal(before[k], after[k])]
    assert any(not torch.equal(before[k], after[k]) for k in before if is_head(k))
    assert bool(changed) == (int(kept.name.split("-")[1]) >= 1)


def test_a_changed_source_is_a_changed_configuration(source_trained, tmp_path, capsys):
    spec = experiment_file(tmp_path, "ft3", max_epochs=1)
    args = ["--experiment", spec, "--init-from", "corrections_002", *ARGS, "--folds", "0"]
    assert train_command(args, "", kind="cnn") == 0
    # the source retrained: another checkpoint, another run
    retrain = ["--experiment", "corrections_002", *ARGS, "--folds", "0", "--max-epochs", "1"]
    assert train_command([*retrain, "--force"], "", kind="cnn") == 0
    assert train_command(args, "", kind="cnn") == 1
    assert "already holds a run with a different init_from" in capsys.readouterr().err


def one_line_error(args, capsys) -> str:
    assert train_command(args, "", kind="cnn") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_a_wrong_source_is_one_line_and_nothing_is_written(source_trained, tmp_path, capsys):
    spec = experiment_file(tmp_path, "ft4", max_epochs=1)
    common = ["--experiment", spec, *ARGS]
    err = one_line_error([*common, "--init-from", "corrections_02", "--folds", "0"], capsys)
    assert "unknown experiment 'corrections_02'; did you mean corrections_002" in err
    err = one_line_error([*common, "--init-from", "corrections_002", "--folds", "1"], capsys)
    assert "no checkpoint for fold 1 (trained: 0)" in err and "--init-from corrections_002:0" in err
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    err = one_line_error([*common, "--init-from", str(text), "--folds", "0"], capsys)
    assert f"--init-from {text}: " in err  # torch reads its bytes as a pickle and refuses
    state = torch.load(best_checkpoint(source_trained / "fold_0")[0], weights_only=True)
    state["nn_state_dict"]["fc.extra"] = torch.zeros(1)
    misfit = tmp_path / "misfit" / "fold_0" / "model-001-0.5.pth"
    misfit.parent.mkdir(parents=True)
    torch.save(state, misfit)
    (misfit.parent.parent / "params.json").write_text(
        json.dumps({"classes": list(load_vocabulary().classes), "config": {}})
    )
    err = one_line_error([*common, "--init-from", str(misfit), "--folds", "0"], capsys)
    assert "does not fit the network: unexpected key 'fc.extra'" in err
    err = one_line_error(
        ["--experiment", "corrections_002", *ARGS, "--init-from", "corrections_002"], capsys
    )
    assert "the source is the experiment being trained" in err
    assert not get_paths().experiment_dir("ft4").exists()


def test_a_source_in_another_data_directory_is_named_by_its_folder(
    source_trained, tmp_path, capsys
):
    """The released networks live in a data directory of FAT2019's classes, one's own sounds
    in another: --init-from takes an experiment folder (with :K) wherever it is."""
    spec = experiment_file(tmp_path, "ft_away", max_epochs=1)
    common = ["--experiment", spec, *ARGS]
    err = one_line_error(
        ["--experiment", "corrections_002", *ARGS, "--init-from", str(source_trained)], capsys
    )
    assert "the source is the experiment being trained" in err
    away = tmp_path / "released" / "experiments" / "corrections_002"
    away.parent.mkdir(parents=True)
    source_trained.rename(away)
    err = one_line_error([*common, "--init-from", "corrections_002", "--folds", "0"], capsys)
    assert f"no experiment 'corrections_002' in {source_trained.parent}" in err
    assert "--init-from path/to/experiments/corrections_002" in err
    err = one_line_error(
        [*common, "--init-from", str(away.parent / "nope"), "--folds", "0"], capsys
    )
    assert f"no experiment folder {away.parent / 'nope'}" in err
    err = one_line_error([*common, "--init-from", str(away), "--folds", "1"], capsys)
    assert f"start every fold from one of them with --init-from {away}:K" in err
    relative = os.path.relpath(away)  # as a user types data/experiments/NAME
    args = [*common, "--init-from", f"{relative}:0", "--folds", "0"]
    assert train_command(args, "", kind="cnn") == 0
    checkpoint = best_checkpoint(away / "fold_0")[0]
    record = read_params(get_paths().experiment_dir("ft_away"))["init_from"]
    assert record["source"] == f"{relative}:0" and record["name"] == "corrections_002"
    assert record["folds"]["0"]["sha256"] == checkpoint_digest(checkpoint)


def test_the_original_recipe_file_resolves_to_after_train_folds():
    config = load_experiment(str(REPO_ROOT / "docs" / "after_train_folds.json"))
    assert config["optimizer"]["params"]["lr"] == 3e-4
    assert config["max_epochs"] == 150 and config["early_stopping"] is None
    assert config["finetune"] == {
        "init_from": "corr_noisy_007",
        "freeze_epochs": 0,
        "backbone_lr_scale": 1.0,
    }
    schedule = Schedule.from_config(config)
    assert schedule.warm_restarts == {"T_0": 10, "T_mult": 2, "eta_min": 1e-5}
    assert schedule.early_stopping == 150  # never runs out within the 150 epochs


@pytest.fixture
def imported_source(tiny_data):
    if not (ORIGINAL / "manifest.json").is_file():
        pytest.skip(f"original-format checkpoints not found at {ORIGINAL}")
    from src.config import Vocabulary
    from src.tools.import_weights import import_source

    out = get_paths().experiments_dir
    results = import_source(ORIGINAL / "experiments", out, Vocabulary(FAT2019_CLASSES))
    assert all(r.error is None for r in results), results
    return out


def test_an_imported_80_class_network_starts_a_five_class_one(imported_source):

    source = resolve_source("corr_noisy_007:0", imported_source, "mine")
    assert len(source.classes) == 80 and source.network[0] == "AuxSkipAttention"
    classes = ["Bark", "my_door", "Meow", "my_kettle", "Purr"]
    config = load_experiment("auxiliary_016", "smoke", sets=['finetune.init_from="x"'])
    config["model"] = {"name": source.network[0], "params": source.network[1]}
    model = FreesoundModel(model_params(config, len(classes)))
    copied = initialise(model, source, 3, classes)
    assert copied == ["Bark", "Meow", "Purr"]
    theirs = state_of(source.experiment.folds[0][0])
    mine = model.nn_module.state_dict()
    for layer in output_layers(model.nn_module):
        key = f"{layer}.weight"
        for row, name in ((0, "Bark"), (2, "Meow"), (4, "Purr")):
            assert torch.equal(mine[key][row], theirs[key][FAT2019_CLASSES.index(name)])
    assert torch.equal(mine["merge.conv.weight"], theirs["merge.conv.weight"])


def test_an_imported_source_trains_through_the_script(imported_source, tmp_path, capsys):
    spec = experiment_file(tmp_path, "from_original", max_epochs=1)
    err = one_line_error([*["--experiment", spec, *ARGS], "--init-from", "corr_noisy_003"], capsys)
    assert "no checkpoint for fold 1 (trained: 0)" in err and "corr_noisy_003:0" in err
    args = ["--experiment", spec, *ARGS, "--init-from", "corr_noisy_003:0", "--folds", "0"]
    assert train_command(args, "", kind="cnn") == 0
    record = read_params(get_paths().experiment_dir("from_original"))
    assert record["config"]["model"]["name"] == "RnnAuxSkipAttention"
    assert record["init_from"]["folds"]["0"]["fold"] == 0


def test_warm_restarts_follow_torch_and_resume_at_the_same_rates(tiny_data, tmp_path):

    warm = {"T_0": 2, "T_mult": 2, "eta_min": 1e-5}
    config = micro_config("auxiliary_016", max_epochs=5, early_stopping=None)
    config["scheduler"]["warm_restarts"] = warm
    paths = get_paths()
    data = load_first_level_data(config, paths, load_vocabulary(paths), "if-present")

    def train(folder, interrupt_at=None):
        parts = build_fold(data, 0, RunOptions())
        if interrupt_at is not None:
            parts.extra_callbacks.append(InterruptAfter(interrupt_at))
        return run_fold(parts, folder, Schedule.from_config(config), "warm", progress=False)

    train(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "resumed", interrupt_at=3)  # saved after epoch 2: mid-cycle
    train(tmp_path / "resumed")

    straight = pd.read_csv(tmp_path / "straight" / "log.csv")
    resumed = pd.read_csv(tmp_path / "resumed" / "log.csv")
    # torch's own schedule, epoch by epoch (log.csv is written after the scheduler's step: each
    # row holds the rate of the epoch after it)
    lr = config["optimizer"]["params"]["lr"]
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    reference = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, **warm)
    expected = []
    for _ in range(5):
        optimizer.step()
        reference.step()
        expected.append(optimizer.param_groups[0]["lr"])
    assert straight["lr"].astype(float).tolist() == pytest.approx(expected, rel=1e-4)
    pd.testing.assert_frame_equal(straight.drop(columns="time"), resumed.drop(columns="time"))


def test_a_fine_tuned_experiment_tags_scores_streams_and_packs(
    source_trained, tmp_path, monkeypatch, capsys
):
    """An ordinary experiment on disk: tag_audio.py --experiment (with --score), the demo
    (microphone path, a fake device), ONNX export and the single-experiment kernel take it as
    any other."""

    import pandas as pd

    spec = experiment_file(tmp_path, "tuned", max_epochs=1)
    args = ["--experiment", spec, "--init-from", "corrections_002:0", *ARGS]
    assert train_command(args, "", kind="cnn") == 0
    data = get_paths().input_dir
    clips = data / "train_curated"
    capsys.readouterr()
    labels = data / "train_curated.csv"
    assert tag_audio.main([str(clips), "--experiment", "tuned", "--score", str(labels)]) == 0
    out = capsys.readouterr().out
    assert "lwlrap" in out and len(list(clips.iterdir())) <= out.count(".wav")

    rng = np.random.default_rng(0)
    blocks = [(0.1 * rng.standard_normal(44100)).astype(np.float32) for _ in range(3)]
    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice(blocks))
    assert demo.main(["--experiment", "tuned", "--headless", "--seconds", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2

    checkpoint = best_checkpoint(get_paths().experiment_dir("tuned") / "fold_0")[0]
    onnx = tmp_path / "tuned.onnx"
    assert export_onnx.main([str(checkpoint), "--out", str(onnx)]) == 0
    assert tag_audio.main([str(clips), "--onnx", str(onnx)]) == 0

    weights = package_weights(get_paths().experiments_dir, ["tuned"], tmp_path / "w.zip").path
    (kernel,) = build_kernels(tmp_path / "kernel", [KernelPlan("single", ("tuned",), device="cpu")])

    inputs = tmp_path / "input"
    (inputs / COMPETITION).mkdir(parents=True)
    (inputs / COMPETITION / "test").symlink_to(data / "test", target_is_directory=True)
    (inputs / COMPETITION / "sample_submission.csv").symlink_to(data / "sample_submission.csv")
    with zipfile.ZipFile(weights) as archive:
        archive.extractall(inputs / "freesound-train")
    root = kaggle_root(tmp_path / "kaggle", {p.name: p for p in inputs.iterdir()})
    result = run_kernel(kernel, root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    submission = pd.read_csv(root / "kaggle" / "working" / "submission.csv")
    assert len(submission) == len(list((data / "test").iterdir()))


def test_an_interrupted_fine_tune_resumes_as_if_it_had_not_stopped(tiny_data, tmp_path):
    source_path = save_cnn_checkpoint(tmp_path / "source" / "model-001-0.5.pth", crop_size=64)
    config = micro_config("auxiliary_016", max_epochs=4)
    config["finetune"] = {
        "init_from": str(source_path),
        "freeze_epochs": 2,
        "backbone_lr_scale": 0.5,
    }
    source = resolve_source(str(source_path), get_paths().experiments_dir, "micro")
    config = adopt_network(config, source)
    paths = get_paths()
    data = load_first_level_data(config, paths, load_vocabulary(paths), "if-present")

    def train(folder, interrupt_at=None):
        parts = build_fold(data, 0, RunOptions())
        if interrupt_at is not None:
            parts.extra_callbacks.append(InterruptAfter(interrupt_at))
        return run_fold(parts, folder, Schedule.from_config(config), "micro", progress=False)

    train(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "resumed", interrupt_at=1)  # saved after epoch 0, inside the frozen ones
    train(tmp_path / "resumed")
    logs = [
        pd.read_csv(tmp_path / d / "log.csv").drop(columns="time") for d in ("straight", "resumed")
    ]
    pd.testing.assert_frame_equal(*logs)
    (a,), (b,) = (list((tmp_path / d).glob("model-*.pth")) for d in ("straight", "resumed"))
    assert a.name == b.name
    for key, value in state_of(a).items():
        assert torch.equal(value, state_of(b)[key]), key


def test_finetune_settings_without_a_source_shape_nothing():
    """A run from random weights resumes (and a search continues) across a change of the
    fine-tuning defaults; a fine-tune does not."""
    before = {"init_from": None, "freeze_epochs": 3, "backbone_lr_scale": 0.1}
    after = {"init_from": None, "freeze_epochs": 0, "backbone_lr_scale": 1.0}
    old, new = ({"config": {"max_epochs": 4, "finetune": f}} for f in (before, after))
    assert record_differences(old, new) == []
    old["config"]["finetune"]["init_from"] = new["config"]["finetune"]["init_from"] = "src"
    assert record_differences(old, new) == [
        "config (config.finetune.backbone_lr_scale: 0.1 -> 1.0; "
        "config.finetune.freeze_epochs: 3 -> 0)"
    ]
