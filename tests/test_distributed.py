"""Scaling out on the CPU: DDP with the gloo backend, folds in parallel over fake devices, and
the GPU augmentation path wired into a training step (run on CPU tensors)."""

import os
import subprocess
import sys
import time
from functools import partial

import numpy as np
import pandas as pd
import torch

from src.config import get_paths, load_vocabulary
from src.runs import FINISHED_FILE
from src.training.datasets import EpochSampler
from src.training.first_level import build_fold, load_first_level_data
from src.training.fold_queue import train_folds_parallel
from src.training.parts import RunOptions, Schedule
from tests.helpers import REPO_ROOT, micro_config

SMOKE = [
    "--experiment",
    "corrections_002",
    "--smoke",
    "--folds",
    "0",
    "--workers",
    "0",
    "--no-progress",
]


def test_sampler_shards_add_up_to_one_epoch():
    single = list(EpochSampler(256))
    shards = [list(EpochSampler(256, rank=r, world_size=4)) for r in range(4)]
    assert sorted(i for shard in shards for i in shard) == single
    assert all(len(shard) == 64 for shard in shards)
    sampler = EpochSampler(8)
    assert list(sampler) == list(range(8)) and list(sampler) == list(range(8, 16))
    sampler.set_epoch(5)
    assert next(iter(sampler)) == 40


def run_script(args, data, launcher=()):
    env = {**os.environ, "FREESOUND_DATA_DIR": str(data), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*launcher, "train_folds.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


# Two short epochs: what DDP changes (the sampler's shards, rank 0 alone writing) shows in any.
DDP_RUN = [*SMOKE, "--device", "cpu", "--max-epochs", "2", "--set", "epoch_size=128"]


def test_two_process_gloo_ddp_matches_one_process(tiny_tree, tmp_path):
    from tests.helpers import copy_tree

    one, two = copy_tree(tiny_tree, tmp_path / "one"), copy_tree(tiny_tree, tmp_path / "two")
    single = run_script(DDP_RUN, one, launcher=(sys.executable,))
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = (
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
    )
    ddp = run_script(DDP_RUN, two, launcher=torchrun)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    for data in (one, two):
        fold = data / "experiments/corrections_002/fold_0"
        assert len(list(fold.glob("model-*.pth"))) == 1
        log = pd.read_csv(fold / "log.csv")
        assert (
            len(log) == 2 and (log["train_samples"] == 128).all()
        )  # the ranks drew one epoch together
    # Rank 0 alone wrote the files: one header and two epochs in the CSV, one params.json.
    assert (two / "experiments/corrections_002/params.json").is_file()
    lines = (two / "experiments/corrections_002/fold_0/log.txt").read_text().count("val - epoch: 1")
    assert lines == 1


def micro_builder(marker_dir, device, workers=1):
    """Picklable fold builder for the fold queue; records every fold it builds. With
    `workers` > 1 a worker's first fold waits (up to a minute) until that many workers have
    taken one, so a fast worker cannot drain the queue before a slow one has started."""
    paths = get_paths()
    data = load_first_level_data(
        micro_config("corrections_002", max_epochs=1), paths, load_vocabulary(paths), "if-present"
    )

    def build(fold):
        (marker_dir / f"fold{fold}-pid{os.getpid()}").write_text(device)
        deadline = time.monotonic() + 60
        while _workers_seen(marker_dir) < workers and time.monotonic() < deadline:
            time.sleep(0.05)
        return build_fold(data, fold, RunOptions(device=device))

    return build


def _workers_seen(marker_dir):
    return len({p.name.split("pid")[1] for p in marker_dir.iterdir()})


def test_fold_queue_trains_each_fold_exactly_once(tiny_data, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    micro_builder(tmp_path, "cpu")  # extracts the spectrogram stores before the workers start
    experiment = tmp_path / "experiment"
    schedule = Schedule.from_config(micro_config("corrections_002", max_epochs=1))
    builder = partial(micro_builder, markers, workers=2)
    results = train_folds_parallel(experiment, range(5), builder, schedule, "queue", ["cpu", "cpu"])
    assert sorted(results) == [0, 1, 2, 3, 4]
    built = sorted(p.name.split("-")[0] for p in markers.iterdir())
    assert built == [f"fold{k}" for k in range(5)]  # each fold built once, no fold twice
    assert _workers_seen(markers) == 2  # both workers worked
    for k in range(5):
        assert (
            results[k]["device"] == "cpu" and (experiment / f"fold_{k}" / FINISHED_FILE).is_file()
        )
    # Finished folds are not queued again.
    again = train_folds_parallel(experiment, range(5), builder, schedule, "queue", ["cpu", "cpu"])
    assert sorted(again) == [0, 1, 2, 3, 4] and len(list(markers.iterdir())) == 5


def test_gpu_augmentation_path_trains_on_cpu_tensors(tiny_data):
    paths = get_paths()
    config = micro_config("auxiliary_016")
    data = load_first_level_data(config, paths, load_vocabulary(paths), "if-present")
    cpu = build_fold(data, 0, RunOptions())
    gpu = build_fold(data, 0, RunOptions(augment_on="gpu"))
    raw_batch = next(iter(gpu.train_loader))
    input, target, noisy = gpu.model._prepare(raw_batch)
    cpu_input, cpu_target, cpu_noisy = next(iter(cpu.train_loader))
    # The same samples: the workers draw every random number with the sample's generator.
    np.testing.assert_allclose(input.numpy(), cpu_input.numpy(), atol=1e-5)
    assert torch.allclose(target, cpu_target, atol=1e-6) and torch.equal(noisy, cpu_noisy)
    output = gpu.model.train_step(raw_batch, None)
    assert np.isfinite(output["loss"])
