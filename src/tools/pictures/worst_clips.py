"""tag_audio.py --score LABELS --plot DIR: DIR/worst_clips.png, where to look first when a
score is low.

The worst clips are the WORST_CLIPS scored files with the lowest label-ranking precision
(`Score.per_file`: 0 < precision <= 1, 1 when a file's labels are its top classes; ties keep
the order the files were tagged in). Each panel is the file's spectrogram as the tagger read it
(read again: only these files), with its true labels, its top classes and its precision.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from src.tools.pictures.axes import DPI, save_figure
from src.tools.pictures.spectrograms import labels_line, read_panels, spectrogram_figure, tags_line
from src.tools.scoring import Score

WORST_CLIPS = 12
COLUMNS = 4


def worst_files(score: Score, count: int = WORST_CLIPS) -> pd.DataFrame:
    """The `count` rows of `score.per_file` with the lowest precision, lowest first."""
    return score.per_file.sort_values("precision", kind="stable").head(count)


def plot_worst_clips(
    score: Score,
    paths: Sequence[str],
    probabilities: np.ndarray,
    classes: Sequence[str],
    png_path: str | os.PathLike,
    count: int = WORST_CLIPS,
    top: int = 3,
    dpi: int = DPI,
) -> int:
    """Draw the worst clips of `score` (`probabilities`: one row per path of `paths`, columns
    `classes`) into `png_path`; returns how many."""
    rows = {path: row for row, path in enumerate(paths)}
    worst = worst_files(score, count)
    panels = read_panels([Path(p) for p in worst["path"]])
    for panel, (_, file) in zip(panels, worst.iterrows()):
        panel.lines = [
            labels_line(file["labels"]),
            tags_line(probabilities[rows[file["path"]]], classes, top),
            f"label-ranking precision {file['precision']:.2f}",
        ]
    title = (
        f"the {len(panels)} of {score.n_files} scored files with the lowest label-ranking "
        f"precision (lwlrap {score.lwlrap:.4f}, top-1 accuracy {score.top1:.4f})"
    )
    save_figure(spectrogram_figure(panels, COLUMNS, title), png_path, dpi)
    return len(panels)
