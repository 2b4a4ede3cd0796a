"""Make label-correction files from the predictions of trained experiments (docs/corrections.md).

    python make_corrections.py curated [--experiments A,B,...] [--count 100 | --max-score S]
    python make_corrections.py review [--list PATH] [--out PATH] [--play]
    python make_corrections.py noisy [--experiments A,B,...] [--threshold T] [--relabel]

curated: score every curated clip (per-clip lwlrap of its original labels under the geometric
mean of the experiments' out-of-fold predictions) and write the lowest-scoring ones to
<data>/corrections/review/review_list.csv, with a spectrogram PNG per clip.
review:  walk the review list in the terminal; every answer is saved at once to
<data>/corrections/corrections.json (remove / relabel entries) and review_state.json beside the
list (every decision): run it again to resume.
noisy:   predict the noisy clips with every fold model (geometric mean), keep the clips whose
labels score at least the threshold and mark the others "remove", in
<data>/corrections/noisy_corrections.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.cli import (
    add_data_dir,
    add_prediction_arguments,
    fail,
    names_list,
    resolve_device,
    setup_logging,
    use_data_dir,
)
from src.config import ConfigError, get_paths, load_vocabulary
from src.data.corrections import count_entries
from src.experiments import FIRST_LEVEL
from src.tools.corrections import (
    DEFAULT_LABEL_THRESHOLD,
    DEFAULT_NOISY_THRESHOLD,
    default_review_list,
    make_noisy_corrections,
    make_review_list,
    read_review_list,
)


def experiment_names(text: str) -> list[str]:
    names = names_list(text)
    if not names:
        raise argparse.ArgumentTypeError("name at least one experiment")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    experiments_help = "comma-separated trained experiments (default: the 7 first-level ones)"

    curated = commands.add_parser("curated", help="write the review list of low-scoring clips")
    curated.add_argument(
        "--experiments", type=experiment_names, default=FIRST_LEVEL, help=experiments_help
    )
    curated.add_argument(
        "--count",
        type=int,
        default=None,
        help="list the N lowest-scoring clips (default 100 without --max-score)",
    )
    curated.add_argument(
        "--max-score",
        type=float,
        default=None,
        help="list the clips scoring at most S (with --count: at most N of them)",
    )
    curated.add_argument(
        "--list",
        type=Path,
        default=None,
        help="where to write the list (default <data>/corrections/review/review_list.csv)",
    )
    curated.add_argument("--no-plots", action="store_true", help="no spectrogram pictures")
    add_data_dir(curated)

    review = commands.add_parser("review", help="review the list in the terminal (resumable)")
    review.add_argument("--list", type=Path, default=None, help="the review list to walk")
    review.add_argument(
        "--out",
        type=Path,
        default=None,
        help="correction file to update (default <data>/corrections/corrections.json)",
    )
    review.add_argument(
        "--state",
        type=Path,
        default=None,
        help="decisions so far (default review_state.json beside the list)",
    )
    review.add_argument("--play", action="store_true", help="play each clip (needs sounddevice)")
    add_data_dir(review)

    noisy = commands.add_parser("noisy", help="keep or remove every noisy clip")
    noisy.add_argument(
        "--experiments", type=experiment_names, default=FIRST_LEVEL, help=experiments_help
    )
    noisy.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_NOISY_THRESHOLD,
        help=f"keep clips whose labels score at least T (default {DEFAULT_NOISY_THRESHOLD})",
    )
    noisy.add_argument(
        "--relabel",
        action="store_true",
        help="give kept clips the confident predictions as labels (default: keep theirs)",
    )
    noisy.add_argument(
        "--label-threshold",
        type=float,
        default=DEFAULT_LABEL_THRESHOLD,
        help="with --relabel: classes predicted at least this probable, always "
        f"the top one (default {DEFAULT_LABEL_THRESHOLD})",
    )
    noisy.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the file to write (default <data>/corrections/noisy_corrections.json)",
    )
    add_prediction_arguments(noisy)
    add_data_dir(noisy)
    return parser


def run_curated(args, paths, vocabulary) -> int:
    count = 100 if args.count is None and args.max_score is None else args.count
    listed = make_review_list(
        paths, vocabulary, args.experiments, count, args.max_score, args.list, not args.no_plots
    )
    list_path = args.list or default_review_list(paths)
    if listed.empty:
        print(f"no clip to review; wrote an empty list to {list_path}")
        return 0
    scores = listed["score"]
    print(
        f"wrote {list_path}: {len(listed)} clips scoring {scores.min():.3f} to {scores.max():.3f}"
    )
    print("review them with: python make_corrections.py review")
    return 0


def run_review_command(args, paths, vocabulary) -> int:
    from src.data.labels import read_labels_csv
    from src.tools.review import STATE_FILE, ReviewItem, ReviewSession, make_player, run_review

    list_path = args.list or default_review_list(paths)
    items = ReviewItem.from_list(read_review_list(list_path), list_path.parent)
    known = read_labels_csv(paths.train_curated_csv, vocabulary)["fname"]
    session = ReviewSession(
        items,
        vocabulary,
        args.out or paths.corrections_dir / "corrections.json",
        args.state or list_path.parent / STATE_FILE,
        known_fnames=known,
    )
    player = make_player() if args.play else None
    try:
        finished = run_review(session, play=player, audio_dir=paths.train_curated_dir)
    except KeyboardInterrupt:
        print("\ninterrupted; answers so far are saved (run the same command to resume)")
        finished = False
    counts = session.counts()
    entries = count_entries(session.corrections())
    print(
        f"{'review finished' if finished else 'review paused'}: kept {counts['keep']}, "
        f"relabelled {counts['relabel']}, removed {counts['remove']}, "
        f"{counts['pending']} still to review"
    )
    print(
        f"{session.out_path}: {entries['entries']} entries "
        f"({entries['remove']} remove, {entries['relabel']} relabel)"
    )
    return 0


def run_noisy(args, paths, vocabulary) -> int:
    out_path, summary = make_noisy_corrections(
        paths,
        vocabulary,
        args.experiments,
        args.threshold,
        args.relabel,
        args.label_threshold,
        args.out,
        resolve_device(args.device),
        args.batch_size,
        not args.no_progress,
    )
    print(
        f"noisy clips: {summary['clips']}; kept {summary['kept']} "
        f"(relabelled {summary['relabelled']}), removed {summary['removed']} "
        f"({summary['without_predictions']} without predictions) at threshold {args.threshold}"
    )
    print(f"wrote {out_path}")
    return 0


COMMANDS = {"curated": run_curated, "review": run_review_command, "noisy": run_noisy}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_data_dir(args)
    setup_logging()
    try:
        paths = get_paths()
        return COMMANDS[args.command](args, paths, load_vocabulary(paths))
    except ConfigError as error:
        return fail(error)


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
