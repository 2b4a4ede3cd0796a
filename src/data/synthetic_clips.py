"""The synthetic clips: what shapes them, every class's sound, each clip's plan and samples.

The real competition data cannot be shipped, so tests, CI and demos run the whole pipeline on
a generated stand-in; this module makes its audio and labels, `src.data.synthetic_dataset`
writes them out in the Kaggle layout.

Audio: 16-bit PCM mono at 44,100 Hz. Every class has its own signature (see
`class_signature`): a frequency of its own, log-spaced from 100 Hz to 16 kHz, and a texture made
of one of five families (harmonic tone, band-limited noise, resonant click train, repeating
exponential chirp, tone plus noise) under one of four envelopes (steady, tremolo, gated,
decaying strikes). The 20 textures repeat in four frequency groups that also differ in rates,
harmonics and sweeps, so neighbours in frequency never look alike and classes separate on a
mel spectrogram both by position and by local pattern. Each clip jitters pitch (3%), tempo
(10%), phases, onsets and level, mixes the signatures of its 1 to 3 labels
(p = 0.7 / 0.2 / 0.1), each over 70-100% of the clip, and adds faint pink background noise.

Sets (defaults):
* curated: `curated_per_class` = 4 clips per class (320): every class is the main label of
  exactly that many clips (clip i is built around class i mod n), clean condition.
* noisy: `noisy_per_class` = 4 clips per class (320) in another recording condition: louder
  background with mains hum, a 2nd-order low-pass (4-12 kHz) or high-pass (100-400 Hz) filter
  and a random gain of -12..+6 dB (which may clip). Exactly round(`noisy_wrong_share` * n)
  clips (default 0.4: 128) carry wrong labels: as many labels as the truth, none of them true.
* test: `n_test` = 80 clips, clean condition, main labels cycling through the classes.

Durations: log-uniform between `min_seconds` (0.3) and 4 s, except that 2% of the clips are
uniform between 4 s and `max_seconds` (30): about a fifth of the clips are shorter than
0.5 s, a few last up to 30 s, and the default dataset holds about 19 minutes of audio (about
100 MB), generated in about 10 s on one core.

Determinism: every clip draws from its own generator seeded by (seed, set, clip index), so the
same arguments give the same samples whatever the order or the process that renders them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft
import scipy.signal

from src.config import AUDIO, FAT2019_CLASSES, Vocabulary

SAMPLE_RATE = AUDIO.sampling_rate
GENERATOR_VERSION = 1

SETS = ("curated", "noisy", "test")

LABEL_COUNT_PROBABILITIES = (0.7, 0.2, 0.1)  # 1, 2 or 3 labels per clip
TYPICAL_MAX_SECONDS = 4.0
LONG_CLIP_SHARE = 0.02

LOWEST_HZ = 100.0
HIGHEST_HZ = 16000.0
HIGHEST_PARTIAL_HZ = 0.45 * SAMPLE_RATE  # keep every partial clear of Nyquist
FAMILIES = ("tone", "noise", "clicks", "chirp", "tone+noise")
ENVELOPES = ("steady", "tremolo", "gated", "strikes")
# The 20 (family, envelope) textures repeat in 4 frequency groups; within a texture the
# groups also differ in their rates, harmonics and sweeps, so every class looks different
# locally on a spectrogram, not only by where it sits on the frequency axis.
N_GROUPS = 4
GROUP_ENVELOPE_RATES_HZ = {
    "steady": (0.0, 0.0, 0.0, 0.0),
    "tremolo": (2.5, 4.0, 6.0, 9.0),
    "gated": (3.0, 5.0, 8.0, 12.0),
    "strikes": (1.0, 1.5, 2.5, 4.0),
}
GROUP_CLICK_RATES_HZ = (5.0, 9.0, 15.0, 25.0)
GROUP_HARMONICS = (6, 4, 3, 2)
GROUP_SWEEPS = ((0.5, 0.5), (-0.5, 0.35), (1.0, 0.7), (-1.0, 0.25))  # (octaves, seconds)

# Streams of the per-clip generators: seeds are (seed, set code, index, stream).
_SET_CODES = {"curated": 1, "noisy": 2, "test": 3}
_PLAN_STREAM, _RENDER_STREAM = 0, 1
_CORRUPTION_STREAM = 2**32 - 1  # one set-level draw: which noisy clips get wrong labels


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that shapes the generated files (not `workers` or `progress`)."""

    curated_per_class: int = 4
    noisy_per_class: int = 4
    n_test: int = 80
    noisy_wrong_share: float = 0.4
    min_seconds: float = 0.3
    max_seconds: float = 30.0
    seed: int = 2019
    classes: tuple[str, ...] = FAT2019_CLASSES

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        Vocabulary(self.classes)  # raises ConfigError (a ValueError) on bad names
        if "fname" in self.classes:
            raise ValueError("a class may not be called 'fname' (sample_submission column)")
        for name, minimum in (("curated_per_class", 1), ("noisy_per_class", 0), ("n_test", 0)):
            require_int(name, getattr(self, name), minimum)
            object.__setattr__(self, name, int(getattr(self, name)))  # plain ints for JSON
        require_int("seed", self.seed, minimum=0)
        object.__setattr__(self, "seed", int(self.seed))
        for name in ("noisy_wrong_share", "min_seconds", "max_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise ValueError(f"{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not 0.0 <= self.noisy_wrong_share <= 1.0:  # also rejects NaN
            raise ValueError(
                f"noisy_wrong_share must be within [0, 1], got {self.noisy_wrong_share}"
            )
        if not (0.0 < self.min_seconds <= self.max_seconds < math.inf):
            raise ValueError(
                "durations need 0 < min_seconds <= max_seconds < inf, got "
                f"min_seconds={self.min_seconds}, max_seconds={self.max_seconds}"
            )
        if self.min_samples < 1:
            raise ValueError(f"min_seconds={self.min_seconds} is shorter than one sample")
        if self.n_noisy_corrupted and len(self.classes) < 2:
            raise ValueError("wrong noisy labels need at least 2 classes")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def counts(self) -> dict[str, int]:
        return {
            "curated": self.curated_per_class * self.n_classes,
            "noisy": self.noisy_per_class * self.n_classes,
            "test": self.n_test,
        }

    @property
    def n_noisy_corrupted(self) -> int:
        return round(self.noisy_wrong_share * self.counts["noisy"])

    @property
    def min_samples(self) -> int:
        return math.ceil(self.min_seconds * SAMPLE_RATE)

    @property
    def max_samples(self) -> int:
        return math.floor(self.max_seconds * SAMPLE_RATE)

    @property
    def max_labels(self) -> int:
        # A wrong label set needs as many other classes as true labels.
        return max(1, min(len(LABEL_COUNT_PROBABILITIES), self.n_classes // 2))

    def arguments(self) -> dict:
        """The JSON form stored in the manifest (and compared on a re-run)."""
        values = asdict(self)
        values["classes"] = list(self.classes)
        return {"generator_version": GENERATOR_VERSION, **values}


def require_int(name: str, value: object, minimum: int) -> None:
    """A ValueError naming `name` unless `value` is an integer (numpy's too, never a bool) of
    at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


# --------------------------------------------------------------------------------------
# Class signatures
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassSignature:
    """The recipe of one class's sound; per-clip jitter is applied when rendering."""

    family: str
    envelope: str
    base_hz: float  # fundamental, band centre, click resonance or sweep start
    envelope_rate_hz: float  # tremolo, gate or strike rate (0 when steady)
    click_rate_hz: float
    n_harmonics: int
    sweep_octaves: float  # > 0 sweeps up, < 0 down
    sweep_seconds: float


def class_signature(index: int, n_classes: int) -> ClassSignature:
    """A deterministic signature per class index (independent of the seed).

    Every class has its own frequency (log-spaced, 6.6% apart for 80 classes). Neighbours in
    frequency never share a (family, envelope) texture; classes that do are almost two octaves
    apart and differ in rates too: a CNN that pools over the frequency axis needs local
    differences, not only positions.
    """
    n_textures = len(FAMILIES) * len(ENVELOPES)
    family = FAMILIES[index % len(FAMILIES)]
    envelope = ENVELOPES[(index // len(FAMILIES)) % len(ENVELOPES)]
    group = (index // n_textures) % N_GROUPS
    sweep_octaves, sweep_seconds = GROUP_SWEEPS[group]
    return ClassSignature(
        family=family,
        envelope=envelope,
        base_hz=LOWEST_HZ * (HIGHEST_HZ / LOWEST_HZ) ** (index / max(1, n_classes - 1)),
        envelope_rate_hz=GROUP_ENVELOPE_RATES_HZ[envelope][group],
        click_rate_hz=GROUP_CLICK_RATES_HZ[group],
        n_harmonics=GROUP_HARMONICS[group],
        sweep_octaves=sweep_octaves,
        sweep_seconds=sweep_seconds,
    )


def _band(centre_hz: float, octaves: float) -> tuple[float, float]:
    low = centre_hz * 2.0 ** (-octaves / 2)
    high = min(centre_hz * 2.0 ** (octaves / 2), HIGHEST_PARTIAL_HZ)
    return min(low, high / 1.25), high


def _shaped_noise(n: int, rng: np.random.Generator, gain_of_hz) -> np.ndarray:
    """White noise shaped in the frequency domain by `gain_of_hz(frequencies)`."""
    size = scipy.fft.next_fast_len(n, real=True)
    spectrum = scipy.fft.rfft(rng.standard_normal(size))
    spectrum *= gain_of_hz(scipy.fft.rfftfreq(size, 1.0 / SAMPLE_RATE))
    return scipy.fft.irfft(spectrum, size)[:n]


def _band_noise(n: int, rng: np.random.Generator, low_hz: float, high_hz: float) -> np.ndarray:
    return _shaped_noise(n, rng, lambda f: ((f >= low_hz) & (f <= high_hz)).astype(float))


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return _shaped_noise(n, rng, lambda f: 1.0 / np.sqrt(np.maximum(f, 20.0)))


def _harmonic_tone(
    t: np.ndarray, rng: np.random.Generator, f0: float, n_harmonics: int
) -> np.ndarray:
    tone = np.zeros_like(t)
    for harmonic in range(1, n_harmonics + 1):
        if harmonic * f0 >= HIGHEST_PARTIAL_HZ:
            break
        phase = rng.uniform(0, 2 * np.pi)
        tone += np.sin(2 * np.pi * harmonic * f0 * t + phase) / harmonic
    return tone


def _click_train(n: int, rng: np.random.Generator, resonance_hz: float, rate_hz: float):
    """Decaying sinusoid bursts at `resonance_hz`, `rate_hz` per second, the first at 0."""
    period = SAMPLE_RATE / rate_hz
    onsets = np.arange(0.0, n, period)
    onsets[1:] += rng.uniform(-0.1, 0.1, len(onsets) - 1) * period
    impulses = np.zeros(n)
    np.add.at(impulses, np.clip(onsets.astype(int), 0, n - 1), rng.uniform(0.7, 1.0, len(onsets)))
    decay_seconds = max(0.002, 6.0 / resonance_hz)
    kernel_t = np.arange(min(n, int(5 * decay_seconds * SAMPLE_RATE) + 1)) / SAMPLE_RATE
    kernel = np.exp(-kernel_t / decay_seconds) * np.sin(2 * np.pi * resonance_hz * kernel_t)
    return scipy.signal.oaconvolve(impulses, kernel)[:n]


def _sweeps(
    t: np.ndarray, rng: np.random.Generator, start_hz: float, octaves: float, seconds: float
) -> np.ndarray:
    """Exponential sweeps over `octaves` from `start_hz`, one every `seconds`."""
    start_hz = min(start_hz, HIGHEST_PARTIAL_HZ)
    end_hz = min(start_hz * 2.0**octaves, HIGHEST_PARTIAL_HZ)
    if start_hz / 1.2 < end_hz < start_hz * 1.2:  # clamped at the top: sweep down instead
        end_hz = start_hz * 2.0 ** -abs(octaves)
    tau = np.mod(t + rng.uniform(0, 0.2) * seconds, seconds)
    log_ratio = np.log(end_hz / start_hz)
    phase = 2 * np.pi * start_hz * seconds * np.expm1(log_ratio * tau / seconds) / log_ratio
    return np.sin(phase) * np.sin(np.pi * tau / seconds)  # each sweep faded in and out


def _envelope(t: np.ndarray, rng: np.random.Generator, kind: str, rate_hz: float):
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "steady":
        return np.ones_like(t)
    if kind == "tremolo":  # smooth swell between 10% and 100%
        return 1.0 - 0.45 * (1.0 - np.cos(2 * np.pi * rate_hz * t + phase))
    if kind == "gated":  # on/off with soft edges
        return 0.5 + 0.5 * np.tanh(8.0 * np.sin(2 * np.pi * rate_hz * t + phase))
    if kind == "strikes":  # a decaying hit every 1/rate s, the first at the start
        return np.exp(-4.0 * np.mod(rate_hz * t, 1.0))
    raise ValueError(f"unknown envelope {kind!r}")


def render_signature(
    signature: ClassSignature, n_samples: int, rng: np.random.Generator
) -> np.ndarray:
    """One jittered instance of a class signature, `n_samples` long, unit RMS."""
    t = np.arange(n_samples) / SAMPLE_RATE
    base_hz = signature.base_hz * np.exp(rng.uniform(-0.03, 0.03))
    tempo = np.exp(rng.uniform(-0.1, 0.1))  # one jitter for every rate of the clip
    family = signature.family
    if family == "tone":
        sound = _harmonic_tone(t, rng, base_hz, signature.n_harmonics)
    elif family == "noise":
        sound = _band_noise(n_samples, rng, *_band(base_hz, 1 / 3))
    elif family == "clicks":
        sound = _click_train(n_samples, rng, base_hz, signature.click_rate_hz * tempo)
    elif family == "chirp":
        seconds = signature.sweep_seconds / tempo
        sound = _sweeps(t, rng, base_hz, signature.sweep_octaves, seconds)
    elif family == "tone+noise":
        tone = _harmonic_tone(t, rng, base_hz, signature.n_harmonics)
        noise = _band_noise(n_samples, rng, *_band(base_hz * 1.5, 0.5))
        sound = _unit_rms(tone) + 0.5 * _unit_rms(noise)
    else:
        raise ValueError(f"unknown signature family {family!r}")
    envelope = _envelope(t, rng, signature.envelope, signature.envelope_rate_hz * tempo)
    return _unit_rms(sound * envelope)


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    return x / rms if rms > 1e-12 else x


def _fade(n: int) -> np.ndarray:
    """Raised-cosine ramps of up to 5 ms at both ends, so segments start without a click."""
    ramp = min(int(0.005 * SAMPLE_RATE), n // 4)
    window = np.ones(n)
    if ramp:
        rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
        window[:ramp] = rise
        window[n - ramp :] = rise[::-1]
    return window


# --------------------------------------------------------------------------------------
# Clip plans: names, labels, durations
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipPlan:
    set_name: str
    index: int
    fname: str
    true_labels: tuple[int, ...]  # class indices, ascending
    labels: tuple[int, ...]  # what the CSV says (differs from the truth when corrupted)
    n_samples: int

    @property
    def corrupted(self) -> bool:
        return self.labels != self.true_labels


def _rng(seed: int, set_name: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SET_CODES[set_name], *keys])


def draw_n_samples(rng: np.random.Generator, spec: SyntheticSpec) -> int:
    """Log-uniform up to TYPICAL_MAX_SECONDS; a LONG_CLIP_SHARE tail uniform up to max_seconds."""
    low = spec.min_seconds
    typical_high = min(spec.max_seconds, max(low, TYPICAL_MAX_SECONDS))
    if rng.random() < LONG_CLIP_SHARE and spec.max_seconds > typical_high:
        seconds = rng.uniform(typical_high, spec.max_seconds)
    else:
        seconds = math.exp(rng.uniform(math.log(low), math.log(typical_high)))
    return int(np.clip(round(seconds * SAMPLE_RATE), spec.min_samples, spec.max_samples))


def draw_labels(rng: np.random.Generator, main: int, spec: SyntheticSpec) -> tuple[int, ...]:
    """`main` plus 0 to 2 other classes, as ascending class indices."""
    probabilities = np.array(LABEL_COUNT_PROBABILITIES[: spec.max_labels])
    count = 1 + rng.choice(len(probabilities), p=probabilities / probabilities.sum())
    others = np.delete(np.arange(spec.n_classes), main)
    extra = rng.choice(others, size=count - 1, replace=False)
    return tuple(sorted([main, *(int(c) for c in extra)]))


def draw_wrong_labels(
    rng: np.random.Generator, true_labels: tuple[int, ...], n_classes: int
) -> tuple[int, ...]:
    """As many labels as `true_labels`, none of them true."""
    candidates = np.setdiff1d(np.arange(n_classes), true_labels)
    return tuple(sorted(int(c) for c in rng.choice(candidates, len(true_labels), replace=False)))


def make_fnames(spec: SyntheticSpec) -> dict[str, list[str]]:
    """Kaggle-like names (8 hex characters + .wav), unique over all sets, from the seed."""
    taken: set[str] = set()
    names: dict[str, list[str]] = {}
    for set_name in SETS:
        names[set_name] = []
        for index in range(spec.counts[set_name]):
            attempt = 0
            while True:
                key = f"fat2019-synthetic/{spec.seed}/{set_name}/{index}/{attempt}"
                fname = hashlib.sha1(key.encode()).hexdigest()[:8] + ".wav"
                if fname not in taken:
                    break
                attempt += 1
            taken.add(fname)
            names[set_name].append(fname)
    return names


def plan_clips(spec: SyntheticSpec) -> list[ClipPlan]:
    """Every clip of every set; clip i of a set has class i mod n_classes as its main label."""
    fnames = make_fnames(spec)
    n_noisy = spec.counts["noisy"]
    corrupt_rng = _rng(spec.seed, "noisy", _CORRUPTION_STREAM)
    corrupted = set(corrupt_rng.permutation(n_noisy)[: spec.n_noisy_corrupted].tolist())
    plans = []
    for set_name in SETS:
        for index, fname in enumerate(fnames[set_name]):
            rng = _rng(spec.seed, set_name, index, _PLAN_STREAM)
            n_samples = draw_n_samples(rng, spec)
            true_labels = draw_labels(rng, index % spec.n_classes, spec)
            labels = true_labels
            if set_name == "noisy" and index in corrupted:
                labels = draw_wrong_labels(rng, true_labels, spec.n_classes)
            plans.append(ClipPlan(set_name, index, fname, true_labels, labels, n_samples))
    return plans


# --------------------------------------------------------------------------------------
# Rendering a clip
# --------------------------------------------------------------------------------------


def render_clip(plan: ClipPlan, seed: int, n_classes: int) -> np.ndarray:
    """The clip's int16 samples: mixed true signatures, background, recording condition."""
    rng = _rng(seed, plan.set_name, plan.index, _RENDER_STREAM)
    n = plan.n_samples
    mix = np.zeros(n)
    for label in plan.true_labels:  # each sound covers 70-100% of the clip, own onset
        length = max(1, round(n * rng.uniform(0.7, 1.0)))
        start = int(rng.integers(0, n - length + 1))
        level = 10 ** (rng.uniform(-6, 0) / 20)
        sound = render_signature(class_signature(label, n_classes), length, rng)
        mix[start : start + length] += level * sound * _fade(length)
    mix = _unit_rms(mix)
    if plan.set_name == "noisy":
        mix = _noisy_condition(mix, rng)
    else:
        mix += 10 ** (rng.uniform(-50, -40) / 20) * _unit_rms(_pink_noise(n, rng))
    peak = float(np.max(np.abs(mix))) or 1.0
    mix *= 10 ** (rng.uniform(-18, -3) / 20) / peak
    if plan.set_name == "noisy":
        mix *= 10 ** (rng.uniform(-12, 6) / 20)  # may clip: part of the worse condition
    return np.round(np.clip(mix, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def _noisy_condition(mix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Louder background with mains hum, then a random low- or high-pass microphone chain."""
    n = len(mix)
    t = np.arange(n) / SAMPLE_RATE
    mains_hz = 50.0 if rng.random() < 0.5 else 60.0
    hum = _harmonic_tone(t, rng, mains_hz, n_harmonics=3)
    mix = mix + 10 ** (rng.uniform(-25, -15) / 20) * _unit_rms(_pink_noise(n, rng))
    mix = mix + 10 ** (rng.uniform(-35, -25) / 20) * _unit_rms(hum)
    if rng.random() < 0.5:
        kind, lowest_hz, highest_hz = "lowpass", 4000.0, 12000.0
    else:
        kind, lowest_hz, highest_hz = "highpass", 100.0, 400.0
    cutoff_hz = math.exp(rng.uniform(math.log(lowest_hz), math.log(highest_hz)))
    sos = scipy.signal.butter(2, cutoff_hz, kind, fs=SAMPLE_RATE, output="sos")
    return scipy.signal.sosfilt(sos, mix)
