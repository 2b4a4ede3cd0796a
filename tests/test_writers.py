"""One writer per fold, store, prediction folder and import; temporary names unique per process;
a killed writer's leftovers removed by the next one."""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import threading
from pathlib import Path

import pytest
import torch

import src.data.store as store_module
from src.config import get_paths, load_vocabulary
from src.data.store import get_store, store_key
from src.models.argus_models import FreesoundModel, model_params
from src.prediction.experiment import predict_experiment
from src.runs import prepare_experiment_dir
from src.tools.import_weights import import_experiment
from src.training.callbacks.checkpoints import save_model_atomic
from src.training.first_level import build_fold, load_first_level_data
from src.training.loop import run_fold
from src.training.parts import FoldParts, RunOptions, Schedule
from src.utils import (
    LOCK_FILE,
    LockedError,
    remove_leftovers,
    remove_leftovers_of,
    staged_folder,
    tmp_name,
    writer_lock,
)
from tests.helpers import held_by_another_process, micro_config, tone, write_wav


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    lock = tmp_path / "fold_0" / LOCK_FILE
    with (
        held_by_another_process(lock) as pid,
        pytest.raises(LockedError) as error,
        writer_lock(lock, "fold 0"),
    ):
        pass
    message = str(error.value)
    assert f"pid {pid} on host {socket.gethostname()}" in message and "fold 0" in message
    with writer_lock(lock, "fold 0"):  # the holder died: its lock went with it
        assert f"pid {os.getpid()}" in lock.read_text()


def micro_fold(folder: Path, max_epochs: int = 1) -> dict:
    paths = get_paths()
    config = micro_config("auxiliary_016", max_epochs=max_epochs)
    data = load_first_level_data(config, paths, load_vocabulary(paths), "if-present")
    parts = build_fold(data, 0, RunOptions())
    return run_fold(parts, folder, Schedule.from_config(config), "micro", progress=False)


def test_a_second_trainer_on_the_same_fold_stops_naming_the_holder(tmp_path):
    folder = tmp_path / "fold_0"
    nothing = FoldParts(model=None, train_loader=None, val_loader=None)  # stops before use
    with held_by_another_process(folder / LOCK_FILE) as pid, pytest.raises(LockedError) as error:
        run_fold(nothing, folder, Schedule(2, 1, 1, 0.5), "micro fold 0", progress=False)
    assert f"pid {pid}" in str(error.value) and str(folder / LOCK_FILE) in str(error.value)
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_FILE]  # nothing written


def test_a_trainer_removes_a_killed_writers_leftovers(tiny_data, tmp_path):
    folder = tmp_path / "fold_0"
    folder.mkdir()
    leftovers = [folder / ".last.pth.tmp-999999", folder / ".model-000-0.100000.pth.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a checkpoint")
    micro_fold(folder)
    assert not any(p.exists() for p in leftovers)
    assert (folder / "finished.json").is_file()


def _tmp_name_in_child(path: Path, queue) -> None:
    queue.put(tmp_name(path))


