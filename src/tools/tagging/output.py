"""What tags look like outside: the top classes printed per file (as the original demo printed
them, in columns as wide as the longest class name), a JSON line per file, the labels above a
threshold, the CSV tables of clips and tiles, the CSV rows written as files are tagged, and the
embeddings file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from src.tools.tagging.files import TaggedFile
from src.utils import tmp_name

NAME_WIDTH = 20  # the original demo's column for class names


def top_classes(
    probabilities: np.ndarray, classes: Sequence[str], k: int
) -> list[tuple[str, float]]:
    """The k most probable classes, highest first (ties: class order)."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [(classes[i], float(probabilities[i])) for i in order]


def name_width(classes: Sequence[str]) -> int:
    """The class-name column: 20 characters, or the longest name, so that columns line up."""
    return max([NAME_WIDTH, *map(len, classes)])


def format_top(top: Sequence[tuple[str, float]], width: int = NAME_WIDTH) -> str:
    """'<name right-justified to `width`> - <p with 2 decimals>' entries joined by tabs."""
    return "\t".join(f"{name:>{width}} - {probability:.2f}" for name, probability in top)


def labels_above(probabilities: np.ndarray, classes: Sequence[str], threshold: float) -> list[str]:
    """The multi-label decision: every class whose probability reaches `threshold`, the most
    probable first."""
    return [name for name, p in top_classes(probabilities, classes, len(classes)) if p >= threshold]


def json_line(
    shown: str,
    tagged: TaggedFile,
    classes: Sequence[str],
    k: int,
    threshold: float | None = None,
) -> str:
    """One file's tags as one JSON object: its shown name, the file, the top-k, every class's
    probability, and with a threshold its labels."""
    top = top_classes(tagged.tags.clip, classes, k)
    record = {
        "path": shown,
        "file": str(tagged.clip.path),
        "top": [{"class": name, "probability": p} for name, p in top],
        "probabilities": {name: float(p) for name, p in zip(classes, tagged.tags.clip)},
    }
    if threshold is not None:
        record["labels"] = labels_above(tagged.tags.clip, classes, threshold)
    return json.dumps(record)


def probabilities_frame(
    paths: Sequence[str], probabilities: Sequence[np.ndarray], classes: Sequence[str]
) -> pd.DataFrame:
    """path + one probability column per class, one row per file."""
    frame = pd.DataFrame(np.stack(probabilities).astype(np.float64), columns=list(classes))
    frame.insert(0, "path", list(paths))
    return frame


Namer = Callable[[Path], str]  # the name a file is shown under


def clips_frame(
    tagged: Sequence[TaggedFile], classes: Sequence[str], shown: Namer = str
) -> pd.DataFrame:
    """path (as `shown` names it) + one probability column per class, one row per file."""
    return probabilities_frame(
        [shown(t.clip.path) for t in tagged], [t.tags.clip for t in tagged], classes
    )


def tiles_frame(
    tagged: Sequence[TaggedFile],
    classes: Sequence[str],
    tile_seconds: float,
    shown: Namer = str,
) -> pd.DataFrame:
    """path, tile, start_s, end_s + one probability column per class, one row per tile."""
    frame = pd.DataFrame(
        np.concatenate([t.tags.tiles for t in tagged]).astype(np.float64), columns=list(classes)
    )
    starts = np.concatenate([t.tile_starts for t in tagged])
    frame.insert(0, "path", [shown(t.clip.path) for t in tagged for _ in t.tile_starts])
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
        shown: Namer = str,
    ) -> None:
        self.paths = [p for p in (clips_csv, tiles_csv) if p is not None]
        self.clips_csv, self.tiles_csv = clips_csv, tiles_csv
        self.classes, self.tile_seconds, self.shown = classes, tile_seconds, shown
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
        self._append(self.clips_csv, clips_frame([tagged], self.classes, self.shown))
        if self.tiles_csv is not None:
            tiles = tiles_frame([tagged], self.classes, self.tile_seconds, self.shown)
            self._append(self.tiles_csv, tiles)
        self.rows += 1

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class EmbeddingWriter:
    """--embeddings: the files' embeddings kept as they are tagged, written as one .npz at the
    end (under a temporary name, then renamed): `paths` (n_files,) the shown names,
    `embeddings` (n_files, n_features) float32, and with tiles `tile_file` (index into
    `paths`), `tile`, `start_s`, `end_s` and `tile_embeddings` (n_tiles, n_features)."""

    def __init__(self, path: Path, tiles: bool, tile_seconds: float, shown: Namer = str) -> None:
        self.path, self.tiles, self.tile_seconds, self.shown = path, tiles, tile_seconds, shown
        self._files: list[TaggedFile] = []

    def add(self, tagged: TaggedFile) -> None:
        # Only what the file needs is kept: not the spectrogram.
        self._files.append(TaggedFile(None, tagged.tags, tagged.tile_starts, tagged.clip.path))

    def __len__(self) -> int:
        return len(self._files)

    def arrays(self) -> dict[str, np.ndarray]:
        files = self._files
        width = len(files[0].tags.embedding) if files else 0
        arrays = {
            "paths": np.array([self.shown(t.path) for t in files], dtype=str),
            "embeddings": np.stack([t.tags.embedding for t in files]).astype(np.float32)
            if files
            else np.zeros((0, width), np.float32),
        }
        if self.tiles:
            starts = np.concatenate([t.tile_starts for t in files]) if files else np.zeros(0)
            arrays.update(
                tile_file=np.array(
                    [i for i, t in enumerate(files) for _ in t.tile_starts], dtype=np.int64
                ),
                tile=np.array([j for t in files for j in range(len(t.tile_starts))], np.int64),
                start_s=starts,
                end_s=starts + self.tile_seconds,
                tile_embeddings=np.concatenate([t.tags.tile_embeddings for t in files]).astype(
                    np.float32
                )
                if files
                else np.zeros((0, width), np.float32),
            )
        return arrays

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_name(self.path)
        try:
            with open(tmp, "wb") as handle:
                np.savez(handle, **self.arrays())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
