"""Bad audio and long runs of tagging: non-finite numbers,
decoder failures of any kind, forged headers, truncated files, and tag_audio.py's streaming."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

import tag_audio
from src.config import ConfigError
from src.data import store as store_module
from src.data.audio import (
    AudioDecodeError,
    LibrosaLogMel,
    SpectrogramError,
    TorchLogMel,
    list_audio_files,
    load_audio,
    read_audio,
    trim_audio,
)
from src.data.store import Extraction, get_store
from src.prediction.tiling import PredictionError, Predictor
from src.training.callbacks.checkpoints import save_model_atomic
from src.utils import file_problem
from tests.helpers import FakeSoundDevice, save_cnn_checkpoint, tone, write_wav

LOUD = 1e30  # finite in float32, but its square is not

# ---------------------------------------------------------------- forged files


def set_flac_total_samples(path: Path, total: int) -> Path:
    """Patch STREAMINFO's 36-bit total sample count (bytes 21..25 of a FLAC file)."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # the first block is STREAMINFO
    data[21] = (data[21] & 0xF0) | ((total >> 32) & 0x0F)
    data[22:26] = (total & 0xFFFFFFFF).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def set_wav_data_size(path: Path, size: int) -> Path:
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[at + 4 : at + 8] = size.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def loud_wav(path: Path, seconds: float = 1.5) -> Path:
    return write_wav(path, tone(seconds) * np.float32(LOUD), subtype="FLOAT")


# ---------------------------------------------------------------- item 3: log-mel


@pytest.mark.parametrize(
    "extractor", [LibrosaLogMel(), TorchLogMel(), TorchLogMel(precision="float32")]
)
def test_loud_but_finite_audio_gives_a_finite_log_mel(extractor):
    quiet = tone(1.0)
    loud = quiet * np.float32(LOUD)
    reference, spectrogram = extractor([quiet, loud])
    assert np.all(np.isfinite(spectrogram))
    # Scaling by 1e30 adds 600 dB and changes nothing else.
    np.testing.assert_allclose(spectrogram - 600.0, reference, atol=2e-3)


@pytest.mark.parametrize("extractor", [LibrosaLogMel(), TorchLogMel()])
def test_a_waveform_without_a_finite_log_mel_is_an_error(extractor):
    bad = tone(1.0)
    bad[100] = np.nan
    with pytest.raises(SpectrogramError, match="not finite"):
        extractor([tone(1.0), bad])


def test_trimming_loud_audio_keeps_the_sound(tmp_path):
    audio = np.concatenate([np.zeros(44100, np.float32), tone(1.0)]) * np.float32(LOUD)
    trimmed = trim_audio(audio)
    assert np.all(np.isfinite(trimmed)) and abs(len(trimmed) - 44100) < 2048


def test_store_lists_a_clip_without_a_finite_log_mel_in_its_failures(tmp_path, monkeypatch):
    good = write_wav(tmp_path / "a.wav", tone(1.0))
    bad = write_wav(tmp_path / "b.wav", tone(1.0))

    def nan_for_b(path, config):
        audio = read_audio(path, config)
        if Path(path).name == "b.wav":
            audio[10] = np.nan
        return audio

    monkeypatch.setattr(store_module, "read_audio", nan_for_b)
    store = get_store("set", [good, bad], tmp_path / "cache", Extraction(workers=1), progress=False)
    assert store.fnames == ["a.wav"]
    assert store.failures["fname"].tolist() == ["b.wav"]
    assert "not finite" in store.failures["reason"][0]


def test_store_batches_name_the_clip_without_a_finite_log_mel():
    """The GPU path computes log-mel in batches: a bad clip fails alone."""
    bad = tone(1.0)
    bad[5] = np.inf
    pending = [("a.wav", tone(1.0), None), ("b.wav", bad, None), ("c.wav", None, "undecodable")]
    results = list(store_module._gpu_batch(TorchLogMel(), pending))
    assert [r[0] for r in results] == ["a.wav", "b.wav", "c.wav"]
    assert np.all(np.isfinite(results[0][1]))
    assert results[1][1] is None and "not finite" in results[1][2]
    assert results[2][1:] == (None, "undecodable")


