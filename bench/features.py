"""Log-mel extraction speed: seconds of audio turned into log-mel per second.

    python bench/features.py [--seconds 120] [--device cuda]

Compares, per CPU core (1 thread), the librosa reference with the batched torch path in
float64 (the default, matches librosa within 1e-3 dB) and float32 (faster, within ~1.5e-3 dB),
and the torch path on a GPU when one is available. Input: the real recordings when present
(../shared/data/real-audio), else synthetic noise; all resampled to 44.1 kHz first (decoding is
not timed). Targets: torch >= 2x librosa per CPU core, >= 20x on a GPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from common import REAL_AUDIO, best_time, table

from src.data.audio import LibrosaLogMel, TorchLogMel, list_audio_files, read_audio


def load_waves(limit_seconds: float, folder: str | None = None) -> tuple[list[np.ndarray], str]:
    if folder is not None:
        files = list_audio_files(Path(folder))
    else:
        files = (
            sorted((REAL_AUDIO / "librosa-examples").glob("*.ogg"))
            + sorted((REAL_AUDIO / "fsdd/recordings").glob("*.wav"))[::10]
        )
    waves, total = [], 0.0
    for path in files:
        wave = read_audio(path)
        waves.append(wave)
        total += len(wave) / 44100
        if total >= limit_seconds:
            break
    if waves:
        return waves, f"{len(waves)} {'files of ' + folder if folder else 'real recordings'}"
    rng = np.random.default_rng(0)
    lengths = rng.uniform(0.5, 15.0, size=64)
    waves = [rng.normal(0, 0.1, int(s * 44100)).astype(np.float32) for s in lengths]
    return waves, f"{len(waves)} synthetic noise clips"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="audio to process per run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--files", default=None, help="an audio folder to read instead")
    parser.add_argument("--repeat", type=int, default=3, help="runs per CPU path (best of)")
    args = parser.parse_args(argv)
    waves, source = load_waves(args.seconds, args.files)
    audio_seconds = sum(len(w) for w in waves) / 44100
    torch.set_num_threads(1)
    rows = []

    def measure(name, extractor, device="cpu", repeat=args.repeat):
        seconds = best_time(lambda: extractor(waves), device, repeat=repeat)
        rows.append(
            {"path": name, "device": device, "audio s per s": round(audio_seconds / seconds)}
        )
        return audio_seconds / seconds

    reference = measure("librosa (reference)", LibrosaLogMel())
    for precision in ("float64", "float32"):
        measure(f"torch {precision}", TorchLogMel(precision=precision))
    if torch.device(args.device).type == "cuda":
        for precision in ("float64", "float32"):
            extractor = TorchLogMel(device=args.device, precision=precision)
            measure(
                f"torch {precision}",
                lambda w, e=extractor: e.spectrograms(w),
                args.device,
                repeat=5,
            )
    for row in rows:
        row["vs librosa per core"] = f"{row['audio s per s'] / reference:.2f}x"
    print(f"{source}, {audio_seconds:.0f} s of audio at 44.1 kHz; CPU figures per core (1 thread)")
    print(table(rows, ["path", "device", "audio s per s", "vs librosa per core"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
