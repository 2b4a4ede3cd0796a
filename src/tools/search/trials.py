"""A search's trials: each one a real experiment, trained in this process as train_folds.py
and stacking_train.py train one.

Trial N of study S is the experiment `S_tN` (its folder under `<data>/experiments/`, its
params.json recording the base and the drawn settings as overrides), so lab.py,
predict_folds.py and select_ensemble.py see it as any other. Its objective is the mean of its
folds' best validation lwlrap; after every epoch the validation lwlrap goes to the study's
pruner, which may stop a trial that trails the others at the same fold and epoch (PRUNED). A
trial stopped by Ctrl-C or a signal is marked FAIL and the search stops; its folder stays as an
interrupted run, and every other trial is as it was.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from src.config import ConfigError, Paths, Vocabulary
from src.data.labels import load_folds
from src.experiment_files import NAME_PATTERN, load_experiment
from src.experiments import Config
from src.runs import fold_dir, mark_pruned, prepare_experiment_dir
from src.tools.search.space import Dimension, Space, as_overrides, draw, settings
from src.training.callbacks.trial import TrialReport
from src.training.command import SETUPS, run_record
from src.training.loop import train_folds
from src.training.parts import FoldParts, RunOptions, Schedule
from src.utils import write_json_atomic

log = logging.getLogger(__name__)

# The pruner waits for this many finished trials, and within a trial for this many epochs of
# each fold, before it compares: the first epochs of every trial score alike.
PRUNER_STARTUP_TRIALS = 4
PRUNER_WARMUP_EPOCHS = 4


def median_pruner() -> optuna.pruners.MedianPruner:
    return optuna.pruners.MedianPruner(
        n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS
    )


def trial_name(study: str, number: int) -> str:
    return f"{study}_t{number}"


@dataclass
class Search:
    """What every trial of one search command shares."""

    experiment: str  # a registered experiment or an experiment file: the base of each trial
    space: Space
    space_source: str
    scale: str
    folds: list[int]
    paths: Paths
    vocabulary: Vocabulary
    options: RunOptions
    study: str
    storage_shown: str  # the storage URL, its password masked
    corrections: str = "if-present"  # training.command.corrections_mode
    progress: bool = True
    verbose: bool = False

    def trial_config(self, values: dict[str, Any], number: int) -> Config:
        """The resolved configuration of trial `number` with these settings (dotted keys)."""
        return load_experiment(
            self.experiment,
            self.scale,
            changes=as_overrides(values),
            name=trial_name(self.study, number),
            changes_from=self.space_source,
        )

    def objective(self, trial: optuna.Trial) -> float:
        values = draw(self.space, lambda d: suggest(trial, d))
        config = self.trial_config(values, trial.number)
        name = config["name"]
        trial.set_user_attr("experiment", name)
        started = time.time()
        log.info("trial %d (%s): %s", trial.number, name, _settings_text(values))
        results, pruned_at = self.train(config, trial)
        trial.set_user_attr("seconds", round(time.time() - started, 1))
        if pruned_at is not None:
            trial.set_user_attr("pruned_at", pruned_at)
            raise optuna.TrialPruned(f"{name} trails the median at fold step {pruned_at}")
        scores = [r["best_val_lwlrap"] for r in results.values() if "best_val_lwlrap" in r]
        if len(scores) != len(self.folds):
            raise RuntimeError(f"{name}: a fold finished without a checkpoint")
        return float(sum(scores) / len(scores))

    def train(self, config: Config, trial: optuna.Trial) -> tuple[dict[int, dict], int | None]:
        """Train the trial's folds in turn, feeding the pruner; (fold results, the step at
        which the trial was pruned or None)."""
        load, build, _ = SETUPS[config["kind"]]
        split = load_folds(self.paths, self.folds)
        data = load(config, self.paths, self.vocabulary, self.corrections)
        experiment_dir = self.paths.experiment_dir(config["name"])
        runtime = {
            "device": self.options.device,
            "amp": self.options.amp,
            "search": {
                "study": self.study,
                "trial": trial.number,
                "storage": self.storage_shown,
            },
        }
        record = run_record(
            config, self.vocabulary, self.options, split, self.paths, self.corrections
        )
        prepare_experiment_dir(experiment_dir, record, force=False, runtime=runtime)
        schedule = Schedule.from_config(config)
        reports: list[TrialReport] = []
        reported_folds: list[int] = []  # the fold of each report (finished folds get none)

        def report(step: int, score: float) -> bool:
            trial.report(score, step)
            return trial.should_prune()

        def build_fold(fold: int) -> FoldParts:
            if reports and reports[-1].pruned_at is not None:
                raise _Pruned  # no further fold for a pruned trial
            parts = build(data, fold, options=self.options)
            reporter = TrialReport(report, first_step=len(reports) * schedule.max_epochs)
            reports.append(reporter)
            reported_folds.append(fold)
            parts.extra_callbacks.append(reporter)
            return parts

        try:
            results = train_folds(
                experiment_dir,
                self.folds,
                build_fold,
                schedule,
                config["name"],
                self.progress,
                self.verbose,
            )
        except _Pruned:
            results = {}
        pruned = [(f, r) for f, r in zip(reported_folds, reports) if r.pruned_at is not None]
        if pruned:
            fold, reporter = pruned[0]
            mark_pruned(fold_dir(experiment_dir, fold), reporter.pruned_at)
            return results, reporter.first_step + reporter.pruned_at
        return results, None


class _Pruned(Exception):
    """Raised between folds: the trial was pruned in the fold before."""


def suggest(trial: optuna.Trial, dimension: Dimension) -> Any:
    """One dimension drawn by Optuna."""
    if dimension.kind == "choice":
        return trial.suggest_categorical(dimension.key, list(dimension.choices))
    if dimension.kind == "int":
        return trial.suggest_int(dimension.key, int(dimension.low), int(dimension.high))
    log_scale = dimension.kind == "log"
    return trial.suggest_float(dimension.key, dimension.low, dimension.high, log=log_scale)


def _settings_text(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in values.items())


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_table(study: optuna.Study, space: Space) -> pd.DataFrame:
    """Every trial of the study, best first: number, state, val_lwlrap (or the last lwlrap a
    pruned trial reached), its experiment folder, seconds, and its settings."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        value = trial.value
        if value is None and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]
        row = {
            "trial": trial.number,
            "state": trial.state.name,
            "val_lwlrap": value,
            "experiment": trial.user_attrs.get("experiment", ""),
            "seconds": trial.user_attrs.get("seconds"),
            "epochs": len(trial.intermediate_values),
        }
        if trial.params and all(d.key in trial.params for d in space if d.drawn):
            row.update(settings(space, trial.params))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    complete = table["state"] == "COMPLETE"
    table["_order"] = (~complete).astype(int)
    table = table.sort_values(["_order", "val_lwlrap"], ascending=[True, False])
    return table.drop(columns="_order").reset_index(drop=True)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise ConfigError(f"study {study.study_name!r} has no finished trial yet")
    return max(complete, key=lambda t: t.value)


def write_best(search: Search, study: optuna.Study, path: Path) -> str:
    """An experiment file of the study's best trial (its base and every drawn setting as
    overrides, named after the file), read back as the training scripts read it; its name."""
    if not NAME_PATTERN.match(path.stem):
        raise ConfigError(
            f"--write {path}: the file's name ({path.stem!r}) names the experiment; use "
            "letters, digits, '_', '-' or '.'"
        )
    best = best_trial(study)
    config = search.trial_config(settings(search.space, best.params), best.number)
    written = {"base": config["base"], "name": path.stem, **config["overrides"]}
    write_json_atomic(written, path)
    load_experiment(str(path), search.scale)
    return path.stem
