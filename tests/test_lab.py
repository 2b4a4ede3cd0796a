"""lab.py, the lab journal: every kind of experiment folder is a row that says the right thing
(finished, running under a live fold lock, interrupted, predicted, imported, fine-tuned, a
search trial, an old record, broken), its outputs (--csv, --markdown, --plot, --sort), and
the lock probe it uses (`utils.lock_holder`)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from src.config import FAT2019_CLASSES, get_paths
from src.tools.lab.journal import flatten, init_source, read_journal, sort_journal
from src.utils import LOCK_FILE, lock_holder, writer_lock
from tests.helpers import REPO_ROOT

CLASSES = FAT2019_CLASSES[:6]

HOLD = """
import sys, time
from src.utils import writer_lock
with writer_lock(sys.argv[1], "test"):
    print("held", flush=True)
    time.sleep(300)
"""


@contextmanager
def lock_held_by_a_child(lock_path: Path):
    """A live child process holding the writer lock of `lock_path`; yields its pid."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_path)], cwd=REPO_ROOT, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout.readline().strip() == b"held"
        yield child.pid
    finally:
        child.kill()
        child.wait()


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def experiment(data: Path, name: str, config: dict | None = None, **record) -> Path:
    folder = data / "experiments" / name
    config = {"kind": "cnn", "name": name, "scale": "smoke", **(config or {})}
    write_json(folder / "params.json", {"config": config, "classes": CLASSES, **record})
    return folder


def fold(folder: Path, k: int, score: float, finished: bool = True, epochs: int = 3) -> Path:
    """A fold folder as training leaves it: best checkpoint, log.csv, then finished.json (or
    last.pth while it trains)."""
    path = folder / f"fold_{k}"
    path.mkdir(parents=True, exist_ok=True)
    (path / f"model-{epochs - 1:03d}-{score:.6f}.pth").write_bytes(b"")
    times = pd.date_range("2026-01-01 10:00", periods=epochs, freq="20s")
    pd.DataFrame({"time": times, "epoch": range(epochs), "val_lwlrap": [score] * epochs}).to_csv(
        path / "log.csv", index=False
    )
    if finished:
        write_json(path / "finished.json", {"seconds": 60.0 + k, "best_val_lwlrap": score})
    else:
        (path / "last.pth").write_bytes(b"")
    return path


def predicted(data: Path, name: str, cv: float, folds=range(5)) -> None:
    out = data / "predictions" / name
    for k in folds:
        probs = out / f"fold_{k}" / "val" / "probs.csv"
        probs.parent.mkdir(parents=True, exist_ok=True)
        probs.write_text("fname," + ",".join(CLASSES) + "\n")
    write_json(out / "val_lwlrap.json", {"overall_lwlrap": cv, "per_class_lwlrap": {}})


@pytest.fixture
def lab_tree(tmp_path) -> Path:
    """Every kind of experiment folder, in one data directory."""
    data = tmp_path / "data"
    done = experiment(data, "done_a")
    for k in range(5):
        fold(done, k, 0.5 + k / 100)
    time.sleep(0.01)
    predicted(data, "done_a", 0.5321)

    running = experiment(data, "running_b")
    fold(running, 0, 0.41)
    fold(running, 1, 0.38, finished=False)

    interrupted = experiment(data, "interrupted_c")
    fold(interrupted, 0, 0.45)
    stale = fold(interrupted, 1, 0.3, finished=False)
    (stale / LOCK_FILE).write_text("pid 999999 on host gone\n")  # what a killed holder left

    mine = experiment(
        data,
        "my_exp",
        {
            "base": "corr_noisy_007",
            "overrides": {"max_epochs": 30, "model": {"params": {"base_size": 32}}},
        },
        init={"source": "experiments/corr_noisy_007 fold 0", "lr": 0.001},
    )
    fold(mine, 0, 0.6)

    imported = experiment(data, "auxiliary_016", {"scale": "full"}, source={"from": "w.zip"})
    for k in range(5):
        fold(imported, k, 0.8)
    trial = experiment(data, "study_t3", {"base": "corr_noisy_007", "overrides": {"seed": 3}})
    fold(trial, 0, 0.2)
    # A record written before the `scale` field: a smoke flag instead.
    old = experiment(data, "old_d")
    record = json.loads((old / "params.json").read_text())
    record["config"].pop("scale")
    record["config"]["smoke"] = True
    write_json(old / "params.json", record)

    stacking = experiment(data, "stacking_008_fcnet_43040", {"kind": "stacking"})
    for k in range(5):
        fold(stacking, k, 0.7)
    table = data / "predictions" / "ensemble_oof_lwlrap.csv"
    table.write_text("level,experiment,oof_lwlrap\nstacking,stacking_008_fcnet_43040,0.71\n")

    broken = data / "experiments" / "broken_e"
    broken.mkdir(parents=True)
    (broken / "params.json").write_text("{not json")
    (data / "experiments" / "no_params_f" / "fold_0").mkdir(parents=True)
    (data / "experiments" / ".import-x.tmp-1").mkdir()  # staging: never a row
    return data


