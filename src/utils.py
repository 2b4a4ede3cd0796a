"""Small helpers used across the package: atomic writes, geometric means, logging set-up."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write to a temporary name beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(data: object, path: str | os.PathLike) -> None:
    write_text_atomic(json.dumps(data, indent=2) + "\n", path)


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike, **kwargs) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    frame.to_csv(tmp, index=kwargs.pop("index", False), **kwargs)
    os.replace(tmp, path)


def save_npy_atomic(array: np.ndarray, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with tmp.open("wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


@contextmanager
def interrupts_left_to_main() -> Iterator[None]:
    """Start worker processes under this: they ignore Ctrl-C from their first instruction.

    Ctrl-C reaches the whole process group; only the main process should handle it (it stops
    its pool, cleans up and reports one line, see cli.run_main), or every worker prints a
    traceback. An ignored signal is inherited by forked and spawned children alike, and
    Python then installs no handler of its own in them."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; its pool starts are the ones that matter
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def geometric_mean(arrays: list[np.ndarray], eps: float = 1e-12) -> np.ndarray:
    """Element-wise geometric mean exp(mean(log x)) of equally shaped arrays.

    Probabilities are floored at `eps` so an exact 0 does not zero the whole blend.
    """
    if not arrays:
        raise ValueError("geometric_mean needs at least one array")
    stacked = np.stack([np.asarray(a, dtype=np.float64) for a in arrays])
    return np.exp(np.log(np.clip(stacked, eps, None)).mean(axis=0))


COMPILE_PREFIX = "_orig_mod."


def plain_module(module):
    """The module a `torch.compile` wrapper holds (its parameters are shared), or `module`."""
    return getattr(module, "_orig_mod", module)


def strip_compile_prefix(state_dict: dict) -> dict:
    """State-dict keys without torch.compile's `_orig_mod.` prefix (checkpoints written by
    `--compile` runs before it was stripped on save)."""
    return {
        (key[len(COMPILE_PREFIX) :] if key.startswith(COMPILE_PREFIX) else key): value
        for key, value in state_dict.items()
    }


class _NotArgus(logging.Filter):
    """argus models print their own log lines; the root handler must not print them again."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("argus.")


def setup_logging(level: int = logging.INFO, stream=None) -> None:
    """Log lines of the project's modules to stdout; argus's own lines are not repeated."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s]: %(message)s"))
    handler.addFilter(_NotArgus())
    logging.basicConfig(level=level, handlers=[handler], force=True)
