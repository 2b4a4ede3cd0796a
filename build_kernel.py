"""Build the self-contained Kaggle kernels (docs/original.md, "Kaggle kernels").

    python build_kernel.py [--out kernel] [--experiment corr_noisy_007] [--mode predict|train]
                           [--blend a,b,c] [--stacking a,b,c] [--device auto|cpu|cuda]

Writes three scripts into --out: single_kernel.py (one experiment, predict or train mode),
blend_kernel.py (geometric mean of several experiments) and stacking_kernel.py (the final
ensemble). Each carries src/, the scripts it runs and the installed argus package, compressed,
with a content hash it checks before unpacking. Run on Kaggle, a kernel writes submission.csv.
The weights they read are packaged with package_weights.py. See docs/kaggle.md.
"""

from __future__ import annotations

import argparse
import shlex

from src.cli import fail, names_list
from src.config import ConfigError
from src.experiments import STACKING
from src.kaggle.build import DEFAULT_BLEND, DEFAULT_SINGLE, build_kernels, default_plans
from src.kaggle.runtime import DEVICES, MODES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="kernel", help="output folder (default: kernel/)")
    parser.add_argument(
        "--experiment", default=DEFAULT_SINGLE, help="single-experiment kernel's experiment"
    )
    parser.add_argument(
        "--mode", default="predict", choices=MODES, help="single-experiment kernel's mode"
    )
    parser.add_argument(
        "--blend", default=",".join(DEFAULT_BLEND), help="blend kernel's experiments"
    )
    parser.add_argument(
        "--stacking", default=",".join(STACKING), help="stacking kernel's stacking experiments"
    )
    parser.add_argument(
        "--device", default="auto", help=f"{', '.join(DEVICES)} or cuda:N (default auto)"
    )
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
    args = parser.parse_args(argv)
    try:
        plans = default_plans(
            experiment=args.experiment,
            mode=args.mode,
            blend=names_list(args.blend),
            stacking=names_list(args.stacking),
            device=args.device,
            batch_size=args.batch_size,
            fill_undecodable=not args.fail_on_undecodable,
            keep_intermediate=args.keep_intermediate,
            train_args=tuple(shlex.split(args.train_args)),
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
