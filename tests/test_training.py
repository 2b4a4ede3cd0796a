"""Fold training: outputs, the experiment folder's rules, resuming, checkpoints, AMP."""

import json
import re
from types import SimpleNamespace

import argus
import numpy as np
import pandas as pd
import pytest
import torch
from argus.callbacks import Callback

from src.config import ConfigError, get_paths, load_vocabulary
from src.experiments import EXPERIMENTS, FIRST_LEVEL, STACKING, resolve
from src.models.argus_models import FreesoundModel, resolve_amp
from src.runs import STATE_FILE, ExperimentExistsError, prepare_experiment_dir
from src.training.callbacks.resume import resume
from src.training.command import train_command
from src.training.first_level import build_fold, load_first_level_data
from src.training.loop import run_fold
from src.training.parts import RunOptions, Schedule
from tests.helpers import micro_config

ARGS = ["--smoke", "--folds", "0", "--workers", "0", "--no-progress", "--device", "cpu"]


def test_registry_holds_the_seven_experiments_with_their_settings():
    assert FIRST_LEVEL == [
        "auxiliary_016",
        "auxiliary_019",
        "corr_noisy_003",
        "corr_noisy_004",
        "corr_noisy_007",
        "corrections_002",
        "corrections_003",
    ]
    assert [f"stacking_008_fcnet_{n}" for n in (43040, 45041, 50013)] == STACKING
    probs = {name: EXPERIMENTS[name]["datasets"] for name in FIRST_LEVEL}
    assert probs["corr_noisy_003"] == {"noisy": 0.1, "corrected": 0.2, "curated": 0.7}
    assert probs["corr_noisy_004"] == {"noisy": 0.07, "corrected": 0.33, "curated": 0.6}
    assert probs["corr_noisy_007"] == {"noisy": 0.01, "corrected": 0.42, "curated": 0.57}
    assert probs["corrections_002"] == {"noisy": 0.33, "corrected": 0.0, "curated": 0.67}
    for name in FIRST_LEVEL:
        config = resolve(name)
        assert config["optimizer"] == {"name": "Adam", "params": {"lr": 0.0009}}
        assert config["scheduler"] == {
            "patience": 6,
            "factor": 0.6,
            "min_lr": 1e-8,
            "warm_restarts": None,  # the plateau scheduler
        }
        assert config["finetune"]["init_from"] is None  # random weights
        assert (config["early_stopping"], config["max_epochs"], config["epoch_size"]) == (
            18,
            700,
            32768,
        )
        assert config["loss"]["params"] == {"beta": 0.7, "noisy_weight": 0.5, "curated_weight": 0.5}
        assert sum(config["datasets"].values()) == pytest.approx(1.0)
    assert resolve("corr_noisy_003")["model"]["name"] == "RnnAuxSkipAttention"
    assert resolve("auxiliary_019")["transforms"]["resize_scale"] == [0.75, 1.0]
    assert resolve("auxiliary_019")["transforms"]["resize_ratio"] == [1.6, 2.4]
    for name in ("corrections_002", "corrections_003"):
        config = resolve(name)
        assert config["aux_weights"] is None and config["mixer"]["prob"] == 0.66
        assert config["transforms"]["resize_prob"] == 0.0
    assert resolve("corrections_003")["model"]["params"]["kernel_size"] == 3
    assert resolve("auxiliary_016")["aux_weights"] == [1.0, 0.4, 0.2, 0.1]


def test_smoke_scaling_shrinks_but_keeps_the_recipe():
    full, smoke = resolve("corr_noisy_007"), resolve("corr_noisy_007", "smoke")
    assert smoke["model"]["params"]["base_size"] < full["model"]["params"]["base_size"]
    assert smoke["crop_size"] < full["crop_size"] and smoke["epoch_size"] < full["epoch_size"]
    assert smoke["max_epochs"] < full["max_epochs"]
    assert smoke["datasets"] == full["datasets"] and smoke["mixer"] == full["mixer"]
    assert smoke["scale"] == "smoke" and full["scale"] == "full"


