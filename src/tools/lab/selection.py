"""Choosing the first-level experiments of a blend by their out-of-fold CV (select_ensemble.py).

The winners "chose the seven first-level models by enumeration of combinations of training
experiments to find the highest CV score". The candidates are the first-level experiments
whose every fold predict_folds.py has predicted; a blend is scored as stacking_predict.py
scores its first-level experiments' blend (the "first-level blend" row of its out-of-fold
table): the geometric mean of their out-of-fold tables against the original curated labels.
The search itself is `blend_search`; this module reads the inputs, names the blends, compares
the chosen one with the best single experiment class by class, and writes the experiment file
that carries the choice on to stacking_train.py, stacking_predict.py and blend_predict.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.cli import command_line
from src.config import N_FOLDS, ConfigError, Paths, Vocabulary
from src.data.labels import read_labels_csv
from src.experiment_files import NAME_PATTERN, load_experiment
from src.experiments import STACKING
from src.prediction.tables import aligned_arrays, cv_scores, gmean_frames
from src.runs import PROBS_FILE, correction_files, oof_dir, read_oof, read_params
from src.tools.lab.blend_search import Blend, BlendTables, SearchResult
from src.utils import write_json_atomic

DEFAULT_SIZES = "2-8"
DEFAULT_BASE = STACKING[0]  # stacking_008_fcnet_43040
_SIZE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_sizes(text: str) -> list[int]:
    """'3-8' -> [3, ..., 8]; '5' -> [5]; '2-4,7' -> [2, 3, 4, 7]."""
    sizes: set[int] = set()
    for part in text.replace(" ", "").split(","):
        match = _SIZE.match(part)
        low = int(match.group(1)) if match else 0
        high = int(match.group(2) or low) if match else 0
        if not match or low < 1 or high < low:
            raise ConfigError(
                f"--sizes takes N, A-B or a comma-separated list of them (numbers of "
                f"experiments in a blend, at least 1, A <= B), got {text!r}"
            )
        sizes.update(range(low, high + 1))
    return sorted(sizes)


def first_level_experiments(paths: Paths) -> list[str]:
    """The experiments under experiments/ whose params.json says first level (kind cnn),
    sorted; folders that cannot be read are no candidates (lab.py says why)."""
    names = []
    root = paths.experiments_dir
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            record = read_params(folder)
        except (OSError, ValueError):
            continue
        config = record.get("config") if isinstance(record, dict) else None
        if isinstance(config, dict) and config.get("kind", "cnn") == "cnn":
            names.append(folder.name)
    return names


def missing_oof_folds(paths: Paths, name: str) -> list[int]:
    return [
        fold
        for fold in range(N_FOLDS)
        if not (oof_dir(paths.predictions_dir, name, fold) / PROBS_FILE).is_file()
    ]


def predict_command(names: Sequence[str]) -> str:
    """The command line that makes the out-of-fold predictions of `names`, as it runs."""
    return " && ".join(command_line("predict_folds.py", "--experiment", n) for n in names)


@dataclass
class Candidates:
    """The experiments a blend is chosen from: their out-of-fold tables (read_oof: fname and
    the classes in the vocabulary's order), the labels, and the search's tables."""

    names: list[str]
    frames: list[pd.DataFrame]
    truth: pd.DataFrame
    vocabulary: Vocabulary
    tables: BlendTables
    skipped: dict[str, list[int]]  # experiments left out (not named) for want of predictions


def choose_candidates(paths: Paths, named: Sequence[str]) -> tuple[list[str], dict]:
    """The candidates' names (`named`, or every first-level experiment with out-of-fold
    predictions of all folds) and the experiments skipped for want of them, with the folds."""
    known = first_level_experiments(paths)
    if named:
        unknown = [name for name in named if name not in known]
        if unknown:
            raise ConfigError(
                f"unknown first-level experiment(s) {', '.join(unknown)}: "
                f"{paths.experiments_dir} holds {', '.join(known) or 'none'}"
            )
        missing = {name: missing_oof_folds(paths, name) for name in named}
        missing = {name: folds for name, folds in missing.items() if folds}
        if missing:
            what = "; ".join(
                f"{name} (fold {','.join(map(str, folds))})" for name, folds in missing.items()
            )
            raise ConfigError(
                f"no out-of-fold predictions for {what}: run `{predict_command(list(missing))}`"
            )
        return list(named), {}
    missing = {name: missing_oof_folds(paths, name) for name in known}
    names = [name for name in known if not missing[name]]
    skipped = {name: folds for name, folds in missing.items() if folds}
    if not names:
        hint = f": run `{predict_command(list(skipped))}`" if skipped else ""
        raise ConfigError(
            f"no first-level experiment in {paths.experiments_dir} has out-of-fold predictions "
            f"of every fold{hint}"
        )
    return names, skipped


def load_candidates(paths: Paths, vocabulary: Vocabulary, named: Sequence[str]) -> Candidates:
    """Read the candidates' out-of-fold tables (every fold) and the curated labels."""
    names, skipped = choose_candidates(paths, list(dict.fromkeys(named)))
    frames = [read_oof(paths.predictions_dir, name, vocabulary.classes) for name in names]
    clips = {len(frame) for frame in frames}
    if len(clips) != 1:
        counts = ", ".join(f"{name} {len(frame)}" for name, frame in zip(names, frames))
        raise ConfigError(
            f"the out-of-fold predictions cover different numbers of clips ({counts}): "
            f"predict them on the same folds (`{predict_command(names)}`)"
        )
    fnames, arrays = aligned_arrays(frames)
    for name, array in zip(names, arrays):
        if not np.isfinite(array).all():
            raise ConfigError(
                f"{paths.prediction_dir(name)}: out-of-fold predictions that are not finite; "
                f"predict again (`{predict_command([name])}`)"
            )
    truth = read_labels_csv(paths.train_curated_csv, vocabulary)
    labels = truth.set_index("fname")["labels"]
    unlabelled = [fname for fname in fnames if fname not in labels.index]
    if unlabelled:
        raise ConfigError(
            f"{paths.train_curated_csv}: no labels for {len(unlabelled)} predicted clips, e.g. "
            f"{unlabelled[:3]}"
        )
    encoded = vocabulary.encode_many(labels.loc[fnames].tolist())
    tables = BlendTables.build(np.stack(arrays), encoded)
    return Candidates(names, frames, truth, vocabulary, tables, skipped)


