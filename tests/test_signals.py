"""SIGTERM (docker stop, Kubernetes, SLURM, `kill`) sent to the command alone, not to its
process group, while its children work: fold workers, torchrun ranks, the spectrogram store's
pool, the blend search's pool, the synthetic generator's pool. The command stops them, exits
with 143 and one line, leaves nothing half-written, and the same command then resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux's /proc")

SMOKE = ["--smoke", "--workers", "0", "--no-progress", "--no-corrections"]


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command) of every living process (not zombies), from /proc."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # ended meanwhile
        if fields[0] != "Z":
            found[int(stat.parent.name)] = (int(fields[1]), command[:200])
    return found


def descendants(pid: int) -> dict[int, str]:
    """The living children of `pid`, their children, and so on (torchrun's ranks have
    sessions of their own: the process group would not find them)."""
    table, family, grown = processes(), {pid}, True
    while grown:
        more = {p for p, (parent, _) in table.items() if parent in family} - family
        family |= more
        grown = bool(more)
    return {p: table[p][1] for p in family - {pid}}


def still_alive(pids: dict[int, str]) -> list[str]:
    table = processes()
    return [f"{p} {command}" for p, command in pids.items() if p in table]


def terminated_while(
    argv: list[str],
    data: Path,
    ready: Callable[[], bool],
    timeout: float = 300,
    children: int = 1,
    ours: bool = True,
) -> str:
    """Runs `python ARGV` on the data directory `data`, sends SIGTERM to the command's process
    alone once `ready()` and `children` processes below it run, and checks that none of those
    is alive a few seconds after it ended, and (`ours`: a script of the project, not a
    launcher) that it exited with 143 and the one line `terminated (SIGTERM)`; returns its
    stderr."""
    env = {**os.environ, "FREESOUND_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, *argv],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a shell's job: a signal to the group would reach all
    )
    children_seen: dict[int, str] = {}
    try:
        deadline = time.monotonic() + timeout
        while not (ready() and len(descendants(process.pid)) >= children):
            if process.poll() is not None:
                pytest.fail(f"ended before the signal: {process.stderr.read()[-3000:]}")
            assert time.monotonic() < deadline, "never got ready"
            time.sleep(0.1)
        children_seen = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
        time.sleep(3)
        assert still_alive(children_seen) == [], err[-3000:]  # no child outlives it
    finally:
        for pid in [process.pid, *children_seen]:
            with suppress(ProcessLookupError):
                if process.poll() is None or still_alive(children_seen):
                    os.kill(pid, signal.SIGKILL)
    assert len(children_seen) >= children, "no child was running: the test tests nothing"
    if not ours:
        return err
    assert process.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM)", err[-3000:]
    return err


def run(argv: list[str], data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FREESOUND_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *argv], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )


def test_fold_workers_stop_with_the_command_and_the_folds_resume(tiny_data):
    argv = ["train_folds.py", "--experiment", "auxiliary_016", *SMOKE, "--folds", "0,1"]
    argv += ["--gpus", "cpu,cpu", "--max-epochs", "3"]
    experiment = tiny_data / "experiments" / "auxiliary_016"
    states = [experiment / f"fold_{k}" / "last.pth" for k in (0, 1)]
    terminated_while(argv, tiny_data, lambda: all(s.is_file() for s in states))
    for fold in (0, 1):
        folder = experiment / f"fold_{fold}"
        assert not (folder / "finished.json").exists()
        assert [p.name for p in folder.iterdir() if ".tmp" in p.name] == []
    again = run(argv, tiny_data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("resuming at epoch") == 2, again.stdout[-3000:]
    assert all((experiment / f"fold_{k}" / "finished.json").is_file() for k in (0, 1))


def test_the_synthetic_generators_pool_stops_and_leaves_nothing(tmp_path):
    out = tmp_path / "synthetic"
    argv = ["make_synthetic.py", "--out", str(out), "--workers", "2", "--max-seconds", "4"]
    argv += ["--curated-per-class", "20", "--noisy-per-class", "20"]
    terminated_while(argv, tmp_path, lambda: any(tmp_path.glob(".synthetic.tmp-*/*/*.wav")))
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temporary folder


def test_the_store_builders_pool_stops_and_the_store_is_built_next_time(tiny_data):
    import shutil

    shutil.rmtree(tiny_data / "cache", ignore_errors=True)  # the stores are built here
    argv = ["train_folds.py", "--experiment", "auxiliary_016", *SMOKE, "--folds", "0"]
    argv += ["--max-epochs", "1"]
    cache = tiny_data / "cache"
    terminated_while(argv, tiny_data, lambda: any(cache.glob(".curated-*.tmp-*/*")))
    assert not cache.exists()  # no half store, not even the empty folder made for it
    again = run(argv, tiny_data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2  # curated, noisy


def test_torchrun_ranks_stop_with_torchrun_and_the_fold_resumes(tiny_data):
    # torchrun sends its ranks SIGTERM, then ends with its own traceback and status 1 (torch's
    # launcher, not a script of the project); each rank stops as every script does.
    torchrun = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541"]
    argv = ["train_folds.py", "--experiment", "auxiliary_016", *SMOKE, "--folds", "0"]
    argv += ["--device", "cpu", "--max-epochs", "3"]
    fold = tiny_data / "experiments" / "auxiliary_016" / "fold_0"
    ready = (fold / "last.pth").is_file
    err = terminated_while([*torchrun, *argv], tiny_data, ready, children=2, ours=False)
    assert err.count("\nterminated (SIGTERM)") == 2, err[-3000:]  # each rank's one line
    assert not (fold / "finished.json").exists()
    assert [p.name for p in fold.iterdir() if ".tmp" in p.name] == []
    again = run([*torchrun, *argv], tiny_data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming at epoch" in again.stdout and (fold / "finished.json").is_file()


BLEND_SEARCH = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from src.cli import run_main
from src.tools.lab.blend_search import BlendTables, search

def main():
    rng = np.random.default_rng(0)
    tables = BlendTables.build(rng.random((40, 400, 20)), rng.random((400, 20)) < 0.1)
    search(tables, range(1, 8), "exhaustive", keep=5, workers=2)  # hours: it is stopped
    return 0

run_main(main)
"""


