"""The live demo: buffering, pacing, microphone wiring, window, and demo.py end to end."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from src.config import ConfigError
from src.data.audio import audio_to_melspectrogram, load_audio, make_extractor
from src.prediction.tiling import Predictor
from src.tools.live import (
    LiveTagger,
    LiveUpdate,
    file_blocks,
    format_update,
    import_sounddevice,
    microphone_blocks,
    paced,
)
from tests.helpers import FakeSoundDevice, tone, write_wav

REPO_ROOT = Path(__file__).resolve().parents[1]
SR = 44100
LINE = re.compile(r"^ {0,3}(\d+)s\t(.+)$")
ENTRY = re.compile(r"^ *(\S+) - (\d\.\d\d)$")


def tiny_model(crop_size: int, num_classes: int = 5):
    """A randomly initialised small AuxSkipAttention whose tile is `crop_size` frames."""
    from src.experiments import resolve
    from src.models.argus_models import FreesoundModel, model_params

    config = resolve("auxiliary_016", "smoke")
    config["crop_size"] = crop_size
    torch.manual_seed(0)
    return FreesoundModel(model_params(config, num_classes, "cpu", "off", False))


class FakePredictor:
    """Only what LiveTagger reads: the tile and a settable step."""

    def __init__(self, tile: int) -> None:
        self.tile, self.step = tile, tile // 4


def noise_blocks(levels: list[float]) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [(level * rng.standard_normal(SR)).astype(np.float32) for level in levels]


# --------------------------------------------------------------------------------------
# LiveTagger
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("crop", "blocks"), [(256, 4), (64, 1), (128, 2), (100, 1), (32, 1)])
def test_window_holds_crop_size_over_64_blocks(crop, blocks):
    tagger = LiveTagger(FakePredictor(crop), extractor=make_extractor("librosa"))
    assert tagger.n_blocks == blocks
    assert tagger.window_frames == 64 * blocks
    assert tagger.predictor.step == crop  # one tile per window


def test_buffering_matches_the_original_and_predictions_the_predictor():
    model = tiny_model(256)
    tagger = LiveTagger(Predictor(model, "cpu", batch_size=1))
    audio = noise_blocks([0.01, 0.3, 0.02, 0.5, 0.05])
    updates = list(tagger.run(audio))
    assert [u.index for u in updates] == [1, 2, 3, 4, 5]

    # Spec 12 by hand, with the librosa reference: each block's 64 frames are the last 64 of
    # the log-mel of (previous block + block); the first block follows a second of silence.
    previous = [np.zeros(SR, np.float32), *audio[:-1]]
    expected = [
        audio_to_melspectrogram(np.concatenate([before, block]))[:, -64:]
        for before, block in zip(previous, audio)
    ]
    for update, block in zip(updates, expected):
        assert update.block.shape == (128, 64)
        np.testing.assert_allclose(update.block, block, atol=2e-3)
        assert update.window.shape == (128, 256)
    # Not yet received blocks are filled with the minimum of the received ones.
    first, second = updates[0].window, updates[1].window
    np.testing.assert_array_equal(first[:, :192], updates[0].block.min())
    np.testing.assert_array_equal(first[:, 192:], updates[0].block)
    received_min = min(updates[0].block.min(), updates[1].block.min())
    np.testing.assert_array_equal(second[:, :128], received_min)
    np.testing.assert_array_equal(second[:, 128:], np.hstack([updates[0].block, updates[1].block]))
    np.testing.assert_allclose(updates[3].window, np.hstack(expected[0:4]), atol=2e-3)
    np.testing.assert_allclose(updates[4].window, np.hstack(expected[1:5]), atol=2e-3)

    # The prediction is the predictor's single tile of that window.
    reference = Predictor(model, "cpu", tile_step=256)
    for update in updates:
        tiles = reference.predict_tiles([update.window])[0]
        assert tiles.shape == (1, 5)
        np.testing.assert_allclose(update.probabilities, tiles[0], rtol=0, atol=1e-6)
        assert update.mel_seconds > 0 and update.predict_seconds > 0


def test_blocks_must_be_one_second_and_reset_starts_over():
    tagger = LiveTagger(Predictor(tiny_model(64), "cpu"))
    with pytest.raises(ValueError, match="44100 samples"):
        tagger.push(np.zeros(1000, np.float32))
    block = noise_blocks([0.1])[0]
    first = tagger.push(block[:, None])  # (frames, channels) as sounddevice delivers
    tagger.push(block)
    tagger.reset()
    again = tagger.push(block)
    assert again.index == 1
    np.testing.assert_array_equal(again.window, first.window)


def test_format_update_is_the_original_line_with_the_second_count():
    classes = ["Bark", "Accelerating_and_revving_and_vroom", "Cat", "Meow"]
    update = LiveUpdate(
        12, np.zeros((1, 1)), np.zeros((1, 1)), np.array([0.2, 0.75, 0.2, 0.013]), 0.0, 0.0
    )
    line = format_update(update, classes, 3)
    # Name right-justified to the longest class name (34 here, else 20), " - ", 2 decimals,
    # tabs, so that the columns line up; the tie keeps the class order.
    assert line == (
        "  12s\tAccelerating_and_revving_and_vroom - 0.75\t" + " " * 30 + "Bark - 0.20"
        "\t" + " " * 31 + "Cat - 0.20"
    )
    short = format_update(update, ["Bark", "Car", "Cat", "Meow"], 1)
    assert short == "  12s\t                 Car - 0.75"  # the original's 20


# --------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------


def test_file_blocks_are_whole_seconds_and_drop_the_rest():
    audio = np.arange(int(2.7 * SR), dtype=np.float32)
    blocks = list(file_blocks(audio, SR))
    assert len(blocks) == 2
    np.testing.assert_array_equal(blocks[1], audio[SR : 2 * SR])
    assert list(file_blocks(audio[: SR - 1], SR)) == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_paced_releases_block_i_at_i_seconds_without_drift():
    clock = FakeClock()
    released = []
    for index, _ in enumerate(paced(range(4), clock=clock, sleep=clock.sleep)):
        released.append(clock.now)
        clock.now += 1.5 if index == 1 else 0.3  # the work on each block
    # Block 3 is late (1.5 s of work on block 2) and comes at once; block 4 is on time again.
    assert released == pytest.approx([101.0, 102.0, 103.5, 104.0])


def test_microphone_blocks_open_the_original_stream_and_yield_its_blocks():
    audio = noise_blocks([0.1, 0.2, 0.3])
    fake = FakeSoundDevice(audio)
    blocks = microphone_blocks(device=2, sounddevice=fake)
    received = list(itertools.islice(blocks, 3))
    blocks.close()
    for got, sent in zip(received, audio):
        np.testing.assert_array_equal(got, sent)
    arguments = {k: v for k, v in fake.stream_arguments.items() if k != "callback"}
    assert arguments == {
        "samplerate": 44100,
        "blocksize": 44100,
        "channels": 1,
        "dtype": "float32",
        "device": 2,
    }
    assert fake.closed


def test_no_input_device_gives_the_hints(monkeypatch):
    fake = FakeSoundDevice([], broken=True)
    monkeypatch.setattr("src.tools.live.inside_docker", lambda: False)
    with pytest.raises(ConfigError, match="--list-devices") as error:
        next(microphone_blocks(sounddevice=fake))
    assert "--audio-device" in str(error.value) and "/dev/snd" not in str(error.value)
    monkeypatch.setattr("src.tools.live.inside_docker", lambda: True)
    with pytest.raises(ConfigError, match="--device /dev/snd"):
        next(microphone_blocks(sounddevice=fake))


def test_missing_portaudio_is_reported_with_the_package_to_install(monkeypatch):
    monkeypatch.setenv("FREESOUND_DEMO_NO_PORTAUDIO", "1")
    with pytest.raises(ConfigError, match=r"PortAudio library not found.*libportaudio2"):
        import_sounddevice()


# --------------------------------------------------------------------------------------
# The window
# --------------------------------------------------------------------------------------


def test_view_updates_one_image_in_place_and_saves_a_png(tmp_path):
    from src.tools.live_view import LiveView

    classes = [f"class_{i}" for i in range(12)]
    view = LiveView(classes, window_frames=256)
    rng = np.random.default_rng(3)
    for index in range(1, 6):
        window = rng.uniform(-90, -10, (128, 256)).astype(np.float32)
        probabilities = rng.uniform(0, 1, 12)
        view.show(LiveUpdate(index, window[:, -64:], window, probabilities, 0.01, 0.02))
    # The original added an image per second (docs/original.md, quirk "Demo window"); here there
    # is only ever one.
    assert len(view.spectrogram_axes.images) == 1
    np.testing.assert_array_equal(view.image.get_array(), window)
    assert view.image.get_clim() == (pytest.approx(window.min()), pytest.approx(window.max()))
    order = np.argsort(-probabilities)[:10]
    assert [bar.get_width() for bar in view.bars] == pytest.approx(probabilities[order])
    labels = [label.get_text() for label in view.bar_axes.get_yticklabels()]
    assert labels == [classes[i] for i in order]
    png = view.save(tmp_path / "window.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1400, 700)  # 14 x 7 in at 100 dpi, as the original's figure


def test_require_display_explains_headless(monkeypatch):
    from src.tools.live_view import require_display

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ConfigError, match="DISPLAY is not set.*--headless"):
        require_display()
    monkeypatch.setenv("DISPLAY", ":0")  # a display, but matplotlib is on Agg (conftest)
    with pytest.raises(ConfigError, match="'agg' cannot open a window.*--headless"):
        require_display()


# --------------------------------------------------------------------------------------
# demo.py
# --------------------------------------------------------------------------------------


def run_demo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "demo.py", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def best_checkpoint_by_hand(data: Path) -> Path:
    """The documented default: the first-level experiment with the best mean of its folds'
    best scores, and its best fold."""
    import json

    pattern = re.compile(r"model-\d+-([\d.]+)\.pth")
    ranked = []
    for params in (data / "experiments").glob("*/params.json"):
        if json.loads(params.read_text())["config"]["kind"] != "cnn":
            continue
        best = []
        for fold in params.parent.glob("fold_*"):
            scored = [(float(pattern.match(p.name)[1]), p) for p in fold.glob("model-*.pth")]
            if scored:
                best.append(max(scored))
        ranked.append((np.mean([score for score, _ in best]), max(best)[1]))
    return max(ranked)[1]


def test_demo_streams_a_recording_one_update_per_second(smoke_data, librosa_examples, tmp_path):
    recording = next(p for p in librosa_examples if p.name.startswith("sorohanro"))  # 5.3 s
    dump = tmp_path / "updates.npz"
    result = run_demo("--input", str(recording), "--fast", "--headless", "--dump", str(dump))
    assert result.returncode == 0, result.stderr
    checkpoint = best_checkpoint_by_hand(smoke_data)
    assert f"model: {checkpoint} " in result.stderr

    audio = load_audio(recording)
    lines = result.stdout.splitlines()
    assert len(lines) == len(audio) // SR == 5
    saved = np.load(dump)
    classes = list(saved["classes"])
    predictor = Predictor(checkpoint, "cpu")
    assert predictor.tile == 64  # a smoke model: the window is one block
    extractor = make_extractor("torch")
    for second, (line, window, probabilities) in enumerate(
        zip(lines, saved["windows"], saved["probabilities"]), start=1
    ):
        # The documented format: "<second>s", a tab, 3 tab-separated "<name> - <p>" entries.
        match = LINE.match(line)
        assert match and int(match[1]) == second
        entries = [ENTRY.match(entry) for entry in match[2].split("\t")]
        assert len(entries) == 3 and all(entries)
        order = np.argsort(-probabilities, kind="stable")[:3]
        assert [e[1] for e in entries] == [classes[i] for i in order]
        assert [e[2] for e in entries] == [f"{probabilities[i]:.2f}" for i in order]
        # The window rebuilt from the audio: the last 64 frames of the log-mel of 2 s.
        two_seconds = audio[(second - 2) * SR : second * SR] if second > 1 else None
        if two_seconds is None:
            two_seconds = np.concatenate([np.zeros(SR, np.float32), audio[:SR]])
        rebuilt = extractor([two_seconds])[0][:, -64:]
        np.testing.assert_allclose(window, rebuilt, atol=1e-4)
        # ... and the predictor on that window.
        predictor.step = 64
        expected = predictor.predict_tiles([rebuilt])[0]
        assert expected.shape[0] == 1
        np.testing.assert_allclose(probabilities, expected[0], rtol=0, atol=1e-6)


def test_demo_microphone_path_with_a_fake_device(smoke_data, monkeypatch, capsys):
    import demo

    fake = FakeSoundDevice(noise_blocks([0.1, 0.3, 0.2, 0.1]))
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    assert demo.main(["--headless", "--seconds", "3", "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [LINE.match(line)[1] for line in lines] == ["1", "2", "3"]
    assert all(len(LINE.match(line)[2].split("\t")) == 2 for line in lines)
    assert fake.closed


def test_demo_without_portaudio_prints_the_hint(tmp_path):
    result = run_demo("--headless", env={"FREESOUND_DEMO_NO_PORTAUDIO": "1"})
    assert result.returncode == 1
    assert "PortAudio library not found" in result.stderr
    assert "apt-get install libportaudio2" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_without_a_trained_model_says_how_to_train_one(tmp_path):
    recording = tmp_path / "tone.wav"
    write_wav(recording, tone(2.0))
    result = run_demo("--input", str(recording), "--fast", "--headless")
    assert result.returncode == 1
    assert "no trained model found in" in result.stderr
    assert "python train_folds.py --experiment corr_noisy_007" in result.stderr
    assert "--model PATH" in result.stderr and "Traceback" not in result.stderr