def test_train_folds_writes_checkpoint_logs_and_curves(tiny_data):
    assert train_command(["--experiment", "corrections_002", *ARGS], "", kind="cnn") == 0
    experiment = get_paths().experiment_dir("corrections_002")
    params = json.loads((experiment / "params.json").read_text())
    assert params["config"] == json.loads(json.dumps(resolve("corrections_002", "smoke")))
    assert params["classes"] == list(load_vocabulary().classes) and params["seed"] == 2019
    fold = experiment / "fold_0"
    checkpoints = list(fold.glob("model-*.pth"))
    assert len(checkpoints) == 1 and re.fullmatch(
        r"model-\d{3}-\d\.\d{6}\.pth", checkpoints[0].name
    )
    log = pd.read_csv(fold / "log.csv")
    assert len(log) == 4 and (log["train_samples"] == 256).all()  # smoke epoch size
    assert {"train_loss", "val_loss", "val_lwlrap", "val_multi_accuracy", "lr"} <= set(log.columns)
    assert "val - epoch: 3" in (fold / "log.txt").read_text()
    assert (fold / "curves.png").stat().st_size > 10_000
    finished = json.loads((fold / "finished.json").read_text())
    assert finished["best_checkpoint"] == checkpoints[0].name
    assert not (fold / STATE_FILE).exists()


def test_finished_folds_are_skipped_and_other_configs_refused(tiny_data, capsys):
    assert train_command(["--experiment", "corrections_002", *ARGS], "", kind="cnn") == 0
    fold = get_paths().experiment_dir("corrections_002") / "fold_0"
    before = {p.name: p.stat().st_mtime_ns for p in fold.iterdir()}
    assert train_command(["--experiment", "corrections_002", *ARGS], "", kind="cnn") == 0
    assert {p.name: p.stat().st_mtime_ns for p in fold.iterdir()} == before
    # A different configuration (another seed) never overwrites without --force.
    assert (
        train_command(["--experiment", "corrections_002", *ARGS, "--seed", "7"], "", kind="cnn")
        == 1
    )
    assert "different seed" in capsys.readouterr().err and fold.exists()
    args = ["--experiment", "corrections_002", *ARGS, "--seed", "7", "--force"]
    assert train_command(args, "", kind="cnn") == 0
    assert json.loads((fold.parent / "params.json").read_text())["seed"] == 7


def test_wrong_kind_and_unknown_experiment_are_clear_errors(tiny_data, capsys):
    assert train_command(["--experiment", "stacking_008_fcnet_43040", *ARGS], "", kind="cnn") == 1
    assert "use stacking_train.py" in capsys.readouterr().err
    assert train_command(["--experiment", "auxiliary_999", *ARGS], "", kind="cnn") == 1
    assert "unknown experiment 'auxiliary_999'" in capsys.readouterr().err


