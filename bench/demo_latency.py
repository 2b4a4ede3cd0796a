"""Live demo latency: the work of one update (log-mel of the new block + prediction of the
window) with the full-size AuxSkipAttention on the CPU, against the 1 s between updates.

    python bench/demo_latency.py                      # 2 threads, 30 updates, random weights
    python bench/demo_latency.py --checkpoint data/experiments/corr_noisy_007/fold_0/model-...pth
    python bench/demo_latency.py --threads 4 --blocks 60 --runs torch/off
    python bench/demo_latency.py --runs torch/off,torch/onnx    # PyTorch vs ONNX Runtime

Blocks of a real recording (the dog howling in ../shared/data/real-audio, or --audio FILE; a
tone when neither exists) go through `LiveTagger` exactly as in demo.py. The first updates
are warm-up (oneDNN builds its kernels on the first calls) and are not counted. Prints the
median, 90th percentile and maximum of each part (wall-clock) and the update's share of the
1 s budget (median / max); never asserts anything about timings. bf16 runs the model under
CPU autocast (fast on CPUs with AVX512-BF16 or AMX, slow elsewhere); onnx exports the same
network with export_onnx.py and runs it in float32 with ONNX Runtime (`demo.py --onnx`).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from src.config import AUDIO  # noqa: E402
from src.data.audio import load_audio, make_extractor  # noqa: E402
from src.prediction.tiling import Predictor  # noqa: E402
from src.tools.live import LiveTagger, file_blocks  # noqa: E402

DEFAULT_AUDIO = REPO_ROOT.parent / "shared/data/real-audio/librosa-examples/pibble.ogg"
WARMUP = 3
BUDGET_SECONDS = 1.0  # one update per second of audio


def full_size_predictor(checkpoint: Path | None, amp: str) -> Predictor:
    if checkpoint is not None:
        return Predictor(checkpoint, "cpu", batch_size=1, amp=amp)
    from src.experiments import resolve
    from src.models.argus_models import FreesoundModel, model_params

    torch.manual_seed(0)  # random weights: the time does not depend on their values
    params = model_params(resolve("corr_noisy_007"), 80, "cpu", amp, False)
    return Predictor(FreesoundModel(params), "cpu", batch_size=1)


def onnx_predictor(checkpoint: Path | None, threads: int):
    """The same network exported by export_onnx.py, run by ONNX Runtime (float32)."""
    import tempfile

    from src.tools.onnx_export import OnnxPredictor, export_checkpoint
    from src.training.callbacks.checkpoints import save_model_atomic

    folder = Path(tempfile.mkdtemp(prefix="demo-latency-"))
    if checkpoint is None:
        checkpoint = folder / "model-000-0.000000.pth"
        save_model_atomic(full_size_predictor(None, "off").model, checkpoint)
    report = export_checkpoint(checkpoint, folder / "model.onnx")
    print(f"onnx: exported and checked in {report.seconds:.1f} s")
    return OnnxPredictor(report.path, batch_size=1, threads=threads)


def recording(path: Path | None, seconds: int) -> tuple[np.ndarray, str]:
    path = path or (DEFAULT_AUDIO if DEFAULT_AUDIO.is_file() else None)
    if path is None:
        t = np.arange(seconds * AUDIO.sampling_rate) / AUDIO.sampling_rate
        return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), "a 440 Hz tone"
    audio = load_audio(path)
    repeats = -(-seconds * AUDIO.sampling_rate // len(audio))
    return np.tile(audio, repeats), path.name


def summary(values: list[float]) -> str:
    ms = np.array(values) * 1000
    return f"{np.median(ms):7.1f} {np.percentile(ms, 90):7.1f} {ms.max():7.1f}"


def measure(tagger: LiveTagger, blocks: list[np.ndarray], label: str) -> None:
    updates = list(tagger.run(blocks))[WARMUP:]
    mel = [u.mel_seconds for u in updates]
    model = [u.predict_seconds for u in updates]
    total = [a + b for a, b in zip(mel, model)]
    print(f"{label:14} {'log-mel':10} {summary(mel)}")
    print(f"{label:14} {'prediction':10} {summary(model)}")
    print(
        f"{label:14} {'update':10} {summary(total)}   "
        f"{np.median(total) / BUDGET_SECONDS:.3f} / {max(total) / BUDGET_SECONDS:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--blocks", type=int, default=30, help="updates measured (default 30)")
    parser.add_argument("--checkpoint", type=Path, help="a trained checkpoint instead")
    parser.add_argument("--audio", type=Path, help="the recording to stream")
    parser.add_argument(
        "--runs",
        default="torch/off,librosa/off,torch/bf16,torch/onnx",
        help="log-mel backend / model precision pairs; onnx: the network in float32 through "
        "ONNX Runtime (default: torch/off,librosa/off,torch/bf16,torch/onnx)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = [tuple(run.split("/")) for run in args.runs.split(",")]

    audio, source = recording(args.audio, args.blocks + WARMUP)
    blocks = list(file_blocks(audio))[: args.blocks + WARMUP]
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs visible, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; audio: {source}; {args.blocks} updates after "
        f"{WARMUP} warm-up"
    )
    print(f"{'mel/precision':14} {'part':10} {'median':>7} {'p90':>7} {'max':>7} (ms)  of 1 s")
    for backend, amp in runs:
        if amp == "onnx":
            predictor = onnx_predictor(args.checkpoint, args.threads)
            tagger = LiveTagger(predictor, extractor=make_extractor(backend))
            measure(tagger, blocks, f"{backend}/onnx")
            continue
        predictor = full_size_predictor(args.checkpoint, amp)
        if (backend, amp) == runs[0]:
            n_parameters = sum(p.numel() for p in predictor.model.nn_module.parameters())
            print(
                f"model: {predictor.model.params['nn_module'][0]}, {n_parameters / 1e6:.1f} M "
                f"parameters, window {predictor.tile} frames"
            )
        tagger = LiveTagger(predictor, extractor=make_extractor(backend))
        measure(tagger, blocks, f"{backend}/{amp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
