"""Pictures of what the model sees, each written as a PNG.

    python show.py spectrograms clip.wav more/ --labels test_labels.csv --out spectrograms.png
    python show.py spectrograms clips/ --experiment corr_noisy_007 --out tagged.png
    python show.py augmentations clip.wav --experiment corr_noisy_007 --second other.wav \\
        --out augmentations.png
    python show.py architecture --experiment auxiliary_016 --out architecture.png
    python show.py architecture --experiment corr_noisy_007 --scale cpu \\
        --set model.params.base_size=32 --out small.png

spectrograms: a grid of log-mel spectrograms exactly as the pipeline computes them (decoded,
mono, 44.1 kHz, silence trimmed, the short-clip rule, the spectrogram cache's log-mel), each
with its file name and its labels (--labels, a fname,labels CSV) or the top classes of a
checkpoint (--model) or of a trained experiment (--experiment, in the data directory).

augmentations: one clip through each training transform of an experiment alone (pad + crop,
RandomResizedCrop, SpecAugment, the two mixers with --second) and through its whole training
pipeline with seeds 0..N-1, using the transforms and mixer training builds from the
configuration; the model input's three channels (log-mel, delta, delta-delta) once.

architecture: the network of an experiment as a diagram drawn from the network itself (blocks
in order with their output shapes and parameters, skip branches, auxiliary heads, the total).

A file that cannot be read, an unknown experiment or setting is one line on stderr and exit
status 1; nothing is written then. See README.md, "What the model sees".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src.cli import add_data_dir, add_device, check_output_file, use_data_dir
from src.experiments import SCALES


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, required=True, metavar="PNG", help="the picture file to write (.png)"
    )
    parser.add_argument(
        "--dpi", type=int, default=100, metavar="N", help="resolution (default 100)"
    )
    add_data_dir(parser)


def add_experiment(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiment",
        required=True,
        help="a registered experiment or an experiment file (.json) naming one as its base "
        "(README, 'Experiments from a file')",
    )
    parser.add_argument(
        "--scale",
        choices=list(SCALES),
        default="full",
        help="full: as registered (default); cpu: the laptop scale; smoke: tiny",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.SUB=VALUE",
        help="override one setting, e.g. --set model.params.base_size=32 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="PICTURE")

    spectrograms = commands.add_parser(
        "spectrograms", help="a grid of clips' log-mel spectrograms with labels or tags"
    )
    spectrograms.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER")
    spectrograms.add_argument(
        "--labels", type=Path, metavar="CSV", help="fname,labels (e.g. test_labels.csv)"
    )
    source = spectrograms.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, metavar="PATH", help="tag with one checkpoint")
    source.add_argument(
        "--experiment",
        metavar="NAME",
        help="tag with a trained first-level experiment (geometric mean over its folds)",
    )
    spectrograms.add_argument(
        "--top", type=int, default=3, metavar="K", help="classes shown per clip (3)"
    )
    spectrograms.add_argument(
        "--limit", type=int, default=12, metavar="N", help="at most N clips (12)"
    )
    spectrograms.add_argument(
        "--columns", type=int, default=3, metavar="N", help="panels per row (3)"
    )
    add_device(spectrograms)
    add_common(spectrograms)

    augmentations = commands.add_parser(
        "augmentations", help="one clip through an experiment's training augmentations"
    )
    augmentations.add_argument("clip", type=Path, metavar="FILE")
    add_experiment(augmentations)
    augmentations.add_argument(
        "--second",
        type=Path,
        metavar="FILE",
        help="the clip the mixers mix in (default: the clip itself)",
    )
    augmentations.add_argument(
        "--seeds", type=int, default=6, metavar="N", help="training samples drawn (6)"
    )
    add_common(augmentations)

    architecture = commands.add_parser(
        "architecture", help="an experiment's network, drawn from the network itself"
    )
    add_experiment(architecture)
    add_common(architecture)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("top", "limit", "columns", "seeds", "dpi"):
        if getattr(args, option, 1) < 1:
            parser.error(f"--{option} must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_data_dir(args)
    check_output_file(args.out, "--out")
    if args.command == "spectrograms":
        from src.tools.pictures.command import spectrograms

        notes = spectrograms(args)
    elif args.command == "augmentations":
        from src.tools.pictures.command import augmentations

        notes = augmentations(args)
    else:
        from src.tools.pictures.command import architecture

        notes = architecture(args)
    for note in notes:
        print(note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
