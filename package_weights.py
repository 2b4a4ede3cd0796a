"""Zip the weights the Kaggle kernels need, ready to upload as the dataset 'freesound-train'.

    python package_weights.py [--experiments a,b,c] [--out dist/freesound-train.zip]

Takes the best checkpoint of each fold and params.json of each experiment from the data
directory's experiments/ (stacking experiments bring their seven first-level inputs): all five
folds of each, as the kernels predict with every fold model (a partial import is refused). Default:
what the stacking kernel needs, which also covers the default single and blend kernels.
Inside the zip: experiments/<experiment>/params.json, experiments/<experiment>/fold_<k>/*.pth.
See docs/kaggle.md for the upload.
"""

from __future__ import annotations

import argparse

from src.cli import add_data_dir, check_output_file, fail, names_list, use_data_dir
from src.config import ConfigError, get_paths
from src.experiments import STACKING
from src.kaggle.build import package_weights, upload_instructions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiments",
        default=",".join(STACKING),
        help="experiments to package (default: the stacking kernel's)",
    )
    parser.add_argument(
        "--out",
        default="dist/freesound-train.zip",
        help="the zip to write (default: dist/freesound-train.zip)",
    )
    add_data_dir(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_data_dir(args)
    names = names_list(args.experiments)
    try:
        if not names:
            raise ConfigError("--experiments names no experiment")
        check_output_file(args.out, "--out")
        package = package_weights(get_paths().experiments_dir, names, args.out)
    except ConfigError as error:
        return fail(error)
    checkpoints = sum(name.endswith(".pth") for name in package.files)
    print(
        f"{package.path}: {package.size / 2**20:.1f} MiB, {len(package.experiments)} "
        f"experiments, {checkpoints} checkpoints ({', '.join(package.experiments)})"
    )
    print(upload_instructions(package))
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
