"""Helpers shared by the top-level scripts: one-line errors, the default device, --folds.

Light on purpose: a script that only needs these must not load the training stack.
"""

from __future__ import annotations

import argparse
import sys

import torch

from src.config import N_FOLDS, PREDICTION_AMP_CHOICES, ConfigError
from src.utils import setup_logging

__all__ = [
    "add_prediction_arguments",
    "default_device",
    "fail",
    "names_list",
    "parse_folds",
    "setup_logging",
]


def fail(error: Exception) -> int:
    """Print a one-line error for the user (no traceback) and return the exit status."""
    print(f"error: {error}", file=sys.stderr)
    return 1


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_folds(text: str | None, n_folds: int = N_FOLDS) -> list[int]:
    if not text:
        return list(range(n_folds))
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--folds takes comma-separated fold numbers, got {text!r}") from None
    bad = [f for f in folds if not 0 <= f < n_folds]
    if bad or not folds:
        raise ConfigError(f"folds must be between 0 and {n_folds - 1}, got {text!r}")
    return sorted(set(folds))


def add_prediction_arguments(
    parser: argparse.ArgumentParser, fill_undecodable: bool = False, amp: bool = False
):
    """--device, --batch-size, --no-progress (and --fill-undecodable, --amp) of the predicting
    scripts."""
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="tiles per forward pass")
    if fill_undecodable:
        parser.add_argument(
            "--fill-undecodable",
            action="store_true",
            help="give test clips that cannot be decoded the mean prediction instead of failing",
        )
    if amp:
        parser.add_argument(
            "--amp",
            choices=PREDICTION_AMP_CHOICES,
            default="off",
            help="prediction precision (default off: float32, whatever the models were trained "
            "with; bf16/fp16 autocast only on hardware that runs it natively)",
        )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def names_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: the comma-separated experiment lists of the scripts."""
    return [name.strip() for name in text.split(",") if name.strip()]
