"""Helpers the tests import: audio writers, tree copies, the pipeline's environment, tiny
configurations. Fixtures live in conftest.py (pytest finds them there)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile

from src.experiments import merge, resolve

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPETITION = "freesound-audio-tagging-2019"  # the competition dataset's folder on Kaggle


def write_wav(path: Path, audio: np.ndarray, sr: int = 44100, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, sr, subtype=subtype)
    return path


def tone(seconds: float, freq: float = 440.0, sr: int = 44100, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def pipeline_env(data_dir: Path, kernel_dir: Path) -> dict[str, str]:
    """Environment for running ensemble_pipeline.sh from a test: this interpreter (whatever
    `python` on PATH may be), the given data and kernel directories, no Kaggle mode."""
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "FREESOUND_DATA_DIR": str(data_dir),
        "KERNEL_DIR": str(kernel_dir),
    }
    env.pop("MODE", None)
    return env


def run_smoke_pipeline(
    data_dir: Path, kernel_dir: Path, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """`ensemble_pipeline.sh --smoke` on `data_dir` (output captured)."""
    return subprocess.run(
        ["bash", "ensemble_pipeline.sh", "--smoke"],
        cwd=REPO_ROOT,
        env=pipeline_env(data_dir, kernel_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ctrl_c_as_in_a_terminal() -> None:
    """A child's SIGINT back to the default (`preexec_fn` of a command a test sends Ctrl-C to).
    A suite started in the background by a non-interactive shell (`make test &`, nohup)
    inherits SIGINT ignored, and Python keeps an ignored SIGINT ignored: Ctrl-C would never
    reach the command under test."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def copy_tree(source: Path, destination: Path) -> Path:
    shutil.copytree(source, destination, symlinks=True)
    return destination


def use_copy_of(tree: Path, destination: Path, monkeypatch) -> Path:
    """A private copy of a data tree at `destination`, made the test's FREESOUND_DATA_DIR."""
    data = copy_tree(tree, destination)
    monkeypatch.setenv("FREESOUND_DATA_DIR", str(data))
    return data


def micro_config(name: str = "auxiliary_016", **changes) -> dict:
    """A smoke configuration shrunk further for tests: a few steps per epoch."""
    config = resolve(name, "smoke")
    small = {"epoch_size": 32, "batch_size": 8, "val_batch_size": 16, "max_epochs": 3}
    return merge(config, {**small, **changes})


# Kaggle's layout for running a built kernel as Kaggle runs it.


def kaggle_root(base: Path, entries: dict[str, Path]) -> Path:
    """A <root>/kaggle with an input folder of the given (linked) datasets, an empty working."""
    (base / "kaggle" / "working").mkdir(parents=True)
    (base / "kaggle" / "input").mkdir()
    for name, source in entries.items():
        (base / "kaggle" / "input" / name).symlink_to(source, target_is_directory=True)
    return base


def kaggle_env(root: Path) -> dict[str, str]:
    drop = {"PYTHONPATH", "MODE", "FREESOUND_DATA_DIR"}
    env = {key: value for key, value in os.environ.items() if key not in drop}
    return {**env, "FREESOUND_KAGGLE_ROOT": str(root)}


def run_kernel(kernel: Path, root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(kernel)],
        cwd=root / "kaggle" / "working",
        env=kaggle_env(root),
        capture_output=True,
        text=True,
        timeout=900,
    )


# A stand-in for the sounddevice module (the demo's microphone path without a microphone).


class FakeSoundDevice:
    """The parts of sounddevice the demo uses; the stream delivers `blocks` when started."""

    class PortAudioError(Exception):
        pass

    def __init__(self, blocks: list[np.ndarray], broken: bool = False) -> None:
        self.blocks, self.broken = blocks, broken
        self.stream_arguments: dict = {}
        self.closed = False

    def query_devices(self, device=None, kind=None):
        if self.broken:
            raise self.PortAudioError("Error querying device -1")
        return "0 Fake microphone, ALSA (1 in, 0 out)"

    def InputStream(self, **arguments):
        self.stream_arguments = arguments
        fake = self

        class Stream:
            def start(self) -> None:
                for block in fake.blocks:
                    arguments["callback"](block[:, None], len(block), None, None)

            def stop(self) -> None:
                pass

            def close(self) -> None:
                fake.closed = True

        return Stream()