def usable_sizes(sizes: Sequence[int], count: int, text: str) -> list[int]:
    """The sizes of `sizes` a blend of `count` candidates can have; an error when none."""
    usable = [size for size in sizes if size <= count]
    if not usable:
        raise ConfigError(
            f"--sizes {text}: only {count} experiment(s) with out-of-fold predictions to blend"
        )
    return usable


# --------------------------------------------------------------------------------------
# What was found
# --------------------------------------------------------------------------------------


@dataclass
class Selection:
    candidates: Candidates
    sizes: list[int]
    result: SearchResult
    singles: dict[str, float]  # each candidate's own out-of-fold lwlrap

    @property
    def best_single(self) -> tuple[str, float]:
        return best_single(self.singles)

    def members(self, blend: Blend) -> list[str]:
        return [self.candidates.names[m] for m in blend.members]

    @property
    def chosen(self) -> Blend:
        return self.result.best

    def table(self, blends: Sequence[Blend]) -> pd.DataFrame:
        """One row per blend: its CV, the gain over the best single experiment, members."""
        single = self.best_single[1]
        return pd.DataFrame(
            {
                "oof_lwlrap": [b.score for b in blends],
                "gain": [b.score - single for b in blends],
                "size": [len(b.members) for b in blends],
                "experiments": [",".join(self.members(b)) for b in blends],
            }
        )

    def top(self, n: int) -> pd.DataFrame:
        table = self.table(self.result.top(n))
        table.insert(0, "rank", range(1, len(table) + 1))
        return table

    def per_size(self) -> pd.DataFrame:
        return self.table([blends[0] for blends in self.result.by_size.values() if blends])


