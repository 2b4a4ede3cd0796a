"""Tagging: clips in memory tagged by a model source, and files (or samples in memory) read
and tagged a chunk at a time, so that memory holds one chunk's spectrograms whatever the
number of files. With `embeddings=True` each result also holds the clip's embedding and its
tiles' (`Tags.embedding`, `Tags.tile_embeddings`), from the same pass."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.data.audio import AudioDecodeError, MelExtractor
from src.tools.tagging import clips
from src.tools.tagging.sources import ModelSource, Tags

FILES_PER_CHUNK = 32  # files decoded and predicted together (their tiles share batches)
# ... or fewer, so that a chunk's spectrograms stay small (2**16 frames: 34 min, 34 MB).
FRAMES_PER_CHUNK = 2**16


@dataclass
class TaggedFile:
    clip: clips.Clip | None  # None once its spectrogram is let go (`path` names it)
    tags: Tags
    tile_starts: np.ndarray  # (n_tiles,) seconds from the start of the file
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.path is None and self.clip is not None:
            self.path = self.clip.path


def tag_clips(
    batch: Sequence[clips.Clip], source: ModelSource, embeddings: bool = False
) -> list[TaggedFile]:
    """The tags of clips already read (their tiles share the model's batches), in order."""
    if not batch:
        return []
    tags = source.predict([c.spectrogram for c in batch], embeddings)
    tile, step = source.predictor.tile, source.predictor.step
    return [
        TaggedFile(c, t, clips.tile_starts(c, tile, step)) for c, t in zip(batch, tags, strict=True)
    ]


def tag_files(
    files: Sequence[Path | clips.Samples],
    source: ModelSource,
    extractor: MelExtractor | None = None,
    chunk: int | None = None,
    embeddings: bool = False,
) -> Iterator[TaggedFile | AudioDecodeError]:
    """For each file (or `clips.Samples`) in order, its tags or the reason it could not be
    decoded.

    Files are read and predicted a chunk at a time (`chunk` files or FRAMES_PER_CHUNK frames,
    whichever comes first). `clips.read_clip` and the chunk sizes are looked up at each call.
    """
    extractor = extractor or clips.default_extractor()
    chunk = chunk or FILES_PER_CHUNK

    def predicted(
        results: list[clips.Clip | AudioDecodeError],
    ) -> Iterator[TaggedFile | AudioDecodeError]:
        read = [r for r in results if isinstance(r, clips.Clip)]
        tagged = iter(tag_clips(read, source, embeddings))
        for result in results:
            yield next(tagged) if isinstance(result, clips.Clip) else result

    results: list[clips.Clip | AudioDecodeError] = []
    frames = 0
    for path in files:
        try:
            if isinstance(path, clips.Samples):
                results.append(clips.samples_clip(path, extractor))
            else:
                results.append(clips.read_clip(Path(path), extractor))
            frames += results[-1].spectrogram.shape[1]
        except AudioDecodeError as error:
            results.append(error)
        if len(results) >= chunk or frames >= FRAMES_PER_CHUNK:
            yield from predicted(results)
            results, frames = [], 0
    yield from predicted(results)