def test_the_blend_searchs_pool_stops_with_the_command(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(BLEND_SEARCH.format(root=str(REPO_ROOT)))
    terminated_while([str(script)], tmp_path, lambda: True, children=2)


def _report_sigint(queue) -> None:
    queue.put(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)


FORK_START = """
import os, signal, threading, time
from src.utils import starting_children
signal.signal(signal.SIGINT, signal.default_int_handler)
threading.Thread(target=time.sleep, args=(5,), daemon=True).start()  # takes what others hold back
started = False
try:
    with starting_children(spawning=False):
        os.kill(os.getpid(), signal.SIGINT)  # to the process: the other thread takes it
        time.sleep(1)
        started = True  # the children all started: raised after this, not in between
    time.sleep(1)
except KeyboardInterrupt:
    print("interrupted", "after" if started else "in between")
"""


def test_a_ctrl_c_another_thread_takes_while_forks_start_is_not_lost():
    result = subprocess.run(
        [sys.executable, "-c", FORK_START], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.stdout.strip() == "interrupted after", result.stderr


def test_children_start_with_ctrl_c_ignored_and_the_parent_keeps_one_that_came_meanwhile():
    """A spawned child does not inherit the held-back mask; it must not take a Ctrl-C (and print
    a traceback) while it imports. The parent gets a Ctrl-C that arrived while children started."""
    import multiprocessing

    from src.utils import starting_children

    # A command's own Ctrl-C rule (a pytest-xdist worker ignores SIGINT).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        with starting_children():
            child = context.Process(target=_report_sigint, args=(queue,))
            child.start()
        assert queue.get(timeout=60) is True
        child.join(timeout=60)
        with pytest.raises(KeyboardInterrupt):
            with starting_children():
                # to this thread, which holds it back: a process-wide kill may be taken (and,
                # ignored, dropped) by another thread of the test runner (execnet's)
                signal.pthread_kill(threading.get_ident(), signal.SIGINT)
            time.sleep(1)  # delivered when the block ends, not lost
    finally:
        signal.signal(signal.SIGINT, previous)
