"""export_onnx.py, and tag_audio.py / demo.py with --onnx (ONNX Runtime instead of PyTorch)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from tests.helpers import save_cnn_checkpoint, tone, write_wav

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from src.prediction.tiling import Predictor
from src.tools.onnx_export import OnnxPredictor, export_checkpoint


def test_full_size_aux_skip_attention_agrees_with_pytorch(tmp_path):
    checkpoint = tmp_path / "model-001-0.500000.pth"
    network = {"base_size": 64, "dropout": 0.4, "last_fc": 4}  # corr_noisy_007's network
    save_cnn_checkpoint(checkpoint, crop_size=64, **network)
    started = time.perf_counter()
    report = export_checkpoint(checkpoint, tmp_path / "full.onnx")
    print(f"full-size export + check: {time.perf_counter() - started:.1f} s")  # about 10 s
    assert report.max_difference <= 1e-4
    assert report.input_shape == (3, 128, 64)


@pytest.fixture
def small_export(tmp_path):
    checkpoint = tmp_path / "model-001-0.500000.pth"
    save_cnn_checkpoint(checkpoint, crop_size=64)
    return checkpoint, export_checkpoint(checkpoint, tmp_path / "small.onnx").path


def test_onnx_predictor_tiles_as_predictor(small_export):
    checkpoint, onnx_file = small_export
    spectrogram = np.random.default_rng(0).normal(size=(128, 150)).astype(np.float32)
    expected = Predictor(checkpoint, "cpu").predict_tiles([spectrogram])[0]
    got = OnnxPredictor(onnx_file).predict_tiles([spectrogram])[0]
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_onnx_outputs_are_checked_as_the_predictors_are(small_export):
    """The exported network goes through Predictor's tiles, batches and output check: a
    damaged export giving NaN is an error naming the file, not NaN tags."""
    from src.prediction.tiling import PredictionError

    _, onnx_file = small_export
    predictor = OnnxPredictor(onnx_file)

    class Damaged:
        def run(self, names, feeds):
            return [np.full((len(feeds["input"]), 80), np.nan, np.float32)]

    predictor.session = Damaged()
    spectrogram = np.zeros((128, 100), np.float32)
    with pytest.raises(PredictionError, match=f"{onnx_file}: the model gives non-finite"):
        predictor.predict_tiles([spectrogram])


def test_tag_audio_with_onnx_matches_the_checkpoint(small_export, tmp_path, capsys):
    import tag_audio

    checkpoint, onnx_file = small_export
    clip = write_wav(tmp_path / "clip.wav", tone(2.5, 660))
    assert (
        tag_audio.main([str(clip), "--model", str(checkpoint), "--csv", str(tmp_path / "a.csv")])
        == 0
    )
    assert (
        tag_audio.main([str(clip), "--onnx", str(onnx_file), "--csv", str(tmp_path / "b.csv")]) == 0
    )
    assert "ONNX Runtime" in capsys.readouterr().err
    torch_tags, onnx_tags = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert list(onnx_tags.columns) == list(torch_tags.columns)
    np.testing.assert_allclose(
        onnx_tags.iloc[:, 1:].to_numpy(), torch_tags.iloc[:, 1:].to_numpy(), atol=1e-5
    )


def test_demo_with_onnx_matches_the_checkpoint(small_export, tmp_path, capsys):
    import demo

    checkpoint, onnx_file = small_export
    clip = write_wav(tmp_path / "clip.wav", tone(4.0, 440))
    common = ["--input", str(clip), "--fast", "--headless", "--seconds", "3"]
    assert demo.main(["--model", str(checkpoint), *common, "--dump", str(tmp_path / "a.npz")]) == 0
    assert demo.main(["--onnx", str(onnx_file), *common, "--dump", str(tmp_path / "b.npz")]) == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert (a["classes"] == b["classes"]).all() and len(a["probabilities"]) == 3
    np.testing.assert_allclose(b["probabilities"], a["probabilities"], atol=1e-5)
