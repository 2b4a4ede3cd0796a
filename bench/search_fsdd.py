"""A real search on real recordings (FSDD digits) through the user's own commands:

    make_dataset.py train.csv --out DIR --test held_out.csv     (one speaker held out)
    make_folds.py
    search.py --experiment base.json --space space.json --trials N --folds 0 --scale cpu
    tag_audio.py DIR/test --model <best fold-0 checkpoint> --score DIR/test_labels.csv
                                                                (the default and the best trial)

    python bench/search_fsdd.py [--trials 12] [--epochs 20] [--epoch-size 1024] [--per-digit N]
                                [--threads 2] [--keep DIR]

The base is corr_noisy_007 at --scale cpu (with --epochs as its epoch cap and --epoch-size
samples per epoch; --per-digit keeps the first N recordings of each speaker and digit, for a
quicker run on a busy machine); the study's first
trial is the base's own settings (queued), so the search is measured against the default.
Prints every trial, the default against the best (fold-0 validation lwlrap and the held-out
speaker's test lwlrap), how many trials the median pruner stopped, and the training time it
saved: each pruned trial's epochs left to its cap times its seconds per epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.fsdd_own_sounds import (  # noqa: E402
    add_fsdd_options,
    lay_out,
    read_metadata,
    run,
    score_line,
    split_speaker,
)
from src.runs import best_checkpoint, fold_dir  # noqa: E402

# FSDD has no noisy set: the sampling shares and Lsoft settings change nothing there.
SPACE = {
    "optimizer.params.lr": {"log": [3e-4, 3e-3]},
    "model.params.dropout": {"uniform": [0.0, 0.3]},
    "scheduler.patience": {"int": [2, 5]},
    "scheduler.factor": {"uniform": [0.5, 0.8]},
    "batch_size": [16, 32, 64],
}
STUDY = "fsdd"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_fsdd_options(parser, per_digit=True)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=20, help="the trials' epoch cap")
    parser.add_argument("--epoch-size", type=int, default=1024, help="samples per epoch")
    args = parser.parse_args(argv)
    meta = read_metadata(args.fsdd, args.speaker, args.per_digit)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        held_out = split_speaker(meta, args.fsdd, args.speaker, work)
        data = work / "data"
        env = {**os.environ, "FREESOUND_DATA_DIR": str(data), "OMP_NUM_THREADS": str(args.threads)}
        env.pop("MODE", None)
        lay_out(work, data, env)
        base, space = work / "fsdd_base.json", work / "fsdd_space.json"
        base.write_text(
            json.dumps(
                {"base": "corr_noisy_007", "max_epochs": args.epochs, "epoch_size": args.epoch_size}
            )
        )
        space.write_text(json.dumps(SPACE))
        search = [
            "search.py",
            "--experiment",
            str(base),
            "--space",
            str(space),
            "--study",
            STUDY,
            "--folds",
            "0",
            "--scale",
            "cpu",
            "--device",
            "cpu",
            "--no-progress",
        ]
        run([*search, "--trials", "0"], env, "search.py --trials 0")  # creates the study
        storage = f"sqlite:///{data}/search/{STUDY}.db"
        study = optuna.load_study(study_name=STUDY, storage=storage)
        study.enqueue_trial(
            {
                "optimizer.params.lr": 0.001,
                "model.params.dropout": 0.1,
                "scheduler.patience": 3,
                "scheduler.factor": 0.6,
                "batch_size": 32,
            }
        )  # the cpu scale's own settings
        started = time.time()
        run(
            [*search, "--trials", str(args.trials), "--plot", str(work / "fsdd.png")],
            env,
            "search.py",
        )
        search_seconds = time.time() - started
        study = optuna.load_study(study_name=STUDY, storage=storage)
        rows = []
        for trial in study.trials:
            epochs = len(trial.intermediate_values)
            seconds = trial.user_attrs.get("seconds", 0.0)
            saved = (args.epochs - epochs) * seconds / epochs if trial.state.name == "PRUNED" else 0
            rows.append(
                {
                    "trial": trial.number,
                    "state": trial.state.name,
                    "val_lwlrap": trial.value,
                    "epochs": epochs,
                    "seconds": seconds,
                    "saved_s": saved,
                    **trial.params,
                }
            )
        trials = pd.DataFrame(rows)
        complete = trials[trials["state"] == "COMPLETE"]
        best = complete.loc[complete["val_lwlrap"].idxmax()]
        default = trials.iloc[0]
        score = ["--score", str(data / "test_labels.csv"), "--device", "cpu", "--no-progress"]
        held = {}
        for label, number in (("default", int(default["trial"])), ("best", int(best["trial"]))):
            folder = fold_dir(data / "experiments" / f"{STUDY}_t{number}", 0)
            out_tag, _ = run(
                [
                    "tag_audio.py",
                    str(data / "test"),
                    "--model",
                    str(best_checkpoint(folder)[0]),
                    *score,
                ],
                env,
                "tag_audio.py",
            )
            held[label] = score_line(out_tag)
    print(
        f"FSDD ({len(meta)} clips), fold 0, test speaker {args.speaker} ({held_out.sum()} "
        f"clips); corr_noisy_007 --scale cpu, {args.epochs} epochs of {args.epoch_size} "
        f"samples, {args.trials} trials, {args.threads} threads"
    )
    print(trials.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))
    pruned = trials[trials["state"] == "PRUNED"]
    print(
        f"default (trial {int(default['trial'])}): val_lwlrap {default['val_lwlrap']:.4f}, "
        f"held-out lwlrap {held['default'][0]:.4f}, top-1 {held['default'][1]:.4f}"
    )
    print(
        f"best (trial {int(best['trial'])}): val_lwlrap {best['val_lwlrap']:.4f}, "
        f"held-out lwlrap {held['best'][0]:.4f}, top-1 {held['best'][1]:.4f}"
    )
    saved, spent = pruned["saved_s"].sum(), trials["seconds"].sum()
    print(
        f"pruned {len(pruned)} of {len(trials)} trials; training time saved by pruning "
        f"~{saved:.0f} s of {spent + saved:.0f} s without it; search wall time "
        f"{search_seconds:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
