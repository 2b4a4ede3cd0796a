"""Live tagging: 1 s blocks of audio in, one prediction per block out (docs/original.md,
"Live demo").

`LiveTagger` keeps the original demo's buffering:

1. each 1 s block (44,100 samples) is appended to the previous block, giving 2 s;
2. the log-mel of those 2 s (128 frames) is computed and its last 64 frames kept;
3. they are pushed into a rolling window of crop_size // 64 blocks (4 for the full models:
   256 frames, about 4 s), the oldest dropped;
4. the window is predicted as exactly one tile (tile step = crop size).

Difference from the original (docs/original.md, quirk "Demo window"): it started the window
from zero arrays, i.e. 0 dB, louder than anything a microphone gives, so the first seconds
were predicted on a loud wall. Here the blocks not received yet are filled with the minimum of
the blocks received so far, the value the predictor pads clips with. The first block is
appended, as in the original, to a second of digital silence.

Blocks come from a file (`file_blocks`, optionally `paced` at real time) or from the microphone
(`microphone_blocks`, through `sounddevice`, imported only there). Nothing here imports
matplotlib; the window lives in `src.tools.live_view`.
"""

from __future__ import annotations

import os
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.config import AUDIO, AudioConfig, ConfigError
from src.data.audio import MelExtractor, make_extractor
from src.tools.tagging.output import format_top, name_width, top_classes

BLOCK_FRAMES = 64  # frames kept from each 2 s log-mel, as the original demo
# The extractor of the demo: the pipeline's torch log-mel in float64, which matches the librosa
# reference within 1e-3 dB (bench/demo_latency.py compares the two backends' speed).
LIVE_MEL_BACKEND = "torch"


