"""Label tables: the Kaggle label CSVs, the curated set's folds, an experiment's training
labels after its corrections."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import KFold

from src.config import N_FOLDS, ConfigError, Paths, Vocabulary
from src.data.corrections import apply_corrections, find_corrections, relabelled_only

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
        audio_dir = Path(audio_dir)
        absent = [f for f in table["fname"] if not (audio_dir / f).is_file()]
        if absent:
            problems.append(f"audio files missing from {audio_dir} ({len(absent)}): {absent[:5]}")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return table[list(LABEL_COLUMNS)].reset_index(drop=True)


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
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, val_index) in enumerate(splitter.split(folds)):
        folds.loc[val_index, "fold"] = fold
    return folds


def read_folds(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no folds file; run `python make_folds.py` first")
    folds = pd.read_csv(path, dtype={"fname": str, "labels": str, "file_path": str})
    missing = [c for c in ("fname", "labels", "fold", "file_path") if c not in folds.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {missing}; rerun `python make_folds.py`")
    return folds


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
    curated = read_folds(paths.folds_csv)
    check_labels(curated, vocabulary, paths.folds_csv)
    mode = "if-present" if skip_missing_corrections else "required"
    curated_fix = find_corrections(
        paths.corrections_dir, corrections.get("curated"), vocabulary, curated["fname"], mode
    )
    curated = apply_corrections(curated, curated_fix)
    noisy = corrected = pd.DataFrame(columns=["fname", "labels"])
    if need_noisy:
        noisy = read_labels_csv(paths.train_noisy_csv, vocabulary)
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
