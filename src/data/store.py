"""The spectrogram store: every clip of a set turned into log-mel once, kept on disk.

A store is a folder `<cache_dir>/<set>-<key>/` where the key is a hash of everything that
shapes its content: the audio configuration and the list of files (name, size and modification
time in nanoseconds of each, so a clip re-encoded to the same size makes a new store). Label
corrections do not change a single spectrogram, so they are not part of the key: removing or
relabelling clips is a view that the label tables (`src.data.labels`) take over a store, and
changing the corrections never re-extracts 80 hours of audio.

Layout of a store:
    spectrograms.f32   all clips' frames, time-major (frames, n_mels) float32, back to back,
                       so each clip is one contiguous block read through a memory map
    index.csv          fname, offset, frames (offset and length in frames)
    manifest.json      the settings that made it, counts, and which backend computed it
    failures.csv       files that could not be decoded, with the reason (only if any)

A store is built in a staged folder beside it (`src.utils.staged_folder`) and renamed when
complete, so an interrupted extraction never leaves a folder that looks finished.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from src.config import AUDIO, AudioConfig, ConfigError, Paths
from src.data.audio import (
    AudioDecodeError,
    file_failure,
    list_audio_files,
    make_extractor,
    read_audio,
)
from src.data.labels import listed_audio_files
from src.utils import (
    pool_map,
    progress_shown,
    remove_leftovers_of,
    staged_folder,
    start_pool,
    writer_lock,
)

log = logging.getLogger(__name__)

DATA_FILE = "spectrograms.f32"
INDEX_FILE = "index.csv"
MANIFEST_FILE = "manifest.json"
FAILURES_FILE = "failures.csv"
STORE_VERSION = 1


class StoreError(RuntimeError):
    """A store that is missing, incomplete or does not hold a requested clip."""


@dataclass(frozen=True)
class Extraction:
    """How spectrograms are computed (none of it changes the result beyond 1e-3 dB)."""

    backend: str = "torch"  # 'torch' or 'librosa'
    device: str = "cpu"  # the torch backend may run on 'cuda'
    workers: int = 1  # processes that decode audio (and compute log-mel on the CPU)
    precision: str = "float64"
    gpu_batch_clips: int = 64


def store_key(files: Sequence[Path], config: AudioConfig = AUDIO) -> str:
    """A hash of the audio settings and the file list (name, size and mtime in ns of each)."""
    digest = hashlib.sha1()
    digest.update(f"v{STORE_VERSION};{config.hash()}".encode())
    for path in files:
        try:
            stat = path.stat()
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # missing: the extraction reports it as a failure
            size, mtime = -1, -1
        digest.update(f";{path.name}:{size}:{mtime}".encode())
    return digest.hexdigest()[:10]


class SpectrogramStore:
    """Read access to a finished store; spectrograms come back as (n_mels, T) views."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST_FILE
        if not manifest_path.is_file():
            raise StoreError(f"{self.path}: not a finished spectrogram store (no {MANIFEST_FILE})")
        self.manifest = json.loads(manifest_path.read_text())
        self.n_mels = int(self.manifest["n_mels"])
        index = pd.read_csv(self.path / INDEX_FILE, dtype={"fname": str})
        self.fnames: list[str] = index["fname"].tolist()
        self._offset = dict(zip(self.fnames, index["offset"].astype(np.int64)))
        self._frames = dict(zip(self.fnames, index["frames"].astype(np.int64)))
        total = int(self.manifest["total_frames"])
        self._data = (
            np.memmap(self.path / DATA_FILE, dtype=np.float32, mode="r", shape=(total, self.n_mels))
            if total
            else np.zeros((0, self.n_mels), np.float32)
        )

    def __len__(self) -> int:
        return len(self.fnames)

    def __contains__(self, fname: object) -> bool:
        return fname in self._offset

    def __getitem__(self, fname: str) -> np.ndarray:
        """The clip's (n_mels, T) spectrogram: a read-only view into the memory map."""
        try:
            offset, frames = self._offset[fname], self._frames[fname]
        except KeyError:
            raise StoreError(f"{self.path}: no spectrogram for {fname!r}") from None
        return self._data[offset : offset + frames].T

    def frames(self, fname: str) -> int:
        return int(self._frames[fname])

    @property
    def failures(self) -> pd.DataFrame:
        path = self.path / FAILURES_FILE
        if path.is_file():
            return pd.read_csv(path, dtype=str)
        return pd.DataFrame(columns=["fname", "reason"])

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for fname in self.fnames:
            yield fname, self[fname]


