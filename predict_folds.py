"""Predict with every fold model of an experiment (docs/original.md, "Out-of-fold and CV").

    python predict_folds.py --experiment corr_noisy_007 [--device cuda] [--folds 0]

Writes <data>/predictions/<experiment>/: per fold the out-of-fold (tile step crop/4) and test
predictions (<fname>.npy per clip, probs.csv of tile means), probs.csv (the geometric mean of
the folds' test predictions) and val_lwlrap.json + val_lwlrap.png (CV of the out-of-fold
predictions against the original curated labels). In a Kaggle kernel (MODE=predict) it writes
submission.csv instead of the CV.
"""

from __future__ import annotations

import argparse

from src.cli import (
    add_data_dir,
    add_folds,
    add_prediction_arguments,
    fail,
    parse_folds,
    resolve_device,
    setup_logging,
    use_data_dir,
)
from src.config import ConfigError, get_paths, load_vocabulary
from src.experiment_files import experiment_name
from src.prediction.experiment import predict_experiment
from src.prediction.tiling import set_prediction_amp


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiment", required=True, help="a trained experiment (name or experiment file)"
    )
    add_prediction_arguments(parser, fill_undecodable=True, amp=True)
    add_folds(parser, "folds to predict (the blend and CV use these only)")
    add_data_dir(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_data_dir(args)
    setup_logging()
    set_prediction_amp(args.amp)
    try:
        device = resolve_device(args.device)
        folds = parse_folds(args.folds) if args.folds else None
        name = experiment_name(args.experiment)
        paths = get_paths()
        summary = predict_experiment(
            name,
            paths,
            load_vocabulary(paths),
            device,
            args.batch_size,
            progress=not args.no_progress,
            fill_missing=args.fill_undecodable,
            folds=folds,
        )
    except ConfigError as error:
        return fail(error)
    if "overall_lwlrap" in summary:
        print(f"{name}: out-of-fold lwlrap {summary['overall_lwlrap']:.4f}")
    print(f"{name}: test predictions in {summary['probs']}")
    if "submission" in summary:
        print(f"submission written to {summary['submission']}")
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
