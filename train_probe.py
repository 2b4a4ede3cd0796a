"""Train a linear probe on a frozen trained network: new classes in minutes on a CPU.

    python train_probe.py --init-from corr_noisy_007 --experiment my_probe
    python train_probe.py --init-from mine_digits:0 --experiment my_probe --folds 0,1
    python train_probe.py --init-from data/experiments/x/fold_0/model-072-0.886906.pth \\
        --experiment my_probe --data-dir data/mine

On a dataset in the Kaggle layout (make_dataset.py's, with train_folds.csv from make_folds.py):
the frozen SOURCE embeds every curated clip (the pooled features its classifier sees, per tile;
computed once per source checkpoint and cached under <data>/cache/embeddings/), then for each
fold a scikit-learn logistic regression per class (one-vs-rest, multi-label) is fitted on the
other folds' clips and scored on the fold's: its validation lwlrap, printed per fold.

SOURCE is a trained or imported first-level experiment (fold k probes on its fold k), NAME:K
(every fold on its fold K), or a checkpoint file. The probe is saved as the experiment NAME in
<data>/experiments/NAME (the source network with a linear head, params.json recording the
source and the SHA-256 of each checkpoint used), so `tag_audio.py --experiment NAME`,
`--score`, `demo.py --experiment NAME`, predict_folds.py and export_onnx.py use it as any other
experiment. Rerunning the same command skips the folds already probed; --force starts afresh.
See README, "Start from a trained model".
"""

from __future__ import annotations

import argparse
import sys

from src.cli import (
    add_data_dir,
    add_device,
    add_folds,
    add_force,
    add_no_progress,
    fail,
    parse_folds,
    resolve_device,
    setup_logging,
    use_data_dir,
)
from src.config import ConfigError, get_paths, load_vocabulary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--init-from",
        required=True,
        metavar="SOURCE",
        help="the frozen network: an experiment NAME, NAME:K (its fold K for every fold), or a "
        "checkpoint .pth",
    )
    parser.add_argument(
        "--experiment", required=True, metavar="NAME", help="the probe experiment to write"
    )
    add_folds(parser, "folds to probe")
    add_data_dir(parser)
    add_device(parser)
    add_force(parser, "delete an existing probe experiment and probe again")
    add_no_progress(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_data_dir(args)
    setup_logging()
    try:
        folds = parse_folds(args.folds)
        device = resolve_device(args.device)
        from src.tools.probe import train_probe

        paths = get_paths()
        results = train_probe(
            args.experiment,
            args.init_from,
            paths,
            load_vocabulary(paths),
            folds,
            device,
            args.force,
            progress=not args.no_progress,
            runtime={"device": device},
        )
    except ConfigError as error:
        return fail(error)
    for result in results:
        how = "already probed" if result.reused else f"{result.seconds:.1f} s"
        print(f"fold {result.fold}: validation lwlrap {result.lwlrap:.4f} ({how})")
    mean = sum(r.lwlrap for r in results) / len(results)
    print(f"{args.experiment}: mean validation lwlrap {mean:.4f} over {len(results)} fold(s)")
    print(
        f"tag with: python tag_audio.py FILES --experiment {args.experiment}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
