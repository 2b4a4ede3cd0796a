"""Argument and output helpers shared by the top-level scripts (they hold no logic)."""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from src.argus_models import resolve_amp
from src.config import N_FOLDS, ConfigError, default_num_workers
from src.first_level import RunOptions


class _NotArgus(logging.Filter):
    """argus models print their own log lines; the root handler must not print them again."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("argus.")


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s]: %(message)s"))
    handler.addFilter(_NotArgus())
    logging.basicConfig(level=level, handlers=[handler], force=True)


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


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)"
    )
    parser.add_argument(
        "--amp",
        default="auto",
        choices=["auto", "off", "fp16", "bf16"],
        help="mixed precision (default auto: bf16 on GPUs that support it, off on the CPU)",
    )
    parser.add_argument(
        "--seed", type=int, default=2019, help="fixes every random draw (default 2019)"
    )
    parser.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_options(args: argparse.Namespace) -> RunOptions:
    device = args.device or default_device()
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    workers = default_num_workers() if args.workers is None else args.workers
    return RunOptions(
        device=device,
        amp=resolve_amp(args.amp, device),
        seed=args.seed,
        workers=workers,
        channels_last=args.channels_last,
    )