# --------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------

_worker_extractor = None
_worker_config: AudioConfig = AUDIO


def _init_worker(config: AudioConfig, backend: str | None, precision: str) -> None:
    global _worker_extractor, _worker_config
    torch.set_num_threads(1)  # one process per core already
    _worker_config = config
    _worker_extractor = make_extractor(backend, "cpu", config, precision) if backend else None


def _process(path: Path) -> tuple[str, np.ndarray | None, str | None]:
    """Decode one file (and compute its log-mel when the workers do that). Whatever goes
    wrong (a non-finite log-mel, MemoryError, ...) is this file's failure."""
    try:
        with file_failure(path):
            audio = read_audio(path, _worker_config)
            if _worker_extractor is None:
                return path.name, audio, None
            return path.name, _worker_extractor([audio])[0], None
    except AudioDecodeError as error:
        return path.name, None, error.reason


def _results(files: Sequence[Path], extraction: Extraction, config: AudioConfig):
    """(fname, spectrogram or None, error or None) for every file, in order."""
    on_gpu = torch.device(extraction.device).type != "cpu"
    worker_backend = None if on_gpu else extraction.backend
    init_args = (config, worker_backend, extraction.precision)
    pool = None
    try:
        if extraction.workers > 1:
            # fork starts in milliseconds; a process that already holds CUDA must spawn.
            method = "spawn" if torch.cuda.is_initialized() or os.name != "posix" else "fork"
            context = get_context(method)
            pool = start_pool(context, extraction.workers, _init_worker, init_args)
            chunk = max(1, min(16, len(files) // (4 * extraction.workers)))
            decoded = pool_map(pool, _process, files, chunk)
        else:
            _init_worker(*init_args)
            decoded = map(_process, files)
        if not on_gpu:
            yield from decoded
            return
        # Workers decode, the GPU computes log-mel in batches: the CPU never waits on it.
        extractor = make_extractor("torch", extraction.device, config, extraction.precision)
        pending: list[tuple[str, np.ndarray | None, str | None]] = []
        for item in decoded:
            pending.append(item)
            if len(pending) >= extraction.gpu_batch_clips:
                yield from _gpu_batch(extractor, pending)
                pending = []
        yield from _gpu_batch(extractor, pending)
    finally:
        if pool is not None:
            pool.terminate()


def _gpu_batch(extractor, pending):
    """Log-mel of the decoded clips in one batch; when the batch fails (a non-finite log-mel,
    out of memory), clip by clip, so only the culprits fail."""
    waves = [audio for _, audio, _ in pending if audio is not None]
    try:
        specs = iter(extractor(waves)) if waves else iter(())
    except Exception:
        specs = None
    for fname, audio, error in pending:
        if audio is None:
            yield fname, None, error
        elif specs is not None:
            yield fname, next(specs), None
        else:
            try:
                with file_failure(fname):
                    spectrogram = extractor([audio])[0]
            except AudioDecodeError as failure:
                yield fname, None, failure.reason
            else:
                yield fname, spectrogram, None


def _write_store(
    target: Path,
    files: Sequence[Path],
    set_name: str,
    extraction: Extraction,
    config: AudioConfig,
    progress: bool,
) -> None:
    index_rows, failures = [], []
    offset = 0
    started = time.time()
    with staged_folder(target) as tmp:
        with (tmp / DATA_FILE).open("wb") as data:
            results = _results(files, extraction, config)
            bar = tqdm(
                results,
                total=len(files),
                desc=f"log-mel {set_name}",
                unit="clip",
                disable=not (progress and progress_shown()),
                smoothing=0.05,
            )
            for fname, spec, error in bar:
                if spec is None:
                    failures.append((fname, error))
                    continue
                block = np.ascontiguousarray(spec.T, dtype=np.float32)
                data.write(block.tobytes())
                index_rows.append((fname, offset, block.shape[0]))
                offset += block.shape[0]
        pd.DataFrame(index_rows, columns=["fname", "offset", "frames"]).to_csv(
            tmp / INDEX_FILE, index=False
        )
        if failures:
            with (tmp / FAILURES_FILE).open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["fname", "reason"])
                writer.writerows(failures)
        manifest = {
            "version": STORE_VERSION,
            "set": set_name,
            "audio": asdict(config),
            "audio_hash": config.hash(),
            "n_mels": config.n_mels,
            "clips": len(index_rows),
            "failed": len(failures),
            "total_frames": offset,
            "extraction": asdict(extraction),
            "seconds": round(time.time() - started, 2),
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        try:
            tmp.rename(target)
        except OSError:
            # Unless another process finished the same store first (where locks do not work):
            # theirs is identical, and this one's staged folder goes with the block.
            if not (target / MANIFEST_FILE).is_file():
                raise
    if failures:
        shown = "\n".join(f"  {name}: {reason}" for name, reason in failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        log.warning(
            "%d of %d %s files could not be decoded and are left out (report: %s):\n%s%s",
            len(failures),
            len(files),
            set_name,
            target / FAILURES_FILE,
            shown,
            more,
        )


def get_store(
    set_name: str,
    files: Sequence[str | os.PathLike],
    cache_dir: str | os.PathLike,
    extraction: Extraction | None = None,
    config: AudioConfig = AUDIO,
    progress: bool = True,
) -> SpectrogramStore:
    """The store of `files`, extracting it first when it does not exist yet."""
    files = [Path(f) for f in files]
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})[:5]
        raise StoreError(
            f"{set_name}: file names must be unique within a set, repeated: {duplicated}"
        )
    target = Path(cache_dir) / f"{set_name}-{store_key(files, config)}"
    if (target / MANIFEST_FILE).is_file():
        log.info(
            "reusing the %s store %s: same files (names, sizes, mtimes) and audio settings",
            set_name,
            target,
        )
    else:
        # One builder per store: a second process waits for the first, then reads its store.
        lock = target.with_name(f".{target.name}.lock")
        with writer_lock(lock, f"the {set_name} store {target}", wait=True):
            if not (target / MANIFEST_FILE).is_file():
                remove_leftovers_of(target)  # killed builders' staged folders
                extraction = extraction or Extraction(workers=default_extraction_workers())
                others = sorted(
                    p.name
                    for p in target.parent.glob(f"{set_name}-*")
                    if (p / MANIFEST_FILE).is_file()
                )
                why = (
                    "files (names, sizes, mtimes) or audio settings differ from those of "
                    f"{others[-3:]}"
                    if others
                    else "no store of this set yet"
                )
                log.info("extracting %d %s clips into %s: %s", len(files), set_name, target, why)
                _write_store(target, files, set_name, extraction, config, progress)
    return SpectrogramStore(target)


def default_extraction_workers() -> int:
    return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------
# Stores of the three Kaggle sets
# --------------------------------------------------------------------------------------


def curated_store(
    paths: Paths, extraction: Extraction | None = None, progress: bool = True
) -> SpectrogramStore:
    files = listed_audio_files(paths.train_curated_csv, paths.train_curated_dir)
    return get_store("curated", files, paths.cache_dir, extraction, progress=progress)


def noisy_store(paths: Paths, extraction: Extraction | None = None) -> SpectrogramStore:
    files = listed_audio_files(paths.train_noisy_csv, paths.train_noisy_dir)
    return get_store("noisy", files, paths.cache_dir, extraction)


def find_test_files(paths: Paths) -> list[Path]:
    """The test clips, or a clear error when the folder is missing or holds no audio."""
    if not paths.test_dir.is_dir():
        raise ConfigError(f"{paths.test_dir}: test folder not found")
    files = list_audio_files(paths.test_dir)
    if not files:
        raise ConfigError(f"{paths.test_dir}: the test folder holds no audio files")
    return files


def test_store(paths: Paths, extraction: Extraction | None = None) -> SpectrogramStore:
    return get_store("test", find_test_files(paths), paths.cache_dir, extraction)
