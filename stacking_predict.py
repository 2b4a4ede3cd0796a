"""The final ensemble: 7 first-level experiments + 3 stacking experiments -> submission.csv.

    python stacking_predict.py [--device cuda] [--experiments NAMES or FILE.json] [--folds 0]

First-level test predictions (tile step crop/2, geometric mean over folds), the stacking MLPs
on their concatenation (geometric mean over folds), and the geometric mean of all ten,
written to <data>/submission.csv with the columns of sample_submission.csv (docs/original.md,
"Blending").
Locally it also prints and saves the out-of-fold lwlrap of every experiment, of the first-level
experiments' blend (the number select_ensemble.py gives the same set) and of the whole blend
(<data>/predictions/ensemble_oof_lwlrap.csv).
"""

from __future__ import annotations

import argparse

from src.cli import (
    add_data_dir,
    add_folds,
    add_prediction_arguments,
    fail,
    names_list,
    parse_folds,
    resolve_device,
    setup_logging,
    use_data_dir,
)
from src.config import N_FOLDS, ConfigError, get_paths, load_vocabulary
from src.experiment_files import experiment_name
from src.experiments import STACKING
from src.prediction.ensemble import ensemble_predict
from src.prediction.tables import align_to_sample_submission, check_submission
from src.prediction.tiling import set_prediction_amp
from src.utils import write_csv_atomic

FOLDS_HELP = (
    "folds of every experiment to blend (the fold models of a partial import, e.g. 0; the "
    "out-of-fold table needs all five)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiments",
        default=",".join(STACKING),
        help="stacking experiments to blend: names, or the experiment files they were trained "
        "from (select_ensemble.py --write) (default: the three registered ones)",
    )
    parser.add_argument(
        "--no-oof",
        action="store_true",
        help="skip the out-of-fold lwlrap table (it needs predict_folds.py's out-of-fold "
        "predictions of every experiment; imported weights come without them)",
    )
    add_prediction_arguments(parser, fill_undecodable=True, amp=True)
    add_folds(parser, FOLDS_HELP)
    add_data_dir(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_data_dir(args)
    setup_logging()
    set_prediction_amp(args.amp)
    try:
        device = resolve_device(args.device)
        folds = parse_folds(args.folds)
        paths = get_paths()
        with_oof = not (paths.kernel or args.no_oof)
        if with_oof and len(folds) < N_FOLDS:
            print(f"--folds {args.folds}: the out-of-fold table needs all five folds; skipped")
            with_oof = False
        vocabulary = load_vocabulary(paths)
        result = ensemble_predict(
            paths,
            vocabulary,
            [experiment_name(spec) for spec in names_list(args.experiments)],
            device,
            args.batch_size,
            progress=not args.no_progress,
            with_oof=with_oof,
            folds=folds,
        )
        submission = align_to_sample_submission(result.submission, paths, args.fill_undecodable)
        check_submission(submission, vocabulary.classes, len(submission))
        write_csv_atomic(submission, paths.submission)
    except ConfigError as error:
        return fail(error)
    if not result.table.empty:
        table_path = paths.predictions_dir / "ensemble_oof_lwlrap.csv"
        write_csv_atomic(result.table, table_path)
        print(result.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"out-of-fold lwlrap table: {table_path}")
    print(f"submission: {paths.submission} ({len(submission)} clips)")
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
