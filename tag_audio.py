"""Tag your own audio files with the trained models.

    python tag_audio.py recording.wav more/*.flac folder/     # the best trained experiment
    python tag_audio.py clips/ --model data/experiments/corr_noisy_007/fold_0/model-072-0.886906.pth
    python tag_audio.py clips/ --experiment corr_noisy_007 --top 5 --csv tags.csv
    python tag_audio.py clips/ --ensemble --tiles-csv tiles.csv
    python tag_audio.py data/mine/test --experiment mine --score data/mine/test_labels.csv --plot .
    python tag_audio.py clips/ --onnx corr_noisy_007.onnx        # ONNX Runtime, see export_onnx.py
    python tag_audio.py clips/ --experiment mine --embeddings clips.npz  # feature vectors
    python tag_audio.py clips/ --json --threshold 0.5           # JSON lines, multi-label decision

Any file librosa can decode (WAV, FLAC, OGG, MP3, ...), any sampling rate, mono or stereo, any
length; folders are searched recursively. Each file is read as the pipeline reads clips (mono,
44.1 kHz, silence trimmed, the short-clip rule), cut into tiles and predicted. One line per file:

    <path><TAB><class> - 0.87<TAB>...

(paths and class names padded so that the columns line up). Files laid out by make_dataset.py
are shown under the recordings they came from (its sources.csv), in the lines, the CSVs, the
JSON and the scores. --json prints one JSON object per file instead (path, file, top, every
class's probability); --threshold T adds the multi-label decision per file: every class whose
probability reaches T ("labels: A, B", or "-" for none).

Files that cannot be decoded (or give no finite log-mel, or whose header claims more than
FREESOUND_MAX_AUDIO_SECONDS, 2 hours by default) are reported and skipped; the exit status is 0
when at least one file was tagged. --csv writes every class probability per file, --tiles-csv
per tile (with the tile's start and end in seconds from the start of the file); rows are written
as files are tagged, so Ctrl-C (exit status 130) keeps what was tagged so far. --embeddings
OUT.npz writes the pooled features the classifier sees, one vector per file (an experiment: the
mean over its folds), and with --tiles-csv one per tile: numpy arrays `paths`, `embeddings`
(files x features) and `tile_file`, `tile`, `start_s`, `end_s`, `tile_embeddings`
(`np.load(OUT)`); it is written when the tagging ends (an interrupted run writes the files
tagged so far). --score LABELS.csv (fname,labels, matched by file name) prints lwlrap, top-1
accuracy and a per-class table; --plot DIR adds DIR/confusion_matrix.png and
DIR/worst_clips.png (the spectrograms, true labels and top classes of the 12 files with the
lowest label-ranking precision). The same from Python: `src.tagger.Tagger` (README, "Python
API"). See docs/demo.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from src.cli import (
    PREDICTION_AMP,
    add_amp,
    add_data_dir,
    add_device,
    add_folds,
    add_no_progress,
    check_output_file,
    fail,
    use_data_dir,
)
from src.config import ConfigError
from src.data.audio import AudioDecodeError
from src.tools.scoring import format_score, plot_confusion, read_truth, score_tags

INTERRUPTED = 130  # the shell's status for Ctrl-C


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, metavar="PATH", help="one checkpoint")
    source.add_argument(
        "--experiment",
        metavar="NAME",
        help="a first-level experiment (trained, imported or probed): geometric mean over its "
        "folds",
    )
    source.add_argument(
        "--ensemble", action="store_true", help="the stacking ensemble (7 + 3 experiments)"
    )
    source.add_argument(
        "--onnx",
        type=Path,
        metavar="FILE",
        help="a network exported by export_onnx.py, run with ONNX Runtime (CPU)",
    )
    parser.add_argument("--top", type=int, default=3, metavar="K", help="classes printed per file")
    parser.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="also decide the labels of each file: every class with probability >= T",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per file (path, file, top, probabilities, labels)",
    )
    parser.add_argument(
        "--csv", type=Path, metavar="PATH", help="write every class probability per file"
    )
    parser.add_argument(
        "--tiles-csv", type=Path, metavar="PATH", help="write every class probability per tile"
    )
    parser.add_argument(
        "--embeddings",
        type=Path,
        metavar="OUT.npz",
        help="write the pooled features the classifier sees: one vector per file, and with "
        "--tiles-csv one per tile (numpy .npz: paths, embeddings, tile_file, tile, start_s, "
        "end_s, tile_embeddings)",
    )
    parser.add_argument(
        "--score",
        type=Path,
        metavar="LABELS_CSV",
        help="score the tags against fname,labels (e.g. make_dataset.py's test_labels.csv)",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="DIR",
        help="with --score: write DIR/confusion_matrix.png and DIR/worst_clips.png (the "
        "spectrograms of the 12 files with the lowest label-ranking precision)",
    )
    add_folds(
        parser,
        "folds of --experiment or --ensemble to blend (default: the experiment's trained folds; "
        "the ensemble's five)",
    )
    add_device(parser)
    parser.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="tiles per batch (64)"
    )
    add_amp(parser, PREDICTION_AMP)
    add_no_progress(parser)
    add_data_dir(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    use_data_dir(args)
    if args.top < 1 or args.batch_size < 1:
        parser.error("--top and --batch-size must be positive")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error("--threshold must be between 0 and 1")
    if args.plot is not None and args.score is None:
        parser.error("--plot needs --score")
    if args.folds is not None and not (args.experiment or args.ensemble):
        parser.error("--folds needs --experiment NAME or --ensemble")
    if args.embeddings is not None and args.embeddings.suffix != ".npz":
        parser.error("--embeddings writes a numpy .npz file: give a name ending in .npz")
    check_output_file(args.csv, "--csv")  # before the tagging, not after it
    check_output_file(args.tiles_csv, "--tiles-csv")
    check_output_file(args.embeddings, "--embeddings")
    return args


def load_tagger(args: argparse.Namespace):
    """The `Tagger` (src.tagger) of the model options."""
    from src.cli import parse_folds, resolve_device
    from src.tools.tagging.api import Tagger

    device = resolve_device(args.device)  # a device this machine lacks is the first thing said
    if args.onnx is not None:
        return Tagger.from_onnx(args.onnx, args.batch_size)
    if args.model is not None:
        return Tagger.from_checkpoint(args.model, device, args.batch_size)
    folds = parse_folds(args.folds) if args.folds else None
    if args.ensemble:
        return Tagger.from_ensemble(device, args.batch_size, folds=folds)
    return Tagger.from_experiment(args.experiment, device, args.batch_size, folds=folds)


def main(argv: list[str] | None = None) -> int:
    from src.prediction.tiling import set_prediction_amp
    from src.tools.tagging.clips import collect_audio_files
    from src.tools.tagging.names import UserNames
    from src.tools.tagging.output import (
        EmbeddingWriter,
        RowWriter,
        format_top,
        json_line,
        labels_above,
        name_width,
        top_classes,
    )

    args = parse_args(argv)
    set_prediction_amp(args.amp)
    try:
        truth = None if args.score is None else read_truth(args.score)
        files = collect_audio_files(args.inputs)
        tagger = load_tagger(args)
        if args.embeddings is not None and not tagger.source.embeds:
            raise ConfigError(f"--embeddings: the {tagger.description} gives no embeddings")
    except ConfigError as error:
        return fail(error)
    print(f"tagging {len(files)} file(s) with the {tagger.description}", file=sys.stderr)
    classes = tagger.classes
    names = UserNames(files)
    path_width = max(len(names.shown(f)) for f in files)
    width = name_width(classes)
    # Only what --score needs is kept: each file's path and class probabilities.
    scored: tuple[list[str], list] = ([], [])
    skipped = 0
    rows = RowWriter(args.csv, args.tiles_csv, classes, tagger.tile_seconds, names.shown)
    vectors = None
    if args.embeddings is not None:
        vectors = EmbeddingWriter(
            args.embeddings, args.tiles_csv is not None, tagger.tile_seconds, names.shown
        )
    try:
        with (
            rows,
            tqdm(total=len(files), unit="file", disable=args.no_progress or len(files) < 2) as bar,
        ):
            for result in tagger.results(files, embeddings=vectors is not None):
                if isinstance(result, AudioDecodeError):
                    skipped += 1
                    shown = names.shown(result.path)
                    bar.write(f"skipped {shown}: {result.reason}", file=sys.stderr)
                else:
                    shown = names.shown(result.clip.path)
                    if args.json:
                        line = json_line(shown, result, classes, args.top, args.threshold)
                    else:
                        top = top_classes(result.tags.clip, classes, args.top)
                        line = f"{shown:<{path_width}}\t{format_top(top, width)}"
                        if args.threshold is not None:
                            labels = labels_above(result.tags.clip, classes, args.threshold)
                            line += f"\tlabels: {', '.join(labels) or '-'}"
                    bar.write(line, file=sys.stdout)
                    rows.write(result)
                    if vectors is not None:
                        vectors.add(result)
                    if truth is not None:
                        scored[0].append(str(result.clip.path))
                        scored[1].append(result.tags.clip)
                bar.update()
    except KeyboardInterrupt:
        kept = [*map(str, rows.paths)]
        if vectors is not None and len(vectors):
            vectors.write()
            kept.append(str(vectors.path))
        where = f"their rows are in {', '.join(kept)}" if kept else "no --csv"
        fail(ConfigError(f"interrupted: {rows.rows} of {len(files)} file(s) tagged, {where}"))
        return INTERRUPTED
    except ConfigError as error:  # a model giving NaN, ...
        return fail(error)
    except OSError as error:  # writing a CSV
        return fail(ConfigError(f"{error.filename or rows.paths}: cannot write ({error.strerror})"))
    if skipped:
        print(
            f"skipped {skipped} of {len(files)} file(s) that could not be read (each named above)",
            file=sys.stderr,
        )
    if not rows.rows:
        return fail(ConfigError("no file could be tagged"))
    if vectors is not None:
        vectors.write()
        print(f"embeddings of {len(vectors)} file(s): {vectors.path}", file=sys.stderr)
    if truth is not None:
        return report_score(args, scored, classes, truth, names)
    return 0


def report_score(args, scored, classes, truth, names) -> int:
    from src.tools.tagging.output import probabilities_frame

    frame = probabilities_frame(*scored, classes)
    try:
        score = score_tags(frame["path"].tolist(), frame.iloc[:, 1:].to_numpy(), classes, truth)
    except ConfigError as error:
        return fail(error)
    # Shown under the names people know the files by.
    score.unmatched = [names.shown(p) for p in score.unmatched]
    score.untagged = [names.shown_fname(f) for f in score.untagged]
    print(format_score(score))
    if args.plot is not None:
        from src.tools.pictures.worst_clips import plot_worst_clips

        plot_confusion(score, args.plot / "confusion_matrix.png")
        print(f"confusion matrix: {args.plot / 'confusion_matrix.png'}")
        worst = args.plot / "worst_clips.png"
        probabilities = frame.iloc[:, 1:].to_numpy()
        plot_worst_clips(score, frame["path"].tolist(), probabilities, classes, worst)
        print(f"worst clips (lowest label-ranking precision): {worst}")
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
