"""Choose the first-level experiments of the ensemble by their out-of-fold CV.

    python select_ensemble.py [--experiments a,b,...] [--sizes 3-8] [--method auto]
                              [--top 10] [--write chosen.json] [--plot chosen.png]

Blends the out-of-fold predictions of every first-level experiment that predict_folds.py has
predicted on all folds (or of --experiments) by equal-weight geometric mean, as
stacking_predict.py blends them, and scores each blend's lwlrap against the original curated
labels: the number stacking_predict.py prints for the same set as its "first-level blend".
--method exhaustive scores every combination of --sizes experiments; greedy adds one
experiment at a time, then swaps members for outsiders while that improves the CV; auto
enumerates up to 50,000 blends and searches greedily beyond. Prints the best blends (CV, gain
over the best single experiment, members), the best of each size and the chosen blend's
per-class lwlrap against the best single experiment (--plot: as a PNG; --per-class: as CSV).

--write FILE saves the chosen set as a stacking experiment file (base
stacking_008_fcnet_43040, named after the file) that stacking_train.py --experiment,
stacking_predict.py --experiments and blend_predict.py --experiments take; the commands are
printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from src.cli import (
    add_data_dir,
    add_no_progress,
    check_output_file,
    names_list,
    setup_logging,
    use_data_dir,
)
from src.config import get_paths, load_vocabulary
from src.experiment_files import blend_members
from src.experiments import STACKING
from src.runs import check_experiment_classes
from src.tools.lab.blend_search import METHODS, default_workers, search
from src.tools.lab.selection import (
    DEFAULT_BASE,
    DEFAULT_SIZES,
    Selection,
    best_single,
    follow_up_commands,
    load_candidates,
    missing_corrections,
    parse_sizes,
    per_class_view,
    predict_command,
    single_scores,
    stacking_file_name,
    usable_sizes,
    write_stacking_file,
)
from src.utils import write_csv_atomic

SHOWN_CLASSES = 5  # per-class lines printed each way (gains, losses)


def number(value: float) -> str:
    return f"{value:.4f}"


def signed(value: float) -> str:
    return f"{value:+.4f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiments",
        metavar="A,B,...",
        help="the candidates: first-level experiments, or a stacking experiment's file (its "
        "inputs) (default: every first-level experiment with out-of-fold predictions)",
    )
    parser.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        metavar="N|A-B",
        help=f"numbers of experiments in a blend: 5, 3-8 or 2-4,7 (default {DEFAULT_SIZES})",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="exhaustive: every combination; greedy: forward selection, then swaps; auto "
        "(default): exhaustive up to 50,000 blends",
    )
    parser.add_argument("--top", type=int, default=10, help="best blends to list (default 10)")
    parser.add_argument("--write", metavar="FILE", help="the chosen set as a stacking file")
    parser.add_argument(
        "--base",
        choices=STACKING,
        default=DEFAULT_BASE,
        help=f"the stacking experiment --write bases its file on (default {DEFAULT_BASE})",
    )
    parser.add_argument("--plot", metavar="PNG", help="the chosen blend's per-class lwlrap")
    parser.add_argument("--per-class", metavar="FILE", help="the same as CSV")
    parser.add_argument("--csv", metavar="FILE", help="the best blends' table as CSV")
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes scoring blends (default: one per core)",
    )
    add_no_progress(parser)
    add_data_dir(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_data_dir(args)
    setup_logging()
    sizes = parse_sizes(args.sizes)
    for option in ("write", "plot", "per_class", "csv"):
        check_output_file(getattr(args, option), f"--{option.replace('_', '-')}")
    if args.write:
        stacking_file_name(Path(args.write))
    paths = get_paths()
    vocabulary = load_vocabulary(paths)
    named = blend_members(names_list(args.experiments)) if args.experiments else []
    candidates = load_candidates(paths, vocabulary, named)
    check_experiment_classes(paths, vocabulary, candidates.names)
    sizes = usable_sizes(sizes, len(candidates.names), args.sizes)
    for name, folds in candidates.skipped.items():
        print(
            f"skipped {name}: no out-of-fold predictions of fold {','.join(map(str, folds))} "
            f"(`{predict_command([name])}`)"
        )
    singles = single_scores(candidates)
    single, single_cv = best_single(singles)
    print(
        f"{len(candidates.names)} candidates ({', '.join(candidates.names)}); best single: "
        f"{single} {number(single_cv)}",
        flush=True,
    )
    result = search(
        candidates.tables,
        sizes,
        args.method,
        keep=max(1, args.top),
        workers=args.workers,
        progress=not args.no_progress,
    )
    selection = Selection(candidates, sizes, result, singles)
    print(
        f"{result.method}: {result.evaluated:,} blends of sizes {args.sizes} scored in "
        f"{result.seconds:.1f} s"
    )
    top = selection.top(max(1, args.top))
    formats = {"oof_lwlrap": number, "gain": signed}
    print("\nbest blends:")
    print(top.to_string(index=False, formatters=formats))
    print("\nbest of each size:")
    print(selection.per_size().to_string(index=False, formatters=formats))

    per_class, overall = per_class_view(selection)
    members = selection.members(selection.chosen)
    better = int((per_class["change"] > 0).sum())
    worse = int((per_class["change"] < 0).sum())
    print(
        f"\nchosen: {','.join(members)}: out-of-fold lwlrap {number(overall)} "
        f"({signed(overall - single_cv)} over {single}); better on {better} classes, worse on "
        f"{worse}, equal on {len(per_class) - better - worse}"
    )
    if overall <= single_cv and members != [single]:
        print(
            f"note: no blend of sizes {args.sizes} beats {single} alone ({number(single_cv)}); "
            f"other candidates may help, and --sizes 1-{max(sizes)} lets one experiment be "
            "the choice"
        )
    if len(per_class) <= 2 * SHOWN_CLASSES:
        print(per_class.to_string(index=False, float_format=number))
    else:  # the largest gains and the largest losses, in one table
        ends = pd.concat([per_class.head(SHOWN_CLASSES), per_class.tail(SHOWN_CLASSES)])
        lines = ends.to_string(index=False, float_format=number).splitlines()
        print("\n".join([*lines[: SHOWN_CLASSES + 1], "...", *lines[SHOWN_CLASSES + 1 :]]))
    if args.csv:
        write_csv_atomic(top, args.csv)
        print(f"best blends: {args.csv}")
    if args.per_class:
        write_csv_atomic(per_class, args.per_class)
        print(f"per-class lwlrap: {args.per_class}")
    if args.plot:
        from src.plots import plot_per_class_change

        plot_per_class_change(
            per_class["class"].tolist(),
            per_class["blend"].tolist(),
            per_class["single"].tolist(),
            args.plot,
            f"blend of {len(members)} ({number(overall)}) against {single} ({number(single_cv)})",
            (f"blend of {len(members)}", single),
        )
        print(f"picture: {args.plot}")
    if args.write:
        path = Path(args.write)
        name = write_stacking_file(path, members, args.base)
        print(f"\nwritten: {path} (stacking experiment {name}, base {args.base})")
        missing = missing_corrections(get_paths(), path)
        if missing:
            print(
                f"{', '.join(map(str, missing))}: not found, so the MLP trains on the labels as "
                "they are (--no-corrections; README, 'Label corrections')"
            )
        print("next:")
        for command in follow_up_commands(path, no_corrections=bool(missing)):
            print(f"  {command}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130, SIGTERM -> 143

    run_main(main)
