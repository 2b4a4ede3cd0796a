"""search.py's work: check everything, open the study, run the trials, report the best."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import optuna

from src.cli import command_line
from src.config import ConfigError, Paths, Vocabulary
from src.data.labels import load_folds
from src.experiment_files import load_experiment
from src.tools.search.space import check_space, read_space, space_json
from src.tools.search.storage import default_storage, masked, open_storage, open_study
from src.tools.search.trials import (
    Search,
    median_pruner,
    trial_name,
    trials_table,
    write_best,
)
from src.training.command import SETUPS, corrections_mode
from src.training.parts import RunOptions

log = logging.getLogger(__name__)


def run_search(
    *,
    experiment: str,
    space_file: Path,
    trials: int,
    study_name: str,
    storage_url: str | None,
    folds: list[int],
    scale: str,
    paths: Paths,
    vocabulary: Vocabulary,
    device: str = "cpu",
    amp: str = "auto",
    seed: int = 2019,
    workers: int = 0,
    pruning: bool = True,
    no_corrections: bool = False,
    progress: bool = True,
    verbose: bool = False,
    top: int = 10,
    write: Path | None = None,
    plot: Path | None = None,
) -> optuna.Study:
    """Run `trials` more trials of the study (created when new) and print the best ones."""
    space = read_space(space_file)
    base = load_experiment(experiment, scale)  # an unknown experiment or scale stops here
    if base.get("finetune", {}).get("init_from") is not None:
        # The trials train through the plain set-up: a source network would be left out.
        raise ConfigError(
            f"{experiment}: a fine-tuned base (finetune.init_from) cannot be searched yet; "
            "search its settings from scratch, or fine-tune the best trial afterwards"
        )
    check_space(space, experiment, scale, str(space_file))
    load_folds(paths, folds)  # stale or missing folds stop here, before any trial
    # Every input of the base (audio stores, out-of-fold predictions, corrections) is checked,
    # and the stores built, before the first trial.
    corrections = corrections_mode(scale, no_corrections)
    SETUPS[base["kind"]][0](base, paths, vocabulary, corrections)
    url = storage_url or default_storage(paths, study_name)
    shown = masked(url)
    _quiet_optuna()
    storage = open_storage(url)
    is_new = study_name not in optuna.study.get_all_study_names(storage)
    if is_new:
        _check_no_leftover_trials(paths, study_name, shown)
    recipe = {
        "experiment": experiment,
        # the base as resolved: an experiment file edited between two commands is another base
        "base": {k: v for k, v in base.items() if k not in ("name", "original")},
        "space": space_json(space),
        "scale": scale,
        "folds": folds,
        "seed": seed,
        "corrections": corrections,
    }
    pruner = median_pruner() if pruning else optuna.pruners.NopPruner()
    study = open_study(storage, study_name, recipe, shown, pruner)
    search = Search(
        experiment=experiment,
        space=space,
        space_source=str(space_file),
        scale=scale,
        folds=folds,
        paths=paths,
        vocabulary=vocabulary,
        options=RunOptions(device=device, amp=amp, seed=seed, workers=workers),
        study=study_name,
        storage_shown=shown,
        corrections=corrections,
        progress=progress,
        verbose=verbose,
    )
    done = len(study.get_trials(deepcopy=False))
    log.info(
        "study %s (%s): %s, %d trial(s) so far; running %d more",
        study_name,
        shown,
        "new" if is_new else "continued",
        done,
        trials,
    )
    if trials:
        try:
            study.optimize(search.objective, n_trials=trials, callbacks=[_announce])
        except KeyboardInterrupt:
            running = [t for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL"]
            last = running[-1].number if running else None
            if last is not None:
                log.warning(
                    "trial %d (%s) stopped and marked FAIL; the same command continues the study",
                    last,
                    trial_name(study_name, last),
                )
            raise
    print_report(study, search, top)
    if plot is not None:
        plot_study(study, plot)
        print(f"picture: {plot}")
    if write is not None:
        name = write_best(search, study, write)
        script = "train_folds.py" if base["kind"] == "cnn" else "stacking_train.py"
        scale_words = () if scale == "full" else ("--scale", scale)
        print(f"best trial written to {write} (experiment {name}); train it on every fold:")
        print(f"  {command_line(script, '--experiment', write, *scale_words)}")
    return study


def _check_no_leftover_trials(paths: Paths, study: str, shown: str) -> None:
    """A new study must not reuse the folders of an earlier one of the same name (its database
    deleted or elsewhere): trial numbers restart at 0."""
    experiments = paths.experiments_dir
    leftovers = (
        sorted(p.name for p in experiments.glob(f"{study}_t*")) if experiments.is_dir() else []
    )
    if leftovers:
        raise ConfigError(
            f"study {study!r} is new on {shown}, but {experiments} already holds trials of a "
            f"study of that name ({', '.join(leftovers[:3])}...): give the storage that study "
            "lives in (--storage), another --study, or move those folders away"
        )


def _announce(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    name = trial.user_attrs.get("experiment", trial_name(study.study_name, trial.number))
    seconds = trial.user_attrs.get("seconds", 0)
    if trial.state.name == "COMPLETE":
        best = study.best_trial
        log.info(
            "trial %d (%s): val_lwlrap %.4f in %s s; best so far: trial %d, %.4f",
            trial.number,
            name,
            trial.value,
            seconds,
            best.number,
            best.value,
        )
    else:
        log.info("trial %d (%s): %s after %s s", trial.number, name, trial.state.name, seconds)


class _NoFailedTrialRecords(logging.Filter):
    """Optuna logs a failed trial with its traceback; this project says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


def _quiet_optuna() -> None:
    """Optuna's own per-trial and study lines repeat `_announce`'s and run_search's; its
    warnings still show, but not that the heartbeat is an experimental feature."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("optuna.study._optimize").addFilter(_NoFailedTrialRecords())


def print_report(study: optuna.Study, search: Search, top: int) -> None:
    table = trials_table(study, search.space)
    if table.empty:
        print(f"study {search.study}: no trials yet")
        return
    counts = table["state"].value_counts()
    states = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}
    summary = ", ".join(f"{counts.get(s, 0)} {word}" for s, word in states.items())
    running = counts.get("RUNNING", 0)
    if running:
        summary += f", {running} running"
    print(
        f"study {search.study}: {len(table)} trials ({summary}); the best (val_lwlrap: the mean "
        "of the folds' best; of a pruned trial, its last epoch's):"
    )
    print(table.head(top).to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))


def plot_study(study: optuna.Study, png: Path) -> None:
    from src.plots import plot_search

    trials = [
        (t.number, t.state.name, t.value, dict(t.intermediate_values))
        for t in study.get_trials(deepcopy=False)
    ]
    if not trials:
        raise ConfigError(f"--plot {png}: study {study.study_name!r} has no trials to draw")
    plot_search(trials, png, f"study {study.study_name}: {len(trials)} trials")
