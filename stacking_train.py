"""Train the fold models of a stacking experiment (spec 9.3, 10.3).

    python stacking_train.py --experiment stacking_008_fcnet_43040 [--smoke]

Needs the out-of-fold predictions of the experiment's first-level inputs (predict_folds.py).
Same folds, callbacks, resume and --force rules as train_folds.py.
"""

from __future__ import annotations

import argparse
import sys

from src.cli import add_run_arguments, fail, parse_folds, run_options, setup_logging
from src.config import ConfigError, get_paths, load_vocabulary
from src.experiments import STACKING
from src.stacking.pipeline import build_stacking_fold, load_stacking_data, stacking_config
from src.training import Schedule, prepare_experiment_dir, train_folds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", required=True, help=f"one of: {', '.join(STACKING)}")
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
        "--no-corrections", action="store_true", help="ignore the curated corrections file"
    )
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        paths = get_paths()
        vocabulary = load_vocabulary(paths)
        config = stacking_config(args.experiment, args.smoke)
        options = run_options(args)
        experiment_dir = paths.experiment_dir(args.experiment)
        corrections = (
            "none" if args.no_corrections else ("if-present" if args.smoke else "required")
        )
        data = load_stacking_data(config, paths, vocabulary, corrections)
        record = {"config": config, "classes": list(vocabulary.classes), "seed": options.seed}
        prepare_experiment_dir(experiment_dir, record, args.force, runtime=vars(args))
        results = train_folds(
            experiment_dir,
            parse_folds(args.folds),
            lambda fold: build_stacking_fold(data, fold, options),
            Schedule.from_config(config),
            args.experiment,
            progress=not args.no_progress,
        )
    except ConfigError as error:
        return fail(error)
    for fold, result in results.items():
        print(f"{args.experiment} fold {fold}: {result.get('best_checkpoint')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
