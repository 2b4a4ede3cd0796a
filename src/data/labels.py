"""Label tables: the Kaggle label CSVs, the curated set's folds, an experiment's training
labels after its corrections."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from src.cli import command_line
from src.config import N_FOLDS, ConfigError, Paths, Vocabulary
from src.data.corrections import apply_corrections, find_corrections, relabelled_only
from src.utils import FILE_NOT_FOUND, file_problem

FOLDS_SEED = 42
LABEL_COLUMNS = ("fname", "labels")


def read_labels_csv(
    path: str | os.PathLike,
    vocabulary: Vocabulary,
    audio_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """A `fname,labels` CSV, checked: columns, duplicates, unknown labels, missing audio.

    Every problem found is reported in one error that names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise ConfigError(f"{path}: not a readable CSV ({error})") from None
    missing = [c for c in LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(
            f"{path}: missing column(s) {missing}; expected {list(LABEL_COLUMNS)}, "
            f"found {list(table.columns)}"
        )
    problems = []
    duplicated = table["fname"][table["fname"].duplicated()].unique().tolist()
    if duplicated:
        problems.append(f"duplicate fnames ({len(duplicated)}): {duplicated[:5]}")
    empty = table["fname"][table["labels"].str.strip() == ""].tolist()
    if empty:
        problems.append(f"rows without labels ({len(empty)}): {empty[:5]}")
    unknown: dict[str, list[str]] = {}
    for fname, labels in zip(table["fname"], table["labels"]):
        for label in vocabulary.unknown(labels):
            unknown.setdefault(label, []).append(fname)
    if unknown:
        shown = "; ".join(f"{label!r} in {names[:3]}" for label, names in list(unknown.items())[:5])
        problems.append(f"unknown labels ({len(unknown)}): {shown}")
    if audio_dir is not None:
        absent = absent_audio(table["fname"], audio_dir)
        if absent:
            problems.append(f"audio files missing from {audio_dir} ({len(absent)}): {absent[:5]}")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return table[list(LABEL_COLUMNS)].reset_index(drop=True)


def absent_audio(fnames: Iterable[str], audio_dir: str | os.PathLike) -> list[str]:
    """The listed file names that are not a regular readable file in `audio_dir`, each with
    its reason unless it is simply not there ('a.wav (a FIFO (named pipe), not a regular
    file)'); nothing is opened."""
    audio_dir = Path(audio_dir)
    absent = []
    for fname in fnames:
        problem = file_problem(audio_dir / fname)
        if problem is not None:
            absent.append(fname if problem == FILE_NOT_FOUND else f"{fname} ({problem})")
    return absent


def listed_audio_files(csv_path: Path, audio_dir: Path) -> list[Path]:
    """The audio files a set's CSV lists, every one present: a missing file is named here,
    before the set is extracted, not found as a decoding failure after hours of work."""
    fnames = pd.read_csv(csv_path, dtype=str, keep_default_na=False)["fname"]
    absent = absent_audio(fnames, audio_dir)
    if absent:
        raise ConfigError(
            f"{csv_path}: {len(absent)} listed audio file(s) missing from {audio_dir}: "
            f"{absent[:5]}; restore them or remove their rows"
        )
    return [audio_dir / f for f in fnames]


def make_folds(
    curated: pd.DataFrame, n_folds: int = N_FOLDS, seed: int = FOLDS_SEED
) -> pd.DataFrame:
    """KFold(n_folds, shuffle, random_state=seed) over the rows in file order.

    Returns `fname, labels, fold`; the validation indices of split k get fold k.
    """
    if len(curated) < n_folds:
        raise ConfigError(
            f"need at least {n_folds} curated clips to make {n_folds} folds, got {len(curated)}"
        )
    folds = curated[["fname", "labels"]].copy()
    folds["fold"] = -1
    # scikit-learn (with SciPy) adds over a second to the start of every process that reads
    # labels; only making folds needs it.
    from sklearn.model_selection import KFold

    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, val_index) in enumerate(splitter.split(folds)):
        folds.loc[val_index, "fold"] = fold
    return folds


def no_dataset_message(data_dir: Path) -> str:
    """What to do when the data directory holds no training set: make one, or import weights."""
    state = "does not exist" if not data_dir.is_dir() else "holds no dataset (no train_curated.csv)"
    return (
        f"the data directory {data_dir} {state} (it is --data-dir, else $FREESOUND_DATA_DIR, "
        f"else data/): make a dataset there from your recordings "
        f"(`{command_line('make_dataset.py', 'SOURCE', '--out', data_dir)}`) or a synthetic one "
        f"(`{command_line('make_synthetic.py', '--out', data_dir)}`), then "
        f"`{command_line('make_folds.py')}`; to tag and predict without "
        f"training, import the released weights "
        f"(`{command_line('import_weights.py', 'experiments.zip')}`)"
    )


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        if not (path.parent / "train_curated.csv").is_file():
            raise ConfigError(no_dataset_message(path.parent))
        raise ConfigError(f"{path}: no folds file; run `{command_line('make_folds.py')}` first")
    folds = pd.read_csv(path, dtype={"fname": str, "labels": str, "file_path": str})
    missing = [c for c in ("fname", "labels", "fold", "file_path") if c not in folds.columns]
    if missing:
        raise ConfigError(
            f"{path}: missing column(s) {missing}; rerun `{command_line('make_folds.py')}`"
        )
    return folds