def test_temporary_names_differ_by_process(tmp_path, monkeypatch):
    context = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
    queue = context.Queue()
    child = context.Process(target=_tmp_name_in_child, args=(tmp_path / "log.csv", queue))
    child.start()
    child.join()
    theirs = queue.get(timeout=10)
    assert tmp_name(tmp_path / "log.csv") != theirs
    assert tmp_name(tmp_path / "log.csv").name == f".log.csv.tmp-{os.getpid()}"

    written = []  # checkpoints are written under this process's name too
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, str | os.PathLike):
            written.append(Path(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    save_model_atomic(
        FreesoundModel(model_params(micro_config(), 6, "cpu", "off", False)),
        tmp_path / "model-000-0.5.pth",
    )
    assert written[0].name == f".model-000-0.5.pth.tmp-{os.getpid()}"


def test_leftovers_are_removed_recursively_and_nothing_else(tmp_path):
    keep = [tmp_path / "probs.csv", tmp_path / "fold_0" / "val" / "a.wav.npy"]
    gone = [tmp_path / ".probs.csv.tmp-12", tmp_path / "fold_0" / "val" / ".a.wav.npy.tmp-34"]
    for path in keep + gone:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert sorted(remove_leftovers(tmp_path, recursive=True)) == sorted(gone)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)


def test_a_staged_folder_is_a_temporary_name_that_never_outlives_its_block(tmp_path):
    target = tmp_path / "out" / "store"
    with staged_folder(target) as staging:
        assert staging == tmp_name(target) and staging.is_dir() and not any(staging.iterdir())
        (staging / "a.txt").write_text("built")
        staging.rename(target)
    assert (target / "a.txt").read_text() == "built" and not staging.exists()
    with pytest.raises(KeyboardInterrupt), staged_folder(target) as staging:
        (staging / "half.txt").write_text("half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in target.parent.iterdir()) == ["store"]
    leftovers = [target.with_name(".store.tmp-999999"), target.with_name(".store.tmp")]
    leftovers[0].mkdir()  # a killed writer's staged folder, and a temporary file
    leftovers[1].write_text("half")
    (tmp_path / "out" / ".store.csv.tmp-999999").write_text("another file's")
    assert sorted(remove_leftovers_of(target)) == sorted(leftovers)
    assert (target / "a.txt").is_file() and (tmp_path / "out" / ".store.csv.tmp-999999").is_file()


@pytest.fixture
def clips(tmp_path):
    return [write_wav(tmp_path / "audio" / f"clip{i}.wav", tone(0.5, 300 + i)) for i in range(3)]


def test_a_second_store_builder_waits_then_reuses_the_store(tmp_path, clips, monkeypatch):
    cache = tmp_path / "cache"
    target = cache / f"curated-{store_key(clips)}"
    lock = cache / f".{target.name}.lock"
    real_write = store_module._write_store
    builds = []
    monkeypatch.setattr(store_module, "_write_store", lambda *a, **k: builds.append(a))
    held, done = threading.Event(), threading.Event()

    def first_builder() -> None:
        with writer_lock(lock, "the store"):
            held.set()
            real_write(target, clips, "curated", store_module.Extraction(workers=1), *_defaults())
            done.set()

    thread = threading.Thread(target=first_builder)
    thread.start()
    held.wait(10)
    store = get_store("curated", clips, cache, progress=False)  # waits for the first builder
    thread.join()
    assert done.is_set() and not builds and store.path == target and len(store) == 3


def _defaults():
    return store_module.AUDIO, False


def test_a_store_builder_removes_a_killed_builders_temporary(tmp_path, clips):
    cache = tmp_path / "cache"
    leftover = cache / f".curated-{store_key(clips)}.tmp-999999"
    leftover.mkdir(parents=True)
    (leftover / "spectrograms.f32").write_bytes(b"\0" * 64)
    get_store("curated", clips, cache, progress=False)
    assert not leftover.exists()


def test_a_locked_prediction_folder_is_refused(tiny_data):
    paths = get_paths()
    folder = paths.prediction_dir("corr_noisy_003")
    lock = folder / LOCK_FILE
    with held_by_another_process(lock) as pid, pytest.raises(LockedError, match=f"pid {pid}"):
        predict_experiment("corr_noisy_003", paths, load_vocabulary(paths))


def test_a_second_import_of_the_same_experiment_is_refused(tmp_path):
    experiments = tmp_path / "experiments"
    lock = tmp_path / ".corr_noisy_003.import.lock"
    with held_by_another_process(lock) as pid, pytest.raises(LockedError, match=f"pid {pid}"):
        import_experiment("corr_noisy_003", [], experiments, None, tmp_path / "src")


def test_force_does_not_delete_an_experiment_being_trained(tmp_path):
    experiment = tmp_path / "corr_noisy_003"
    prepare_experiment_dir(experiment, {"config": {}, "seed": 1}, force=False)
    lock = experiment / "fold_0" / LOCK_FILE
    with held_by_another_process(lock) as pid, pytest.raises(LockedError, match=f"pid {pid}"):
        prepare_experiment_dir(experiment, {"config": {}, "seed": 2}, force=True)
    assert (experiment / "params.json").is_file()
