"""Turn your own labelled recordings into the dataset layout the pipeline trains on.

    python make_dataset.py my_sounds/ --out data/my_sounds                 # one folder per class
    python make_dataset.py labels.csv --out data/my_sounds --test-share 0.2 --seed 1
    python make_dataset.py my_sounds/ --out data/x --test held_out/ --noisy web_clips.csv

SOURCE is a folder with one sub-folder per class (audio files at any depth below it, any format
the pipeline decodes: wav, flac, ogg, mp3, ...) or a CSV with `path,labels` columns (paths
relative to the CSV, several labels comma-separated). The output folder gets train_curated/,
train_curated.csv and sample_submission.csv (the class columns); --test-share or --test add
test/ and test_labels.csv (to score predictions: tag_audio.py ... --score), --noisy adds
train_noisy/ and train_noisy.csv. Then train with FREESOUND_DATA_DIR pointing at it (README,
"Train on your own sounds").
"""

from __future__ import annotations

import argparse

from src.cli import add_force, command_line, fail
from src.config import ConfigError
from src.data.dataset_maker import LINK_MODES, make_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="folder with one sub-folder per class, or a path,labels CSV")
    parser.add_argument(
        "--out", required=True, help="the dataset folder to write (a data directory)"
    )
    parser.add_argument("--noisy", default=None, help="a second source: the noisy training set")
    parser.add_argument("--test", default=None, help="a third source: the labelled test set")
    parser.add_argument(
        "--test-share",
        type=float,
        default=None,
        help="hold out this share of SOURCE, stratified by class, as the test set (e.g. 0.2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --test-share split")
    parser.add_argument(
        "--mode",
        default="symlink",
        choices=LINK_MODES,
        help="how files land in the layout (default symlink; copy to move the folder elsewhere)",
    )
    add_force(parser, "replace an output folder made by make_dataset.py")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        made = make_dataset(
            args.source,
            args.out,
            noisy=args.noisy,
            test=args.test,
            test_share=args.test_share,
            seed=args.seed,
            mode=args.mode,
            force=args.force,
        )
    except (ConfigError, OSError) as error:
        return fail(error)
    counts = made.counts
    print(f"wrote {made.out}: {len(made.classes)} classes")
    print(counts.to_string(index=False))
    print("clips: " + ", ".join(f"{split} {n}" for split, n in made.clips.items()))
    for line in made.report.lines():
        print(f"note: {line}")
    print(f"\nnext: {command_line('make_folds.py', '--data-dir', made.out)}  (then train_folds.py)")
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
