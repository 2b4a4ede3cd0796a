"""The lab journal (lab.py): every experiment under experiments/ side by side.

One row per experiment folder, from what runs write and nothing else: params.json (kind, base,
what differs from the base, scale, where the initial weights came from), each fold's folder
(finished.json, the best checkpoint's name, log.csv, last.pth and the fold's writer lock) and
the prediction folders (val_lwlrap.json, each fold's out-of-fold probs.csv; a stacking
experiment's CV from stacking_predict.py's out-of-fold table). A folder that cannot be read is
a row saying why; one unreadable part of a folder is a note on its row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.cli import command_line
from src.config import N_FOLDS, ConfigError, Paths
from src.experiments import EXPERIMENTS
from src.runs import (
    FINISHED_FILE,
    PARAMS_FILE,
    PROBS_FILE,
    PRUNED_AT,
    STATE_FILE,
    best_checkpoint,
    fold_dir,
    fold_number,
    oof_dir,
    read_params,
)
from src.utils import LOCK_FILE, lock_holder

CV_FILE = "val_lwlrap.json"
ENSEMBLE_TABLE = "ensemble_oof_lwlrap.csv"  # stacking_predict.py's out-of-fold table
FOLD_COLUMNS = [f"fold_{k}" for k in range(N_FOLDS)]
COLUMNS = [
    "experiment",
    "kind",
    "status",
    "base",
    "changes",
    "scale",
    "init",
    "folds_finished",
    "folds_running",
    "folds_interrupted",
    "holder",
    *FOLD_COLUMNS,
    "val_mean",
    "val_std",
    "cv_lwlrap",
    "oof_folds",
    "epochs",
    "seconds",
    "note",
]
# What the text and markdown tables show (the CSV has every column).
SHOWN = [
    "experiment",
    "kind",
    "status",
    "folds",
    "fold lwlrap",
    "val_mean",
    "val_std",
    "cv_lwlrap",
    "epochs",
    "time",
    "scale",
    "base",
    "changes",
    "init",
    "note",
]


@dataclass
class FoldState:
    fold: int
    state: str  # finished, running or interrupted
    holder: str | None = None  # who trains it now ('pid N on host H')
    score: float | None = None  # its best checkpoint's validation lwlrap
    epochs: int | None = None  # rows of log.csv
    seconds: float | None = None  # finished.json's, else the span of log.csv
    pruned_at: int | None = None  # the epoch after which a search pruned it


def flatten(settings: dict, prefix: str = "") -> list[str]:
    """{'model': {'params': {'base_size': 32}}, 'inputs': ['a', 'b']} ->
    ['model.params.base_size=32', 'inputs=a,b']"""
    items = []
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            items.extend(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, str):
            items.append(f"{prefix}{key}={value}")
        elif isinstance(value, list) and all(isinstance(v, str) for v in value) and value:
            items.append(f"{prefix}{key}={','.join(value)}")
        else:
            items.append(f"{prefix}{key}={json.dumps(value)}")
    return items


def init_source(record: dict) -> str:
    """Where the starting weights came from: an `init` record (`init.source`, else the whole
    record), or imported weights' `source` record; '' when trained from scratch."""
    init = record.get("init")
    if isinstance(init, dict) and init:
        return str(init.get("source") or json.dumps(init, sort_keys=True))
    if init:
        return str(init)
    source = record.get("source")
    if isinstance(source, dict):
        return f"imported from {source.get('from', '?')}"
    return ""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not text ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None


def _problem(error: Exception) -> str:
    if isinstance(error, ConfigError):
        return str(error)
    if isinstance(error, OSError):
        return f"{error.filename or ''}: {error.strerror or error}".lstrip(": ")
    return f"{type(error).__name__}: {error}"


def read_fold(folder: Path, fold: int, notes: list[str]) -> FoldState:
    """A fold folder's state, score, epochs and time; what cannot be read becomes a note."""
    finished = folder / FINISHED_FILE
    state = FoldState(fold, "finished" if finished.is_file() else "interrupted")
    if state.state != "finished":
        state.holder = lock_holder(folder / LOCK_FILE)
        if state.holder is not None:
            state.state = "running"
    best = best_checkpoint(folder)
    state.score = best[1] if best else None
    log = folder / "log.csv"
    if log.is_file():
        try:
            rows = pd.read_csv(log)
            state.epochs = len(rows)
            times = pd.to_datetime(rows["time"], errors="coerce").dropna()
            if len(times) > 1:
                state.seconds = (times.iloc[-1] - times.iloc[0]).total_seconds()
        except (ValueError, KeyError, pd.errors.ParserError) as error:
            notes.append(f"fold {fold}: {log.name} unreadable ({_problem(error)})")
    if state.state == "finished":
        try:
            record = _read_json(finished)
            if isinstance(record, dict) and isinstance(record.get("seconds"), (int, float)):
                state.seconds = float(record["seconds"])
            if isinstance(record, dict) and isinstance(record.get(PRUNED_AT), int):
                state.pruned_at = record[PRUNED_AT]
        except ConfigError as error:
            notes.append(f"fold {fold}: {error}")
    elif state.state == "interrupted" and not (folder / STATE_FILE).is_file():
        notes.append(f"fold {fold}: stopped before its first epoch ended (no {STATE_FILE})")
    return state


