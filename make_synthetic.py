"""Generate the synthetic FAT2019-layout dataset (src/data/synthetic_clips.py says what it holds).

python make_synthetic.py                      # default size, into the data directory
python make_synthetic.py --out /tmp/fat --curated-per-class 2 --max-seconds 5
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from src.cli import add_data_dir, add_force, add_no_progress, use_data_dir
from src.config import FAT2019_CLASSES, get_paths
from src.data.synthetic_clips import SyntheticSpec
from src.data.synthetic_dataset import SyntheticSummary, generate_dataset


def build_parser() -> argparse.ArgumentParser:
    defaults = SyntheticSpec()  # one place for the defaults: the generator's
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", metavar="DIR", help="the folder to write (default: the data directory)"
    )
    parser.add_argument(
        "--curated-per-class",
        type=int,
        default=defaults.curated_per_class,
        help="curated clips per class",
    )
    parser.add_argument(
        "--noisy-per-class",
        type=int,
        default=defaults.noisy_per_class,
        help="noisy clips per class",
    )
    parser.add_argument("--test", type=int, default=defaults.n_test, help="number of test clips")
    parser.add_argument(
        "--noisy-wrong-share",
        type=float,
        default=defaults.noisy_wrong_share,
        help="share of noisy clips whose labels are wrong",
    )
    parser.add_argument(
        "--min-seconds", type=float, default=defaults.min_seconds, help="shortest clip"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=defaults.max_seconds, help="longest clip"
    )
    parser.add_argument(
        "--classes",
        type=int,
        default=len(FAT2019_CLASSES),
        help="use the first N of the 80 FAT2019 classes (a smaller vocabulary learns faster)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=1, help="generating processes")
    add_force(parser, "replace a synthetic dataset made with other arguments")
    add_no_progress(parser)
    add_data_dir(parser)
    return parser


def describe(summary: SyntheticSummary) -> str:
    share = summary.n_noisy_corrupted / summary.n_noisy if summary.n_noisy else 0.0
    state = "generated" if summary.generated else "already present with these arguments, kept"
    return (
        f"Synthetic dataset {state} in {summary.out_dir}: {summary.n_curated} curated, "
        f"{summary.n_noisy} noisy ({summary.n_noisy_corrupted} with wrong labels, {share:.0%}) "
        f"and {summary.n_test} test clips over {summary.n_classes} classes, "
        f"{summary.total_seconds / 60:.1f} minutes of audio. "
        f"Ground truth: {summary.truth_csv}."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    use_data_dir(args)
    try:
        summary = generate_dataset(
            args.out if args.out is not None else get_paths().input_dir,
            curated_per_class=args.curated_per_class,
            noisy_per_class=args.noisy_per_class,
            n_test=args.test,
            noisy_wrong_share=args.noisy_wrong_share,
            min_seconds=args.min_seconds,
            max_seconds=args.max_seconds,
            seed=args.seed,
            classes=FAT2019_CLASSES[: args.classes],
            workers=args.workers,
            overwrite=args.force,
            progress=not args.no_progress,
        )
    except ValueError as error:
        parser.error(str(error))  # a usage error: exit status 2 and the message
    print(describe(summary))
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