class InterruptAfter(Callback):
    """Simulates a kill: raises at the end of the given epoch (before the state is saved)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_complete(self, state) -> None:
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


def train_micro(fold_dir, interrupt_at=None, workers=0, max_epochs=4):
    paths = get_paths()
    config = micro_config("auxiliary_016", max_epochs=max_epochs)
    data = load_first_level_data(config, paths, load_vocabulary(paths), "if-present")
    parts = build_fold(data, 0, RunOptions(workers=workers))
    if interrupt_at is not None:
        parts.extra_callbacks.append(InterruptAfter(interrupt_at))
    return run_fold(parts, fold_dir, Schedule.from_config(config), "micro", progress=False)


def test_resuming_after_a_kill_gives_the_uninterrupted_result(tiny_data, tmp_path):
    train_micro(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        train_micro(tmp_path / "resumed", interrupt_at=2)
    assert (tmp_path / "resumed" / STATE_FILE).exists()  # saved after epoch 1
    train_micro(tmp_path / "resumed")
    straight = pd.read_csv(tmp_path / "straight" / "log.csv").drop(columns="time")
    resumed = pd.read_csv(tmp_path / "resumed" / "log.csv").drop(columns="time")
    pd.testing.assert_frame_equal(straight, resumed)  # every epoch's metrics, bit for bit
    (a,), (b,) = (list((tmp_path / d).glob("model-*.pth")) for d in ("straight", "resumed"))
    assert a.name == b.name
    for key, value in torch.load(a, weights_only=True)["nn_state_dict"].items():
        assert torch.equal(value, torch.load(b, weights_only=True)["nn_state_dict"][key]), key


@pytest.mark.filterwarnings("ignore:for (weight|bias). copying from a non-meta")
def test_resuming_on_a_gpu_hands_torch_cpu_byte_rng_states(tmp_path, monkeypatch):
    # This machine plays a GPU with the meta device: the model's parameters are there, and
    # torch.load puts what it is asked to map anywhere but the CPU there (as CUDA puts it on
    # the GPU). torch takes RNG states back only as CPU byte tensors: the spies refuse others
    # with torch's message.
    network = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(network.parameters())
    network(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    torch.manual_seed(5)
    saved_rng = torch.get_rng_state()
    state = {
        "epoch": 0,
        "nn_state_dict": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": {},
        "torch_rng": saved_rng,
        "cuda_rng": [saved_rng.clone()],
    }
    torch.save(state, tmp_path / STATE_FILE)
    real_load, real_set_rng_state = torch.load, torch.set_rng_state

    def load_as_a_gpu_would(source, map_location=None, **kwargs):
        data = real_load(source, map_location="cpu", **kwargs)
        if map_location is None or torch.device(map_location).type == "cpu":
            return data
        return torch.utils._pytree.tree_map_only(torch.Tensor, lambda t: t.to("meta"), data)

    handed = []

    def cpu_bytes_only(state):
        if state.device.type != "cpu" or state.dtype != torch.uint8:
            raise TypeError("RNG state must be a torch.ByteTensor")
        handed.append(state)
        return state

    monkeypatch.setattr(torch, "load", load_as_a_gpu_would)
    monkeypatch.setattr(torch, "set_rng_state", lambda s: real_set_rng_state(cpu_bytes_only(s)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda s: [cpu_bytes_only(x) for x in s])
    on_gpu = torch.nn.Linear(3, 2, device="meta")
    model = SimpleNamespace(
        device=torch.device("cuda"),
        get_nn_module=lambda: on_gpu,
        optimizer=torch.optim.Adam(on_gpu.parameters()),
    )
    torch.manual_seed(6)
    saved, start_epoch = resume(model, tmp_path)
    assert saved["epoch"] == 0
    assert start_epoch == 1 and len(handed) == 2  # the CPU generator's state and the GPU's
    assert torch.equal(torch.get_rng_state(), saved_rng)
    assert model.optimizer.state_dict()["state"][0]["step"] == 1
    assert model.optimizer.state_dict()["state"][0]["exp_avg"].device == on_gpu.weight.device


def assert_same_run(a, b):
    """Two fold folders hold the same run: every epoch's metrics and the best weights."""
    logs = [pd.read_csv(d / "log.csv").drop(columns="time") for d in (a, b)]
    pd.testing.assert_frame_equal(*logs)
    (first,), (second,) = (list(d.glob("model-*.pth")) for d in (a, b))
    assert first.name == second.name
    first, second = (torch.load(p, weights_only=True)["nn_state_dict"] for p in (first, second))
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


def test_the_number_of_loader_workers_does_not_change_the_run(tiny_data, tmp_path):
    # Loader workers must not consume the global torch generator differently from the main
    # process (dropout and the model's other draws follow it): --workers 0 and 2 train alike.
    train_micro(tmp_path / "w0", workers=0, max_epochs=2)
    train_micro(tmp_path / "w2", workers=2, max_epochs=2)
    assert_same_run(tmp_path / "w0", tmp_path / "w2")


