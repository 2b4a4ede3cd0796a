"""Cut train_curated.csv into 5 folds and write train_folds.csv (KFold, seed 42)."""

from __future__ import annotations

import argparse
import sys

from src.cli import add_data_dir, use_data_dir
from src.config import N_FOLDS, ConfigError, get_paths, load_vocabulary
from src.data.labels import FOLDS_SEED, make_folds, read_labels_csv
from src.utils import write_csv_atomic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-folds", type=int, default=N_FOLDS, help="number of folds (default 5)")
    parser.add_argument(
        "--seed", type=int, default=FOLDS_SEED, help="KFold random state (default 42)"
    )
    add_data_dir(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_data_dir(args)

    paths = get_paths()
    try:
        vocabulary = load_vocabulary(paths)
        curated = read_labels_csv(paths.train_curated_csv, vocabulary, paths.train_curated_dir)
        folds = make_folds(curated, args.n_folds, args.seed)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    # Relative to the data directory, so the folder can move (the original stored absolute paths).
    folds["file_path"] = [f"{paths.train_curated_dir.name}/{f}" for f in folds["fname"]]
    write_csv_atomic(folds, paths.folds_csv)
    sizes = folds["fold"].value_counts().sort_index().tolist()
    print(f"wrote {paths.folds_csv}: {len(folds)} clips in {args.n_folds} folds of {sizes}")
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
