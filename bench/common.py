"""Timing helpers shared by the benchmarks (they print figures and ratios, never assert)."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REAL_AUDIO = Path(__file__).resolve().parents[2] / "shared/data/real-audio"
# Dense bf16 tensor-core peaks (TFLOP/s) used for the "share of peak" columns.
BF16_PEAK_TFLOPS = {"H100": 790.0, "H200": 790.0, "A100": 312.0}


def synchronize(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def best_time(
    function: Callable[[], object], device: str = "cpu", repeat: int = 5, warmup: int = 1
) -> float:
    """Fastest of `repeat` runs in seconds, after `warmup` runs (device work included)."""
    for _ in range(warmup):
        function()
    synchronize(device)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def describe_hardware(device: str) -> str:
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    return f"{cpu} CPU, {torch.get_num_threads()} thread(s) (torch {torch.__version__})"


def bf16_peak(device: str) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table (pasted as is into docs/performance.md)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
