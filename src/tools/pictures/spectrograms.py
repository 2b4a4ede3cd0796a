"""show.py spectrograms: a grid of clips' log-mel spectrograms exactly as the pipeline computes
them, each with its file name and its labels (a `fname,labels` CSV) or a model's top tags.

A clip is read as the tagger reads it (`src.tools.tagging.clips.read_clip`: `read_audio`'s decoding,
trimming and short-clip rule, then the spectrogram cache's torch log-mel, within 1e-3 dB of
`read_as_melspectrogram`); with a model, the tagger itself reads and tags the files
(`tag_files`). The x axis is seconds in the file (the trimmed silence before frame 0
included), the y axis Hz on the mel scale, one dB colour scale for every panel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.config import ConfigError
from src.data.audio import AudioDecodeError, MelExtractor
from src.tools.pictures.axes import DPI, draw_log_mel, save_figure, short_name, value_range
from src.tools.tagging.clips import collect_audio_files, default_extractor, read_clip
from src.tools.tagging.files import tag_files
from src.tools.tagging.names import UserNames
from src.tools.tagging.output import top_classes
from src.tools.tagging.sources import ModelSource

MAX_PANELS = 12  # --limit's default: a grid people can still read
PANEL_SIZE = (4.2, 2.1)  # inches per panel


@dataclass
class ClipPanel:
    """One panel: a clip's log-mel (n_mels, T), where frame 0 lies in the file, its notes."""

    path: Path
    spectrogram: np.ndarray
    offset: float = 0.0  # seconds of leading silence trimmed before frame 0
    lines: list[str] = field(default_factory=list)
    name: str = ""  # the name people know the file by (default: the file's own)

    @property
    def title(self) -> str:
        return short_name(self.name or self.path.name)


def labels_line(labels: str | None) -> str:
    return f"labels: {labels.replace(',', ', ')}" if labels else "labels: (not in the labels file)"


def tags_line(probabilities: np.ndarray, classes: Sequence[str], top: int) -> str:
    return "top: " + ", ".join(
        f"{name} {p:.2f}" for name, p in top_classes(probabilities, classes, top)
    )


def read_panels(
    files: Sequence[Path],
    labels: Mapping[str, str] | None = None,
    source: ModelSource | None = None,
    top: int = 3,
    extractor: MelExtractor | None = None,
) -> list[ClipPanel]:
    """A panel per file, in order; a file that cannot be read is a ConfigError naming it.
    `labels`: file name -> comma-separated labels; `source`: tag each file with it. A file
    make_dataset.py laid out is titled with the recording it came from."""
    extractor = extractor or default_extractor()
    names = UserNames()
    panels: list[ClipPanel] = []
    if source is not None:
        results = tag_files(files, source, extractor)
    else:
        results = (_read(Path(path), extractor) for path in files)
    for result in results:
        if isinstance(result, AudioDecodeError):
            raise ConfigError(f"{result.path}: {result.reason}")
        if isinstance(result, ClipPanel):
            panel = result
        else:  # a TaggedFile
            clip = result.clip
            panel = ClipPanel(clip.path, clip.spectrogram, clip.offset)
            panel.lines.append(tags_line(result.tags.clip, source.classes, top))
        panel.name = Path(names.shown(panel.path)).name
        if labels is not None:
            panel.lines.insert(0, labels_line(labels.get(panel.path.name)))
        panels.append(panel)
    return panels


def _read(path: Path, extractor: MelExtractor) -> ClipPanel | AudioDecodeError:
    try:
        clip = read_clip(path, extractor)
    except AudioDecodeError as error:
        return error
    return ClipPanel(clip.path, clip.spectrogram, clip.offset)


def spectrogram_figure(panels: Sequence[ClipPanel], columns: int | None = None, title: str = ""):
    """The grid (`columns` per row, default up to 3), one colour scale, one dB colour bar.
    Each panel's AxesImage holds its spectrogram as it is (`get_array()`)."""
    from src.plots import plt

    if not panels:
        raise ValueError("no clips to draw")
    columns = max(1, min(columns or 3, len(panels)))
    rows = -(-len(panels) // columns)
    width, height = PANEL_SIZE
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(width * columns + 1.0, height * rows + 0.4),
        squeeze=False,
        layout="constrained",
    )
    vmin, vmax = value_range([p.spectrogram for p in panels])
    drawn = None
    for axis, panel in zip(axes.flat, panels):
        drawn = draw_log_mel(axis, panel.spectrogram, panel.offset, vmin, vmax)
        axis.set_title("\n".join([panel.title, *panel.lines]), fontsize=8, loc="left")
    for axis in axes.flat[len(panels) :]:
        axis.set_axis_off()
    figure.colorbar(drawn, ax=axes.ravel().tolist(), label="dB", shrink=0.9)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def read_labels(path: str | os.PathLike) -> dict[str, str]:
    """file name -> labels of a `fname,labels` CSV (make_dataset.py's test_labels.csv)."""
    from src.tools.scoring import read_truth

    table = read_truth(path)
    return dict(zip(table["fname"], table["labels"]))


def show_spectrograms(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    labels_csv: str | os.PathLike | None = None,
    source: ModelSource | None = None,
    top: int = 3,
    limit: int = MAX_PANELS,
    columns: int | None = None,
    dpi: int = DPI,
) -> list[str]:
    """Read, draw and write the grid to `out`; returns what to tell the user."""
    files = collect_audio_files(inputs)
    notes = []
    if len(files) > limit:
        notes.append(f"showing the first {limit} of {len(files)} files (--limit)")
        files = files[:limit]
    labels = read_labels(labels_csv) if labels_csv is not None else None
    panels = read_panels(files, labels, source, top)
    title = f"log-mel spectrograms, tagged by the {source.description}" if source else ""
    save_figure(spectrogram_figure(panels, columns, title), out, dpi)
    notes.append(f"{len(panels)} spectrogram(s): {out}")
    return notes
