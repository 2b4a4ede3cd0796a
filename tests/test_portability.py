"""Portable checkpoints: float32 prediction unless --amp is asked, whatever the
training precision; plain state-dict keys from --compile runs, and old prefixed files load."""

from __future__ import annotations

import json

import pytest
import torch

from src.config import get_paths
from src.models.argus_models import FreesoundModel
from src.prediction.tiling import Predictor, load_checkpoint, prediction_amp, set_prediction_amp
from src.runs import best_checkpoint
from src.training.callbacks.checkpoints import save_model_atomic
from src.training.command import train_command

ARGS = ["--smoke", "--folds", "0", "--workers", "0", "--no-progress", "--device", "cpu"]


def tiny_params(amp: str) -> dict:
    return {
        "nn_module": ("AuxSkipAttention", {"num_classes": 6, "base_size": 4, "dropout": 0.1}),
        "loss": ("BCEWithLogits", {}),
        "optimizer": ("Adam", {"lr": 0.001}),
        "device": "cpu",
        "aux_weights": [1.0, 0.4, 0.2, 0.1],
        "amp": amp,
        "channels_last": False,
        "crop_size": 32,
    }


@pytest.fixture(autouse=True)
def default_prediction_precision():
    yield
    set_prediction_amp(None)


def test_bf16_trained_model_predicts_float32_by_default(tmp_path):
    torch.manual_seed(0)
    trained = FreesoundModel(tiny_params("bf16"))
    path = tmp_path / "model-001-0.500000.pth"
    save_model_atomic(trained, path)
    assert torch.load(path, weights_only=True)["params"]["amp"] == "bf16"  # kept as trained

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = torch.sigmoid(trained.nn_module.eval()(x)[0])
    assert prediction_amp() == "off"
    model = load_checkpoint(path, "cpu")
    assert model.amp == "off"
    probabilities = model.predict(x)
    assert probabilities.dtype == torch.float32
    torch.testing.assert_close(probabilities, reference, atol=1e-6, rtol=0)
    assert Predictor(path, "cpu").model.amp == "off"

    # Asked for: bf16 autocast (an explicit argument, or a script's --amp).
    assert load_checkpoint(path, "cpu", amp="bf16").amp == "bf16"
    set_prediction_amp("bf16")
    bf16 = Predictor(path, "cpu").model
    assert bf16.amp == "bf16"
    assert (bf16.predict(x) - reference).abs().max() > 1e-6  # it really ran in bf16


def test_compile_prefixed_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    model = FreesoundModel(tiny_params("off"))
    state = {
        "model_name": "FreesoundModel",
        "params": model.params,
        "nn_state_dict": {f"_orig_mod.{k}": v for k, v in model.nn_module.state_dict().items()},
    }
    path = tmp_path / "model-001-0.500000.pth"
    torch.save(state, path)
    loaded = load_checkpoint(path, "cpu")
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.predict(x), model.predict(x))


def test_compiled_network_saves_plain_keys(tmp_path):
    model = FreesoundModel(tiny_params("off"))
    model.nn_module = torch.compile(model.nn_module)  # wrapping only: nothing is compiled yet
    assert next(iter(model.nn_module.state_dict())).startswith("_orig_mod.")
    path = tmp_path / "model-001-0.500000.pth"
    save_model_atomic(model, path)
    keys = list(torch.load(path, weights_only=True)["nn_state_dict"])
    assert keys and not any(k.startswith("_orig_mod.") for k in keys)


@pytest.mark.slow
def test_compile_smoke_fold_predicts(tiny_data):
    """A real `--compile` smoke fold (minutes on two CPU cores: marked slow)."""
    args = ["--experiment", "corrections_002", *ARGS, "--compile", "--max-epochs", "1"]
    assert train_command(args, "", kind="cnn") == 0
    experiment = get_paths().experiment_dir("corrections_002")
    params = json.loads((experiment / "params.json").read_text())
    assert params["runtime"]["compile"]
    checkpoint = best_checkpoint(experiment / "fold_0")[0]
    raw = torch.load(checkpoint, weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in raw["nn_state_dict"])
    predictor = Predictor(checkpoint, "cpu")
    assert predictor.model.amp == "off"
    tiles = predictor.predict_tiles([torch.randn(128, 100).numpy()])[0]
    assert tiles.dtype == "float32" and tiles.shape[1] == len(params["classes"])
