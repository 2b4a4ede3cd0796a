"""Train the fold models of one first-level experiment (spec 8).

    python train_folds.py --experiment corr_noisy_007
    python train_folds.py --experiment corr_noisy_007 --folds 0,2 --device cuda --amp bf16
    python train_folds.py --experiment auxiliary_016 --smoke      # tiny, CPU, seconds per fold

Outputs land in <data>/experiments/<experiment>/: params.json and fold_<k>/ with the best
checkpoint model-EEE-S.pth, log.txt, log.csv and curves.png. Rerunning the same command
resumes an interrupted fold and skips finished ones; --force starts the experiment afresh.
"""

from __future__ import annotations

import argparse
import sys

from src.cli import add_run_arguments, fail, parse_folds, run_options, setup_logging
from src.config import ConfigError, get_paths, load_vocabulary
from src.experiments import FIRST_LEVEL, resolve
from src.first_level import build_fold, load_first_level_data
from src.training import Schedule, prepare_experiment_dir, train_folds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", required=True, help=f"one of: {', '.join(FIRST_LEVEL)}")
    parser.add_argument(
        "--folds", default=None, help="comma-separated folds to train (default: all)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="shrink the experiment to run on a CPU in seconds"
    )
    parser.add_argument(
        "--force", action="store_true", help="delete an existing experiment and train again"
    )
    parser.add_argument(
        "--no-corrections",
        action="store_true",
        help="train without the experiment's label-correction files",
    )
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        paths = get_paths()
        vocabulary = load_vocabulary(paths)
        config = resolve(args.experiment, smoke=args.smoke)
        if config["kind"] != "cnn":
            raise ConfigError(f"{args.experiment} is a stacking experiment: use stacking_train.py")
        folds = parse_folds(args.folds)
        options = run_options(args)
        record = {"config": config, "classes": list(vocabulary.classes), "seed": options.seed}
        experiment_dir = paths.experiment_dir(args.experiment)
        prepare_experiment_dir(experiment_dir, record, args.force, runtime=vars(args))
        corrections = (
            "none" if args.no_corrections else ("if-present" if args.smoke else "required")
        )
        data = load_first_level_data(config, paths, vocabulary, corrections)
        results = train_folds(
            experiment_dir,
            folds,
            lambda fold: build_fold(data, fold, options),
            Schedule.from_config(config),
            args.experiment,
            progress=not args.no_progress,
        )
    except ConfigError as error:
        return fail(error)
    for fold, result in results.items():
        best = result.get("best_checkpoint")
        print(f"{args.experiment} fold {fold}: {best} ({result.get('seconds', 0)} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
