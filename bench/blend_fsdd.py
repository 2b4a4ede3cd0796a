"""Choosing the ensemble by out-of-fold CV, measured on real recordings (FSDD digits) through the
user's own commands: does the blend `select_ensemble.py` picks hold up on a speaker no model saw?

    make_dataset.py train.csv --out DIR --test held_out.csv     (one speaker held out)
    make_folds.py
    train_folds.py --experiment E --scale cpu                   (every fold, each candidate E)
    predict_folds.py --experiment E                             (out-of-fold + test predictions)
    select_ensemble.py --write chosen.json
    blend_predict.py --experiments chosen.json --out chosen.csv (and: every candidate)
    stacking_train.py --experiment chosen.json --no-corrections (the MLP on the chosen set)
    stacking_predict.py --experiments chosen.json               (chosen + MLP: submission.csv)

    python bench/blend_fsdd.py [--epochs 8] [--epoch-size 512] [--per-digit N] [--threads 2]
                               [--stack-epochs N] [--keep DIR]
    python bench/blend_fsdd.py --keep DIR --reuse      # a former run's layout and trained folds

The candidates are first-level experiments at --scale cpu (five registered ones, whose
architectures and augmentations differ; FSDD has no noisy set, so their sampling shares and
corrections do not apply) and `searched`: corr_noisy_007 with the settings of the best trial of
bench/search_fsdd.py (batch 16, lr 8.5e-4, dropout 0.09, patience 4, factor 0.62). Each is
trained on every fold for --epochs epochs of --epoch-size samples (--per-digit keeps the first N
recordings of each speaker and digit, as bench/search_fsdd.py does). Prints, for every candidate,
the chosen blend and the blend of every candidate: the out-of-fold CV lwlrap (the other five
speakers) and the held-out speaker's lwlrap and top-1 accuracy, scored from the very files the
commands write (predict_folds.py's probs.csv, blend_predict.py's and stacking_predict.py's
submissions) against make_dataset.py's test_labels.csv. The stacking MLP is the chosen file's
base at full size (a small network); --stack-epochs caps its epochs for a shorter run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.fsdd_own_sounds import (  # noqa: E402
    add_fsdd_options,
    lay_out,
    read_metadata,
    run,
    split_speaker,
)
from src.runs import read_finished  # noqa: E402
from src.tools.scoring import read_truth, score_tags  # noqa: E402

REGISTERED = ["corr_noisy_007", "corr_noisy_003", "auxiliary_019", "corrections_002",
              "corrections_003"]  # fmt: skip
SEARCHED = {
    "base": "corr_noisy_007",
    "name": "searched",
    "batch_size": 16,
    "optimizer": {"params": {"lr": 0.00085}},
    "model": {"params": {"dropout": 0.09}},
    "scheduler": {"patience": 4, "factor": 0.62},
}


def held_out_score(csv: Path, truth: pd.DataFrame) -> tuple[float, float]:
    """lwlrap and top-1 accuracy of a fname + class columns table against `truth`."""
    table = pd.read_csv(csv)
    classes = [c for c in table.columns if c != "fname"]
    score = score_tags(list(table["fname"]), table[classes].to_numpy(), classes, truth)
    if score.untagged:
        raise SystemExit(f"{csv}: {len(score.untagged)} labelled test clips not predicted")
    return score.lwlrap, score.top1


def oof_cv(data: Path, name: str) -> float:
    """predict_folds.py's out-of-fold CV lwlrap of one experiment."""
    scores = json.loads((data / "predictions" / name / "val_lwlrap.json").read_text())
    return float(scores["overall_lwlrap"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_fsdd_options(parser, per_digit=True)
    parser.add_argument("--epochs", type=int, default=8, help="every training's epoch cap")
    parser.add_argument("--epoch-size", type=int, default=512, help="samples per epoch")
    parser.add_argument("--stack-epochs", type=int, default=None, help="cap the MLP's epochs")
    parser.add_argument("--reuse", action="store_true", help="with --keep: reuse the layout")
    args = parser.parse_args(argv)
    meta = read_metadata(args.fsdd, args.speaker, args.per_digit)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "data"
        env = {**os.environ, "FREESOUND_DATA_DIR": str(data), "OMP_NUM_THREADS": str(args.threads)}
        env.pop("MODE", None)
        held_out = split_speaker(meta, args.fsdd, args.speaker, work)
        if not (args.reuse and (data / "train_folds.csv").is_file()):
            lay_out(work, data, env)
        searched = work / "searched.json"
        searched.write_text(json.dumps(SEARCHED, indent=1))
        shorten = ["--max-epochs", str(args.epochs), "--set", f"epoch_size={args.epoch_size}"]
        candidates = {name: name for name in REGISTERED} | {"searched": str(searched)}
        seconds = {}
        for name, experiment in candidates.items():
            started = time.time()
            # Rerunning skips finished folds and resumes an interrupted one.
            run(["train_folds.py", "--experiment", experiment, "--scale", "cpu", "--device",
                 "cpu", "--no-progress", *shorten], env, f"train_folds.py {name}")  # fmt: skip
            run(["predict_folds.py", "--experiment", name, "--device", "cpu", "--no-progress"],
                env, f"predict_folds.py {name}")  # fmt: skip
            folds = [read_finished(data / "experiments" / name / f"fold_{k}") for k in range(5)]
            seconds[name] = sum(f["seconds"] for f in folds)
            print(f"{name}: trained and predicted ({time.time() - started:.0f} s now, "
                  f"{seconds[name]:.0f} s of training)", flush=True)  # fmt: skip
        chosen = work / "chosen.json"
        out, _ = run(["select_ensemble.py", "--write", str(chosen), "--workers", "1",
                      "--no-progress", "--plot", str(work / "chosen.png")],
                     env, "select_ensemble.py")  # fmt: skip
        print(out, flush=True)
        members = json.loads(chosen.read_text())["inputs"]
        blends = {"chosen blend": str(chosen), "every candidate": ",".join(candidates)}
        truth = read_truth(data / "test_labels.csv")
        rows = []
        for name in candidates:
            cv = oof_cv(data, name)
            test = held_out_score(data / "predictions" / name / "probs.csv", truth)
            rows.append({"predictions": name, "members": 1, "oof_lwlrap": cv,
                         "test_lwlrap": test[0], "test_top1": test[1],
                         "train_s": seconds[name]})  # fmt: skip
        for label, experiments in blends.items():
            submission = work / f"{label.replace(' ', '_')}.csv"
            run(["blend_predict.py", "--experiments", experiments, "--out", str(submission)],
                env, f"blend_predict.py {label}")  # fmt: skip
            test = held_out_score(submission, truth)
            size = len(members) if label == "chosen blend" else len(candidates)
            rows.append({"predictions": label, "members": size, "oof_lwlrap": None,
                         "test_lwlrap": test[0], "test_top1": test[1]})  # fmt: skip
        cap = [] if args.stack_epochs is None else ["--max-epochs", str(args.stack_epochs)]
        started = time.time()
        # As select_ensemble.py suggests it: a dataset of one's own has no correction files.
        run(["stacking_train.py", "--experiment", str(chosen), "--no-corrections", "--device",
             "cpu", "--no-progress", *cap], env, "stacking_train.py chosen")  # fmt: skip
        stack_seconds = time.time() - started
        out, _ = run(["stacking_predict.py", "--experiments", str(chosen), "--device", "cpu",
                      "--no-progress"], env, "stacking_predict.py chosen")  # fmt: skip
        print(out, flush=True)
        table = pd.read_csv(data / "predictions" / "ensemble_oof_lwlrap.csv")
        stacked_cv = float(table.loc[table["level"] == "blend", "oof_lwlrap"].iloc[0])
        test = held_out_score(data / "submission.csv", truth)
        rows.append({"predictions": "chosen + MLP", "members": len(members) + 1,
                     "oof_lwlrap": stacked_cv, "test_lwlrap": test[0], "test_top1": test[1],
                     "train_s": stack_seconds})  # fmt: skip
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    results = pd.DataFrame(rows)
    singles = results[results["members"] == 1]
    in_blend = singles[singles["predictions"].isin(members)]
    best = in_blend.loc[in_blend["oof_lwlrap"].idxmax()]
    chosen_row = results[results["predictions"] == "chosen blend"].iloc[0]
    everything = results[results["predictions"] == "every candidate"].iloc[0]
    print(f"FSDD ({len(meta)} clips), test speaker {args.speaker} ({held_out.sum()} clips), "
          f"{len(candidates)} candidates at --scale cpu, every fold {args.epochs} epochs of "
          f"{args.epoch_size} samples, {args.threads} threads; chosen: "
          f"{','.join(members)}")  # fmt: skip
    print(results.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-"))
    print(f"held-out lwlrap: chosen blend {chosen_row['test_lwlrap']:.4f}, its best member by CV "
          f"({best['predictions']}) {best['test_lwlrap']:.4f} "
          f"({chosen_row['test_lwlrap'] - best['test_lwlrap']:+.4f}), every candidate "
          f"{everything['test_lwlrap']:.4f} "
          f"({chosen_row['test_lwlrap'] - everything['test_lwlrap']:+.4f})")  # fmt: skip
    stacked = results[results["predictions"] == "chosen + MLP"].iloc[0]
    print(
        f"with the stacking MLP (stacking_predict.py): {stacked['test_lwlrap']:.4f} "
        f"({stacked['test_lwlrap'] - chosen_row['test_lwlrap']:+.4f} over the chosen blend)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
