"""How well does the noisy selection separate clean clips from wrongly labelled ones?

    python bench/noisy_selection.py --data DIR [--experiments A,B,...] [--thresholds 0.5,1]

Needs a data directory made by make_synthetic.py (its synthetic_truth.csv says which noisy clips
carry wrong labels, corrupted = 1) with trained experiments (default: the 7 first-level ones,
e.g. after `ensemble_pipeline.sh --smoke`). For each threshold it prints how many noisy clips
`make_corrections.py noisy` would keep, the precision and recall of "kept = clean", and with
--relabel how many kept clips would get exactly their true labels. The default threshold is
marked with '*'. Measures only; never asserts.

It caches the noisy predictions under DIR/predictions/noisy/ (as make_corrections.py does):
run it on a copy of a tree that must stay untouched.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.config import ConfigError, Vocabulary, get_paths, load_vocabulary
from src.data.labels import read_labels_csv
from src.experiments import FIRST_LEVEL
from src.tools.corrections import (
    DEFAULT_LABEL_THRESHOLD,
    DEFAULT_NOISY_THRESHOLD,
    predict_noisy,
    select_noisy,
)

THRESHOLDS = (0.25, 0.34, 0.5, 0.6, 0.75, 0.9, 1.0)


def label_set(labels: str) -> frozenset[str]:
    return frozenset(Vocabulary.split(labels))


def evaluate(selection: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Precision / recall of kept = clean, and exact labels among the kept clips."""
    merged = selection.merge(truth[["fname", "true_labels", "corrupted"]], on="fname")
    kept, clean = merged["kept"], merged["corrupted"] == 0
    right = [
        label_set(new) == label_set(true)
        for new, true in zip(merged["new_labels"], merged["true_labels"])
    ]
    n_kept = int(kept.sum())
    return {
        "kept": n_kept,
        "share": n_kept / len(merged),
        "precision": float((kept & clean).sum() / n_kept) if n_kept else float("nan"),
        "recall": float((kept & clean).sum() / clean.sum()),
        "exact": float((kept & pd.Series(right)).sum() / n_kept) if n_kept else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=None, help="default: FREESOUND_DATA_DIR")
    parser.add_argument("--experiments", default=",".join(FIRST_LEVEL))
    parser.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    parser.add_argument("--label-threshold", type=float, default=DEFAULT_LABEL_THRESHOLD)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.data is not None:
        os.environ["FREESOUND_DATA_DIR"] = str(args.data)
    paths = get_paths()
    truth_path = paths.input_dir / "synthetic_truth.csv"
    try:
        if not truth_path.is_file():
            raise ConfigError(f"{truth_path}: not found; this bench needs a synthetic dataset")
        truth = pd.read_csv(truth_path, dtype={"fname": str}, keep_default_na=False)
        truth = truth[truth["set"] == "noisy"]
        vocabulary = load_vocabulary(paths)
        experiments = [name for name in args.experiments.split(",") if name]
        table = read_labels_csv(paths.train_noisy_csv, vocabulary)
        probs = predict_noisy(paths, vocabulary, experiments, args.device, progress=False)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    thresholds = sorted({float(t) for t in args.thresholds.split(",")} | {DEFAULT_NOISY_THRESHOLD})
    clean = int((truth["corrupted"] == 0).sum())
    print(
        f"{len(truth)} noisy clips, {clean} clean ({clean / len(truth):.0%}); experiments: "
        f"{', '.join(experiments)}"
    )
    print(
        f"{'threshold':>10} {'kept':>5} {'share':>6} {'precision':>9} {'recall':>7}"
        f"   {'--relabel exact labels':>22}"
    )
    for threshold in thresholds:
        kept = evaluate(select_noisy(table, probs, vocabulary, threshold), truth)
        relabelled = evaluate(
            select_noisy(table, probs, vocabulary, threshold, True, args.label_threshold), truth
        )
        mark = "*" if threshold == DEFAULT_NOISY_THRESHOLD else " "
        print(
            f"{threshold:>9.2f}{mark} {kept['kept']:>5} {kept['share']:>6.1%} "
            f"{kept['precision']:>9.3f} {kept['recall']:>7.3f}   {relabelled['exact']:>22.3f}"
        )
    print("* default threshold of make_corrections.py noisy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
