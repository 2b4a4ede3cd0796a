"""The "Train on your own sounds" path measured end to end on real recordings (FSDD digits),
through the user's own commands, not a hand-built loop:

    make_dataset.py train.csv --out DIR --test held_out.csv     (one speaker held out)
    make_folds.py
    train_folds.py --experiment corr_noisy_007 --scale cpu --folds 0
    tag_audio.py DIR/test --experiment corr_noisy_007 --score DIR/test_labels.csv

    python bench/fsdd_own_sounds.py [--speaker george] [--folds 0|all] [--threads 2] [--keep DIR]
    python bench/fsdd_own_sounds.py --keep DIR --reuse --keep-folds --folds all --gpus cpu,cpu
        (after a one-fold run kept in DIR: the four other folds, two at a time, then the blend)

Prints a table: per trained fold its validation lwlrap (other speakers) and the held-out
speaker's test lwlrap and top-1 accuracy with that fold's model alone, then the blend of the
trained folds (what tag_audio.py --experiment uses), and the wall time of each step.
Target: >= 0.9 test lwlrap with one fold in <= 10 minutes on 2 cores, and the
blend of five folds above its best single fold.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from src.runs import fold_dir, read_finished  # noqa: E402

FSDD = REPO_ROOT.parent / "shared/data/real-audio/fsdd"
EXPERIMENT = "corr_noisy_007"


def run(args: list[str], env: dict, what: str) -> tuple[str, float]:
    started = time.time()
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result.stdout, seconds


def score_line(stdout: str) -> tuple[float, float]:
    """lwlrap and top-1 accuracy from tag_audio.py --score's summary line."""
    line = next(x for x in stdout.splitlines() if x.startswith("scored "))
    words = line.replace(",", "").split()
    return float(words[words.index("lwlrap") + 1]), float(words[words.index("accuracy") + 1])


def add_fsdd_options(parser: argparse.ArgumentParser, per_digit: bool = False) -> None:
    """--fsdd, --speaker, --threads and --keep (and --per-digit) of the FSDD benches."""
    parser.add_argument("--fsdd", type=Path, default=FSDD)
    parser.add_argument("--speaker", default="george", help="the held-out (test) speaker")
    if per_digit:
        parser.add_argument(
            "--per-digit", type=int, default=None, help="recordings per speaker and digit (all: 50)"
        )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 cores)")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it")


def read_metadata(fsdd: Path, speaker: str, per_digit: int | None = None) -> pd.DataFrame:
    """FSDD's metadata.csv (fname, speaker, label), the first `per_digit` recordings of each
    speaker and digit; a speaker it lacks is one line."""
    meta = pd.read_csv(fsdd / "metadata.csv", dtype=str)
    if speaker not in set(meta["speaker"]):
        raise SystemExit(f"no speaker {speaker!r} in {fsdd / 'metadata.csv'}")
    if per_digit is not None:
        meta = meta.groupby(["speaker", "label"], sort=False).head(per_digit)
    return meta


def split_speaker(meta: pd.DataFrame, fsdd: Path, speaker: str, work: Path) -> np.ndarray:
    """work/train.csv (every other speaker's recordings) and work/held_out.csv (`speaker`'s),
    as path,labels tables for make_dataset.py; returns the held-out rows of `meta`."""
    table = pd.DataFrame(
        {
            "path": [str((fsdd / "recordings" / f).resolve()) for f in meta["fname"]],
            "labels": meta["label"],
        }
    )
    held_out = (meta["speaker"] == speaker).to_numpy()
    table[~held_out].to_csv(work / "train.csv", index=False)
    table[held_out].to_csv(work / "held_out.csv", index=False)
    return held_out


def lay_out(work: Path, data: Path, env: dict) -> dict[str, float]:
    """make_dataset.py (work/held_out.csv as --test) and make_folds.py; their seconds."""
    times = {}
    _, times["make_dataset"] = run(
        ["make_dataset.py", str(work / "train.csv"), "--out", str(data), "--force",
         "--test", str(work / "held_out.csv")], env, "make_dataset.py")  # fmt: skip
    _, times["make_folds"] = run(["make_folds.py"], env, "make_folds.py")
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_fsdd_options(parser)
    parser.add_argument("--folds", default="0", help="folds to train: 0, 0,1 or all")
    parser.add_argument("--experiment", default=EXPERIMENT)
    parser.add_argument("--set", action="append", default=[], help="passed to train_folds.py")
    parser.add_argument(
        "--reuse", action="store_true", help="with --keep: reuse the dataset made by a former run"
    )
    parser.add_argument(
        "--keep-folds",
        action="store_true",
        help="with --reuse: keep the folds a former run trained (train_folds.py skips them)",
    )
    parser.add_argument(
        "--gpus", default=None, help="passed to train_folds.py: cpu,cpu trains two folds at once"
    )
    args = parser.parse_args(argv)
    meta = read_metadata(args.fsdd, args.speaker)
    folds = "0,1,2,3,4" if args.folds == "all" else args.folds
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        held_out = split_speaker(meta, args.fsdd, args.speaker, work)
        data = work / "data"
        env = {
            **os.environ,
            "FREESOUND_DATA_DIR": str(data),
            "OMP_NUM_THREADS": str(args.threads),
        }
        env.pop("MODE", None)
        times = {}
        if args.reuse and (data / "train_folds.csv").is_file():
            # Keep the layout and its spectrogram cache; train the experiment afresh (or only
            # the folds it lacks).
            if not args.keep_folds:
                shutil.rmtree(data / "experiments" / args.experiment, ignore_errors=True)
        else:
            times.update(lay_out(work, data, env))
        extra = [x for s in args.set for x in ("--set", s)]
        if args.gpus:
            extra += ["--gpus", args.gpus]
        _, times["train_folds"] = run(
            ["train_folds.py", "--experiment", args.experiment, "--scale", "cpu", "--folds",
             folds, "--no-progress", "--device", "cpu", *extra], env, "train_folds.py")  # fmt: skip
        experiment = data / "experiments" / args.experiment
        rows = []
        score = ["--score", str(data / "test_labels.csv"), "--device", "cpu", "--no-progress"]
        for fold in [int(f) for f in folds.split(",")]:
            finished = read_finished(fold_dir(experiment, fold))
            checkpoint = fold_dir(experiment, fold) / finished["best_checkpoint"]
            out, seconds = run(
                ["tag_audio.py", str(data / "test"), "--model", str(checkpoint), *score],
                env, "tag_audio.py --model")  # fmt: skip
            test_lwlrap, top1 = score_line(out)
            rows.append((f"fold {fold}", finished.get("best_val_lwlrap"), test_lwlrap, top1,
                         finished.get("seconds"), round(seconds)))  # fmt: skip
        if len(rows) > 1:
            # tag_audio --experiment needs all five folds; blend the trained ones via --experiment
            # only when all are there.
            out, seconds = run(
                ["tag_audio.py", str(data / "test"), "--experiment", args.experiment, *score],
                env, "tag_audio.py --experiment")  # fmt: skip
            test_lwlrap, top1 = score_line(out)
            rows.append(("blend of folds", None, test_lwlrap, top1, None, round(seconds)))
        result = pd.DataFrame(
            rows,
            columns=["model", "val_lwlrap", "test_lwlrap", "test_top1", "train_s", "tag_s"],
        )
    print(f"FSDD, test speaker {args.speaker} ({held_out.sum()} clips), "
          f"{args.experiment} --scale cpu, {args.threads} threads")  # fmt: skip
    print(result.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-"))
    print("wall time per step (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
