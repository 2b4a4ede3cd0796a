"""Blend several experiments: geometric mean of their test predictions -> submission.csv.

    python blend_predict.py --experiments corr_noisy_003,corr_noisy_007,corrections_002
    python blend_predict.py --experiments chosen.json     # a stacking file's inputs

Reads <data>/predictions/<experiment>/probs.csv (the fold blend that predict_folds.py writes:
tile step crop/4, tile mean, geometric mean over folds), takes their geometric mean with equal
weights and writes it with the columns and row order of sample_submission.csv to
<data>/submission.csv, or to --out (the original's blend_predict.py did the same for three
fixed experiments). A stacking experiment's file (select_ensemble.py --write) stands for its
first-level inputs. The blend kernel runs predict_folds.py for each experiment, then this.
"""

from __future__ import annotations

import argparse

from src.cli import add_data_dir, check_output_file, command_line, fail, names_list, use_data_dir
from src.config import ConfigError, get_paths, load_vocabulary, vocabulary_source
from src.experiment_files import blend_members
from src.experiments import EXPERIMENTS, unknown_experiment
from src.prediction.tables import align_to_sample_submission, check_submission, gmean_frames
from src.runs import PROBS_FILE, experiment_names, read_probs
from src.utils import write_csv_atomic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiments",
        required=True,
        help="comma-separated experiments, or a stacking experiment's file (its inputs)",
    )
    parser.add_argument(
        "--out", default=None, help="the submission file to write (default: <data>/submission.csv)"
    )
    parser.add_argument("--fill-undecodable", action="store_true", help="see predict_folds.py")
    add_data_dir(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_data_dir(args)
    try:
        names = blend_members(names_list(args.experiments))
        if not names:
            raise ConfigError("--experiments names no experiment")
        check_output_file(args.out, "--out")
        paths = get_paths()
        vocabulary = load_vocabulary(paths)
        known = experiment_names(paths.experiments_dir)
        for name in names:  # a misspelt name first, before any missing prediction
            if name not in EXPERIMENTS and name not in known:
                raise unknown_experiment(name, known)
        frames = []
        for name in names:
            probs = paths.prediction_dir(name) / PROBS_FILE
            if not probs.is_file():
                command = command_line("predict_folds.py", "--experiment", name)
                raise ConfigError(f"{probs} not found: run `{command}` first")
            frames.append(read_probs(probs, vocabulary.classes, vocabulary_source(paths)))
        blend = align_to_sample_submission(gmean_frames(frames), paths, args.fill_undecodable)
        check_submission(blend, vocabulary.classes, len(blend))
        out = args.out or paths.submission
        write_csv_atomic(blend, out)
    except ConfigError as error:
        return fail(error)
    print(f"blend of {len(names)} experiments ({', '.join(names)}): {out} ({len(blend)} clips)")
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
