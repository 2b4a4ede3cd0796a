"""Label-correction files: the format, validation, finding and applying them.

A correction file is a JSON object from fname to either the string "remove" or a
comma-separated list of class names, exactly the original's format:

    {"0a2895b8.wav": "remove", "0b4d9ac5.wav": "Bark,Growling"}

Curated corrections relabel or remove curated clips for training and validation. Noisy
corrections relabel or remove noisy clips; their listed (not removed) clips also form the
separate "corrected noisy" set that is trained with plain BCE (see docs/original.md).
Making them is `src.tools.corrections`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from src.config import ConfigError, Vocabulary
from src.utils import write_json_atomic

log = logging.getLogger(__name__)

REMOVE = "remove"
Corrections = dict[str, str]
# How training treats a correction file its configuration names: it must exist, it is used
# when present (smoke runs), or corrections are ignored (--no-corrections).
CORRECTIONS_MODES = ("required", "if-present", "none")


def validate_corrections(
    corrections: object,
    vocabulary: Vocabulary,
    known_fnames: Iterable[str] | None = None,
    source: str = "corrections",
) -> Corrections:
    """Check the format, every label and (when given) every fname; one error lists all problems."""
    if not isinstance(corrections, Mapping):
        raise ConfigError(f"{source}: expected a JSON object of fname -> labels or 'remove'")
    problems = []
    bad_values = [f for f, v in corrections.items() if not isinstance(v, str) or not v.strip()]
    if bad_values:
        problems.append(f"values must be 'remove' or a label string, see {bad_values[:5]}")
    unknown_labels: dict[str, list[str]] = {}
    for fname, value in corrections.items():
        if isinstance(value, str) and value != REMOVE:
            for label in vocabulary.unknown(value):
                unknown_labels.setdefault(label, []).append(fname)
    if unknown_labels:
        shown = "; ".join(
            f"{label!r} ({names[0]})" for label, names in list(unknown_labels.items())[:5]
        )
        problems.append(f"unknown labels ({len(unknown_labels)}): {shown}")
    if known_fnames is not None:
        known = set(known_fnames)
        unknown = [f for f in corrections if f not in known]
        if unknown:
            problems.append(f"fnames not in the dataset ({len(unknown)}): {unknown[:5]}")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return {str(k): str(v).strip() for k, v in corrections.items()}


def load_corrections(
    path: str | os.PathLike,
    vocabulary: Vocabulary,
    known_fnames: Iterable[str] | None = None,
) -> Corrections:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: correction file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    except _DuplicateKey as duplicate:
        raise ConfigError(
            f"{path}: {duplicate.key!r} is listed more than once (JSON keeps only the last "
            "entry): keep one entry per clip"
        ) from None
    return validate_corrections(data, vocabulary, known_fnames, source=str(path))


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """json's object hook that refuses a repeated key (json.load silently keeps the last)."""
    found: dict = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey(key)
        found[key] = value
    return found


def apply_corrections(table: pd.DataFrame, corrections: Corrections | None) -> pd.DataFrame:
    """Drop the clips marked 'remove' and replace the labels of the others; clips that the
    corrections do not mention keep their labels."""
    if not corrections:
        return table
    table = table[table["fname"].map(lambda f: corrections.get(f) != REMOVE)].copy()
    table["labels"] = [
        corrections.get(f, labels) for f, labels in zip(table["fname"], table["labels"])
    ]
    return table.reset_index(drop=True)


def relabelled_only(table: pd.DataFrame, corrections: Corrections | None) -> pd.DataFrame:
    """The clips that the corrections relabel (not remove), with their new labels."""
    if not corrections:
        return table.iloc[:0].copy()
    keep = table["fname"].map(lambda f: f in corrections and corrections[f] != REMOVE)
    subset = table[keep].copy()
    subset["labels"] = [corrections[f] for f in subset["fname"]]
    return subset.reset_index(drop=True)


def save_corrections(corrections: Mapping[str, str], path: str | os.PathLike) -> None:
    """Write a correction file in the original format, sorted by fname, atomically."""
    write_json_atomic(dict(sorted(corrections.items())), path)


def count_entries(corrections: Mapping[str, str]) -> dict[str, int]:
    """Entries, removals and relabels of a correction file (the columns make_corrections.py
    reports)."""
    removed = sum(value == REMOVE for value in corrections.values())
    return {"entries": len(corrections), "remove": removed, "relabel": len(corrections) - removed}


def find_corrections(
    corrections_dir: Path,
    name: str | None,
    vocabulary: Vocabulary,
    known_fnames: Iterable[str],
    mode: str = "required",
) -> Corrections | None:
    """The correction file `name` of the corrections folder, checked against the clips, as
    training uses it: None when the configuration names none or `mode` is 'none'; a missing
    file is an error in 'required' mode and a warning in 'if-present' mode."""
    if mode not in CORRECTIONS_MODES:
        raise ValueError(f"corrections must be one of {CORRECTIONS_MODES}")
    if name is None or mode == "none":
        return None
    path = corrections_dir / name
    if not path.is_file():
        if mode == "if-present":
            log.warning(
                "correction file %s not found: training without it (optional at this scale)", path
            )
            return None
        raise ConfigError(
            f"{path}: correction file not found. Make one with make_corrections.py, copy the "
            "original's (see README, 'Label corrections'), or train without corrections "
            "(--no-corrections)"
        )
    return load_corrections(path, vocabulary, known_fnames=known_fnames)