def test_store_of_a_loud_float_wav_is_finite(tmp_path):
    store = get_store(
        "loud", [loud_wav(tmp_path / "loud.wav")], tmp_path / "cache", Extraction(), progress=False
    )
    assert np.all(np.isfinite(store["loud.wav"]))


# ---------------------------------------------------------------- item 3: model outputs


def test_a_model_with_non_finite_outputs_is_an_error_naming_the_checkpoint(tmp_path):
    checkpoint = save_cnn_checkpoint(tmp_path / "model-001-0.500000.pth", poison=True)
    spectrogram = np.random.default_rng(0).normal(size=(128, 70)).astype(np.float32)
    with pytest.raises(PredictionError, match=f"{checkpoint}: .*non-finite") as raised:
        Predictor(checkpoint, "cpu").predict_tiles([spectrogram])
    assert isinstance(raised.value, ConfigError)  # the scripts' one-line errors


def tag(argv: list[str]) -> int:
    return tag_audio.main([*argv, "--device", "cpu", "--no-progress"])


def test_tag_audio_refuses_a_checkpoint_giving_nan(tmp_path, capsys):
    checkpoint = save_cnn_checkpoint(tmp_path / "model-001-0.500000.pth", poison=True)
    clip = write_wav(tmp_path / "a.wav", tone(1.0))
    assert tag([str(clip), "--model", str(checkpoint)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {checkpoint}: ") and "non-finite" in err[-1]


def test_tag_audio_tags_a_loud_float_wav(tmp_path, capsys):
    checkpoint = save_cnn_checkpoint(tmp_path / "model-001-0.500000.pth")
    loud = loud_wav(tmp_path / "loud.wav")
    csv = tmp_path / "tags.csv"
    assert tag([str(loud), "--model", str(checkpoint), "--csv", str(csv)]) == 0
    frame = pd.read_csv(csv)
    assert len(frame) == 1 and np.all(np.isfinite(frame.iloc[:, 1:].to_numpy()))
    assert "nan" not in capsys.readouterr().out


# ---------------------------------------------------------------- item 7: decoder failures


def test_a_flac_header_claiming_2_36_samples_is_refused_before_allocating(tmp_path):
    path = set_flac_total_samples(write_wav(tmp_path / "huge.flac", tone(1.0)), 2**36 - 1)
    with pytest.raises(AudioDecodeError, match="68719476735 samples") as raised:
        load_audio(path)
    assert raised.value.path == str(path) and "limit" in raised.value.reason


def test_the_length_limit_is_configurable(tmp_path, monkeypatch):
    path = write_wav(tmp_path / "long.wav", tone(3.0))
    monkeypatch.setenv("FREESOUND_MAX_AUDIO_SECONDS", "2")
    with pytest.raises(AudioDecodeError, match="limit"):
        load_audio(path)
    assert len(load_audio(path, max_seconds=4)) == 3 * 44100


def test_any_decoder_exception_is_the_files_failure(tmp_path, monkeypatch):
    path = write_wav(tmp_path / "a.wav", tone(1.0))

    def out_of_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 256. GiB")

    monkeypatch.setattr(soundfile.SoundFile, "read", out_of_memory)
    with pytest.raises(AudioDecodeError, match="MemoryError") as raised:
        load_audio(path)
    assert raised.value.path == str(path)


@pytest.mark.parametrize(
    ("name", "forge"),
    [
        ("long_header.wav", lambda p: set_wav_data_size(p, 0xFFFFFFF0)),
        ("truncated.wav", truncate),
        ("truncated.flac", truncate),
        ("long_header.flac", lambda p: set_flac_total_samples(p, 10 * 44100)),
    ],
)
def test_data_ending_before_the_header_says_is_a_warning(tmp_path, caplog, name, forge):
    path = forge(write_wav(tmp_path / name, tone(2.0)))
    with caplog.at_level(logging.WARNING, logger="src.data.audio"):
        audio = load_audio(path)
    assert 0 < len(audio) <= 2 * 44100
    assert any(str(path) in r.message and "header" in r.message for r in caplog.records)


def forged_folder(folder: Path) -> dict[str, Path]:
    files = {
        "good.wav": write_wav(folder / "good.wav", tone(1.0)),
        "huge.flac": set_flac_total_samples(write_wav(folder / "huge.flac", tone(1.0)), 2**36 - 1),
        "truncated.flac": truncate(write_wav(folder / "truncated.flac", tone(2.0))),
        "long_header.wav": set_wav_data_size(
            write_wav(folder / "long_header.wav", tone(1.0)), 2**32 - 16
        ),
    }
    return files


def test_store_keeps_going_past_forged_and_truncated_files(tmp_path, caplog):
    files = forged_folder(tmp_path / "audio")
    with caplog.at_level(logging.WARNING):
        store = get_store(
            "set", list(files.values()), tmp_path / "cache", Extraction(), progress=False
        )
    assert sorted(store.fnames) == ["good.wav", "long_header.wav", "truncated.flac"]
    failures = store.failures
    assert failures["fname"].tolist() == ["huge.flac"]
    assert "68719476735 samples" in failures["reason"][0]


def test_tag_audio_keeps_going_past_forged_and_truncated_files(tmp_path, capsys):
    files = forged_folder(tmp_path / "audio")
    checkpoint = save_cnn_checkpoint(tmp_path / "model-001-0.500000.pth")
    csv = tmp_path / "tags.csv"
    assert tag([str(tmp_path / "audio"), "--model", str(checkpoint), "--csv", str(csv)]) == 0
    captured = capsys.readouterr()
    assert f"skipped {files['huge.flac']}: " in captured.err
    assert "68719476735 samples" in captured.err
    assert sorted(Path(p).name for p in pd.read_csv(csv)["path"]) == [
        "good.wav",
        "long_header.wav",
        "truncated.flac",
    ]


# ---------------------------------------------------------------- item 10: streaming


def test_tag_audio_writes_rows_as_it_goes_and_reports_ctrl_c(tmp_path, capsys, monkeypatch):
    import src.tools.tagging.clips as clips
    import src.tools.tagging.files as files

    folder = tmp_path / "audio"
    for index in range(5):
        write_wav(folder / f"{index}.wav", tone(0.7, 300 + 100 * index))
    checkpoint = save_cnn_checkpoint(tmp_path / "model-001-0.500000.pth")
    csv, tiles_csv = tmp_path / "tags.csv", tmp_path / "tiles.csv"
    real_read_clip = clips.read_clip

    def interrupted_at_3(path, *args, **kwargs):
        if Path(path).name == "3.wav":
            raise KeyboardInterrupt
        return real_read_clip(path, *args, **kwargs)

    monkeypatch.setattr(clips, "read_clip", interrupted_at_3)
    monkeypatch.setattr(files, "FILES_PER_CHUNK", 2)
    argv = [
        str(folder),
        "--model",
        str(checkpoint),
        "--csv",
        str(csv),
        "--tiles-csv",
        str(tiles_csv),
    ]
    assert tag(argv) == 130  # chunks of 2: the chunk of 2.wav and 3.wav is lost
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1]
        == f"error: interrupted: 2 of 5 file(s) tagged, their rows are in {csv}, {tiles_csv}"
    )
    rows = pd.read_csv(csv)
    assert [Path(p).name for p in rows["path"]] == ["0.wav", "1.wav"]
    assert sorted({Path(p).name for p in pd.read_csv(tiles_csv)["path"]}) == [
        "0.wav",
        "1.wav",
    ]


