"""Audio file -> mono 44.1 kHz waveform -> log-mel spectrogram.

Two log-mel implementations share one interface (`MelExtractor`: a list of waveforms in, a list
of (n_mels, T) float32 arrays out):

* `LibrosaLogMel`, the reference: librosa's melspectrogram + power_to_db exactly as the original
  called them (power 2, Slaney mel, periodic Hann, centred STFT with *reflect* padding as in
  librosa 0.6.3, `power_to_db(ref=1.0, amin=1e-10, top_db=80)`, float32).
* `TorchLogMel`, batched `torch.stft` on CPU or GPU, matching the reference within 1e-3 dB.

The original's public entry points keep their names and defaults: `read_audio(path)`,
`audio_to_melspectrogram(audio)` and `read_as_melspectrogram(path)`.

Unlike the original, a file that cannot be decoded, is empty, or holds no samples raises
`AudioDecodeError` naming the file and the reason; it is never turned into silence
(docs/original.md, quirk "Unreadable audio"). Any other exception while reading a file
(MemoryError included) is that file's `AudioDecodeError` too, a header claiming more than
`max_audio_seconds()` is refused before anything is allocated, and a file whose data ends
before its header says is read as far as it goes, with a warning. Log-mel spectrograms are
checked: one that is not finite raises `SpectrogramError` (docs/reliability.md, "Bad audio and
long runs of tagging").
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import librosa
import numpy as np
import soundfile
import torch

from src.config import AUDIO, AudioConfig
from src.utils import file_problem, readable_files

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".oga", ".opus", ".aiff", ".aif", ".m4a")
TRIM_TOP_DB = 60
AMIN = 1e-10
TOP_DB = 80.0
# Longest file decoded, in seconds of its own rate (a header claiming more is refused before
# allocating): FREESOUND_MAX_AUDIO_SECONDS overrides it.
MAX_AUDIO_SECONDS = 2 * 3600.0
MAX_SECONDS_ENV = "FREESOUND_MAX_AUDIO_SECONDS"
DECODE_BLOCK_FRAMES = 2**14  # a decoding error loses at most this much of a file
# Waveforms whose peak is above this are scaled down before squaring (and the dB added back):
# far above any real recording (float WAVs hold +-1, a wrongly scaled one +-32768) and far
# below where float32 power (|FFT| ~ n_fft / 2 x peak, squared) overflows (peak ~1e16).
LOUD_PEAK = 1e6

log = logging.getLogger(__name__)


class AudioDecodeError(Exception):
    """An audio file that cannot be turned into samples (or into a finite log-mel)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SpectrogramError(ValueError):
    """Waveforms whose log-mel is not finite; `indices` are their positions in the input."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = list(indices)
        super().__init__("log-mel spectrogram is not finite (NaN or infinite values)")


@contextmanager
def file_failure(path: str | os.PathLike) -> Iterator[None]:
    """Any exception raised inside (MemoryError included) becomes `path`'s AudioDecodeError:
    whatever goes wrong with one file is that file's failure, never the run's."""
    try:
        yield
    except AudioDecodeError:
        raise
    except SpectrogramError as error:
        raise AudioDecodeError(path, str(error)) from None
    except Exception as error:
        raise AudioDecodeError(path, f"{type(error).__name__}: {error}") from None


def max_audio_seconds() -> float:
    """The longest file decoded: FREESOUND_MAX_AUDIO_SECONDS, else MAX_AUDIO_SECONDS."""
    text = os.environ.get(MAX_SECONDS_ENV)
    if not text:
        return MAX_AUDIO_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{MAX_SECONDS_ENV} must be a positive number of seconds, got {text!r}")
    return value


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------


def _hours(frames: int, rate: int) -> str:
    return f"{frames / max(rate, 1) / 3600:.3g} h"


# libsndfile's log line for a WAV data chunk longer than the file: "data : 88200 (should be 44078)"
_SHORT_DATA = re.compile(r"^data : (\d+) \(should be (\d+)\)", re.MULTILINE)


def _read_mono(path: Path, sound: soundfile.SoundFile, max_seconds: float) -> np.ndarray | None:
    """The mono float32 samples of an open file, read block by block (channels averaged per
    block: never the whole multichannel array at once); None when not even the first block
    decodes. A header claiming more than `max_seconds` is refused before allocating."""
    claimed, rate = int(sound.frames), int(sound.samplerate)
    if claimed > max_seconds * rate:
        raise AudioDecodeError(
            path,
            f"header claims {claimed} samples ({_hours(claimed, rate)} at {rate} Hz), more than "
            f"the limit of {max_seconds:g} s ({MAX_SECONDS_ENV})",
        )
    # Pages of np.empty are only committed when written: a header that claims more than the
    # file holds costs address space, not memory.
    mono = np.empty(claimed, np.float32)
    done = 0
    try:
        while done < claimed:
            block = sound.read(min(DECODE_BLOCK_FRAMES, claimed - done), "float32", True)
            if len(block) == 0:
                break
            mono[done : done + len(block)] = (
                block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
            )
            done += len(block)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        if done == 0:
            return None
        log.warning(
            "%s: decoding stopped after %d of the %d samples its header claims (%s); "
            "using what was decoded",
            path,
            done,
            claimed,
            error,
        )
        return mono[:done]
    short = _SHORT_DATA.search(sound.extra_info)
    if done < claimed:
        log.warning(
            "%s: data ends after %d of the %d samples its header claims (truncated file?); "
            "using what is there",
            path,
            done,
            claimed,
        )
    elif short and int(short.group(1)) > int(short.group(2)):
        log.warning(
            "%s: the header claims %s bytes of audio data, the file holds %s (truncated "
            "file?); using what is there",
            path,
            short.group(1),
            short.group(2),
        )
    return mono[:done]


def decode(path: Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the native sampling rate (no resampling, no checks of the
    samples: `load_audio` is the pipeline's reader). Longer than `max_seconds` (default
    `max_audio_seconds()`) is refused before allocating."""
    max_seconds = max_seconds or max_audio_seconds()
    first_error = "not read"
    try:
        sound = soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        first_error = str(error)
    else:
        with sound:
            mono = _read_mono(path, sound, max_seconds)
            if mono is not None:
                return mono, int(sound.samplerate)
    # Formats libsndfile cannot read (for example AAC in .m4a) go through audioread, as
    # librosa.load does.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data, sr = librosa.load(path, sr=None, mono=False)
    except Exception as error:  # audioread raises many unrelated types
        reason = f"cannot decode audio ({first_error}; fallback: {type(error).__name__}: {error})"
        raise AudioDecodeError(path, reason) from None
    data = np.atleast_2d(data).T.astype(np.float32, copy=False)
    return (data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]), int(sr)


