"""Checkpoints are read as plain data only, whatever torch's default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import tag_audio
from src.config import AUDIO
from src.models.argus_models import FreesoundModel, model_params
from src.prediction.tiling import load_checkpoint
from src.runs import CheckpointError, read_checkpoint
from src.training.callbacks.checkpoints import save_model_atomic
from tests.helpers import micro_config, tone, write_wav


class MakesADirectory:
    """Unpickling this runs os.mkdir: what a crafted checkpoint could do instead."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.mkdir, (str(self.target),)


def tiny_checkpoint(path: Path) -> Path:
    params = model_params(micro_config(), 6, "cpu", "off", False)
    save_model_atomic(FreesoundModel(params), path)
    return path


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    state = torch.load(tiny_checkpoint(path), weights_only=True)
    torch.save({**state, "extra": MakesADirectory(marker)}, path)
    return path


@pytest.fixture
def unsafe_torch_default(monkeypatch):
    """torch's default as on torch < 2.6, or with the variable set: weights_only=False."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, unsafe_torch_default):
    marker = tmp_path / "code-ran"
    path = crafted_checkpoint(tmp_path / "model-001-0.5.pth", marker)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert not marker.exists()  # nothing ran
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "refused" in message


def test_tag_audio_refuses_a_crafted_model(tmp_path, unsafe_torch_default, capsys):
    marker = tmp_path / "code-ran"
    path = crafted_checkpoint(tmp_path / "model-001-0.5.pth", marker)
    wav = write_wav(tmp_path / "a.wav", tone(1.0), AUDIO.sampling_rate)
    assert tag_audio.main(["--model", str(path), str(wav), "--device", "cpu"]) == 1
    assert not marker.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "refused" in err[0]


def test_a_truncated_checkpoint_is_one_line_naming_it(tmp_path):
    path = tiny_checkpoint(tmp_path / "model-001-0.5.pth")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "truncated" in message


def test_a_file_that_is_no_argus_checkpoint_is_named(tmp_path):
    path = tmp_path / "model-001-0.5.pth"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not an argus checkpoint"):
        load_checkpoint(path)


def test_the_loaded_model_predicts_like_the_saved_one(tmp_path):
    path = tiny_checkpoint(tmp_path / "model-001-0.5.pth")
    model = load_checkpoint(path)
    assert isinstance(model, FreesoundModel) and not model.nn_module.training
    assert model.optimizer is None and model.loss is None
    saved = read_checkpoint(path)["nn_state_dict"]
    for key, value in model.nn_module.state_dict().items():
        assert torch.equal(value, saved[key]), key