def test_streamed_csv_rows_read_back_as_the_whole_table(tmp_path):
    """Rows written one file at a time read back as the frame of all files written at once."""
    from src.tools.tagging.clips import Clip
    from src.tools.tagging.files import TaggedFile
    from src.tools.tagging.output import RowWriter, clips_frame, tiles_frame
    from src.tools.tagging.sources import Tags

    classes = ("a", "b")
    rng = np.random.default_rng(0)
    tagged = [
        TaggedFile(
            Clip(Path(f"{i}.wav"), np.zeros((128, 4)), 0.5),
            Tags(rng.random(2).astype(np.float32), rng.random((3, 2)).astype(np.float32)),
            np.arange(3.0),
        )
        for i in range(3)
    ]
    with RowWriter(tmp_path / "c.csv", tmp_path / "t.csv", classes, 1.5) as writer:
        for item in tagged:
            writer.write(item)
    clips_frame(tagged, classes).to_csv(tmp_path / "c_all.csv", index=False)
    tiles_frame(tagged, classes, 1.5).to_csv(tmp_path / "t_all.csv", index=False)
    assert (tmp_path / "c.csv").read_text() == (tmp_path / "c_all.csv").read_text()
    assert (tmp_path / "t.csv").read_text() == (tmp_path / "t_all.csv").read_text()


