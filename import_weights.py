"""Import the original solution's released checkpoints into this project's layout.

    python import_weights.py experiments.zip            # or an unpacked experiments/ folder
    python import_weights.py experiments/ --force       # replace experiments imported before

For every experiment and fold found (<experiment>/fold_<k>/model-EEE-S.pth), the checkpoint is
read with weights_only=True, float16 tensors are cast to float32, the original's key names are
mapped to this project's, the network is built from the checkpoint's own architecture
arguments and loaded strictly, and the experiment is written to <data>/experiments/<experiment>/
(params.json, fold_<k>/model-EEE-S.pth, fold_<k>/finished.json) in one rename, so tag_audio.py,
demo.py, predict_folds.py, stacking_predict.py, build_kernel.py and package_weights.py use it
as if it had been trained here. An experiment that cannot be imported is named with the reason
and nothing is written for it; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from src.cli import add_data_dir, add_force, fail, setup_logging, use_data_dir
from src.config import (
    REPO_ROOT,
    ConfigError,
    Vocabulary,
    get_paths,
    load_vocabulary,
    vocabulary_source,
)
from src.tools.import_weights import format_table, import_source


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, metavar="SOURCE", help="the zip or experiments/")
    add_force(parser, "replace experiments that already exist")
    parser.add_argument(
        "--experiments",
        default="",
        help="comma-separated names to import (default: every experiment found)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the experiments folder to write (default: <data>/experiments)",
    )
    add_data_dir(parser)
    return parser


def own_classes_message(source: Path, data_dir: Path, vocabulary: Vocabulary) -> str:
    """Why the released networks stay out of a data directory with classes of its own, and
    where they go instead: one data directory holds one set of classes."""
    released = REPO_ROOT / "data"
    if released.resolve() == data_dir.resolve():
        released = released / "released"
    command = shlex.join(["python", "import_weights.py", str(source), "--data-dir", str(released)])
    return (
        f"{data_dir} has {len(vocabulary)} classes of its own ({vocabulary_source()}), and the "
        f"released networks predict FAT2019's 80: import them into a data directory of their "
        f"own, `{command}`, then start from one with --init-from "
        f"{shlex.quote(str(released / 'experiments'))}/EXPERIMENT"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_data_dir(args)
    setup_logging()
    try:
        paths = get_paths()
        vocabulary = load_vocabulary(paths)
        if vocabulary != Vocabulary():
            raise ConfigError(own_classes_message(args.source, paths.input_dir, vocabulary))
        results = import_source(
            args.source,
            args.out or paths.experiments_dir,
            vocabulary,
            force=args.force,
            only=[name for name in args.experiments.split(",") if name],
        )
    except ConfigError as error:
        return fail(error)
    print(format_table(results))
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"{r.experiment}: {r.error}", file=sys.stderr)
    already = sum(r.already for r in results)
    imported = len(results) - len(failed) - already
    where = args.out or paths.experiments_dir
    if already:
        print(f"{imported} experiment(s) imported, {already} already imported in {where}")
    else:
        print(f"{imported} experiment(s) imported into {where}")
    return 1 if failed else 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