def test_resuming_with_loader_workers_gives_the_uninterrupted_result(tiny_data, tmp_path):
    # Killed after epoch 0 (its state saved): epoch 1 must equal the uninterrupted epoch 1.
    train_micro(tmp_path / "straight", workers=1, max_epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train_micro(tmp_path / "resumed", interrupt_at=1, workers=1, max_epochs=2)
    train_micro(tmp_path / "resumed", workers=1, max_epochs=2)
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_checkpoint_loads_with_argus_weights_only(tiny_data):
    assert train_command(["--experiment", "corr_noisy_003", *ARGS], "", kind="cnn") == 0
    (path,) = (get_paths().experiment_dir("corr_noisy_003") / "fold_0").glob("model-*.pth")
    raw = torch.load(path, weights_only=True)  # plain data only: safe to load
    assert raw["model_name"] == "FreesoundModel" and raw["params"]["crop_size"] == 64
    assert any(key.startswith("lstm.rnn.") for key in raw["nn_state_dict"])
    model = argus.load_model(str(path), device="cpu", optimizer=None, loss=None)
    assert isinstance(model, FreesoundModel) and not model.nn_module.training
    probabilities = model.predict(torch.zeros(2, 3, 128, 64))
    assert probabilities.shape == (2, 6) and torch.all((probabilities >= 0) & (probabilities <= 1))


def test_bf16_autocast_trains_with_fp32_losses(tiny_data):
    paths = get_paths()
    config = micro_config()
    data = load_first_level_data(config, paths, load_vocabulary(paths), "if-present")
    parts = build_fold(data, 0, RunOptions(amp="bf16"))
    assert parts.model.amp == "bf16"
    batch = next(iter(parts.train_loader))
    before = [p.detach().clone() for p in parts.model.nn_module.parameters()]
    output = parts.model.train_step(batch, None)
    assert np.isfinite(output["loss"]) and output["prediction"].dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in parts.model.nn_module.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, parts.model.nn_module.parameters()))


