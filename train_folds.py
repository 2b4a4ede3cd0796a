"""Train the fold models of one first-level experiment (docs/original.md, "Training").

    python train_folds.py --experiment corr_noisy_007
    python train_folds.py --experiment corr_noisy_007 --folds 0,2 --device cuda --amp bf16
    python train_folds.py --experiment corr_noisy_007 --gpus 0,1,2,3   # folds in parallel
    python train_folds.py --experiment auxiliary_016 --smoke           # tiny, CPU, seconds per fold

Outputs land in <data>/experiments/<experiment>/: params.json and fold_<k>/ with the best
checkpoint model-EEE-S.pth, log.txt, log.csv and curves.png. Rerunning the same command
resumes an interrupted fold and skips finished ones; --force starts the experiment afresh.
"""

import argparse

from src.training.command import build_train_parser, train_command


def build_parser() -> argparse.ArgumentParser:
    return build_train_parser(__doc__, kind="cnn")


def main(argv: list[str] | None = None) -> int:
    return train_command(argv, __doc__, kind="cnn")


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
