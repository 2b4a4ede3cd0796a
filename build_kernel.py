"""Build the self-contained Kaggle kernels (docs/original.md, "Kaggle kernels").

    python build_kernel.py [--out kernel] [--experiment corr_noisy_007] [--mode predict|train]
                           [--blend-experiments a,b,c] [--stacking-experiments a,b,c]
                           [--kernels single,blend,stacking] [--device auto|cpu|cuda]

Writes up to three scripts into --out: single_kernel.py (one experiment, predict or train mode),
blend_kernel.py (geometric mean of several experiments) and stacking_kernel.py (the final
ensemble); --kernels builds only some of them. Each carries src/, the scripts it runs and the
installed argus package, compressed, with a content hash it checks before unpacking. Run on
Kaggle, a kernel writes submission.csv. The weights they read are packaged with
package_weights.py; every experiment a predicting kernel needs must be trained here first, all
five folds (a kernel predicts with each fold model). See docs/kaggle.md.
"""

from __future__ import annotations

import argparse
import shlex

from src.cli import add_data_dir, add_device, fail, names_list, use_data_dir
from src.config import ConfigError, get_paths
from src.experiments import STACKING
from src.kaggle.build import DEFAULT_BLEND, DEFAULT_SINGLE, build_kernels, default_plans, untrained
from src.kaggle.runtime import MODES

KERNELS = ("single", "blend", "stacking")


def kernel_kinds(text: str) -> list[str]:
    kinds = names_list(text)
    wrong = [kind for kind in kinds if kind not in KERNELS]
    if wrong or not kinds:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(KERNELS)}, got {text!r}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", default="kernel", help="the folder to write the kernels to (default: kernel/)"
    )
    parser.add_argument(
        "--kernels",
        type=kernel_kinds,
        default=list(KERNELS),
        metavar="KIND[,KIND...]",
        help=f"the kernels to build: {', '.join(KERNELS)} (default: all three)",
    )
    parser.add_argument(
        "--experiment", default=DEFAULT_SINGLE, help="single-experiment kernel's experiment"
    )
    parser.add_argument(
        "--mode", default="predict", choices=MODES, help="single-experiment kernel's mode"
    )
    parser.add_argument(
        "--blend-experiments",
        default=",".join(DEFAULT_BLEND),
        metavar="A,B,...",
        help="blend kernel's experiments",
    )
    parser.add_argument(
        "--stacking-experiments",
        default=",".join(STACKING),
        metavar="A,B,...",
        help="stacking kernel's stacking experiments",
    )
    add_device(parser)  # the kernel's, resolved where it runs
    parser.add_argument("--batch-size", type=int, default=64, help="tiles per forward pass")
    parser.add_argument(
        "--fail-on-undecodable",
        action="store_true",
        help="fail instead of giving undecodable test clips the mean prediction",
    )
    parser.add_argument(
        "--keep-intermediate",
        action="store_true",
        help="keep the spectrogram cache and per-clip predictions in the kernel's output",
    )
    parser.add_argument(
        "--train-args",
        default="",
        help='extra train_folds.py arguments in train mode, e.g. "--folds 0 --no-corrections"',
    )
    add_data_dir(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_data_dir(args)
    try:
        plans = default_plans(
            experiment=args.experiment,
            mode=args.mode,
            blend=names_list(args.blend_experiments),
            stacking=names_list(args.stacking_experiments),
            device=args.device,
            batch_size=args.batch_size,
            fill_undecodable=not args.fail_on_undecodable,
            keep_intermediate=args.keep_intermediate,
            train_args=tuple(shlex.split(args.train_args)),
        )
        plans = [plan for plan in plans if plan.kind in args.kernels]
        missing = untrained(plans, get_paths().experiments_dir)
        if missing:
            raise ConfigError(
                f"not trained in {get_paths().experiments_dir}: {'; '.join(missing)} (a "
                "predicting kernel uses the five fold models of each experiment: train or "
                "import them first, or leave its kernel out with --kernels)"
            )
        written = build_kernels(args.out, plans)
    except ConfigError as error:
        return fail(error)
    for path, plan in zip(written, plans):
        experiments = ", ".join(plan.experiments)
        size = path.stat().st_size / 1024
        print(f"{path} ({size:.0f} KiB): {plan.kind} kernel, {plan.mode}, {experiments}")
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
