"""What tags look like outside: the top classes printed per file (as the original demo printed
them), the CSV tables of clips and tiles, and the CSV rows written as files are tagged."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from src.tools.tagging.files import TaggedFile


def top_classes(
    probabilities: np.ndarray, classes: Sequence[str], k: int
) -> list[tuple[str, float]]:
    """The k most probable classes, highest first (ties: class order)."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [(classes[i], float(probabilities[i])) for i in order]


def format_top(top: Sequence[tuple[str, float]]) -> str:
    """'<name right-justified to 20> - <p with 2 decimals>' entries joined by tabs."""
    return "\t".join(f"{name:>20} - {probability:.2f}" for name, probability in top)


def probabilities_frame(
    paths: Sequence[str], probabilities: Sequence[np.ndarray], classes: Sequence[str]
) -> pd.DataFrame:
    """path + one probability column per class, one row per file."""
    frame = pd.DataFrame(np.stack(probabilities).astype(np.float64), columns=list(classes))
    frame.insert(0, "path", list(paths))
    return frame


def clips_frame(tagged: Sequence[TaggedFile], classes: Sequence[str]) -> pd.DataFrame:
    """path + one probability column per class, one row per file."""
    return probabilities_frame(
        [str(t.clip.path) for t in tagged], [t.tags.clip for t in tagged], classes
    )


def tiles_frame(
    tagged: Sequence[TaggedFile], classes: Sequence[str], tile_seconds: float
) -> pd.DataFrame:
    """path, tile, start_s, end_s + one probability column per class, one row per tile."""
    frame = pd.DataFrame(
        np.concatenate([t.tags.tiles for t in tagged]).astype(np.float64), columns=list(classes)
    )
    starts = np.concatenate([t.tile_starts for t in tagged])
    frame.insert(0, "path", [str(t.clip.path) for t in tagged for _ in t.tile_starts])
    frame.insert(1, "tile", [i for t in tagged for i in range(len(t.tile_starts))])
    frame.insert(2, "start_s", starts)
    frame.insert(3, "end_s", starts + tile_seconds)
    return frame


class RowWriter:
    """--csv and --tiles-csv written as files are tagged: each file's rows are appended and
    flushed at once, so an interrupted run leaves CSVs complete up to the last file tagged
    (the same text as `clips_frame`/`tiles_frame` of all files written at the end). A CSV is
    created with the first row: a run that tags nothing leaves an existing file alone."""

    def __init__(
        self,
        clips_csv: Path | None,
        tiles_csv: Path | None,
        classes: Sequence[str],
        tile_seconds: float,
    ) -> None:
        self.paths = [p for p in (clips_csv, tiles_csv) if p is not None]
        self.clips_csv, self.tiles_csv = clips_csv, tiles_csv
        self.classes, self.tile_seconds = classes, tile_seconds
        self.rows = 0
        self._handles: dict[Path, object] = {}

    def _append(self, path: Path | None, frame: pd.DataFrame) -> None:
        if path is None:
            return
        handle = self._handles.get(path)
        first = handle is None
        if first:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = self._handles[path] = path.open("w", newline="")
        frame.to_csv(handle, header=first, index=False)
        handle.flush()

    def write(self, tagged: TaggedFile) -> None:
        self._append(self.clips_csv, clips_frame([tagged], self.classes))
        if self.tiles_csv is not None:
            self._append(self.tiles_csv, tiles_frame([tagged], self.classes, self.tile_seconds))
        self.rows += 1

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
