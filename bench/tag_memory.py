"""Peak memory of tag_audio.py: one long file, and many 30 s files.

    python bench/tag_memory.py [--minutes 60] [--files 40,120] [--repo PATH]

Writes synthetic audio (a tone with noise bursts, 16-bit 44.1 kHz mono WAV) and a checkpoint
with random weights (a tiny AuxSkipAttention, crop 256: the memory of audio, spectrograms and
tiles does not depend on the network's size) to a temporary folder, runs
`tag_audio.py --model ... --csv ...` of the checkout `--repo` (default: this one) in a fresh
process per measurement, and prints its peak resident memory (ru_maxrss) and wall time.
`--files 40,120` tags 40 then 120 files of 30 s: the difference / 80 is the growth per file.
Run the same command with `--repo` pointing at an older checkout for "before" figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.models.argus_models import FreesoundModel
from src.training.callbacks.checkpoints import save_model_atomic

RATE = 44100
MEASURE = """
import resource, sys, time
sys.argv[0] = "tag_audio.py"
import tag_audio
started = time.perf_counter()
status = tag_audio.main(sys.argv[1:])
print("RESULT", status, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
      time.perf_counter() - started, flush=True)
"""


def write_audio(path: Path, seconds: float, seed: int) -> None:
    """A quiet tone with louder noise bursts, written a minute at a time."""
    rng = np.random.default_rng(seed)
    with soundfile.SoundFile(path, "w", RATE, 1, "PCM_16") as sound:
        left = int(seconds * RATE)
        while left:
            n = min(left, 60 * RATE)
            t = np.arange(n) / RATE
            block = 0.1 * np.sin(2 * np.pi * (300 + 200 * rng.random()) * t)
            block[: n // 4] += 0.3 * rng.normal(size=n // 4)
            sound.write(block.astype(np.float32))
            left -= n


def save_checkpoint(path: Path) -> None:
    params = {
        "nn_module": ("AuxSkipAttention", {"num_classes": 80, "base_size": 4, "dropout": 0.1}),
        "loss": ("BCEWithLogits", {}),
        "optimizer": ("Adam", {"lr": 0.001}),
        "device": "cpu",
        "aux_weights": [1.0, 0.4, 0.2, 0.1],
        "amp": "off",
        "channels_last": False,
        "crop_size": 256,
    }
    torch.manual_seed(0)
    save_model_atomic(FreesoundModel(params), path)


def measure(repo: Path, inputs: list[Path], checkpoint: Path, csv: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one tag_audio.py run."""
    argv = [*map(str, inputs), "--model", str(checkpoint), "--csv", str(csv)]
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *argv, "--device", "cpu", "--no-progress"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT")]
    if not line:
        raise SystemExit(f"tag_audio.py failed:\n{result.stderr[-2000:]}")
    _, status, rss_kb, seconds = line[0].split()
    if status != "0":
        raise SystemExit(f"tag_audio.py exited {status}:\n{result.stderr[-2000:]}")
    return int(rss_kb) / 1024, float(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="the long file (0: none)")
    parser.add_argument("--files", default="40,120", help="counts of 30 s files ('': none)")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = tmp / "model-001-0.500000.pth"
        save_checkpoint(checkpoint)
        print(f"tag_audio.py of {args.repo}")
        print("| input | peak RSS (MB) | wall (s) |\n|---|---:|---:|")
        if args.minutes > 0:
            long_file = tmp / "long.wav"
            write_audio(long_file, args.minutes * 60, seed=0)
            rss, seconds = measure(args.repo, [long_file], checkpoint, tmp / "long.csv")
            print(f"| one file of {args.minutes:g} min | {rss:.0f} | {seconds:.1f} |", flush=True)
        counts = [int(c) for c in args.files.split(",") if c.strip()]
        if counts:
            folder = tmp / "many"
            folder.mkdir()
            for index in range(max(counts)):
                write_audio(folder / f"{index:04d}.wav", 30.0, seed=index)
            figures = []
            for count in counts:
                files = sorted(folder.iterdir())[:count]
                rss, seconds = measure(args.repo, files, checkpoint, tmp / "many.csv")
                figures.append((count, rss))
                print(f"| {count} files of 30 s | {rss:.0f} | {seconds:.1f} |", flush=True)
            if len(figures) > 1:
                (n0, r0), (n1, r1) = figures[0], figures[-1]
                print(f"growth: {(r1 - r0) / (n1 - n0):.2f} MB per 30 s file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
