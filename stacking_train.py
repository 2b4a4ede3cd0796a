"""Train the fold models of a stacking experiment (docs/original.md, "Stacking").

    python stacking_train.py --experiment stacking_008_fcnet_43040 [--smoke] [--gpus 0,1]

Needs the out-of-fold predictions of the experiment's first-level inputs (predict_folds.py).
Same folds, callbacks, resume, --force and --gpus rules as train_folds.py.
"""

import argparse

from src.training.command import build_train_parser, train_command


def build_parser() -> argparse.ArgumentParser:
    return build_train_parser(__doc__, kind="stacking")


def main(argv: list[str] | None = None) -> int:
    return train_command(argv, __doc__, kind="stacking")


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
