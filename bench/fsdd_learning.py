"""Real-audio learning check: spoken digits (FSDD), trained on five speakers, validated on the
sixth, with the project's own pipeline pieces (store, transforms, sampler, model, fold trainer).

    python bench/fsdd_learning.py [--fsdd ../shared/data/real-audio/fsdd] [--val-speaker george]

Prints the validation lwlrap per epoch and the best; target >= 0.9 within a few CPU minutes.
The FSDD clips are 8 kHz and mostly shorter than 0.5 s, so this also exercises upsampling and
the short-clip rule. Never asserts: tests/test_fsdd.py runs a shorter version with a threshold.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.augment.mixers import get_mixer
from src.augment.transforms import get_transforms
from src.config import REPO_ROOT, Vocabulary
from src.data.store import get_store
from src.experiment_files import load_experiment
from src.models.argus_models import FreesoundModel
from src.training.datasets import ClipDataset, EpochSampler, ProbabilityMix
from src.training.loop import run_fold
from src.training.parts import FoldParts, Schedule

DIGITS = Vocabulary(tuple("0123456789"))
CPU_TRANSFORMS = load_experiment("corr_noisy_007", scale="cpu")["transforms"]


@dataclass
class FsddSettings:
    """A small AuxSkipAttention configuration that learns digits on a CPU in minutes."""

    val_speaker: str = "george"
    base_size: int = 16
    crop: int = 64
    batch_size: int = 32
    epoch_size: int = 1024
    epochs: int = 20
    lr: float = 0.001
    dropout: float = 0.1
    mixer_prob: float = 0.0
    seed: int = 2019


def fsdd_learning(
    fsdd: Path, out_dir: Path, settings: FsddSettings, progress: bool = False
) -> float:
    """Trains on the other speakers, returns the best validation lwlrap on `val_speaker`."""
    meta = pd.read_csv(fsdd / "metadata.csv", dtype=str)
    store = get_store(
        "fsdd",
        [fsdd / "recordings" / f for f in meta["fname"]],
        out_dir / "cache",
        progress=progress,
    )
    targets = DIGITS.encode_many(meta["label"].tolist())
    is_val = (meta["speaker"] == settings.val_speaker).to_numpy()
    if not is_val.any():
        raise SystemExit(f"no recordings of speaker {settings.val_speaker!r}")
    train = ClipDataset(
        store,
        meta["fname"][~is_val].tolist(),
        targets[~is_val],
        0,
        # The cpu scale's augmentations (their resize range follows the crop width).
        get_transforms(True, settings.crop, **CPU_TRANSFORMS),
        get_mixer(settings.mixer_prob),
    )
    val = ClipDataset(
        store,
        meta["fname"][is_val].tolist(),
        targets[is_val],
        0,
        get_transforms(False, settings.crop),
    )
    sampler = EpochSampler(settings.epoch_size)
    mix = ProbabilityMix([train], [1.0], settings.epoch_size, seed=settings.seed)
    torch.manual_seed(settings.seed)
    model = FreesoundModel(
        {
            "nn_module": (
                "AuxSkipAttention",
                {
                    "num_classes": 10,
                    "base_size": settings.base_size,
                    "dropout": settings.dropout,
                    "last_fc": 4,
                },
            ),
            "loss": ("BCEWithLogits", {}),
            "optimizer": ("Adam", {"lr": settings.lr}),
            "device": "cpu",
            "aux_weights": [1.0, 0.4, 0.2, 0.1],
            "crop_size": settings.crop,
        }
    )
    parts = FoldParts(
        model,
        DataLoader(mix, batch_size=settings.batch_size, sampler=sampler, drop_last=True),
        DataLoader(val, batch_size=128),
        sampler,
    )
    schedule = Schedule(
        max_epochs=settings.epochs, early_stopping=settings.epochs, patience=3, factor=0.6
    )
    result = run_fold(parts, out_dir / "fold", schedule, "fsdd", progress=progress)
    return float(result["best_val_lwlrap"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fsdd", type=Path, default=REPO_ROOT.parent / "shared/data/real-audio/fsdd"
    )
    parser.add_argument("--val-speaker", default=FsddSettings.val_speaker)
    parser.add_argument("--epochs", type=int, default=FsddSettings.epochs)
    parser.add_argument("--base-size", type=int, default=FsddSettings.base_size)
    parser.add_argument("--lr", type=float, default=FsddSettings.lr)
    parser.add_argument("--epoch-size", type=int, default=FsddSettings.epoch_size)
    parser.add_argument("--dropout", type=float, default=FsddSettings.dropout)
    parser.add_argument("--mixer-prob", type=float, default=FsddSettings.mixer_prob)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = FsddSettings(
        val_speaker=args.val_speaker,
        epochs=args.epochs,
        base_size=args.base_size,
        lr=args.lr,
        epoch_size=args.epoch_size,
        dropout=args.dropout,
        mixer_prob=args.mixer_prob,
    )
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        best = fsdd_learning(args.fsdd, Path(tmp), settings, progress=True)
        log = pd.read_csv(Path(tmp) / "fold" / "log.csv")
    print(log[["epoch", "train_loss", "val_loss", "val_lwlrap"]].to_string(index=False))
    print(
        f"best validation lwlrap on speaker {args.val_speaker}: {best:.4f} (target >= 0.9), "
        f"{time.time() - started:.0f} s on {args.threads} threads"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
