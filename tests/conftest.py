"""Shared fixtures: an isolated data directory, the real recordings, small audio files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT, run_smoke_pipeline, use_copy_of

REAL_AUDIO = Path(
    os.environ.get("FREESOUND_REAL_AUDIO", REPO_ROOT.parent / "shared/data/real-audio")
)

# Test models are tiny: a second thread gains nothing, and on a busy machine a thread team
# waits for its descheduled member (see docs/performance.md). `make test` runs two pytest
# workers (pytest-xdist) on 2 cores, so the scripts tests start get one thread too.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def needs_smoke_tree(item: pytest.Item) -> bool:
    return "smoke_tree" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """One test that needs the smoke pipeline first, the others last.

    Under `make test` (two pytest-xdist workers) the first worker builds the pipeline's tree
    while the other runs the tests that need nothing of it; by the time the last tests are
    handed out the tree is there for both (`smoke_tree` is shared between the workers). Run
    serially, the order changes nothing but when the pipeline is built.
    """
    smoke = [item for item in items if needs_smoke_tree(item)]
    if smoke:
        others = [item for item in items if not needs_smoke_tree(item)]
        items[:] = [smoke[0], *others, *smoke[1:]]


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """Every test gets its own data directory and runs in local (non-Kaggle) mode."""
    monkeypatch.setenv("FREESOUND_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MODE", raising=False)
    monkeypatch.delenv("FREESOUND_KAGGLE_ROOT", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def real_audio() -> Path:
    if not (REAL_AUDIO / "librosa-examples").is_dir():
        pytest.skip(f"real recordings not found at {REAL_AUDIO}")
    return REAL_AUDIO


@pytest.fixture(scope="session")
def librosa_examples(real_audio) -> list[Path]:
    return sorted((real_audio / "librosa-examples").glob("*.ogg"))


@pytest.fixture(scope="session")
def fsdd(real_audio) -> Path:
    folder = real_audio / "fsdd"
    if not (folder / "metadata.csv").is_file():
        pytest.skip(f"FSDD recordings not found at {folder}")
    return folder


# ----------------------------------------------------------------------------------------------
# The smoke pipeline, run once per test session and shared (read-only) by the tests that need
# trained models: synthetic data, folds, 7 first-level + 3 stacking experiments, predictions,
# submission.csv. FREESOUND_TEST_SMOKE_TREE may name a data directory from an earlier run to
# copy instead (for quick local iterations; CI always builds it).
# ----------------------------------------------------------------------------------------------

SMOKE_TREE_ENV = "FREESOUND_TEST_SMOKE_TREE"


@pytest.fixture(scope="session")
def smoke_tree(tmp_path_factory) -> Path:
    """Built once per session, whatever the number of pytest-xdist workers: the first to need it
    builds it under a lock in the session's shared temporary folder; the others wait and reuse."""
    import fcntl
    import shutil

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    base = root / "smoke-shared"
    base.mkdir(exist_ok=True)
    target, log, done = base / "data", base / "pipeline.log", base / "built"
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return target
        if log.exists():  # an earlier worker's build failed: the same failure, not a second build
            pytest.fail(f"smoke pipeline failed (log: {log})")
        prebuilt = os.environ.get(SMOKE_TREE_ENV)
        if prebuilt:
            shutil.copytree(prebuilt, target, symlinks=True)
            done.touch()
            return target
        result = run_smoke_pipeline(target, base / "kernel")
        log.write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            pytest.fail(f"smoke pipeline failed (log: {log}):\n{result.stderr[-3000:]}")
        done.touch()
    return target


@pytest.fixture
def smoke_data(smoke_tree, monkeypatch) -> Path:
    """The smoke pipeline's data directory as this test's FREESOUND_DATA_DIR (do not modify it:
    copy it first with `copy_tree` when a test writes)."""
    monkeypatch.setenv("FREESOUND_DATA_DIR", str(smoke_tree))
    return smoke_tree


# ----------------------------------------------------------------------------------------------
# A tiny synthetic dataset (6 classes, a few short clips) with folds and spectrogram stores, for
# training and prediction tests that run in seconds. Read-only: copy it (`tiny_data`) to write.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory) -> Path:
    from src.config import FAT2019_CLASSES
    from src.data.synthetic_dataset import generate_dataset

    data = tmp_path_factory.mktemp("tiny") / "data"
    generate_dataset(
        data,
        classes=FAT2019_CLASSES[:6],
        curated_per_class=5,
        noisy_per_class=3,
        n_test=6,
        max_seconds=3.0,
        progress=False,
    )
    import subprocess

    env = {**os.environ, "FREESOUND_DATA_DIR": str(data)}
    subprocess.run(
        [sys.executable, "make_folds.py"], cwd=REPO_ROOT, env=env, check=True, capture_output=True
    )
    return data


@pytest.fixture
def tiny_data(tiny_tree, tmp_path, monkeypatch) -> Path:
    """A private copy of the tiny dataset as this test's FREESOUND_DATA_DIR."""
    data = use_copy_of(tiny_tree, tmp_path / "tiny", monkeypatch)
    return data
