import numpy as np
import pytest
import soundfile

from src.config import AUDIO, AudioConfig
from src.data.audio import (
    AudioDecodeError,
    LibrosaLogMel,
    TorchLogMel,
    audio_to_melspectrogram,
    fix_short_clip,
    load_audio,
    make_extractor,
    read_as_melspectrogram,
    read_audio,
    trim_audio,
)
from tests.helpers import tone, write_wav

CENTERED = AudioConfig(short_clip_rule="centered")


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("fmt", "subtype"),
    [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")],
)
def test_decodes_common_formats(tmp_path, fmt, subtype):
    signal = tone(1.0, 440.0)
    path = tmp_path / f"clip.{fmt.lower()}"
    soundfile.write(path, signal, 44100, format=fmt, subtype=subtype)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and abs(len(audio) - 44100) < 3000  # MP3 adds codec delay
    spectrum = np.abs(np.fft.rfft(audio[5000:40000]))
    assert abs(np.argmax(spectrum) * 44100 / 35000 - 440) < 5


def test_mixes_stereo_to_mono_and_resamples(tmp_path):
    left, right = tone(0.5, 300, sr=22050), tone(0.5, 300, sr=22050, level=0.1)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 22050, subtype="FLOAT")
    audio = load_audio(path)
    assert len(audio) == 22050  # 0.5 s at 44.1 kHz
    assert np.max(np.abs(audio)) == pytest.approx(0.3, abs=0.01)  # mean of 0.5 and 0.1 amplitudes


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "file not found"),
        (b"", "empty file (0 bytes)"),
        (b"this is not audio at all" * 10, "cannot decode audio"),
    ],
)
def test_undecodable_input_raises_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "broken.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioDecodeError) as error:
        read_audio(path)
    assert str(path) in str(error.value) and reason in str(error.value)


def test_zero_length_stream_is_an_error_not_silence(tmp_path):
    path = tmp_path / "zero.wav"
    soundfile.write(path, np.zeros(0, np.float32), 44100)
    assert path.stat().st_size > 0  # a valid header with no samples
    with pytest.raises(AudioDecodeError, match="no audio samples"):
        read_as_melspectrogram(path)


# ---------------------------------------------------------------- trimming and short clips


def test_long_clip_is_trimmed_of_silence_and_not_padded():
    audio = np.concatenate([np.zeros(44100), tone(1.0), np.zeros(44100)]).astype(np.float32)
    trimmed = trim_audio(audio)
    assert 44100 <= len(trimmed) <= 44100 + 2 * 2048
    assert np.flatnonzero(trimmed)[0] < 2048  # frame granularity: at most one frame of silence


def test_original_short_clip_rule_loses_a_late_click():
    # Spec 1.2 example: a 1 s file with a 100-sample click at 30000 trims to [29184, 31232],
    # so the window is y[0:1024 + 11025] -- it never contains the click -- padded to 22050.
    audio = np.zeros(44100, np.float32)
    audio[30000:30100] = 0.8
    result = trim_audio(audio)
    assert len(result) == 22050
    window = 1024 + 11025
    expected = np.pad(
        audio[:window], ((22050 - window) // 2, 22050 - window - (22050 - window) // 2)
    )
    np.testing.assert_array_equal(result, expected)
    assert not result.any()


def test_original_rule_zeros_a_late_burst_in_a_long_silent_file():
    rng = np.random.default_rng(0)
    audio = np.zeros(5 * 44100, np.float32)
    audio[4 * 44100 : 4 * 44100 + 4410] = rng.uniform(-0.5, 0.5, 4410)
    assert not trim_audio(audio).any()  # the original's window misses the late burst: all zeros
    centered = trim_audio(audio, CENTERED)
    assert len(centered) == 22050 and np.abs(centered).max() > 0.4  # the corrected rule keeps it


def test_centered_rule_centres_the_event():
    audio = np.zeros(44100, np.float32)
    audio[30000:30100] = 0.8
    result = trim_audio(audio, CENTERED)
    # Non-silent part [29184, 31232): middle 30208, window [19183, 41233).
    np.testing.assert_array_equal(result, audio[30208 - 11025 : 30208 + 11025])


def test_short_clips_are_padded_symmetrically_to_half_a_second():
    audio = tone(0.2)  # 8820 samples, no silence to trim
    for config in (AUDIO, CENTERED):
        result = trim_audio(audio, config)
        assert len(result) == 22050
        left = (22050 - 8820) // 2
        np.testing.assert_array_equal(result[left : left + 8820], audio)
        assert not result[:left].any() and not result[left + 8820 :].any()


def test_digitally_silent_short_file_is_not_trimmed():
    audio = np.zeros(10000, np.float32)
    result = fix_short_clip(audio, 0, 10000)
    assert len(result) == 22050 and not result.any()


# ---------------------------------------------------------------- log-mel


def test_reference_log_mel_shape_dtype_and_floor():
    audio = tone(1.0) * np.linspace(0, 1, 44100, dtype=np.float32)
    spec = audio_to_melspectrogram(audio)
    assert spec.shape == (128, 1 + 44100 // 690) and spec.dtype == np.float32
    assert spec.min() >= spec.max() - 80.0 - 1e-4  # power_to_db top_db=80


def test_torch_log_mel_matches_librosa_on_real_recordings(librosa_examples):
    assert len(librosa_examples) >= 10
    reference, torch_path = LibrosaLogMel(), TorchLogMel()
    waves = [read_audio(path) for path in librosa_examples]
    batched = torch_path(waves)  # one batch of clips of very different lengths
    for path, wave, spec in zip(librosa_examples, waves, batched):
        expected = reference.one(wave)
        assert spec.shape == expected.shape
        assert np.abs(spec - expected).max() < 1e-3, path.name


def test_torch_log_mel_matches_librosa_on_short_8khz_recordings(fsdd):
    files = sorted((fsdd / "recordings").glob("*.wav"))[::60]
    waves = [read_audio(path) for path in files]
    assert min(len(w) for w in waves) == 22050  # clips under 0.5 s are padded up
    for wave, spec in zip(waves, TorchLogMel()(waves)):
        np.testing.assert_allclose(spec, audio_to_melspectrogram(wave), atol=1e-3)


def test_float32_precision_stays_close(librosa_examples):
    wave = read_audio(librosa_examples[0])
    fast = TorchLogMel(precision="float32")([wave])[0]
    assert np.abs(fast - audio_to_melspectrogram(wave)).max() < 5e-3


def test_torch_log_mel_handles_signals_shorter_than_the_fft():
    wave = tone(0.01)  # 441 samples, shorter than n_fft // 2
    np.testing.assert_allclose(TorchLogMel()([wave])[0], audio_to_melspectrogram(wave), atol=1e-3)


def test_extractor_factory_validates_its_arguments():
    assert isinstance(make_extractor("librosa"), LibrosaLogMel)
    with pytest.raises(ValueError, match="unknown log-mel backend"):
        make_extractor("essentia")
    with pytest.raises(ValueError, match="CPU only"):
        make_extractor("librosa", device="cuda")
    with pytest.raises(ValueError, match="precision"):
        TorchLogMel(precision="float16")


def test_read_as_melspectrogram_on_a_wav(tmp_path):
    path = write_wav(tmp_path / "a.wav", tone(2.0))
    spec = read_as_melspectrogram(path)
    assert (
        spec.dtype == np.float32
        and spec.shape[0] == 128
        and spec.shape[1] == 1 + len(read_audio(path)) // 690
    )
