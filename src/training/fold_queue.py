"""Folds in parallel: one process per device, a shared queue of folds.

Each device's process takes the next unfinished fold until none is left, so every fold is
trained exactly once whatever the number of devices (`train_folds.py --gpus 0,1,2,3`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from src.config import ConfigError
from src.runs import fold_dir, fold_finished, read_finished
from src.training.loop import run_fold
from src.training.parts import MONITOR, FoldParts, Schedule
from src.utils import as_child, setup_logging, starting_children

log = logging.getLogger(__name__)


class _PrefixedStream:
    """Prefixes every line a worker prints with its device, so interleaved output stays legible."""

    def __init__(self, stream, prefix: str) -> None:
        self.stream = stream
        self.prefix = prefix
        self.at_line_start = True

    def write(self, text: str) -> int:
        for part in text.splitlines(keepends=True):
            if self.at_line_start:
                self.stream.write(self.prefix)
            self.stream.write(part)
            self.at_line_start = part.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def _fold_worker(
    device, threads, make_builder, experiment_dir, schedule, name, tasks, results, verbose
) -> None:
    import queue
    import sys

    as_child()
    sys.stdout = _PrefixedStream(sys.__stdout__, f"[{device}] ")
    setup_logging(stream=sys.stdout)
    torch.set_num_threads(threads)
    build = make_builder(device)
    while True:
        try:
            fold = tasks.get_nowait()
        except queue.Empty:
            return
        try:
            log.info("%s fold %d: training on %s", name, fold, device)
            result = run_fold(
                build(fold),
                fold_dir(experiment_dir, fold),
                schedule,
                f"{name} fold {fold}",
                progress=False,
                verbose=verbose,
            )
            result["device"] = device
            log.info(
                "%s fold %d: best %s %s (%s s)",
                name,
                fold,
                MONITOR,
                result.get("best_val_lwlrap"),
                result.get("seconds"),
            )
        except Exception as error:  # reported by the parent; the other folds go on
            log.exception("%s fold %d failed on %s", name, fold, device)
            result = {"error": f"{type(error).__name__}: {error}", "device": device}
        results.put((fold, result))


def train_folds_parallel(
    experiment_dir: Path,
    folds: Sequence[int],
    make_builder: Callable[[str], Callable[[int], FoldParts]],
    schedule: Schedule,
    name: str,
    devices: Sequence[str],
    verbose: bool = False,
) -> dict[int, dict]:
    """Train folds on several devices at once: each device's process takes the next unfinished
    fold from a shared queue until none is left, so every fold is trained exactly once.

    `make_builder(device)` must be picklable (a top-level function or a functools.partial):
    it runs in the worker and loads the data there. Fake devices work too (`cpu,cpu`).
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    tasks, results = context.Queue(), context.Queue()
    pending = [f for f in folds if not fold_finished(fold_dir(experiment_dir, f))]
    finished = {f: read_finished(fold_dir(experiment_dir, f)) for f in folds if f not in pending}
    for fold in pending:
        tasks.put(fold)
    cpu_devices = sum(torch.device(d).type == "cpu" for d in devices)
    threads = max(1, (os.cpu_count() or 1) // max(1, cpu_devices))
    workers = [
        context.Process(
            target=_fold_worker,
            args=(
                device,
                threads,
                make_builder,
                experiment_dir,
                schedule,
                name,
                tasks,
                results,
                verbose,
            ),
        )
        for device in devices[: max(1, len(pending))]
    ]
    collected = {}
    try:
        with starting_children():
            for worker in workers:
                worker.start()
        while len(collected) < len(pending):
            if not any(w.is_alive() for w in workers) and results.empty():
                break
            try:
                fold, result = results.get(timeout=1.0)
            except Exception:
                continue
            collected[fold] = result
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: a fold's next run resumes from last.pth
        for worker in workers:
            if worker.pid is not None:  # started
                worker.terminate()
        raise
    finally:
        for worker in workers:
            if worker.pid is not None:
                worker.join()
    failed = {f: r["error"] for f, r in collected.items() if "error" in r}
    lost = sorted(set(pending) - set(collected))
    if failed or lost:
        details = "; ".join(f"fold {f}: {e}" for f, e in sorted(failed.items()))
        raise RuntimeError(
            f"{name}: folds failed ({details}){f'; no result for folds {lost}' if lost else ''}"
        )
    return {**finished, **collected}


def parse_devices(text: str) -> list[str]:
    """'0,1' -> ['cuda:0', 'cuda:1']; device names ('cpu', 'cuda:2') are kept as they are."""
    devices = [part.strip() for part in text.split(",") if part.strip()]
    if not devices:
        raise ConfigError("--gpus needs at least one device")
    return [f"cuda:{d}" if d.isdigit() else d for d in devices]
