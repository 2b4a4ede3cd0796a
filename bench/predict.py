"""Prediction speed: test clips per second for one model and for the full ensemble.

    python bench/predict.py [--device cuda] [--clips 64] [--seconds 7.8]

The full ensemble is 35 CNNs (7 experiments x 5 folds, full size, tile step 128 as the final
kernel uses) plus 15 stacking MLPs. Clips are synthetic spectrograms of the given mean length
(FAT2019's curated clips average 7.8 s); log-mel extraction is included (torch path, batched on
the device). Prints clips/s, tiles/s and the estimated time of the whole ensemble on a test set
of 3,400 clips (the private test set was about 3x the public one), against Kaggle's 1-hour
limit. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import best_time, describe_hardware, table
from train_step import make_model

from src.data.audio import TorchLogMel
from src.models.fcnet import FCNet
from src.prediction.tiling import Predictor

CNNS, MLPS, TEST_CLIPS, LIMIT_S = 35, 15, 3400, 3600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cuda = torch.cuda.is_available()
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--clips", type=int, default=64 if cuda else 8)
    parser.add_argument("--seconds", type=float, default=7.8, help="mean clip length")
    parser.add_argument("--batch", type=int, default=128 if cuda else 16)
    parser.add_argument("--amp", default="bf16" if cuda else "off")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the smoke-size network (width 8, 64-frame tiles at step 32): a quick check",
    )
    args = parser.parse_args(argv)
    if not cuda:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    lengths = rng.exponential(args.seconds, size=args.clips).clip(0.5, 30.0)
    waves = [rng.normal(0, 0.1, int(s * 44100)).astype(np.float32) for s in lengths]
    extractor = TorchLogMel(device=args.device)
    specs = extractor.spectrograms(waves)
    logmel_s = best_time(lambda: extractor.spectrograms(waves), args.device, repeat=3)
    step = 32 if args.smoke else 128  # the final kernel's step: half a crop

    def tiles_time(amp: str, channels_last: bool) -> tuple[int, float]:
        model = make_model(
            args.device, amp, channels_last=channels_last, compile=False, smoke=args.smoke
        )
        predictor = Predictor(model, args.device, args.batch, tile_step=step)
        n_tiles = sum(len(t) for t in predictor.predict_tiles(specs))
        return n_tiles, best_time(lambda: predictor.predict_tiles(specs), args.device, repeat=2)

    n_tiles, faithful_s = tiles_time("off", False)  # the original: fp32, contiguous
    cnn_s = tiles_time(args.amp, cuda)[1] if (args.amp != "off" or cuda) else faithful_s
    mlp = FCNet(560, 80, 512, 1, 0.1).to(args.device).eval()
    stack_inputs = torch.rand(args.clips, 560, device=args.device)
    with torch.no_grad():
        mlp_s = best_time(lambda: torch.sigmoid(mlp(stack_inputs)), args.device, repeat=5)

    per_clip_one = (logmel_s + cnn_s) / args.clips
    per_clip_all = (logmel_s + CNNS * cnn_s + MLPS * mlp_s) / args.clips
    rows = [
        {"what": "log-mel (torch, batched)", "clips/s": f"{args.clips / logmel_s:.1f}"},
        {
            "what": "one CNN, tiles only, fp32 (faithful)",
            "tiles/s": f"{n_tiles / faithful_s:.1f}",
            "vs faithful": "1.00x",
        },
        {
            "what": f"one CNN (log-mel + tiles), amp {args.amp}",
            "clips/s": f"{1 / per_clip_one:.1f}",
            "tiles/s": f"{n_tiles / cnn_s:.1f}",
            "vs faithful": f"{faithful_s / cnn_s:.2f}x",
            f"{TEST_CLIPS} clips": f"{TEST_CLIPS * per_clip_one / 60:.1f} min",
        },
        {
            "what": f"full ensemble ({CNNS} CNNs + {MLPS} MLPs)",
            "clips/s": f"{1 / per_clip_all:.2f}",
            f"{TEST_CLIPS} clips": f"{TEST_CLIPS * per_clip_all / 60:.1f} min",
            "of Kaggle's hour": f"{100 * TEST_CLIPS * per_clip_all / LIMIT_S:.0f}%",
        },
    ]
    print(
        f"{describe_hardware(args.device)}; {args.clips} clips of mean {args.seconds} s, "
        f"{n_tiles} tiles at step {step}, batch {args.batch}, amp {args.amp}"
    )
    columns = ["what", "clips/s", "tiles/s", "vs faithful", f"{TEST_CLIPS} clips"]
    print(table(rows, [*columns, "of Kaggle's hour"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
