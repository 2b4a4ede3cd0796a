"""How fast does select_ensemble.py score blends at the competition's size?

    python bench/select_ensemble.py [--experiments 15] [--sizes 1-15] [--workers 2]

Target: every subset of 15 experiments (32,767 blends) on an out-of-fold table of the
competition's size (4,970 curated clips x 80 classes, 5,752 labels) in under 60 s on 2 cores.
The tables are synthetic (correlated noisy predictions of the labels; the scorer's work does
not depend on the values), scored by the search select_ensemble.py runs
(`src.tools.lab.blend_search.search`). Prints blends/s, the total time and its ratio to the
target; never asserts.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.models.metrics import lwlrap
from src.tools.lab.blend_search import BlendTables, count_blends, default_workers, search
from src.tools.lab.selection import parse_sizes
from src.utils import geometric_mean

TARGET_SECONDS = 60.0
CLIPS, CLASSES, LABELS = 4970, 80, 5752  # FSDKaggle2019's curated set


def synthetic_oof(experiments: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(experiments, clips, classes) probabilities and the (clips, classes) labels."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((CLIPS, CLASSES))
    truth[np.arange(CLIPS), rng.integers(0, CLASSES, CLIPS)] = 1
    extra = rng.choice(CLIPS * CLASSES, LABELS - CLIPS, replace=False)
    truth.flat[extra] = 1
    shared = rng.normal(size=(CLIPS, CLASSES))
    logits = [
        2.5 * truth - 3 + shared + rng.normal(scale=1.5, size=(CLIPS, CLASSES))
        for _ in range(experiments)
    ]
    return 1 / (1 + np.exp(-np.stack(logits))), truth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=15)
    parser.add_argument("--sizes", default=None, help="default: 1-EXPERIMENTS (every subset)")
    parser.add_argument("--workers", type=int, default=min(2, default_workers()))
    parser.add_argument("--method", default="exhaustive", choices=["exhaustive", "greedy"])
    args = parser.parse_args()
    sizes = parse_sizes(args.sizes or f"1-{args.experiments}")
    probabilities, truth = synthetic_oof(args.experiments)
    started = time.perf_counter()
    tables = BlendTables.build(probabilities, truth)
    prepared = time.perf_counter() - started
    print(
        f"{args.experiments} experiments x {CLIPS} clips x {CLASSES} classes, sizes "
        f"{args.sizes or f'1-{args.experiments}'}: {count_blends(args.experiments, sizes):,} "
        f"blends; {args.workers} worker(s); {platform.processor() or platform.machine()}"
    )
    result = search(tables, sizes, args.method, keep=10, workers=args.workers)
    rate = result.evaluated / result.seconds
    print(f"prepare (logs, labels): {prepared:.2f} s")
    print(
        f"{result.method}: {result.evaluated:,} blends in {result.seconds:.1f} s = "
        f"{rate:,.0f} blends/s ({rate / args.workers:,.0f} per worker)"
    )
    if args.method == "exhaustive" and result.evaluated == 2**args.experiments - 1:
        print(
            f"target: every subset of {args.experiments} in {TARGET_SECONDS:.0f} s -> "
            f"{result.seconds:.1f} s, {result.seconds / TARGET_SECONDS:.2f} of the target "
            f"({TARGET_SECONDS / result.seconds:.1f}x faster than needed)"
        )
    best = result.best
    members = [probabilities[m] for m in best.members]
    direct = lwlrap(truth, members[0] if len(members) == 1 else geometric_mean(members))
    print(
        f"best blend: {len(best.members)} members, lwlrap {best.score:.6f} "
        f"(geometric_mean + lwlrap: {direct:.6f}, equal: {direct == best.score})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
