"""show.py's sub-commands: parsed arguments in, one call into the picture modules, what to
tell the user out (errors are ConfigErrors: `run_main` prints them as one line)."""

from __future__ import annotations

import argparse

from src.cli import resolve_device
from src.config import get_paths, load_vocabulary
from src.experiment_files import load_experiment
from src.tools.pictures.architecture import show_architecture
from src.tools.pictures.augmentations import show_augmentations
from src.tools.pictures.spectrograms import show_spectrograms
from src.tools.tagging.sources import checkpoint_source, experiment_source

BATCH_SIZE = 64  # tiles per forward pass when tagging


def spectrograms(args: argparse.Namespace) -> list[str]:
    source = None
    if args.model is not None or args.experiment is not None:
        device = resolve_device(args.device)
        if args.model is not None:
            source = checkpoint_source(args.model, device, BATCH_SIZE)
        else:
            source = experiment_source(
                get_paths().experiments_dir, args.experiment, device, BATCH_SIZE
            )
    return show_spectrograms(
        args.inputs, args.out, args.labels, source, args.top, args.limit, args.columns, args.dpi
    )


def augmentations(args: argparse.Namespace) -> list[str]:
    config = load_experiment(args.experiment, args.scale, args.set)
    return show_augmentations(args.clip, config, args.out, args.second, args.seeds, args.dpi)


def architecture(args: argparse.Namespace) -> list[str]:
    config = load_experiment(args.experiment, args.scale, args.set)
    return show_architecture(config, args.out, len(load_vocabulary(get_paths())), args.dpi)