def _status(folds: Sequence[FoldState]) -> str:
    states = {fold.state for fold in folds}
    if "running" in states:
        return "running"
    if "interrupted" in states:
        return "interrupted"
    pruned = [fold for fold in folds if fold.pruned_at is not None]
    if pruned:  # a pruned search trial trains no further fold
        return f"pruned (fold {pruned[0].fold}, epoch {pruned[0].pruned_at})"
    finished = sum(fold.state == "finished" for fold in folds)
    if finished >= N_FOLDS:
        return "finished"
    return "partial" if finished else "not started"


def _fold_list(folds: Sequence[FoldState], state: str) -> str:
    return ",".join(str(fold.fold) for fold in folds if fold.state == state)


def _cv(
    name: str, kind: str, paths: Paths, folds: Sequence[FoldState], notes: list[str], stacking
) -> tuple[float, str]:
    """The out-of-fold CV and how many folds the out-of-fold predictions cover."""
    predictions = paths.prediction_dir(name)
    if kind == "stacking":
        return stacking().get(name, math.nan), ""
    predicted = sum(
        (oof_dir(paths.predictions_dir, name, k) / PROBS_FILE).is_file() for k in range(N_FOLDS)
    )
    cv_path = predictions / CV_FILE
    if not cv_path.is_file():
        return math.nan, f"{predicted}/{N_FOLDS}" if predicted else ""
    try:
        cv = float(_read_json(cv_path)["overall_lwlrap"])
    except (ConfigError, KeyError, TypeError, ValueError) as error:
        notes.append(f"{cv_path}: no readable CV ({_problem(error)})")
        return math.nan, f"{predicted}/{N_FOLDS}"
    checkpoints = [best_checkpoint(fold_dir(paths.experiment_dir(name), f.fold)) for f in folds]
    newest = max((c[0].stat().st_mtime for c in checkpoints if c), default=0.0)
    if newest > cv_path.stat().st_mtime:
        again = command_line("predict_folds.py", "--experiment", name)
        notes.append(f"CV older than the checkpoints: rerun `{again}`")
    if predicted < N_FOLDS:
        notes.append(f"CV of {predicted} of {N_FOLDS} folds")
    return cv, f"{predicted}/{N_FOLDS}"


def read_row(folder: Path, paths: Paths, stacking: Callable[[], dict]) -> dict:
    """The journal's row of one experiment folder (see COLUMNS)."""
    row: dict[str, Any] = {"experiment": folder.name}
    notes: list[str] = []
    if not (folder / PARAMS_FILE).is_file():
        return {**row, "status": "unreadable", "note": f"no {PARAMS_FILE} in {folder}"}
    try:
        record = read_params(folder)
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            raise ConfigError(f"{folder / PARAMS_FILE}: no configuration (config) in it")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return {
            **row,
            "status": "unreadable",
            "note": f"{folder / PARAMS_FILE}: not valid JSON ({error})",
        }
    config = record["config"]
    kind = str(config.get("kind", "cnn"))
    overrides = config.get("overrides")
    row.update(
        kind=kind,
        base=str(config.get("base") or (folder.name if folder.name in EXPERIMENTS else "")),
        changes="; ".join(flatten(overrides)) if isinstance(overrides, dict) else "",
        scale=str(config.get("scale") or ""),
        init=init_source(record),
    )
    numbers = sorted(
        {n for n in map(fold_number, folder.glob("fold_*")) if n is not None} & set(range(N_FOLDS))
    )
    folds = [read_fold(fold_dir(folder, k), k, notes) for k in numbers]
    scores = {f.fold: f.score for f in folds if f.score is not None}
    values = list(scores.values())
    running = [f for f in folds if f.state == "running"]
    cv, oof_folds = _cv(folder.name, kind, paths, folds, notes, stacking)
    row.update(
        status=_status(folds),
        folds_finished=sum(f.state == "finished" for f in folds),
        folds_running=_fold_list(folds, "running"),
        folds_interrupted=_fold_list(folds, "interrupted"),
        holder="; ".join(f"fold {f.fold}: {f.holder}" for f in running),
        **{f"fold_{k}": scores.get(k, math.nan) for k in range(N_FOLDS)},
        val_mean=float(np.mean(values)) if values else math.nan,
        val_std=float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
        cv_lwlrap=cv,
        oof_folds=oof_folds,
        epochs=sum(f.epochs for f in folds if f.epochs is not None)
        if any(f.epochs is not None for f in folds)
        else math.nan,
        seconds=sum(f.seconds for f in folds if f.seconds is not None)
        if any(f.seconds is not None for f in folds)
        else math.nan,
        note="; ".join(notes),
    )
    return row


