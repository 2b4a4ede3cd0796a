"""Starting from a trained model, measured on real recordings (FSDD digits) through the scripts:
from scratch, `train_folds.py --init-from` fine-tuning and `train_probe.py`, on the same few
target clips, the same folds, several seeds.

    python bench/transfer_fsdd.py [--sizes 2,10] [--seeds 3] [--threads 2] [--keep DIR]
    python bench/transfer_fsdd.py --keep DIR --reuse   # the source and layouts of a former run
    python bench/transfer_fsdd.py --keep DIR --reuse --first-seed 2 --seeds 1   # beside another

Source: `train_folds.py --experiment corr_noisy_007 --scale cpu --folds 0` on digits 0-4 of five
speakers (every clip). Target, for each size k: digits 5-9 of the same five speakers, k clips per
class and speaker (the first k takes), laid out by make_dataset.py with make_folds.py's folds;
test: the sixth speaker's (george's) digits 5-9, scored by `tag_audio.py --score` (fold 0's
checkpoint for the trained arms, the probe experiment for the probe). Arms:

    scratch     train_folds.py --experiment corr_noisy_007 --scale cpu --folds 0 --seed S
    finetune    the same with --init-from SOURCE_CHECKPOINT (the default `finetune` settings)
    <variant>   the same with --set finetune.KEY=VALUE (--variant NAME:KEY=V,KEY=V, repeatable;
                a key that is no `finetune` setting is a configuration path: early_stopping=12)
    probe       train_probe.py --init-from SOURCE_CHECKPOINT --experiment probe (only where
                train_probe.py exists; once per size: a logistic regression has no seed, and a
                second run would reuse the cached embeddings; its whole run is timed)

Prints each arm's test lwlrap per seed, mean and spread (standard deviation), and the mean wall
time of its training. --epochs and --epoch-size shorten every training (source and targets) for
a quick, reduced measurement; say so when recording the figures.
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

from src.experiments import FINETUNE_DEFAULTS  # noqa: E402
from src.runs import best_checkpoint, fold_dir  # noqa: E402

FSDD = REPO_ROOT.parent / "shared/data/real-audio/fsdd"
EXPERIMENT = "corr_noisy_007"
TEST_SPEAKER = "george"


def run(args: list[str], env: dict, what: str, cwd: Path = REPO_ROOT) -> tuple[str, float]:
    started = time.time()
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    seconds = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result.stdout, seconds


def score_line(stdout: str) -> float:
    """lwlrap from tag_audio.py --score's summary line."""
    line = next(x for x in stdout.splitlines() if x.startswith("scored "))
    words = line.replace(",", "").split()
    return float(words[words.index("lwlrap") + 1])


def setting(text: str) -> str:
    """A variant's KEY=V as train_folds.py's --set: a `finetune` setting by its own name
    (backbone_lr_scale=0.3), any other by its path (early_stopping=null)."""
    key = text.partition("=")[0]
    return f"finetune.{text}" if key in FINETUNE_DEFAULTS else text


