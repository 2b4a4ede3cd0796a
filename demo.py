"""Live audio tagging from the microphone, or from a file streamed through the same code.

    python demo.py                                  # microphone, window, the best trained model
    python demo.py --headless                       # microphone, print only
    python demo.py --input song.ogg                 # a file at real-time pace
    python demo.py --input song.ogg --fast --headless
    python demo.py --experiment corr_noisy_007 --folds 0 --top 5
    python demo.py --onnx corr_noisy_007.onnx       # ONNX Runtime (export_onnx.py)
    python demo.py --list-devices                   # then --audio-device ID_OR_NAME

Every second, the last second of audio is turned into 64 log-mel frames, pushed into a rolling
window of crop_size/64 seconds, and the window is predicted; the top classes are printed, one
line per second:

       3s<TAB><class right-justified to 20> - 0.87<TAB><class> - 0.05<TAB><class> - 0.01

(see docs/demo.md). Without --model or --experiment, the first-level experiment with the best
mean validation score in <data>/experiments is used, with its best fold.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from src.cli import (
    PREDICTION_AMP,
    add_amp,
    add_data_dir,
    add_device,
    add_folds,
    check_output_file,
    fail,
    parse_folds,
    resolve_device,
    use_data_dir,
)
from src.config import AUDIO, ConfigError, get_paths
from src.data.audio import AudioDecodeError, SpectrogramError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model", type=Path, metavar="PATH", help="a checkpoint (model-EEE-S.pth)")
    model.add_argument("--experiment", metavar="NAME", help="a trained first-level experiment")
    model.add_argument(
        "--onnx",
        type=Path,
        metavar="FILE",
        help="a network exported by export_onnx.py, run with ONNX Runtime instead of PyTorch",
    )
    add_folds(
        parser, "with --experiment: the fold to stream with, one (default: its best-scoring fold)"
    )
    add_device(parser)
    add_amp(parser, PREDICTION_AMP)
    parser.add_argument("--top", type=int, default=3, metavar="K", help="classes per update (3)")
    parser.add_argument("--headless", action="store_true", help="no window: print only")
    parser.add_argument(
        "--input", type=Path, metavar="FILE", help="stream this audio file instead of a mic"
    )
    parser.add_argument(
        "--fast", action="store_true", help="with --input: as fast as possible, not real time"
    )
    parser.add_argument("--seconds", type=int, metavar="N", help="stop after this many updates")
    parser.add_argument("--list-devices", action="store_true", help="list audio devices")
    parser.add_argument(
        "--audio-device", metavar="ID_OR_NAME", help="input device: index or part of its name"
    )
    parser.add_argument(
        "--screenshot",
        type=Path,
        metavar="PNG",
        help="render the window offscreen and save it here at the end",
    )
    parser.add_argument(
        "--dump",
        type=Path,
        metavar="NPZ",
        help="save every update's window and probabilities (.npz)",
    )
    add_data_dir(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    use_data_dir(args)
    if args.fast and args.input is None:
        parser.error("--fast needs --input FILE")
    if args.folds is not None:
        if args.experiment is None:
            parser.error("--folds needs --experiment NAME")
        folds = parse_folds(args.folds)
        if len(folds) != 1:
            parser.error("--folds: the demo streams with one fold model, e.g. --folds 0")
        args.fold = folds[0]
    else:
        args.fold = None
    if args.top < 1 or (args.seconds is not None and args.seconds < 1):
        parser.error("--top and --seconds must be positive")
    return args


def choose_checkpoint(args: argparse.Namespace) -> Path:
    from src.runs import checkpoint_file, find_experiment
    from src.tools.tagging.trained import best_experiment

    if args.model is not None:
        return checkpoint_file(args.model, "--model")
    experiments_dir = get_paths().experiments_dir
    if args.experiment is None:
        return best_experiment(experiments_dir).checkpoint()
    experiment = find_experiment(experiments_dir, args.experiment)
    if experiment.kind != "cnn":
        raise ConfigError(f"{args.experiment} is a stacking experiment; the demo needs a CNN")
    return experiment.checkpoint(args.fold)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if not args.list_devices:
            args.device = resolve_device(args.device)
        check_output_file(args.dump, "--dump")  # before streaming, not after it
        check_output_file(args.screenshot, "--screenshot")
        from src.tools import live

        if args.list_devices:
            print(live.list_input_devices())
            return 0
        interactive = not args.headless and args.screenshot is None
        if args.screenshot is not None:
            import matplotlib

            matplotlib.use("Agg")  # rendered offscreen, whatever the display
        elif interactive:
            from src.tools.live_view import require_display

            require_display()
        if args.input is None:
            live.import_sounddevice()  # fail on a missing PortAudio before loading the model
        return stream(args, interactive)
    except (ConfigError, AudioDecodeError) as error:
        return fail(error)
    except SpectrogramError:
        source = args.input or "the microphone"
        return fail(ConfigError(f"{source}: NaN or infinite samples: no finite log-mel"))


def open_blocks(args: argparse.Namespace, block_samples: int, wait) -> Iterator[np.ndarray]:
    """1 s blocks from --input (paced at real time unless --fast) or from the microphone."""
    from src.data.audio import load_audio
    from src.tools.live import file_blocks, microphone_blocks, paced, parse_audio_device

    if args.input is None:
        print("listening (Ctrl+C to stop)", file=sys.stderr)
        return microphone_blocks(parse_audio_device(args.audio_device), idle=wait)
    audio = load_audio(args.input)
    seconds = len(audio) / AUDIO.sampling_rate
    if len(audio) < block_samples:
        # As tag_audio.py's short-clip rule pads a short clip: zeros on both sides.
        audio = pad_to_block(audio, block_samples)
        print(f"{args.input}: {seconds:.2f} s, padded with silence to one block", file=sys.stderr)
    print(f"streaming {args.input} ({seconds:.1f} s)", file=sys.stderr)
    blocks = file_blocks(audio, block_samples)
    return blocks if args.fast else paced(blocks, sleep=wait)


def pad_to_block(audio: np.ndarray, block_samples: int) -> np.ndarray:
    """A clip shorter than one block, zero-padded on both sides to exactly one block."""
    padding = block_samples - len(audio)
    return np.pad(audio, (padding // 2, padding - padding // 2)).astype(np.float32, copy=False)


def stream(args: argparse.Namespace, interactive: bool) -> int:
    from src.prediction.tiling import Predictor
    from src.tools.live import LiveTagger, format_update
    from src.tools.tagging.trained import model_classes

    if args.onnx is not None:
        from src.tools.onnx_export import OnnxPredictor

        checkpoint = args.onnx
        predictor = OnnxPredictor(checkpoint, batch_size=1)
        classes = predictor.classes
    else:
        checkpoint = choose_checkpoint(args)
        predictor = Predictor(checkpoint, args.device, batch_size=1, amp=args.amp)
        classes = model_classes(predictor.model, checkpoint)
    tagger = LiveTagger(predictor)
    window = f"{tagger.n_blocks} s = {tagger.window_frames} frames"
    print(f"model: {checkpoint} (window of {window})", file=sys.stderr)
    view = None
    if not args.headless or args.screenshot is not None:
        from src.tools.live_view import LiveView

        view = LiveView(classes, tagger.window_frames, bars=max(args.top, 10))
        if interactive:
            view.open()
    blocks = open_blocks(args, tagger.block_samples, view.pump if interactive else time.sleep)

    updates = []
    try:
        for update in tagger.run(blocks):
            print(format_update(update, classes, args.top), flush=True)
            if args.dump is not None:
                updates.append(update)
            if view is not None:
                view.show(update)
                if interactive:
                    view.pump(0.001)
            if (view is not None and view.closed) or update.index == args.seconds:
                break
        else:
            if interactive and args.input is not None:
                print(f"end of {args.input}: close the window to quit", file=sys.stderr)
                view.wait_closed()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        blocks.close()  # stops the microphone stream
    if args.dump is not None:
        np.savez(
            args.dump,
            windows=np.array([u.window for u in updates]),
            probabilities=np.array([u.probabilities for u in updates]),
            classes=np.array(classes),
        )
    if args.screenshot is not None:
        print(f"screenshot: {view.save(args.screenshot)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from src.cli import run_main  # one-line errors, Ctrl-C -> status 130

    run_main(main)