def load_audio(
    path: str | os.PathLike,
    sampling_rate: int = AUDIO.sampling_rate,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Decode WAV/FLAC/OGG/MP3/... into a mono float32 waveform at `sampling_rate`.

    Channels are averaged and other rates resampled with soxr (what modern `librosa.load`
    does; the original's data was already 44.1 kHz, so it never resampled). Files longer than
    `max_seconds` (default `max_audio_seconds()`) are refused; any failure is an
    AudioDecodeError naming the file.
    """
    path = Path(path)
    with file_failure(path):
        problem = file_problem(path)
        if problem is not None:
            raise AudioDecodeError(path, problem)
        if path.stat().st_size == 0:
            raise AudioDecodeError(path, "empty file (0 bytes)")
        audio, native_sr = decode(path, max_seconds)
        if audio.size == 0:
            raise AudioDecodeError(path, "no audio samples (zero-length stream)")
        if not np.all(np.isfinite(audio)):
            raise AudioDecodeError(path, "audio contains NaN or infinite samples")
        return resample_audio(audio, native_sr, sampling_rate, path)


def resample_audio(
    audio: np.ndarray, native_sr: int, sampling_rate: int, where: str | os.PathLike
) -> np.ndarray:
    """Finite mono samples at `native_sr` -> contiguous float32 at `sampling_rate` (soxr, as
    `load_audio` resamples files); `where` names them in an AudioDecodeError."""
    if native_sr != sampling_rate:
        audio = librosa.resample(
            audio, orig_sr=native_sr, target_sr=sampling_rate, res_type="soxr_hq"
        )
        if not np.all(np.isfinite(audio)):
            raise AudioDecodeError(where, "samples too large to resample (overflow)")
    return np.ascontiguousarray(audio, dtype=np.float32)


def loudness_gain(audio: np.ndarray | torch.Tensor) -> float:
    """1 for ordinary audio; 1 / peak for a waveform louder than LOUD_PEAK, whose squares
    would overflow float32 (its log-mel is computed scaled, and 20 log10(peak) dB added)."""
    if len(audio) == 0:
        return 1.0
    peak = max(float(audio.max()), -float(audio.min()))  # no |audio| copy
    return 1.0 / peak if peak > LOUD_PEAK and np.isfinite(peak) else 1.0


# --------------------------------------------------------------------------------------
# Silence trimming and the short-clip rule (docs/original.md, "Short clips")
# --------------------------------------------------------------------------------------


def fix_short_clip(
    audio: np.ndarray, start: int, end: int, config: AudioConfig = AUDIO
) -> np.ndarray:
    """Cut and zero-pad a clip whose non-silent part [start, end) is below `min_samples`.

    'original' (default): the window is centred on half the *length* of the trimmed part
    instead of its midpoint, so it always starts at sample 0 of the untrimmed clip and a short
    event late in a long file is lost (docs/original.md, quirk "Short-clip window").
    'centered' centres the window on the event. Both zero-pad symmetrically to exactly
    `min_samples`.
    """
    min_samples = config.min_samples
    half = min_samples // 2
    if config.short_clip_rule == "original":
        center = (end - start) // 2
        window = audio[max(0, center - half) : min(len(audio), center + half)]
    else:
        middle = (start + end) // 2
        left = max(0, min(middle - half, len(audio) - min_samples))
        window = audio[left : left + min_samples]
    padding = min_samples - len(window)
    return np.pad(window, (padding // 2, padding - padding // 2), mode="constant").astype(
        np.float32, copy=False
    )


TRIM_FRAME, TRIM_HOP = 2048, 512  # librosa.effects.trim's defaults
TRIM_CHUNK_FRAMES = 4096


def _frame_rms(audio: np.ndarray, chunk_frames: int = TRIM_CHUNK_FRAMES) -> np.ndarray:
    """librosa.feature.rms(y=audio) (centred, zero-padded frames), a chunk of frames at a
    time: librosa squares a copy of every frame at once, 4x the clip's size."""
    pad = TRIM_FRAME // 2
    n_frames = 1 + len(audio) // TRIM_HOP
    rms = np.empty(n_frames, np.float32)
    for first in range(0, n_frames, chunk_frames):
        last = min(n_frames, first + chunk_frames)
        low, high = first * TRIM_HOP - pad, (last - 1) * TRIM_HOP - pad + TRIM_FRAME
        piece = audio[max(low, 0) : min(high, len(audio))]
        piece = np.pad(piece, (max(0, -low), max(0, high - len(audio))))
        rms[first:last] = librosa.feature.rms(
            y=piece, frame_length=TRIM_FRAME, hop_length=TRIM_HOP, center=False
        )[0]
    return rms


def nonsilent_bounds(audio: np.ndarray, chunk_frames: int = TRIM_CHUNK_FRAMES) -> tuple[int, int]:
    """[start, end) of `librosa.effects.trim(audio, top_db=60)`, in bounded memory, and for
    audio too loud to square in float32 (trimming is relative to the peak, so scale-free)."""
    gain = loudness_gain(audio)
    scaled = audio * np.float32(gain) if gain != 1.0 else audio
    db = librosa.amplitude_to_db(_frame_rms(scaled, chunk_frames), ref=np.max, top_db=None)
    nonzero = np.flatnonzero(db > -TRIM_TOP_DB)
    if nonzero.size == 0:
        return 0, 0
    return int(nonzero[0]) * TRIM_HOP, min(len(audio), (int(nonzero[-1]) + 1) * TRIM_HOP)


def trim_audio(audio: np.ndarray, config: AudioConfig = AUDIO) -> np.ndarray:
    """Trim leading/trailing silence (top_db 60) and apply the short-clip rule."""
    start, end = nonsilent_bounds(audio)
    if end - start < config.min_samples:
        return fix_short_clip(audio, start, end, config)
    return audio[start:end]


def read_audio(path: str | os.PathLike, config: AudioConfig = AUDIO) -> np.ndarray:
    """The original's `read_audio`: decode, mono, 44.1 kHz, trim, short-clip rule."""
    return trim_audio(load_audio(path, config.sampling_rate), config)


# --------------------------------------------------------------------------------------
# Log-mel spectrograms
# --------------------------------------------------------------------------------------


class MelExtractor(Protocol):
    """Waveforms (mono, at the config's rate) in; (n_mels, T) float32 log-mel arrays out."""

    config: AudioConfig

    def __call__(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]: ...


class LibrosaLogMel:
    """The reference implementation: librosa, one clip at a time."""

    def __init__(self, config: AudioConfig = AUDIO) -> None:
        self.config = config

    def one(self, audio: np.ndarray) -> np.ndarray:
        """(n_mels, T) float32 log-mel; SpectrogramError([0]) if it is not finite."""
        c = self.config
        audio = np.asarray(audio, dtype=np.float32)
        if not np.all(np.isfinite(audio)):
            raise SpectrogramError([0])
        gain = loudness_gain(audio)
        if gain != 1.0:
            audio = audio * np.float32(gain)
        power = librosa.feature.melspectrogram(
            y=audio,
            sr=c.sampling_rate,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            n_mels=c.n_mels,
            fmin=c.fmin,
            fmax=c.fmax,
            power=2.0,
            pad_mode="reflect",  # librosa 0.6.3's default, which the original used
        )
        db = librosa.power_to_db(power, ref=1.0, amin=AMIN, top_db=TOP_DB)
        if gain != 1.0:  # the dB floor is relative to the peak: adding afterwards is the same
            db = db - 20.0 * np.log10(gain)
        db = db.astype(np.float32)
        if not np.all(np.isfinite(db)):
            raise SpectrogramError([0])
        return db

    def __call__(self, waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
        results, bad = [], []
        for index, waveform in enumerate(waveforms):
            try:
                results.append(self.one(waveform))
            except SpectrogramError:
                bad.append(index)
        if bad:
            raise SpectrogramError(bad)
        return results


@lru_cache(maxsize=8)
def mel_basis(config: AudioConfig = AUDIO) -> np.ndarray:
    """The Slaney-normalised mel filterbank, (n_mels, 1 + n_fft // 2), float32."""
    return librosa.filters.mel(
        sr=config.sampling_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
    )


def _reflect_pad(signal: torch.Tensor, pad: int) -> torch.Tensor:
    """numpy-style reflect padding, which (unlike torch's) allows pads longer than the signal."""
    if signal.numel() > pad:
        return torch.nn.functional.pad(signal[None, None], (pad, pad), mode="reflect")[0, 0]
    if signal.numel() == 1:
        return signal.repeat(2 * pad + 1)
    # Reflection without repeating the edge sample is periodic with period 2 * (n - 1).
    period = 2 * (signal.numel() - 1)
    index = torch.arange(-pad, signal.numel() + pad, device=signal.device).remainder(period)
    index = torch.where(index >= signal.numel(), period - index, index)
    return signal[index]


# Frames per CPU slice of `TorchLogMel` (float64: 16 x 2560 samples, about 330 KB, in L2).
CPU_FRAMES_PER_SLICE = 16


class TorchLogMel:
    """Batched log-mel with torch FFTs, on CPU or GPU.

    Each clip is reflect-padded on its own before the clips are stacked, so a clip's frames
    never see its neighbours' samples or the batch's zero padding; the dB floor (max - 80 dB)
    is taken per clip, as librosa does.

    `precision='float64'` (default) runs the FFT in double precision, as librosa does (its
    window is float64), and matches the reference within 1e-3 dB. With 'float32' it is about
    twice as fast but quiet bins (70+ dB below a frame's peak) drift by ~1e-3 dB.
    """

    def __init__(
        self,
        config: AudioConfig = AUDIO,
        device: str | torch.device = "cpu",
        precision: str = "float64",
        max_batch_samples: int = 2**20,
    ) -> None:
        if precision not in ("float64", "float32"):
            raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
        self.config = config
        self.device = torch.device(device)
        self.dtype = torch.float64 if precision == "float64" else torch.float32
        self.max_batch_samples = max_batch_samples
        self.window = torch.hann_window(config.n_fft, periodic=True, dtype=self.dtype).to(
            self.device
        )
        mel = torch.from_numpy(mel_basis(config)).to(self.device)
        # Each FFT bin feeds at most two triangular filters: a sparse product is ~4x faster on
        # the CPU; on a GPU the dense product is already negligible.
        if self.device.type == "cpu":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                self.mel_sparse = mel.to_sparse_csr()
            self.mel = None
        else:
            self.mel_sparse = None
            self.mel = mel

    def spectrograms(self, waveforms: Sequence[np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
        """Log-mel tensors on `self.device`, one (n_mels, T) per waveform.

        Raises SpectrogramError (with the indices of the culprits) when a waveform's log-mel
        is not finite. A waveform longer than `max_batch_samples` is computed a segment of
        frames at a time, so its memory is bounded by the log-mel, not 4x the float64 audio.
        """
        order = sorted(range(len(waveforms)), key=lambda i: len(waveforms[i]))
        results: list[torch.Tensor | None] = [None] * len(waveforms)
        batch: list[int] = []
        for index in order:
            longest = len(waveforms[index]) + self.config.n_fft
            if longest > self.max_batch_samples:
                results[index] = self._long(waveforms[index])
                continue
            if batch and longest * (len(batch) + 1) > self.max_batch_samples:
                self._run_batch(waveforms, batch, results)
                batch = []
            batch.append(index)
        if batch:
            self._run_batch(waveforms, batch, results)
        bad = [i for i, r in enumerate(results) if not bool(torch.isfinite(r).all())]
        if bad:
            raise SpectrogramError(bad)
        return results  # type: ignore[return-value]

    def __call__(self, waveforms: Sequence[np.ndarray | torch.Tensor]) -> list[np.ndarray]:
        return [s.cpu().numpy() for s in self.spectrograms(waveforms)]

    def _mel_power(self, power: torch.Tensor) -> torch.Tensor:
        """(frames, bins) power -> (n_mels, frames) mel power."""
        if self.mel_sparse is not None:
            return torch.sparse.mm(self.mel_sparse, power.T.contiguous())
        return self.mel @ power.T

    def _power(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, n_fft) frames (a view) -> (B, F, bins) float32 power."""
        n_batch, n_frames = frames.shape[:2]
        power = torch.empty(n_batch, n_frames, self.config.n_fft // 2 + 1, device=self.device)
        # On a CPU, windowing, FFT and power one slice of frames at a time keep the float64
        # intermediates in cache (3x faster than whole-batch passes through memory); a GPU
        # wants the whole batch in one launch.
        step = n_frames if self.device.type != "cpu" else max(1, CPU_FRAMES_PER_SLICE // n_batch)
        for start in range(0, n_frames, step):
            spectrum = torch.fft.rfft(frames[:, start : start + step] * self.window, dim=-1)
            power[:, start : start + step] = spectrum.real.square() + spectrum.imag.square()
        return power

    def _db(self, power: torch.Tensor) -> torch.Tensor:
        """(B, F, bins) power -> (n_mels, B, F) dB (before the per-clip floor)."""
        n_batch, n_frames = power.shape[:2]
        mel = self._mel_power(power.reshape(n_batch * n_frames, -1)).reshape(-1, n_batch, n_frames)
        return 10.0 * torch.log10(torch.clamp(mel, min=AMIN))

    def _signal(self, waveform) -> tuple[torch.Tensor, float]:
        """The waveform as a `self.dtype` tensor, scaled down when too loud, and the dB to add."""
        signal = torch.as_tensor(waveform).to(self.device, self.dtype)
        if signal.numel() == 0:
            raise ValueError("cannot compute a spectrogram of an empty waveform")
        gain = loudness_gain(waveform)
        if gain != 1.0:
            signal = signal * gain
        return signal, -20.0 * float(np.log10(gain))

    def _run_batch(self, waveforms, indices: list[int], results: list) -> None:
        c = self.config
        pad = c.n_fft // 2
        padded, gains = [], []
        for i in indices:
            signal, gain_db = self._signal(waveforms[i])
            padded.append(_reflect_pad(signal, pad))
            gains.append(gain_db)
        width = max(p.numel() for p in padded)
        batch = torch.zeros(len(padded), width, device=self.device, dtype=self.dtype)
        for row, signal in enumerate(padded):
            batch[row, : signal.numel()] = signal
        frames = batch.unfold(1, c.n_fft, c.hop_length)  # (B, F, n_fft), a view
        n_frames = frames.shape[1]
        db = self._db(self._power(frames))  # (n_mels, B, F)
        if any(gains):
            db = db + torch.tensor(gains, device=self.device, dtype=db.dtype)[None, :, None]
        lengths = torch.tensor([c.n_frames(len(waveforms[i])) for i in indices], device=self.device)
        valid = torch.arange(n_frames, device=self.device)[None, :] < lengths[:, None]
        peak = torch.where(valid[None], db, -torch.inf).amax(dim=(0, 2))  # per clip, (B,)
        db = torch.maximum(db, (peak - TOP_DB)[None, :, None])
        for row, i in enumerate(indices):
            results[i] = db[:, row, : int(lengths[row])].contiguous()

    def _long(self, waveform) -> torch.Tensor:
        """One long waveform, `max_batch_samples` of padded signal at a time: each segment's
        frames are exactly those of the whole padded clip, and the floor is the clip's."""
        c = self.config
        audio = waveform.cpu().numpy() if isinstance(waveform, torch.Tensor) else waveform
        audio = np.asarray(audio, dtype=np.float32)
        gain = loudness_gain(audio)
        n, pad = len(audio), c.n_fft // 2
        n_frames = c.n_frames(n)
        per_segment = max(1, (self.max_batch_samples - c.n_fft) // c.hop_length + 1)
        db = torch.empty(c.n_mels, n_frames, device=self.device)
        for first in range(0, n_frames, per_segment):
            last = min(n_frames, first + per_segment)
            low, high = first * c.hop_length - pad, (last - 1) * c.hop_length - pad + c.n_fft
            if low >= 0 and high <= n:
                piece = audio[low:high]
            else:  # numpy "reflect" at the clip's ends (the clip is longer than the pad)
                index = np.arange(low, high)
                index = np.abs(index)
                index = np.where(index >= n, 2 * (n - 1) - index, index)
                piece = audio[index]
            signal = torch.as_tensor(piece).to(self.device, self.dtype)
            if gain != 1.0:
                signal = signal * gain
            frames = signal.unfold(0, c.n_fft, c.hop_length)[None]  # (1, F, n_fft)
            db[:, first:last] = self._db(self._power(frames))[:, 0]
        if gain != 1.0:
            db -= 20.0 * float(np.log10(gain))
        return torch.maximum(db, db.max() - TOP_DB)


def make_extractor(
    backend: str = "torch",
    device: str | torch.device = "cpu",
    config: AudioConfig = AUDIO,
    precision: str = "float64",
) -> MelExtractor:
    if backend == "librosa":
        if torch.device(device).type != "cpu":
            raise ValueError("the librosa backend runs on the CPU only; use backend='torch'")
        return LibrosaLogMel(config)
    if backend == "torch":
        return TorchLogMel(config, device, precision)
    raise ValueError(f"unknown log-mel backend {backend!r} (choose 'torch' or 'librosa')")


def audio_to_melspectrogram(audio: np.ndarray, config: AudioConfig = AUDIO) -> np.ndarray:
    """The original's `audio_to_melspectrogram`: librosa reference, float32 (n_mels, T)."""
    return LibrosaLogMel(config).one(audio)


def read_as_melspectrogram(path: str | os.PathLike, config: AudioConfig = AUDIO) -> np.ndarray:
    """The original's `read_as_melspectrogram` without its unused (and buggy) time-stretch
    and pitch-shift options."""
    return audio_to_melspectrogram(read_audio(path, config), config)


def list_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Audio files directly inside `folder`, in sorted path order (as the original listed test);
    what is not a readable regular file is named in a warning and left out."""
    names = (p for p in Path(folder).iterdir() if p.suffix.lower() in AUDIO_EXTENSIONS)
    return readable_files(names)[0]