def layout(table: pd.DataFrame, test: pd.DataFrame, work: Path, env: dict) -> Path:
    """make_dataset.py + make_folds.py on `table` (path,labels) with `test` held out."""
    work.mkdir(parents=True, exist_ok=True)
    table.to_csv(work / "train.csv", index=False)
    test.to_csv(work / "held_out.csv", index=False)
    data = work / "data"
    env = {**env, "FREESOUND_DATA_DIR": str(data)}
    run(["make_dataset.py", str(work / "train.csv"), "--out", str(data), "--force",
         "--test", str(work / "held_out.csv")], env, "make_dataset.py")  # fmt: skip
    run(["make_folds.py"], env, "make_folds.py")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fsdd", type=Path, default=FSDD)
    parser.add_argument("--sizes", default="2,10", help="clips per class and speaker (2,10)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (3)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2 cores)")
    parser.add_argument("--epochs", type=int, default=None, help="cap every training (reduced)")
    parser.add_argument("--epoch-size", type=int, default=None, help="samples per epoch (reduced)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=V,KEY=V",
        help="a fine-tune with other finetune settings, e.g. plain:freeze_epochs=0,"
        "backbone_lr_scale=1.0 (repeatable)",
    )
    parser.add_argument("--no-scratch", action="store_true", help="skip the scratch arm")
    parser.add_argument(
        "--no-finetune", action="store_true", help="skip the default-settings fine-tune arm"
    )
    parser.add_argument(
        "--probe-repo",
        type=Path,
        default=REPO_ROOT,
        help="the checkout whose train_probe.py the probe arm runs (default: this one)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep it")
    parser.add_argument("--reuse", action="store_true", help="with --keep: reuse source/layouts")
    args = parser.parse_args(argv)
    meta = pd.read_csv(args.fsdd / "metadata.csv", dtype=str)
    meta["path"] = [str((args.fsdd / "recordings" / f).resolve()) for f in meta["fname"]]
    meta["take"] = meta["fname"].str.rsplit("_", n=1).str[1].str.removesuffix(".wav").astype(int)
    meta = meta.rename(columns={"label": "labels"})
    low = meta["labels"].isin(list("01234"))
    held = meta["speaker"] == TEST_SPEAKER
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    env.pop("MODE", None)
    shorten = []
    if args.epochs is not None:
        shorten += ["--max-epochs", str(args.epochs)]
    if args.epoch_size is not None:
        shorten += ["--set", f"epoch_size={args.epoch_size}"]
    common = ["--scale", "cpu", "--folds", "0", "--no-progress", "--device", "cpu", *shorten]
    variants = {} if args.no_finetune else {"finetune": []}
    for text in args.variant:
        name, _, settings = text.partition(":")
        variants[name] = [x for kv in settings.split(",") for x in ("--set", setting(kv))]

    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        source_data = work / "source" / "data"
        source_env = {**env, "FREESOUND_DATA_DIR": str(source_data)}
        source_dir = source_data / "experiments" / EXPERIMENT
        found = best_checkpoint(fold_dir(source_dir, 0)) if args.reuse else None
        if found is None:
            source = meta[low & ~held][["path", "labels"]]
            layout(source, meta[low & held][["path", "labels"]], work / "source", env)
            _, seconds = run(["train_folds.py", "--experiment", EXPERIMENT, *common, "--force"],
                             source_env, "source training")  # fmt: skip
            found = best_checkpoint(fold_dir(source_dir, 0))
            print(f"source: {len(source)} clips, fold 0 trained in {seconds:.0f} s", flush=True)
        source_checkpoint = str(found[0])
        print(f"source checkpoint: {source_checkpoint} (val lwlrap {found[1]:.4f})", flush=True)

        probe = args.probe_repo / "train_probe.py"
        rows = []
        for k in [int(s) for s in args.sizes.split(",")]:
            target = meta[~low & ~held & (meta["take"] < k)][["path", "labels"]]
            test = meta[~low & held][["path", "labels"]]
            folder = work / f"target_k{k}"
            data = folder / "data"
            if not (args.reuse and (data / "train_folds.csv").is_file()):
                layout(target, test, folder, env)
            target_env = {**env, "FREESOUND_DATA_DIR": str(data)}
            score = ["--score", str(data / "test_labels.csv"), "--device", "cpu", "--no-progress"]
            arms: dict[str, list[str] | None] = {} if args.no_scratch else {"scratch": None}
            arms.update(variants)
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for arm, settings in arms.items():
                    name = f"{arm}_s{seed}"
                    spec = folder / f"{name}.json"
                    spec.write_text(f'{{"base": "{EXPERIMENT}", "name": "{name}"}}')
                    extra = [] if settings is None else ["--init-from", source_checkpoint]
                    _, seconds = run(
                        ["train_folds.py", "--experiment", str(spec), *common, "--seed",
                         str(seed), "--force", *extra, *(settings or [])],
                        target_env, f"{arm} k={k} seed {seed}")  # fmt: skip
                    trained = best_checkpoint(fold_dir(data / "experiments" / name, 0))[0]
                    out, _ = run(["tag_audio.py", str(data / "test"), "--model", str(trained),
                                  *score], target_env, "tag_audio.py")  # fmt: skip
                    rows.append((k, len(target), arm, seed, score_line(out), seconds))
                    print(f"k={k} {arm} seed {seed}: {rows[-1][4]:.4f} in {seconds:.0f} s",
                          flush=True)  # fmt: skip
                if probe.is_file() and seed == 0:  # deterministic; later runs would reuse its cache
                    name = f"probe_s{seed}"
                    _, seconds = run(
                        [str(probe), "--init-from", source_checkpoint, "--experiment", name,
                         "--force", "--device", "cpu", "--no-progress"],
                        target_env, f"probe k={k} seed {seed}", cwd=args.probe_repo)  # fmt: skip
                    tag = ["tag_audio.py", str(data / "test"), "--experiment", name, *score]
                    out, _ = run(tag, target_env, "tag_audio.py", cwd=args.probe_repo)
                    rows.append((k, len(target), "probe", seed, score_line(out), seconds))
                    print(f"k={k} probe seed {seed}: {rows[-1][4]:.4f} in {seconds:.0f} s",
                          flush=True)  # fmt: skip
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    results = pd.DataFrame(rows, columns=["k", "clips", "arm", "seed", "lwlrap", "seconds"])
    summary = results.groupby(["k", "clips", "arm"], sort=False).agg(
        lwlrap_mean=("lwlrap", "mean"),
        lwlrap_std=("lwlrap", lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0),
        per_seed=("lwlrap", lambda v: " ".join(f"{x:.3f}" for x in v)),
        seconds_mean=("seconds", "mean"),
    )
    reduced = f", reduced: {' '.join(shorten)}" if shorten else ""
    print(f"\nFSDD transfer, test speaker {TEST_SPEAKER} digits 5-9 ({(~low & held).sum()} "
          f"clips), {EXPERIMENT} --scale cpu, {args.threads} threads{reduced}")  # fmt: skip
    print(summary.reset_index().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