def folds_digest(folds: pd.DataFrame) -> str:
    """A fingerprint of which clip is in which fold. Recorded in params.json at training: the
    out-of-fold predictions of an experiment are only out of fold for the split it trained on."""
    pairs = sorted(zip(folds["fname"].astype(str), folds["fold"].astype(int)))
    text = "\n".join(f"{fname}\t{fold}" for fname, fold in pairs)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_folds(paths: Paths, folds: Iterable[int] | None = None) -> pd.DataFrame:
    """train_folds.csv, checked before any work uses it: still the folds of the current
    train_curated.csv (when the dataset has one), and holding every fold in `folds`."""
    table = read_folds(paths.folds_csv)
    if paths.train_curated_csv.is_file():
        check_folds_current(table, paths.train_curated_csv, paths.folds_csv)
    if folds is not None:
        have = sorted(int(f) for f in table["fold"].unique())
        absent = sorted(set(folds) - set(have))
        if absent:
            raise ConfigError(
                f"{paths.folds_csv} has no fold {', '.join(map(str, absent))} (it has folds "
                f"{', '.join(map(str, have))}): pass --folds {','.join(map(str, have))}, or "
                f"rerun `{command_line('make_folds.py')}` (5 folds by default)"
            )
    return table


def check_folds_current(folds: pd.DataFrame, curated_csv: Path, folds_csv: Path) -> None:
    """The folds must list exactly the clips and labels of train_curated.csv: folds made from
    another version of that CSV would validate on the wrong clips or train on old labels."""
    curated = pd.read_csv(curated_csv, dtype=str, keep_default_na=False)
    if not set(LABEL_COLUMNS) <= set(curated.columns):
        return  # read_labels_csv reports a malformed curated CSV where it is read
    now = dict(zip(curated["fname"], curated["labels"]))
    then = dict(zip(folds["fname"], folds["labels"].fillna("")))
    added = [f for f in now if f not in then]
    removed = [f for f in then if f not in now]
    relabelled = [f for f in now if f in then and now[f] != then[f]]
    changes = [
        f"{what} ({len(names)}): {names[:3]}"
        for what, names in (("added", added), ("removed", removed), ("relabelled", relabelled))
        if names
    ]
    if changes:
        raise ConfigError(
            f"{folds_csv} is stale: {curated_csv.name} changed since make_folds.py made it "
            f"(clips {'; '.join(changes)}); rerun `{command_line('make_folds.py')}`"
        )


# --------------------------------------------------------------------------------------
# Label tables of an experiment
# --------------------------------------------------------------------------------------


@dataclass
class LabelTables:
    """fname/labels tables of the three sets after corrections (curated one has `fold`)."""

    curated: pd.DataFrame
    noisy: pd.DataFrame
    corrected: pd.DataFrame


def load_label_tables(
    paths: Paths,
    vocabulary: Vocabulary,
    corrections: dict,
    need_noisy: bool,
    skip_missing_corrections: bool = False,
) -> LabelTables:
    """The experiment's training labels: folds + curated corrections, noisy set per config."""
    curated = load_folds(paths)
    check_labels(curated, vocabulary, paths.folds_csv)
    mode = "if-present" if skip_missing_corrections else "required"
    curated_fix = find_corrections(
        paths.corrections_dir, corrections.get("curated"), vocabulary, curated["fname"], mode
    )
    curated = apply_corrections(curated, curated_fix)
    noisy = corrected = pd.DataFrame(columns=["fname", "labels"])
    if need_noisy:
        noisy = read_labels_csv(paths.train_noisy_csv, vocabulary, paths.train_noisy_dir)
        noisy_fix = find_corrections(
            paths.corrections_dir, corrections.get("noisy"), vocabulary, noisy["fname"], mode
        )
        corrected = relabelled_only(noisy, noisy_fix)
        if corrections.get("noisy_labels", "raw") == "corrected":
            noisy = apply_corrections(noisy, noisy_fix)
    return LabelTables(curated, noisy, corrected)


def check_labels(table: pd.DataFrame, vocabulary: Vocabulary, source) -> None:
    unknown = sorted({label for labels in table["labels"] for label in vocabulary.unknown(labels)})
    if unknown:
        raise ConfigError(f"{source}: unknown labels {unknown[:5]}")


def has_noisy_set(paths: Paths) -> bool:
    """Whether the dataset has a noisy part: `train_noisy.csv` exists and lists a clip.

    Datasets of one's own usually hold hand-labelled clips only; training then moves the noisy
    sets' sampling probabilities to the curated set (`src.training.first_level`).
    """
    path = paths.train_noisy_csv
    if not path.is_file():
        return False
    with path.open(encoding="utf-8-sig") as handle:
        lines = [line for line in handle if line.strip()]
    return len(lines) > 1  # a header and at least one row