def run_lab(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "lab.py", "--data-dir", str(data), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_each_experiment_is_a_row_that_says_the_right_thing(lab_tree, tmp_path):
    running_fold = lab_tree / "experiments" / "running_b" / "fold_1"
    with lock_held_by_a_child(running_fold / LOCK_FILE) as pid:
        result = run_lab(lab_tree, "--csv", str(tmp_path / "j.csv"))
        assert lock_holder(running_fold / LOCK_FILE) == f"pid {pid} on host {os.uname()[1]}"
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(tmp_path / "j.csv", keep_default_na=False).set_index("experiment")
    assert ".import-x.tmp-1" not in rows.index and len(rows) == 10

    done = rows.loc["done_a"]
    assert (done["status"], done["folds_finished"], done["kind"]) == ("finished", "5", "cnn")
    assert float(done["fold_4"]) == 0.54 and float(done["val_mean"]) == pytest.approx(0.52)
    assert float(done["val_std"]) == pytest.approx(pd.Series([0.5, 0.51, 0.52, 0.53, 0.54]).std())
    assert float(done["cv_lwlrap"]) == 0.5321 and done["oof_folds"] == "5/5"
    assert int(done["epochs"]) == 15 and float(done["seconds"]) == sum(60 + k for k in range(5))
    assert done["base"] == "" and done["changes"] == "" and done["scale"] == "smoke"

    running = rows.loc["running_b"]
    assert running["status"] == "running" and running["folds_running"] == "1"
    assert running["holder"] == f"fold 1: pid {pid} on host {os.uname()[1]}"
    assert float(running["fold_1"]) == 0.38  # the best so far
    assert float(running["seconds"]) == 60 + 40  # finished.json, then log.csv's span

    interrupted = rows.loc["interrupted_c"]  # its stale lock file has no live holder
    assert interrupted["status"] == "interrupted" and interrupted["folds_interrupted"] == "1"
    assert interrupted["holder"] == "" and interrupted["folds_running"] == ""

    mine = rows.loc["my_exp"]
    assert mine["base"] == "corr_noisy_007" and mine["status"] == "partial"
    assert mine["changes"] == "max_epochs=30; model.params.base_size=32"
    assert mine["init"] == "experiments/corr_noisy_007 fold 0"
    assert rows.loc["auxiliary_016", "init"] == "imported from w.zip"
    assert rows.loc["auxiliary_016", "base"] == "auxiliary_016"  # registered: itself
    assert rows.loc["study_t3", "changes"] == "seed=3"
    assert rows.loc["old_d", "scale"] == "smoke" and rows.loc["old_d", "status"] == "not started"
    assert float(rows.loc["stacking_008_fcnet_43040", "cv_lwlrap"]) == 0.71

    broken = rows.loc["broken_e"]
    assert broken["status"] == "unreadable" and "not valid JSON" in broken["note"]
    assert "broken_e/params.json" in broken["note"]
    assert rows.loc["no_params_f", "status"] == "unreadable"
    assert "no params.json" in rows.loc["no_params_f", "note"]

    printed = result.stdout
    assert "running (fold 1: pid" in printed and "unreadable" in printed
    assert "0.500 0.510 0.520 0.530 0.540" in printed


def test_markdown_plot_and_sort(lab_tree, tmp_path):
    result = run_lab(
        lab_tree, "--markdown", "--sort", "cv_lwlrap", "--plot", str(tmp_path / "j.png")
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| experiment | kind | status |") and lines[1].startswith("|---|")
    # Best CV first, experiments without one after, in their order.
    assert [line.split(" | ")[0].strip("| ") for line in lines[2:4]] == [
        "stacking_008_fcnet_43040",
        "done_a",
    ]
    assert (tmp_path / "j.png").stat().st_size > 10_000

    bad = run_lab(lab_tree, "--sort", "nonsense")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "--sort nonsense: no such column" in bad.stderr and "cv_lwlrap" in bad.stderr


def test_sorting_text_and_numbers(lab_tree, monkeypatch):
    monkeypatch.setenv("FREESOUND_DATA_DIR", str(lab_tree))
    journal = read_journal(get_paths())
    by_epochs = sort_journal(journal, "epochs")["epochs"].tolist()
    assert by_epochs[0] == 15 and pd.isna(by_epochs[-1])
    assert sort_journal(journal, "base")["base"].tolist()[0] == "auxiliary_016"


def test_an_empty_data_directory_is_an_empty_journal(tmp_path):
    result = run_lab(tmp_path / "nothing")
    assert result.returncode == 0 and "no experiments" in result.stdout


def test_flatten_and_init_source():
    assert flatten({"a": {"b": 1, "c": [0.5, 1]}, "inputs": ["x", "y"], "d": None}) == [
        "a.b=1",
        "a.c=[0.5, 1]",
        "inputs=x,y",
        "d=null",
    ]
    assert init_source({"init": {"checkpoint": "k.pth"}}) == '{"checkpoint": "k.pth"}'
    assert init_source({}) == ""


# ----------------------------------------------------------------------------------------------
# The lock probe
# ----------------------------------------------------------------------------------------------


def test_lock_holder_sees_a_live_holder_only(tmp_path):
    lock = tmp_path / "fold_0" / LOCK_FILE
    assert lock_holder(lock) is None  # no file
    with lock_held_by_a_child(lock) as pid:
        assert lock_holder(lock) == f"pid {pid} on host {os.uname()[1]}"
    lock.write_text("pid 123 on host h\n")  # left by a killed holder: nobody holds it
    assert lock_holder(lock) is None
    with writer_lock(lock, "the fold"):  # the probe left it free to take
        pass


def test_a_writer_starting_during_a_probe_waits_for_it(tmp_path):
    """A probe holds the lock for an instant; a writer starting then retries briefly instead of
    failing with "being written by another process"."""
    lock = tmp_path / LOCK_FILE
    lock.write_text("")
    fd = os.open(lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a probe that has not let go yet
    release = threading.Timer(0.05, lambda: fcntl.flock(fd, fcntl.LOCK_UN))
    release.start()
    try:
        with writer_lock(lock, "the fold"):
            pass
    finally:
        release.join()
        os.close(fd)
