"""Small helpers used across the package: atomic writes and staged folders, one writer per
folder, geometric means, logging set-up."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import ConfigError
from src.library_internals import is_argus_record

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; one writer per folder is not enforced
    fcntl = None

log = logging.getLogger(__name__)


def tmp_name(path: str | os.PathLike) -> Path:
    """The temporary name a file or folder is built under before its rename into `path`:
    beside it, hidden, and unique per process (`.NAME.tmp-PID`), so two writers never write
    into the same temporary, and `remove_leftovers_of(path)` finds what killed ones left."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def staged_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A new, empty folder `tmp_name(path)` to build a folder in before it goes into place, so
    that no reader ever sees half of it.

    The block moves the staged folder (or its content) into place, by renames on the same file
    system: usually into `path` itself; a writer whose staging must not sit beside its target
    names it after another path of that file system. Whatever is left of the staged folder
    when the block ends, by an exception or Ctrl-C too, is removed. A killed process leaves it
    behind: the next writer removes it with `remove_leftovers_of(path)` while holding the lock
    that guards `path`."""
    staging = tmp_name(path)
    shutil.rmtree(staging, ignore_errors=True)  # a dead process's that had the same pid
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------
# One writer per folder
# --------------------------------------------------------------------------------------

LOCK_FILE = ".lock"


class LockedError(ConfigError):
    """Another process is writing the same folder (a fold, a store, predictions, an import)."""


@contextmanager
def writer_lock(lock_path: str | os.PathLike, what: str, wait: bool = False) -> Iterator[None]:
    """Hold the exclusive lock of `lock_path` (for a folder: `folder / LOCK_FILE`) while the
    block runs: a second process raises LockedError naming the holder (pid and host), or
    with `wait` blocks until the holder is done.

    An advisory `flock` on the file, which says who holds it: the system drops the lock when
    its holder ends however it ends (a kill included), so a lock is never stale. The file is
    removed on release, while still locked; a process that opened it before then finds it gone
    once it gets the lock, and locks the new file instead. Not enforced on Windows (no fcntl)
    nor on file systems without locks (a warning).
    """
    lock_path = Path(lock_path)
    if fcntl is None:
        yield
        return
    made = []  # folders created for the lock, deepest first: removed again if left empty
    folder = lock_path.parent
    while not folder.exists():
        made.append(folder)
        folder = folder.parent
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock_file(lock_path, what, wait)
    if fd is None:
        yield
        return
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode())
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)  # also for forked children sharing the descriptor
        os.close(fd)
        for folder in made:  # a refused run leaves no empty output folder behind
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: the run wrote something


def _lock_file(lock_path: Path, what: str, wait: bool) -> int | None:
    """The locked descriptor of `lock_path` (None where locks do not work)."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                _flock_soon(fd)
            except BlockingIOError:
                holder = _lock_holder(lock_path)
                if not wait:
                    raise LockedError(
                        f"{what} is being written by another process ({holder}; "
                        f"lock {lock_path}): wait for it to finish or stop it"
                    ) from None
                log.info("waiting for %s: another process (%s) is writing it", what, holder)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as error:  # e.g. ENOLCK on some network file systems
            os.close(fd)
            log.warning("%s: cannot lock (%s): a second writer is not detected", lock_path, error)
            return None
        except BaseException:  # LockedError, or Ctrl-C while waiting
            os.close(fd)
            raise
        try:
            current = os.stat(lock_path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            return fd
        os.close(fd)  # the previous holder removed this file when it let go: lock the new one


PROBE_GRACE = 0.2  # seconds a writer retries a lock a reader may be probing (`lock_holder`)


def _flock_soon(fd: int) -> None:
    """The exclusive lock of `fd` now, or within PROBE_GRACE seconds: `lock_holder` holds a
    lock for an instant to see whether anyone else does. BlockingIOError when still held."""
    deadline = time.monotonic() + PROBE_GRACE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _lock_holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "pid unknown"


def lock_holder(lock_path: str | os.PathLike) -> str | None:
    """Who holds the writer lock of `lock_path` ('pid N on host H', as `writer_lock` writes it)
    while a live process holds it; None when none does (no file, or one a killed holder left).

    Looks without waiting and without taking the lock for longer than an instant: a shared
    lock tried without blocking and let go at once (a writer starting in that instant retries,
    see `_flock_soon`). None where locks do not work (Windows, some network file systems)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:  # no lock file: nobody holds it
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _lock_holder(Path(lock_path))
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


_TMP_SUFFIX = re.compile(r"\.tmp(-\d+)?$")


def remove_leftovers(
    folder: str | os.PathLike, prefix: str = ".", recursive: bool = False
) -> list[Path]:
    """Delete the temporary files and folders (`*.tmp-PID`, or an older `*.tmp`) whose names
    start with `prefix` in `folder` (and its subfolders with `recursive`): what killed writers
    left. Call it only while holding the folder's writer lock: then no living process writes
    them. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for parent, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            if name.startswith(prefix) and _TMP_SUFFIX.search(name):
                entry = Path(parent) / name
                if name in dirs and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
        dirs[:] = [d for d in dirs if Path(parent, d) not in removed] if recursive else []
    if removed:
        log.info("%s: removed %d leftovers of an interrupted run", folder, len(removed))
    return removed


def remove_leftovers_of(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of `path` that killed writers left: `tmp_name(path)` of any pid,
    files and staged folders alike. Call it only while holding the lock that guards `path`."""
    path = Path(path)
    return remove_leftovers(path.parent, prefix=f".{path.name}.tmp")


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write to a temporary name beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_atomic(data: object, path: str | os.PathLike) -> None:
    write_text_atomic(json.dumps(data, indent=2) + "\n", path)


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike, **kwargs) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    frame.to_csv(tmp, index=kwargs.pop("index", False), **kwargs)
    os.replace(tmp, path)


def save_npy_atomic(array: np.ndarray, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    with tmp.open("wb") as handle:
        np.save(handle, array)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# Child processes stop with the command that started them
# --------------------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1  # Linux prctl(2): the signal a process gets when its parent ends


def _stop_signals() -> set[signal.Signals]:
    """Ctrl-C, and what docker stop, Kubernetes, SLURM and `kill` (SIGTERM) or a closing
    terminal (SIGHUP) send."""
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    return {getattr(signal, n) for n in names if hasattr(signal, n)}


@contextmanager
def starting_children(spawning: bool = True) -> Iterator[None]:
    """Start every worker process (a pool, a Process) under this, with `as_child` as the first
    thing it runs (the pool's initializer, the top of the process's target).

    Ctrl-C, SIGTERM and SIGHUP are held back while the children start and arrive once they
    all exist, when the caller holds the pool or the processes and stops them: an exception
    raised in the middle of a fork is lost (Python ignores those of at-fork handlers) or
    leaves started children nobody stops. The children inherit the held-back mask;
    `as_child` sets their own rules and then lets the signals through.

    `spawning` (children that start a new interpreter: spawn, forkserver) also ignores Ctrl-C
    meanwhile, the one rule such a child inherits. Forked children need not: they inherit the
    mask. Ignoring costs a Ctrl-C that another thread of this process takes meanwhile (a pool's
    or a progress bar's: only this thread holds the signals back), so forks do without it: a
    Ctrl-C is noted and raised once the children exist."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        yield  # signals reach the main thread only; its starts are the ones that matter
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _stop_signals())
    # A spawned child (a new interpreter) does not inherit the mask, and Ctrl-C reaching it
    # while it imports would print a traceback; it inherits an ignored SIGINT, which it keeps
    # (as_child ignores it anyway). Blocked, a Ctrl-C meanwhile stays pending for this process.
    # Another thread may take a Ctrl-C meanwhile: while forking it is only noted, and raised
    # here once the children exist.
    noted: list[int] = []
    rule = signal.SIG_IGN if spawning else (lambda number, frame: noted.append(number))
    handler = signal.signal(signal.SIGINT, rule)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if noted:
            signal.raise_signal(signal.SIGINT)


def as_child(initializer: Callable[..., None] | None = None, *args: object) -> None:
    """The first thing every worker process of the project runs, then `initializer(*args)`.

    - Ctrl-C is ignored: it reaches the whole process group, and the parent stops its
      children itself (a traceback per worker otherwise);
    - SIGTERM and SIGHUP end the child at once (what the parent sends to stop it);
    - the child ends with its parent, however the parent ends (Linux: PR_SET_PDEATHSIG),
      and at once if the parent is already gone, so no worker goes on after its command."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for number in _stop_signals() - {signal.SIGINT}:
        signal.signal(number, signal.SIG_DFL)
    _end_with_parent()
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _stop_signals())
    if initializer is not None:
        initializer(*args)


def start_pool(
    context: object,
    processes: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> object:
    """A `multiprocessing` pool of `processes` workers of `context` (a start method's context),
    started under `starting_children`, each running `as_child` and then `initializer`. A stop
    signal that came while they started ends them before it is raised; the caller stops the
    pool it gets (`with pool`, or terminate in a `finally`) as soon as it holds it."""
    pool = None
    try:
        with starting_children(spawning=context.get_start_method() != "fork"):
            pool = context.Pool(processes, as_child, (initializer, *initargs))
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    return pool


def pool_map(
    pool: object,
    function: Callable,
    items: Sequence,
    chunksize: int = 1,
    ordered: bool = True,
    poll_seconds: float = 0.5,
) -> Iterator:
    """`function` of every item on a pool's workers, `chunksize` items per task, in order
    (`ordered`) or as they finish: a pool's `imap`, whose results are waited for in short
    steps.

    The kernel may hand SIGTERM to any thread that does not block it (tqdm's monitor, torch's
    threads); Python runs the handler in the main thread, but only once that thread runs
    Python code again, and a wait without a timeout for a result that takes minutes would
    hold the stop back that long."""
    from multiprocessing import TimeoutError as NotYet

    chunks = [items[i : i + chunksize] for i in range(0, len(items), max(1, chunksize))]
    imap = pool.imap if ordered else pool.imap_unordered
    results = imap(partial(_chunk_results, function), chunks)  # one task per chunk
    while True:
        try:
            yield from results.next(timeout=poll_seconds)
        except StopIteration:
            return
        except NotYet:
            continue


def _chunk_results(function: Callable, chunk: Sequence) -> list:
    return [function(item) for item in chunk]


def _end_with_parent() -> None:
    import multiprocessing

    if sys.platform.startswith("linux"):
        import ctypes

        # Another C library without prctl: the parent's own stopping is what remains.
        with suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # the parent ended before the death signal was set


PROBABILITY_FLOOR = 1e-12  # the geometric mean's floor: an exact 0 does not zero a blend


def geometric_mean(arrays: list[np.ndarray], eps: float = PROBABILITY_FLOOR) -> np.ndarray:
    """Element-wise geometric mean exp(mean(log x)) of equally shaped arrays.

    Probabilities are floored at `eps` so an exact 0 does not zero the whole blend.
    """
    if not arrays:
        raise ValueError("geometric_mean needs at least one array")
    stacked = np.stack([np.asarray(a, dtype=np.float64) for a in arrays])
    return np.exp(np.log(np.clip(stacked, eps, None)).mean(axis=0))


class _NotArgus(logging.Filter):
    """argus models print their own log lines; the root handler must not print them again."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not is_argus_record(record)


_bars = {"shown": True}  # --no-progress turns every bar of the process off (set_progress)


def set_progress(shown: bool) -> None:
    """Show (or hide) the progress bars of this process: also those of the stages a script
    does not pass its --no-progress to (spectrogram extraction)."""
    _bars["shown"] = bool(shown)


def progress_shown() -> bool:
    return _bars["shown"]


def setup_logging(level: int = logging.INFO, stream=None) -> None:
    """Log lines of the project's modules to stdout; argus's own lines are not repeated."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s]: %(message)s"))
    handler.addFilter(_NotArgus())
    logging.basicConfig(level=level, handlers=[handler], force=True)


# --------------------------------------------------------------------------------------
# Listing folders: what is not a regular readable file is named and skipped
# --------------------------------------------------------------------------------------

FILE_NOT_FOUND = "file not found"
_ODD_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_problem(path: str | os.PathLike) -> str | None:
    """Why `path` is not a regular file this process can read, found without opening it; None
    when it is one. Everything that lists or decodes audio asks this first: opening a FIFO
    blocks until something writes to it, and a device file reads on without end."""
    try:
        mode = os.stat(path).st_mode  # follows symbolic links, as opening would
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link loop"
        if error.errno == errno.ENOENT:
            return "a broken symbolic link" if os.path.islink(path) else FILE_NOT_FOUND
        return error.strerror or str(error)
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    for is_kind, kind in _ODD_KINDS:
        if is_kind(mode):
            return f"{kind}, not a regular file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if not os.access(path, os.R_OK):
        return "not readable (permission denied)"
    return None


def readable_files(candidates: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """The regular readable files among `candidates` (sorted), and 'PATH: reason' for each of
    the others (FIFOs, sockets, device files, broken links and link loops, unreadable files),
    each also named in a warning: listed folders skip them, never hang on them."""
    files, skipped = [], []
    for path in sorted(candidates):
        problem = file_problem(path)
        if problem is None:
            files.append(path)
        else:
            skipped.append(f"{path}: {problem}")
            log.warning("skipped %s: %s", path, problem)
    return files, skipped
