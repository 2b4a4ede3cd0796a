"""Export the network of a checkpoint to ONNX, checked against PyTorch with ONNX Runtime.

    python export_onnx.py data/experiments/corr_noisy_007/fold_0/model-072-0.886906.pth
    python export_onnx.py CHECKPOINT --out corr_noisy_007.onnx

The graph has a dynamic batch axis and outputs the probabilities `model.predict` gives (the
sigmoid of the main head) in float32, for input tiles (B, 3, 128, crop) after the validation
transform (stacking MLPs: (B, in_channels)). The classes and the crop are stored in the file,
so `tag_audio.py --onnx FILE` and `demo.py --onnx FILE` run it without the checkpoint and
without PyTorch doing the network's work. See docs/demo.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.cli import check_output_file, fail
from src.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="model-EEE-S.pth")
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="the .onnx file to write (default: beside it)"
    )
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (17)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from src.runs import checkpoint_file
    from src.tools.onnx_export import TOLERANCE, export_checkpoint

    try:
        checkpoint_file(args.checkpoint, "CHECKPOINT")
        check_output_file(args.out, "--out")
        report = export_checkpoint(args.checkpoint, args.out, args.opset)
    except ConfigError as error:
        return fail(error)
    shape = ", ".join(map(str, report.input_shape))
    print(
        f"{report.path}: {report.architecture}, input (batch, {shape}), "
        f"ONNX Runtime vs PyTorch max difference {report.max_difference:.1e} "
        f"(<= {TOLERANCE:g}), {report.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
