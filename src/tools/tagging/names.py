"""The names people know their files by: a file that make_dataset.py laid out
(`<dataset>/<split folder>/<content name>`) is shown under the recording it came from, as the
dataset's `sources.csv` records it; any other file under its own path."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

SOURCES_FILE = "sources.csv"  # make_dataset.py's: split, file (relative to the dataset), source


class UserNames:
    """`shown(path)` and `shown_fname(fname)` for the files of the datasets met so far."""

    def __init__(self, paths: Iterable[str | os.PathLike] = ()) -> None:
        self._tables: dict[Path, dict[str, str]] = {}
        self._by_fname: dict[str, str] = {}
        for path in paths:
            self.shown(path)

    def _table(self, root: Path) -> dict[str, str]:
        if root not in self._tables:
            table: dict[str, str] = {}
            sources = root / SOURCES_FILE
            if sources.is_file():
                try:
                    frame = pd.read_csv(sources, dtype=str, keep_default_na=False)
                    table = dict(zip(frame["file"], frame["source"]))
                except (KeyError, ValueError, OSError):  # not make_dataset.py's: no names
                    table = {}
                self._by_fname.update({Path(f).name: s for f, s in table.items()})
            self._tables[root] = table
        return self._tables[root]

    def shown(self, path: str | os.PathLike) -> str:
        """The recording `path` was made from, or `path` itself."""
        path = Path(path)
        table = self._table(path.parent.parent)
        return table.get(f"{path.parent.name}/{path.name}", str(path))

    def shown_fname(self, fname: str) -> str:
        """A labels file's fname under its recording's name (when a dataset met lists it)."""
        return self._by_fname.get(fname, fname)
