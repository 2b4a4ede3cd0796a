"""Tagging: clips in memory tagged by a model source, and files read and tagged a chunk at a
time, so that memory holds one chunk's spectrograms whatever the number of files."""

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
    clip: clips.Clip
    tags: Tags
    tile_starts: np.ndarray  # (n_tiles,) seconds from the start of the file


def tag_clips(batch: Sequence[clips.Clip], source: ModelSource) -> list[TaggedFile]:
    """The tags of clips already read (their tiles share the model's batches), in order."""
    if not batch:
        return []
    tags = source.predict([c.spectrogram for c in batch])
    tile, step = source.predictor.tile, source.predictor.step
    return [
        TaggedFile(c, t, clips.tile_starts(c, tile, step)) for c, t in zip(batch, tags, strict=True)
    ]


def tag_files(
    files: Sequence[Path],
    source: ModelSource,
    extractor: MelExtractor | None = None,
    chunk: int | None = None,
) -> Iterator[TaggedFile | AudioDecodeError]:
    """For each file in order, its tags or the reason it could not be decoded.

    Files are read and predicted a chunk at a time (`chunk` files or FRAMES_PER_CHUNK frames,
    whichever comes first). `clips.read_clip` and the chunk sizes are looked up at each call.
    """
    extractor = extractor or clips.default_extractor()
    chunk = chunk or FILES_PER_CHUNK

    def predicted(
        results: list[clips.Clip | AudioDecodeError],
    ) -> Iterator[TaggedFile | AudioDecodeError]:
        tagged = iter(tag_clips([r for r in results if isinstance(r, clips.Clip)], source))
        for result in results:
            yield next(tagged) if isinstance(result, clips.Clip) else result

    results: list[clips.Clip | AudioDecodeError] = []
    frames = 0
    for path in files:
        try:
            results.append(clips.read_clip(Path(path), extractor))
            frames += results[-1].spectrogram.shape[1]
        except AudioDecodeError as error:
            results.append(error)
        if len(results) >= chunk or frames >= FRAMES_PER_CHUNK:
            yield from predicted(results)
            results, frames = [], 0
    yield from predicted(results)