def test_tiles_are_predicted_in_batches_with_the_same_results(tmp_path):
    from src.augment.deltas import stack_deltas
    from src.prediction.tiling import make_tiles

    predictor = Predictor(save_cnn_checkpoint(tmp_path / "m.pth"), "cpu", batch_size=5)
    rng = np.random.default_rng(0)
    spectrograms = [rng.normal(size=(128, w)).astype(np.float32) for w in (10, 70, 200, 33)]
    flat = torch.cat(
        [make_tiles(torch.from_numpy(s), predictor.tile, predictor.step) for s in spectrograms]
    )
    expected = torch.cat(
        [predictor.model.predict(stack_deltas(flat[i : i + 5])) for i in range(0, len(flat), 5)]
    ).numpy()
    got = predictor.predict_tiles(spectrograms)
    assert [len(g) for g in got] == [1, 6, 22, 2]
    np.testing.assert_array_equal(np.concatenate(got), expected)


@pytest.mark.parametrize("length", [100, 2048, 44100, 100_000])
def test_trimming_in_chunks_equals_librosa(length):
    import librosa

    from src.data.audio import nonsilent_bounds

    rng = np.random.default_rng(length)
    audio = (rng.normal(size=length) * 1e-5).astype(np.float32)
    audio[length // 3 : length // 2] += tone(1.0)[: length // 2 - length // 3]
    _, expected = librosa.effects.trim(audio, top_db=60)
    assert nonsilent_bounds(audio, chunk_frames=7) == tuple(int(x) for x in expected)
    _, expected = librosa.effects.trim(np.zeros(length, np.float32), top_db=60)
    assert nonsilent_bounds(np.zeros(length, np.float32)) == tuple(int(x) for x in expected)


def test_a_long_waveform_is_computed_in_segments_with_the_same_log_mel():
    rng = np.random.default_rng(0)
    audio = (rng.normal(size=3 * 44100) * tone(3.0, 200)).astype(np.float32)
    whole = TorchLogMel()([audio])[0]
    segmented = TorchLogMel(max_batch_samples=2**14)
    got = segmented([audio])[0]
    assert got.shape == whole.shape
    np.testing.assert_allclose(got, whole, atol=1e-4, rtol=0)
    loud = segmented([audio * np.float32(LOUD)])[0]
    np.testing.assert_allclose(loud - 600.0, whole, atol=2e-3, rtol=0)


def test_a_stacking_mlp_with_non_finite_outputs_is_an_error_naming_the_checkpoint(tmp_path):
    """The stacking MLPs' outputs are checked as the CNNs' are (prediction.tiling.check_outputs)."""
    from src.models.argus_models import StackingModel
    from src.prediction.ensemble import predict_mlp
    from src.prediction.tiling import load_checkpoint

    params = {
        "nn_module": ("FCNet", {"in_channels": 160, "num_classes": 80, "base_size": 8}),
        "loss": ("BCEWithLogits", {}),
        "optimizer": ("Adam", {"lr": 0.001}),
        "device": "cpu",
    }
    model = StackingModel(params)
    with torch.no_grad():
        next(model.nn_module.parameters()).fill_(float("nan"))
    checkpoint = tmp_path / "model-001-0.500000.pth"
    save_model_atomic(model, checkpoint)
    inputs = np.full((3, 160), 0.5, np.float32)
    with pytest.raises(PredictionError, match=f"{checkpoint}: .*non-finite"):
        predict_mlp(load_checkpoint(checkpoint, "cpu"), inputs)


def test_the_demo_stops_on_microphone_samples_without_a_finite_log_mel(
    tmp_path, capsys, monkeypatch
):
    """A file with NaN samples is refused when decoded; a microphone block with NaN (a broken
    driver) is one line too, not a traceback."""
    import demo

    checkpoint = save_cnn_checkpoint(tmp_path / "model-001-0.500000.pth")
    blocks = [tone(1.0), np.full(44100, np.nan, np.float32), tone(1.0)]
    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice(blocks))
    argv = ["--headless", "--seconds", "3", "--model", str(checkpoint), "--device", "cpu"]
    assert demo.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: the microphone: NaN or infinite samples: no finite log-mel"


