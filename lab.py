"""The lab journal: every experiment under <data>/experiments/ side by side.

    python lab.py [--sort cv_lwlrap] [--csv journal.csv] [--markdown] [--plot journal.png]

One row per experiment folder: kind, base and what differs from it (params.json's overrides
as key=value), scale, where its starting weights came from, its folds (finished, running: the
fold's writer lock is held by a live process, shown with its pid and host; interrupted: a
rerun resumes it), each fold's best validation lwlrap with their mean and standard deviation,
the out-of-fold CV once predict_folds.py has run, epochs and training time. It only reads; a
folder that cannot be read is a row saying why. Search trials (<study>_t<N>) are experiments
like any other.

--sort COLUMN orders by any column of the CSV (numbers highest first, text alphabetically,
blanks last; default: by name). --csv writes every column (per-fold scores, seconds, holders)
atomically; --markdown prints a markdown table instead of the text one; --plot draws each
experiment's CV and fold spread.
"""

from __future__ import annotations

import argparse

from src.cli import add_data_dir, check_output_file, use_data_dir
from src.config import get_paths
from src.tools.lab.journal import as_markdown, as_text, plot_journal, read_journal, sort_journal
from src.utils import write_csv_atomic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sort", metavar="COLUMN", default="experiment", help="see above")
    parser.add_argument("--csv", metavar="FILE", help="write the journal, every column, here")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--plot", metavar="PNG", help="draw CV and fold spread per experiment")
    add_data_dir(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_data_dir(args)
    check_output_file(args.csv, "--csv")
    check_output_file(args.plot, "--plot")
    paths = get_paths()
    journal = sort_journal(read_journal(paths), args.sort)
    print(as_markdown(journal) if args.markdown else as_text(journal))
    if args.csv:
        write_csv_atomic(journal, args.csv)
        print(f"journal: {args.csv}")
    if args.plot:
        plot_journal(journal, args.plot)
        print(f"picture: {args.plot}")
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
