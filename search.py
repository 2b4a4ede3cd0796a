"""Search an experiment's settings with Optuna: every trial a real experiment.

    python search.py --experiment corr_noisy_007 --space data/search_spaces/first_level.json \
        --trials 12 --folds 0 --scale cpu [--study NAME] [--storage URL] [--write best.json]

--space names the settings to draw as --set names them, each with its range (README, "The
lab"). Trial N of the study is the experiment <study>_tN under <data>/experiments/ (lab.py,
predict_folds.py and select_ensemble.py see it); its objective is the mean best validation
lwlrap of its folds, and a median pruner stops trials that trail the others epoch by epoch.

The study lives in a database: by default <data>/search/<study>.db (SQLite), else --storage
(or $FREESOUND_SEARCH_STORAGE), any URL Optuna takes, e.g. postgresql://user@host/db (the
password from PGPASSWORD, or in the URL: it is shown masked). Rerunning the command continues
the study with --trials more; several processes or machines on one storage share it, each
running its own trials. Ctrl-C or a signal marks the running trial FAIL and stops; nothing else
is lost. At the end: the best trials, --plot PNG a picture of them, and --write FILE an
experiment file of the best that train_folds.py / stacking_train.py --experiment take.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from src.cli import (
    TRAINING_AMP,
    add_amp,
    add_data_dir,
    add_device,
    add_folds,
    add_no_progress,
    check_output_file,
    parse_folds,
    resolve_device,
    setup_logging,
    use_data_dir,
)
from src.config import ConfigError, default_num_workers, get_paths, load_vocabulary
from src.experiment_files import NAME_PATTERN, experiment_name
from src.experiments import SCALES
from src.tools.search.runner import run_search
from src.tools.search.storage import STORAGE_ENV


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiment",
        required=True,
        help="the base of every trial: a registered experiment or an experiment file (.json)",
    )
    parser.add_argument("--space", required=True, metavar="SPACE.json", help="the search space")
    parser.add_argument(
        "--trials", type=int, required=True, metavar="N", help="run N more trials (0: report)"
    )
    parser.add_argument(
        "--study", metavar="NAME", help="the study's name (default: <experiment>_search)"
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help=f"the study's database (default: ${STORAGE_ENV}, else sqlite:///<data>/search/"
        "<study>.db)",
    )
    add_folds(parser, "folds each trial trains and is scored on (0 is quickest)")
    parser.add_argument(
        "--scale",
        choices=list(SCALES),
        default="full",
        help="the trials' scale, as train_folds.py --scale (default full)",
    )
    parser.add_argument(
        "--no-corrections", action="store_true", help="train without label-correction files"
    )
    parser.add_argument(
        "--no-pruning", action="store_true", help="train every trial to its end (no pruner)"
    )
    parser.add_argument(
        "--top", type=int, default=10, metavar="N", help="rows of the best-trials table"
    )
    parser.add_argument(
        "--write", metavar="FILE", help="write an experiment file of the best trial here"
    )
    parser.add_argument(
        "--plot", metavar="PNG", help="draw the trials (lwlrap by epoch, results by trial)"
    )
    parser.add_argument(
        "--seed", type=int, default=2019, help="the trials' training seed (default 2019)"
    )
    parser.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    add_data_dir(parser)
    add_device(parser)
    add_amp(parser, TRAINING_AMP)
    add_no_progress(parser)
    parser.add_argument(
        "--verbose", action="store_true", help="print every epoch's metrics (else log.txt only)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_data_dir(args)
    setup_logging()
    if args.trials < 0:
        raise ConfigError(f"--trials takes a number of trials >= 0, got {args.trials}")
    check_output_file(args.write, "--write")
    check_output_file(args.plot, "--plot")
    study = args.study or f"{experiment_name(args.experiment)}_search"
    if not NAME_PATTERN.match(study):
        raise ConfigError(f"--study {study!r}: use letters, digits, '_', '-' or '.'")
    paths = get_paths()
    run_search(
        experiment=args.experiment,
        space_file=Path(args.space),
        trials=args.trials,
        study_name=study,
        storage_url=args.storage or os.environ.get(STORAGE_ENV) or None,
        folds=parse_folds(args.folds),
        scale=args.scale,
        paths=paths,
        vocabulary=load_vocabulary(paths),
        device=resolve_device(args.device),
        amp=args.amp,
        seed=args.seed,
        workers=default_num_workers() if args.workers is None else args.workers,
        pruning=not args.no_pruning,
        no_corrections=args.no_corrections,
        progress=not args.no_progress,
        verbose=args.verbose,
        top=args.top,
        write=Path(args.write) if args.write else None,
        plot=Path(args.plot) if args.plot else None,
    )
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