@dataclass(frozen=True)
class LiveUpdate:
    """What one block produced."""

    index: int  # 1, 2, ...: seconds of audio received so far
    block: np.ndarray  # (n_mels, 64) the newest block's frames
    window: np.ndarray  # (n_mels, n_blocks * 64) the tile the model saw
    probabilities: np.ndarray  # (n_classes,)
    mel_seconds: float  # time spent on the log-mel of the block
    predict_seconds: float  # time spent on the prediction of the window

    def top(self, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
        return top_classes(self.probabilities, classes, k)


def format_update(update: LiveUpdate, classes: Sequence[str], k: int) -> str:
    """One printed line: the second count right-justified to 4 characters and 's', a tab, then
    the top-k entries as the original printed them (names padded to the longest class name
    when one is longer than the original's 20 characters)."""
    return f"{update.index:>4}s\t{format_top(update.top(classes, k), name_width(classes))}"


class LiveTagger:
    """Turns 1 s blocks of samples into one prediction each (see the module docstring)."""

    def __init__(
        self,
        predictor,
        extractor: MelExtractor | None = None,
        config: AudioConfig = AUDIO,
        block_frames: int = BLOCK_FRAMES,
    ) -> None:
        self.predictor = predictor
        self.predictor.step = predictor.tile  # a window is exactly one tile
        self.extractor = extractor or make_extractor(LIVE_MEL_BACKEND)
        self.config = config
        self.block_samples = config.sampling_rate  # 1 s, the stream's blocksize
        self.block_frames = block_frames
        self.n_blocks = max(1, predictor.tile // block_frames)
        self.reset()

    @property
    def window_frames(self) -> int:
        return self.n_blocks * self.block_frames

    def reset(self) -> None:
        self._previous = np.zeros(self.block_samples, dtype=np.float32)
        self._blocks: deque[np.ndarray] = deque(maxlen=self.n_blocks)
        self.count = 0

    def block_spectrogram(self, samples: np.ndarray) -> np.ndarray:
        """The newest block's frames: the last 64 of the log-mel of (previous + new) block."""
        two_seconds = np.concatenate([self._previous, samples])
        return self.extractor([two_seconds])[0][:, -self.block_frames :]

    def window(self) -> np.ndarray:
        """The received blocks, oldest first, with the missing ones (at the start of a stream)
        filled with their minimum."""
        received = np.concatenate(list(self._blocks), axis=1)
        missing = self.window_frames - received.shape[1]
        if missing == 0:
            return received
        filler = np.full((received.shape[0], missing), received.min(), dtype=received.dtype)
        return np.concatenate([filler, received], axis=1)

    def push(self, samples: np.ndarray) -> LiveUpdate:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)  # (frames, 1) -> (frames,)
        if samples.shape[0] != self.block_samples:
            raise ValueError(f"a block holds {self.block_samples} samples, got {len(samples)}")
        start = time.perf_counter()
        block = self.block_spectrogram(samples)
        self._previous = samples
        self._blocks.append(block)
        window = self.window()
        computed = time.perf_counter()
        probabilities = self.predictor.predict_tiles([window])[0][0]
        done = time.perf_counter()
        self.count += 1
        return LiveUpdate(
            self.count, block, window, probabilities, computed - start, done - computed
        )

    def run(self, blocks: Iterable[np.ndarray]) -> Iterator[LiveUpdate]:
        for samples in blocks:
            yield self.push(samples)


# --------------------------------------------------------------------------------------
# Sources of blocks
# --------------------------------------------------------------------------------------


def file_blocks(
    audio: np.ndarray, block_samples: int = AUDIO.sampling_rate
) -> Iterator[np.ndarray]:
    """The full 1 s blocks of a waveform; a last partial block is dropped (one update per full
    second, as a microphone stream of the same length would give)."""
    for start in range(0, len(audio) - block_samples + 1, block_samples):
        yield audio[start : start + block_samples]


def paced(
    blocks: Iterable[np.ndarray],
    block_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> Iterator[np.ndarray]:
    """Yield block i (1-based) no earlier than i seconds after the start: when a microphone
    would have delivered it. `sleep` may be a GUI's event loop, so a window stays responsive."""
    start = clock()
    for index, block in enumerate(blocks, start=1):
        while (remaining := start + index * block_seconds - clock()) > 0:
            sleep(remaining)
        yield block


# --------------------------------------------------------------------------------------
# The microphone (sounddevice / PortAudio), imported only when used
# --------------------------------------------------------------------------------------

NO_PORTAUDIO_ENV = "FREESOUND_DEMO_NO_PORTAUDIO"  # set to 1 to simulate a missing PortAudio


def inside_docker() -> bool:
    return Path("/.dockerenv").exists()


def import_sounddevice():
    """The sounddevice module, or a ConfigError that says how to get PortAudio."""
    try:
        if os.environ.get(NO_PORTAUDIO_ENV):
            raise OSError(f"PortAudio library not found (simulated by {NO_PORTAUDIO_ENV})")
        import sounddevice
    except ImportError as error:
        raise ConfigError(
            f"the microphone needs the sounddevice package ({error}): pip install sounddevice"
        ) from None
    except OSError as error:
        raise ConfigError(
            f"{error}: install libportaudio2 (sudo apt-get install libportaudio2; macOS: brew "
            "install portaudio) to use a microphone, or stream a file with --input FILE"
        ) from None
    return sounddevice


def no_input_device_message(error: Exception) -> str:
    message = (
        f"no usable audio input device ({error}): list them with --list-devices and pick one "
        "with --audio-device ID_OR_NAME, or stream a file with --input FILE"
    )
    if inside_docker():
        message += (
            "; inside Docker, give the container the sound devices with `--device /dev/snd` "
            "(make run-demo does)"
        )
    return message


def parse_audio_device(text: str | None) -> int | str | None:
    """sounddevice takes a device index or a substring of its name."""
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


def list_input_devices(sounddevice=None) -> str:
    sounddevice = sounddevice or import_sounddevice()
    try:
        return str(sounddevice.query_devices())
    except sounddevice.PortAudioError as error:
        raise ConfigError(no_input_device_message(error)) from None


def microphone_blocks(
    device: int | str | None = None,
    config: AudioConfig = AUDIO,
    idle: Callable[[float], object] = time.sleep,
    sounddevice=None,
    poll_seconds: float = 0.05,
) -> Iterator[np.ndarray]:
    """1 s blocks from an input device: mono, 44,100 Hz, blocksize 44,100, as the original demo.

    The stream's callback runs on PortAudio's thread and only queues a copy of the block; the
    log-mel, the model and the window run on the caller's thread (matplotlib needs that).
    `idle` is called while waiting, e.g. to keep a window responsive.
    """
    sounddevice = sounddevice or import_sounddevice()
    blocks: queue.Queue[np.ndarray] = queue.Queue()

    def callback(indata, frames, time_info, status) -> None:
        blocks.put(indata[:, 0].copy())

    try:
        sounddevice.query_devices(device, kind="input")
        stream = sounddevice.InputStream(
            samplerate=config.sampling_rate,
            blocksize=config.sampling_rate,
            channels=1,
            dtype="float32",
            device=device,
            callback=callback,
        )
        stream.start()
    except (sounddevice.PortAudioError, ValueError) as error:
        raise ConfigError(no_input_device_message(error)) from None
    try:
        while True:
            try:
                yield blocks.get_nowait()
            except queue.Empty:
                idle(poll_seconds)
    finally:
        stream.stop()
        stream.close()
