"""One place for paths, audio constants and the class vocabulary.

Paths are resolved from the environment each time `get_paths()` is called (not at import),
so tests and kernels can change `FREESOUND_DATA_DIR`, `MODE` or `FREESOUND_KAGGLE_ROOT`
before asking for them.

Environment variables:
    FREESOUND_DATA_DIR     local data directory; every output lands under it
                           (default: `data/` in the repository)
    MODE                   unset for local runs; `train` or `predict` inside a Kaggle kernel
    FREESOUND_KAGGLE_ROOT  the directory that holds `kaggle/` in Kaggle mode (default `/`);
                           tests point it at a temporary directory to simulate Kaggle
    FREESOUND_SHORT_CLIP_RULE  `original` (default, the original's quirk) or `centered`
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPETITION = "freesound-audio-tagging-2019"
WEIGHTS_DATASET_PREFIX = "freesound-train"
N_FOLDS = 5
KAGGLE_MODES = ("train", "predict")
# --amp of the predicting scripts: float32 ("off", the default) unless one of these is asked.
PREDICTION_AMP_CHOICES = ("off", "fp16", "bf16", "auto")


class ConfigError(ValueError):
    """A setting, path or input file that the pipeline cannot work with."""


# --------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------

SHORT_CLIP_RULES = ("original", "centered")


@dataclass(frozen=True)
class AudioConfig:
    """The audio and log-mel settings of the original solution.

    See docs/original.md, "Audio and log-mel".
    """

    sampling_rate: int = 44100
    hop_length: int = 345 * 2
    fmin: int = 20
    fmax: int = 44100 // 2
    n_mels: int = 128
    n_fft: int = 128 * 20
    min_seconds: float = 0.5
    # How a clip whose non-silent part is shorter than `min_seconds` is cut (docs/original.md,
    # "Short clips"):
    # 'original' keeps the original's quirk, 'centered' centres the window on the event.
    short_clip_rule: str = "original"

    def __post_init__(self) -> None:
        if self.short_clip_rule not in SHORT_CLIP_RULES:
            raise ConfigError(
                f"short_clip_rule must be one of {SHORT_CLIP_RULES}, got {self.short_clip_rule!r}"
            )

    @property
    def min_samples(self) -> int:
        return int(self.min_seconds * self.sampling_rate)

    def n_frames(self, n_samples: int) -> int:
        """Frames of a centred STFT over `n_samples` samples."""
        return 1 + n_samples // self.hop_length

    def hash(self, **extra: object) -> str:
        """7-hex SHA-1 of the settings, computed as the original did.

        The short-clip rule enters the hash only when it differs from the original's,
        so the default configuration hashes to the original's `6413967`.
        """
        values = asdict(self)
        if values.pop("short_clip_rule") != "original":
            values["short_clip_rule"] = self.short_clip_rule
        values.update(extra)
        text = json.dumps(values, sort_keys=True, ensure_ascii=False)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:7]


# FREESOUND_SHORT_CLIP_RULE=centered switches every script to the corrected rule (the
# spectrogram stores are keyed by it, so they are extracted again).
SHORT_CLIP_ENV = "FREESOUND_SHORT_CLIP_RULE"
AUDIO = AudioConfig(short_clip_rule=os.environ.get(SHORT_CLIP_ENV, "original"))


# --------------------------------------------------------------------------------------
# Class vocabulary
# --------------------------------------------------------------------------------------

FAT2019_CLASSES: tuple[str, ...] = (
    "Accelerating_and_revving_and_vroom",
    "Accordion",
    "Acoustic_guitar",
    "Applause",
    "Bark",
    "Bass_drum",
    "Bass_guitar",
    "Bathtub_(filling_or_washing)",
    "Bicycle_bell",
    "Burping_and_eructation",
    "Bus",
    "Buzz",
    "Car_passing_by",
    "Cheering",
    "Chewing_and_mastication",
    "Child_speech_and_kid_speaking",
    "Chink_and_clink",
    "Chirp_and_tweet",
    "Church_bell",
    "Clapping",
    "Computer_keyboard",
    "Crackle",
    "Cricket",
    "Crowd",
    "Cupboard_open_or_close",
    "Cutlery_and_silverware",
    "Dishes_and_pots_and_pans",
    "Drawer_open_or_close",
    "Drip",
    "Electric_guitar",
    "Fart",
    "Female_singing",
    "Female_speech_and_woman_speaking",
    "Fill_(with_liquid)",
    "Finger_snapping",
    "Frying_(food)",
    "Gasp",
    "Glockenspiel",
    "Gong",
    "Gurgling",
    "Harmonica",
    "Hi-hat",
    "Hiss",
    "Keys_jangling",
    "Knock",
    "Male_singing",
    "Male_speech_and_man_speaking",
    "Marimba_and_xylophone",
    "Mechanical_fan",
    "Meow",
    "Microwave_oven",
    "Motorcycle",
    "Printer",
    "Purr",
    "Race_car_and_auto_racing",
    "Raindrop",
    "Run",
    "Scissors",
    "Screaming",
    "Shatter",
    "Sigh",
    "Sink_(filling_or_washing)",
    "Skateboard",
    "Slam",
    "Sneeze",
    "Squeak",
    "Stream",
    "Strum",
    "Tap",
    "Tick-tock",
    "Toilet_flush",
    "Traffic_noise_and_roadway_noise",
    "Trickle_and_dribble",
    "Walk_and_footsteps",
    "Water_tap_and_faucet",
    "Waves_and_surf",
    "Whispering",
    "Writing",
    "Yell",
    "Zipper_(clothing)",
)


@dataclass(frozen=True)
class Vocabulary:
    """The ordered class list: the index of a class is its target column."""

    classes: tuple[str, ...] = FAT2019_CLASSES
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError("a vocabulary needs at least one class")
        duplicates = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if duplicates:
            raise ConfigError(f"duplicate class names: {duplicates}")
        bad = [c for c in self.classes if "," in c or c != c.strip() or not c]
        if bad:
            raise ConfigError(f"class names may not be empty or contain commas: {bad}")
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.classes)})

    def __len__(self) -> int:
        return len(self.classes)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise ConfigError(f"unknown label {name!r}") from None

    @staticmethod
    def split(labels: str) -> list[str]:
        """Split a comma-separated label string as written in the Kaggle CSVs."""
        return [part.strip() for part in str(labels).split(",") if part.strip()]

    def unknown(self, labels: str) -> list[str]:
        return [name for name in self.split(labels) if name not in self._index]

    def encode(self, labels: str | Iterable[str]) -> np.ndarray:
        """Multi-hot float32 target of length `len(self)`."""
        names = self.split(labels) if isinstance(labels, str) else list(labels)
        target = np.zeros(len(self), dtype=np.float32)
        for name in names:
            target[self.index(name)] = 1.0
        return target

    def encode_many(self, label_strings: Sequence[str]) -> np.ndarray:
        return (
            np.stack([self.encode(s) for s in label_strings])
            if len(label_strings)
            else (np.zeros((0, len(self)), dtype=np.float32))
        )

    def decode(self, target: np.ndarray, threshold: float = 0.5) -> str:
        return ",".join(c for c, v in zip(self.classes, target) if v > threshold)

    @classmethod
    def from_sample_submission(cls, path: str | os.PathLike) -> Vocabulary:
        """The class columns of a `sample_submission.csv` (everything after `fname`)."""
        path = Path(path)
        try:
            # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column name
            with path.open(encoding="utf-8-sig") as handle:
                header = handle.readline().strip()
        except OSError as error:
            raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
        columns = [c.strip() for c in header.split(",")]
        if not columns or columns[0] != "fname" or len(columns) < 2:
            raise ConfigError(
                f"{path}: expected a header 'fname,<class>,<class>,...', got {header[:80]!r}"
            )
        return cls(tuple(columns[1:]))


def load_vocabulary(paths: Paths | None = None) -> Vocabulary:
    """The dataset's own classes when it brings a `sample_submission.csv`, else FAT2019's."""
    paths = paths or get_paths()
    if paths.sample_submission.is_file():
        return Vocabulary.from_sample_submission(paths.sample_submission)
    return Vocabulary()


def vocabulary_source(paths: Paths | None = None) -> str:
    """Where `load_vocabulary` takes the classes from, for messages."""
    paths = paths or get_paths()
    if paths.sample_submission.is_file():
        return str(paths.sample_submission)
    return "FAT2019's 80 classes (no sample_submission.csv)"


# --------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    """Where inputs are read and outputs written, for local runs and Kaggle kernels."""

    input_dir: Path  # competition files: CSVs and the audio folders
    save_dir: Path  # every output: folds, cache, experiments, predictions, submission
    experiments_dir: Path  # trained weights (read-only inside a predict kernel)
    mode: str | None = None  # None locally, 'train' or 'predict' in a kernel
    kaggle_input: Path | None = None  # /kaggle/input in Kaggle mode

    @property
    def kernel(self) -> bool:
        return self.mode is not None

    @property
    def train_curated_csv(self) -> Path:
        return self.input_dir / "train_curated.csv"

    @property
    def train_noisy_csv(self) -> Path:
        return self.input_dir / "train_noisy.csv"

    @property
    def sample_submission(self) -> Path:
        return self.input_dir / "sample_submission.csv"

    @property
    def train_curated_dir(self) -> Path:
        return self.input_dir / "train_curated"

    @property
    def train_noisy_dir(self) -> Path:
        return self.input_dir / "train_noisy"

    @property
    def test_dir(self) -> Path:
        return self.input_dir / "test"

    @property
    def folds_csv(self) -> Path:
        return self.save_dir / "train_folds.csv"

    @property
    def cache_dir(self) -> Path:
        return self.save_dir / "cache"

    @property
    def predictions_dir(self) -> Path:
        return self.save_dir / "predictions"

    @property
    def corrections_dir(self) -> Path:
        """Label-correction files (`corrections.json`, `noisy_corrections.json`, ...)."""
        return self.save_dir / "corrections"

    @property
    def submission(self) -> Path:
        return self.save_dir / "submission.csv"

    def experiment_dir(self, name: str) -> Path:
        return self.experiments_dir / name

    def prediction_dir(self, name: str) -> Path:
        return self.predictions_dir / name


def default_data_dir() -> Path:
    value = os.environ.get("FREESOUND_DATA_DIR")
    return Path(value).expanduser().resolve() if value else REPO_ROOT / "data"


def kaggle_mode() -> str | None:
    mode = os.environ.get("MODE")
    if mode is None or mode == "":
        return None
    if mode not in KAGGLE_MODES:
        raise ConfigError(
            f"MODE must be one of {KAGGLE_MODES} (Kaggle kernels) or unset, got {mode!r}"
        )
    return mode


def find_weights_dataset(kaggle_input: Path) -> Path | None:
    """The experiments folder of the uploaded weights dataset, as the original looked for it:
    `freesound-train/experiments` first, then the first `freesound-train*` dataset."""
    preferred = kaggle_input / WEIGHTS_DATASET_PREFIX / "experiments"
    if preferred.is_dir():
        return preferred
    if kaggle_input.is_dir():
        for candidate in sorted(kaggle_input.iterdir()):
            if (
                candidate.name.startswith(WEIGHTS_DATASET_PREFIX)
                and (candidate / "experiments").is_dir()
            ):
                return candidate / "experiments"
    return None


def get_paths() -> Paths:
    mode = kaggle_mode()
    if mode is None:
        data_dir = default_data_dir()
        return Paths(
            input_dir=data_dir, save_dir=data_dir, experiments_dir=data_dir / "experiments"
        )

    root = Path(os.environ.get("FREESOUND_KAGGLE_ROOT", "/")).resolve()
    kaggle_input = root / "kaggle" / "input"
    working = root / "kaggle" / "working"
    competition = kaggle_input / COMPETITION
    if mode == "predict":
        # When no weights dataset is attached, point at where it should be: the scripts
        # that need weights report what is under /kaggle/input (see require_experiment).
        experiments = find_weights_dataset(kaggle_input) or (
            kaggle_input / WEIGHTS_DATASET_PREFIX / "experiments"
        )
        return Paths(competition, working, experiments, mode, kaggle_input)
    # Train mode: the original expected the competition files directly under
    # /kaggle/input; today's kernels mount them under the competition's folder.
    input_dir = competition if competition.is_dir() else kaggle_input
    return Paths(input_dir, working, working / "experiments", mode, kaggle_input)


def describe_kaggle_input(kaggle_input: Path, depth: int = 2) -> str:
    """A short listing of /kaggle/input for error messages."""
    if not kaggle_input.is_dir():
        return f"{kaggle_input} does not exist"
    lines = [f"{kaggle_input}:"]
    for entry in sorted(kaggle_input.iterdir()):
        lines.append(f"  {entry.name}{'/' if entry.is_dir() else ''}")
        if entry.is_dir() and depth > 1:
            children = sorted(entry.iterdir())
            lines.extend(f"    {c.name}{'/' if c.is_dir() else ''}" for c in children[:10])
            if len(children) > 10:
                lines.append(f"    ... ({len(children) - 10} more)")
    if len(lines) == 1:
        lines.append("  (empty)")
    return "\n".join(lines)


def default_num_workers() -> int:
    """DataLoader workers: 2 inside a kernel (as the original), else up to 8."""
    if kaggle_mode() is not None:
        return 2
    return max(0, min(8, (os.cpu_count() or 1) - 1))