def save_cnn_checkpoint(
    path: Path, crop_size: int = 32, poison: bool = False, seed: int = 0, **model_kwargs
) -> Path:
    """An untrained AuxSkipAttention checkpoint (80 classes, width 4 unless given), seeded.
    `poison`: one weight NaN, what two flipped exponent bits do to a float."""
    import torch

    from src.models.argus_models import FreesoundModel
    from src.training.callbacks.checkpoints import save_model_atomic

    network = {"num_classes": 80, "base_size": 4, "dropout": 0.1, **model_kwargs}
    params = {
        "nn_module": ("AuxSkipAttention", network),
        "loss": ("BCEWithLogits", {}),
        "optimizer": ("Adam", {"lr": 0.001}),
        "device": "cpu",
        "aux_weights": [1.0, 0.4, 0.2, 0.1],
        "amp": "off",
        "channels_last": False,
        "crop_size": crop_size,
    }
    torch.manual_seed(seed)
    model = FreesoundModel(params)
    if poison:
        with torch.no_grad():
            next(model.nn_module.parameters()).view(-1)[0] = float("nan")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model_atomic(model, path)
    return path


HOLD = """
import sys, time
from src.utils import writer_lock
with writer_lock(sys.argv[1], "test"):
    print("held", flush=True)
    time.sleep(120)
"""


@contextmanager
def held_by_another_process(lock_path: Path):
    """A second process holding the lock of `lock_path`; yields its pid."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "held"
        yield child.pid
    finally:
        child.kill()
        child.wait()


def random_experiment(
    experiments_dir: Path, name: str, classes, folds=(0, 1), crop_size: int = 32, **model_kwargs
) -> Path:
    """A first-level experiment of untrained AuxSkipAttention folds (width 4 unless given), fold
    k seeded with k: folds with different weights, found and tagged as trained ones are."""
    import json

    directory = experiments_dir / name
    for fold in folds:
        path = save_cnn_checkpoint(
            directory / f"fold_{fold}" / f"model-001-{0.5 + fold / 100:.6f}.pth",
            crop_size,
            num_classes=len(classes),
            seed=fold,
            **model_kwargs,
        )
        (path.parent / "finished.json").write_text("{}")
    record = {"config": {"kind": "cnn", "crop_size": crop_size}, "classes": list(classes)}
    (directory / "params.json").write_text(json.dumps(record))
    return directory


def fsdd_dataset(fsdd: Path, work: Path, per_speaker: int = 4, test_per_class: int = 6) -> Path:
    """make_dataset.py + make_folds.py on FSDD digits 5-9: `per_speaker` clips per digit of
    five speakers (curated), `test_per_class` of the sixth (test/, test_labels.csv)."""
    speakers = ["george", "jackson", "lucas", "nicolas", "theo"]
    for digit in range(5, 10):
        for speaker in speakers:
            for i in range(per_speaker):
                target = work / "own" / f"digit_{digit}" / f"{digit}_{speaker}_{i}.wav"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(fsdd / "recordings" / target.name)
        for i in range(test_per_class):
            target = work / "held_out" / f"digit_{digit}" / f"{digit}_yweweler_{i}.wav"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(fsdd / "recordings" / target.name)
    data = work / "data"
    env = {**os.environ, "FREESOUND_DATA_DIR": str(data)}
    for command in (
        [
            "make_dataset.py",
            str(work / "own"),
            "--test",
            str(work / "held_out"),
            "--out",
            str(data),
        ],
        ["make_folds.py"],
    ):
        subprocess.run(
            [sys.executable, *command], cwd=REPO_ROOT, env=env, check=True, capture_output=True
        )
    return data