def stacking_cv(paths: Paths) -> dict[str, float]:
    """Each stacking experiment's out-of-fold lwlrap in stacking_predict.py's table."""
    path = paths.predictions_dir / ENSEMBLE_TABLE
    if not path.is_file():
        return {}
    try:
        table = pd.read_csv(path)
        rows = table[table["level"] == "stacking"]
        return dict(zip(rows["experiment"], rows["oof_lwlrap"].astype(float)))
    except (ValueError, KeyError, pd.errors.ParserError):
        return {}


def read_journal(paths: Paths) -> pd.DataFrame:
    """Every experiment folder under experiments/, one row each (COLUMNS), by name."""
    root = paths.experiments_dir
    folders = [f for f in (sorted(root.iterdir()) if root.is_dir() else []) if f.is_dir()]
    cache: dict[str, dict] = {}

    def stacking() -> dict:  # read once, by the first stacking experiment that asks
        if "table" not in cache:
            cache["table"] = stacking_cv(paths)
        return cache["table"]

    rows = []
    for folder in folders:
        if folder.name.startswith("."):
            continue  # hidden: a staging or leftover folder, never an experiment
        try:
            rows.append(read_row(folder, paths, stacking))
        except Exception as error:  # one unreadable experiment must not hide the others
            rows.append(
                {"experiment": folder.name, "status": "unreadable", "note": _problem(error)}
            )
    journal = pd.DataFrame(rows, columns=COLUMNS)
    return journal.astype({"folds_finished": "Int64", "epochs": "Int64"})


def sort_journal(journal: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows by `column`: numbers highest first, text in alphabetical order, blanks last."""
    if column not in journal.columns:
        raise ConfigError(f"--sort {column}: no such column; choose one of {', '.join(COLUMNS)}")
    values = journal[column]
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        ordered = journal.sort_values(column, ascending=False, na_position="last", kind="stable")
        return ordered.reset_index(drop=True)
    text = values.fillna("").astype(str).tolist()
    order = sorted(range(len(text)), key=lambda i: (text[i] == "", text[i]))
    return journal.iloc[order].reset_index(drop=True)


# --------------------------------------------------------------------------------------
# Showing it
# --------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return ""
    seconds = round(float(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and np.isfinite(value) else ""


def _folds(row: pd.Series) -> str:
    if row["status"] == "unreadable":
        return ""
    text = f"{int(row['folds_finished'])}/{N_FOLDS}"
    if row["folds_running"]:
        text += f", running {row['folds_running']}"
    if row["folds_interrupted"]:
        text += f", interrupted {row['folds_interrupted']}"
    return text


def shown(journal: pd.DataFrame) -> pd.DataFrame:
    """The journal as the text and markdown tables show it: formatted, SHOWN columns."""
    text = [c for c in journal.columns if not pd.api.types.is_numeric_dtype(journal[c])]
    journal = journal.astype({c: object for c in text}).fillna({c: "" for c in text})
    rows = []
    for _, row in journal.iterrows():
        status = row["status"]
        if row["holder"]:
            status += f" ({row['holder']})"
        rows.append(
            {
                "experiment": row["experiment"],
                "kind": row["kind"],
                "status": status,
                "folds": _folds(row),
                "fold lwlrap": " ".join(_number(row[c], 3) or "-" for c in FOLD_COLUMNS)
                if row["status"] != "unreadable"
                else "",
                "val_mean": _number(row["val_mean"]),
                "val_std": _number(row["val_std"]),
                "cv_lwlrap": _number(row["cv_lwlrap"]),
                "epochs": "" if pd.isna(row["epochs"]) else str(int(row["epochs"])),
                "time": duration(row["seconds"]) if not pd.isna(row["seconds"]) else "",
                "scale": row["scale"],
                "base": row["base"],
                "changes": row["changes"],
                "init": row["init"],
                "note": row["note"],
            }
        )
    return pd.DataFrame(rows, columns=SHOWN)


def as_text(journal: pd.DataFrame) -> str:
    table = shown(journal)
    return table.to_string(index=False) if len(table) else "no experiments"


def as_markdown(journal: pd.DataFrame) -> str:
    table = shown(journal)

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def plot_journal(journal: pd.DataFrame, png: Path) -> None:
    from src.plots import plot_experiment_scores

    readable = journal[journal["status"] != "unreadable"]
    if readable.empty:
        raise ConfigError(f"--plot {png}: no readable experiment to draw")
    plot_experiment_scores(
        readable["experiment"].tolist(),
        readable["cv_lwlrap"].astype(float).tolist(),
        readable[FOLD_COLUMNS].astype(float).to_numpy().tolist(),
        png,
        f"{len(readable)} experiments: out-of-fold CV and fold validation lwlrap",
    )