def single_scores(candidates: Candidates) -> dict[str, float]:
    """Each candidate's own out-of-fold lwlrap (stacking_predict.py's first-level rows)."""
    return {name: candidates.tables.score((i,)) for i, name in enumerate(candidates.names)}


def best_single(singles: dict[str, float]) -> tuple[str, float]:
    """The best-scoring experiment (the first of equals)."""
    return max(singles.items(), key=lambda item: item[1])


def blend_scores(candidates: Candidates, names: Sequence[str]) -> dict:
    """`cv_scores` of the blend of `names` as stacking_predict.py computes its first-level
    blend (`gmean_frames` of their out-of-fold tables; one experiment: its own table)."""
    frames = [candidates.frames[candidates.names.index(name)] for name in names]
    table = frames[0] if len(frames) == 1 else gmean_frames(frames)
    return cv_scores(table, candidates.truth, candidates.vocabulary)


def per_class_view(selection: Selection) -> tuple[pd.DataFrame, float]:
    """The chosen blend's per-class lwlrap against the best single experiment's (largest
    gain first), and the chosen blend's overall lwlrap computed that way."""
    chosen = blend_scores(selection.candidates, selection.members(selection.chosen))
    single = blend_scores(selection.candidates, [selection.best_single[0]])
    classes = list(selection.candidates.vocabulary.classes)
    blend = np.array([chosen["per_class_lwlrap"][c] for c in classes])
    alone = np.array([single["per_class_lwlrap"][c] for c in classes])
    table = pd.DataFrame({"class": classes, "blend": blend, "single": alone})
    table["change"] = table["blend"] - table["single"]
    table = table.sort_values("change", ascending=False, kind="stable").reset_index(drop=True)
    return table, chosen["overall_lwlrap"]


# --------------------------------------------------------------------------------------
# The choice, carried on
# --------------------------------------------------------------------------------------


def stacking_file_name(path: Path) -> str:
    """The stacking experiment a written file trains: named after the file."""
    if not NAME_PATTERN.match(path.stem):
        raise ConfigError(
            f"--write {path}: the file's name ({path.stem!r}) names the stacking experiment; "
            "use letters, digits, '_', '-' or '.'"
        )
    return path.stem


def write_stacking_file(path: Path, inputs: Sequence[str], base: str = DEFAULT_BASE) -> str:
    """A stacking experiment file (`base` with these first-level `inputs`, named after the
    file), written atomically and read back as stacking_train.py reads it; its name."""
    name = stacking_file_name(path)
    write_json_atomic({"base": base, "name": name, "inputs": list(inputs)}, path)
    load_experiment(str(path))
    return name


def missing_corrections(paths: Paths, path: Path) -> list[Path]:
    """The label-correction files the experiment file at `path` trains with (its base's) that
    the data directory lacks: a dataset of one's own has none, and the stacking MLP, always at
    full size, requires them unless it trains with --no-corrections."""
    files = [paths.corrections_dir / name for name in correction_files(load_experiment(str(path)))]
    return [file for file in files if not file.is_file()]


def follow_up_commands(path: Path, no_corrections: bool = False) -> list[str]:
    """What runs on the written file: the stacking MLP (with --no-corrections where the data
    has none of its correction files), the final ensemble with it, and the plain blend of the
    chosen experiments."""
    train = ["--experiment", path, *(["--no-corrections"] if no_corrections else [])]
    return [
        command_line("stacking_train.py", *train),
        command_line("stacking_predict.py", "--experiments", path),
        command_line("blend_predict.py", "--experiments", path),
    ]