def test_amp_resolution():
    assert resolve_amp("auto", "cpu") == "off"
    assert resolve_amp("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="amp must be one of"):
        resolve_amp("fp8", "cpu")


def test_a_reworded_provenance_note_does_not_make_another_run(tmp_path):
    """config["original"] notes where the settings come from; rewording it (as docs move) must
    not make an existing experiment 'a run with a different config'."""
    folder = tmp_path / "exp"
    record = {"config": resolve("corr_noisy_003", "smoke"), "classes": ["a"], "seed": 1}
    prepare_experiment_dir(folder, record, force=False)
    (folder / "fold_0").mkdir()
    reworded = json.loads(json.dumps(record))
    reworded["config"]["original"]["note"] = "said differently"
    prepare_experiment_dir(folder, reworded, force=False)  # continues the same run
    changed = json.loads(json.dumps(record))
    changed["config"]["max_epochs"] += 1
    epochs = record["config"]["max_epochs"]
    with pytest.raises(ExperimentExistsError, match="different config") as refused:
        prepare_experiment_dir(folder, changed, force=False)
    assert f"(config.max_epochs: {epochs} -> {epochs + 1})" in str(refused.value)


def test_a_folder_where_no_fold_started_takes_the_new_config(tmp_path):
    """A run refused after its params.json was written (nothing trained under it) is no
    'different config' for the corrected rerun."""
    folder = tmp_path / "exp"
    record = {"config": resolve("corr_noisy_003", "smoke"), "classes": ["a"], "seed": 1}
    prepare_experiment_dir(folder, record, force=False)
    changed = json.loads(json.dumps(record))
    changed["config"]["max_epochs"] += 1
    prepare_experiment_dir(folder, changed, force=False)
    assert json.loads((folder / "params.json").read_text())["config"]["max_epochs"] == (
        record["config"]["max_epochs"] + 1
    )


def test_epoch_lines_go_to_the_log_file_unless_verbose(tiny_data, capfd):
    args = [*ARGS, "--experiment", "corr_noisy_007", "--max-epochs", "1"]
    assert train_command(args, "", kind="cnn") == 0
    out = capfd.readouterr().out
    log_txt = (get_paths().experiment_dir("corr_noisy_007") / "fold_0" / "log.txt").read_text()
    assert "val - epoch: 0" in log_txt and "val_lwlrap" in log_txt
    assert "val - epoch" not in out and "Model saved" not in out
    assert "corr_noisy_007 fold 0: " in out  # the summary stays
    assert train_command([*args, "--force", "--verbose"], "", kind="cnn") == 0
    assert "val - epoch: 0" in capfd.readouterr().out


def test_a_resume_under_other_audio_settings_or_corrections_is_refused(tmp_path):
    import hashlib

    from src.config import AudioConfig, Paths
    from src.runs import audio_record, corrections_record, read_params

    paths = Paths(input_dir=tmp_path, save_dir=tmp_path, experiments_dir=tmp_path / "experiments")
    paths.corrections_dir.mkdir()
    fix = paths.corrections_dir / "corrections.json"
    fix.write_text('{"a.wav": ["Bark"]}')
    config = {"kind": "cnn", "scale": "smoke", "corrections": {"curated": "corrections.json"}}

    def record(rule="original", mode="required"):
        return {
            "config": config,
            "seed": 1,
            "audio": audio_record(AudioConfig(short_clip_rule=rule)),
            "corrections": corrections_record(paths, config, mode),
        }

    folder = tmp_path / "experiments" / "x"
    prepare_experiment_dir(folder, record(), force=False)
    (folder / "fold_0").mkdir()
    assert read_params(folder)["corrections"]["files"] == {
        "corrections.json": hashlib.sha256(fix.read_bytes()).hexdigest()
    }
    prepare_experiment_dir(folder, record(), force=False)  # the same: it resumes
    with pytest.raises(ExperimentExistsError, match=r"audio short_clip_rule \(original -> cen"):
        prepare_experiment_dir(folder, record("centered"), force=False)
    with pytest.raises(ExperimentExistsError, match=r"corrections mode \(required -> none\)"):
        prepare_experiment_dir(folder, record(mode="none"), force=False)
    fix.write_text('{"a.wav": ["Meow"]}')  # a review session edited the file
    with pytest.raises(ExperimentExistsError, match="corrections files .*--force"):
        prepare_experiment_dir(folder, record(), force=False)
    prepare_experiment_dir(folder, record(), force=True)
    assert not (folder / "fold_0").exists()


def test_an_old_record_is_read_as_the_defaults_of_its_time(tmp_path):
    from src.config import AudioConfig
    from src.runs import audio_record, check_audio_settings, read_params

    folder = tmp_path / "old"
    (folder / "fold_0").mkdir(parents=True)  # a fold started under the old record
    old = {"config": {"kind": "cnn", "scale": "full"}, "seed": 1, "runtime": {}}
    (folder / "params.json").write_text(json.dumps(old))
    record = read_params(folder)
    assert record["audio"]["short_clip_rule"] == "original"
    assert record["corrections"] == {"mode": "required", "files": None}  # files: not compared
    check_audio_settings(record, "old", AudioConfig())
    with pytest.raises(ConfigError, match="short_clip_rule original .here centered.*=original"):
        check_audio_settings(record, "old", AudioConfig(short_clip_rule="centered"))
    again = {**old, "audio": audio_record(AudioConfig()), "corrections": {"mode": "required"}}
    again["corrections"]["files"] = {"corrections.json": "ab" * 32}
    prepare_experiment_dir(folder, again, force=False)  # compared as far as the old one knows
    with pytest.raises(ExperimentExistsError, match="short_clip_rule"):
        prepare_experiment_dir(
            folder,
            {**again, "audio": audio_record(AudioConfig(short_clip_rule="centered"))},
            force=False,
        )