# ---------------------------------------------------------------- odd file-system objects

ODD = {
    "fifo.wav": "a FIFO (named pipe), not a regular file",
    "socket.wav": "a socket, not a regular file",
    "device.wav": "a character device, not a regular file",
    "loop.wav": "a symbolic link loop",
    "broken.wav": "a broken symbolic link",
    "locked.wav": "not readable (permission denied)",
}


@contextmanager
def never_hangs(seconds: int = 20):
    """Opening a FIFO blocks until something writes to it: fail instead of waiting forever."""

    def hung(signum, frame):
        raise TimeoutError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def odd_folder(tmp_path, monkeypatch):
    """One real clip among every odd object an audio folder can hold, all named *.wav (and the
    same one level down). `locked.wav` is unreadable (tests run as root, who reads anything: its
    permission is what os.access answers)."""
    folder = tmp_path / "clips"
    servers = []
    for where in (folder, folder / "deeper"):
        write_wav(where / "good.wav", tone(0.5))
        os.mkfifo(where / "fifo.wav")
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(where / "socket.wav"))
        servers.append(server)
        (where / "device.wav").symlink_to("/dev/null")
        (where / "loop.wav").symlink_to(where / "loop.wav")
        (where / "broken.wav").symlink_to(where / "gone.wav")
        write_wav(where / "locked.wav", tone(0.5))
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: Path(p).name != "locked.wav" and real_access(p, mode)
    )
    yield folder
    for server in servers:
        server.close()


def test_file_problem_names_every_odd_object_without_opening_it(odd_folder):
    with never_hangs():
        assert file_problem(odd_folder / "good.wav") is None
        assert {name: file_problem(odd_folder / name) for name in ODD} == ODD
        assert file_problem(odd_folder / "deeper") == "a folder, not a file"
        assert file_problem(odd_folder / "absent.wav") == "file not found"


def test_every_listing_names_and_skips_odd_objects(odd_folder, caplog):
    from src.data.dataset_maker import ClassNames, Report, read_folder
    from src.data.labels import absent_audio
    from src.tools.tagging.clips import collect_audio_files

    deeper = odd_folder / "deeper"
    with never_hangs(), caplog.at_level(logging.WARNING):
        assert list_audio_files(odd_folder) == [odd_folder / "good.wav"]  # the test folder's
        assert collect_audio_files([odd_folder]) == [deeper / "good.wav", odd_folder / "good.wav"]
        report = Report()
        clips = read_folder(odd_folder.parent, ClassNames(report), report)  # make_dataset's
        assert sorted(c.path.name for c in clips) == ["good.wav", "good.wav"]
        assert sorted(report.not_regular) == sorted(
            f"{where / name}: {reason}"
            for where in (odd_folder, deeper)
            for name, reason in ODD.items()
        )
        listed = absent_audio(["good.wav", *ODD, "gone.wav"], odd_folder)  # the CSV-listed sets'
    assert listed == [f"{name} ({reason})" for name, reason in ODD.items()] + ["gone.wav"]
    warned = [r.getMessage() for r in caplog.records]
    for name, reason in ODD.items():
        assert f"skipped {odd_folder / name}: {reason}" in warned


def test_decoding_an_odd_object_given_by_name_fails_at_once(odd_folder):
    from src.data.dataset_maker import decode_problem

    with never_hangs():
        for name, reason in ODD.items():
            with pytest.raises(AudioDecodeError, match=re.escape(reason)):
                load_audio(odd_folder / name)
            assert decode_problem(odd_folder / name) == reason
