"""The clip dataset, the probability sampler and the experiment's label tables."""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from src.config import ConfigError, get_paths, load_vocabulary
from src.data.labels import load_label_tables
from src.training.datasets import EpochSampler
from src.training.first_level import build_fold, load_first_level_data
from src.training.parts import RunOptions
from tests.helpers import micro_config


def fold_parts(config=None, **options):
    paths = get_paths()
    config = config or micro_config("corr_noisy_007", epoch_size=64)
    data = load_first_level_data(config, paths, load_vocabulary(paths), "if-present")
    return data, build_fold(data, 0, RunOptions(**options))


def batches(loader):
    return [tuple(t.clone() for t in batch) for batch in loader]


def test_same_seed_same_samples_whatever_the_worker_count(tiny_data):
    _, parts = fold_parts()
    dataset = parts.train_loader.dataset
    one = batches(DataLoader(dataset, batch_size=8, sampler=EpochSampler(64), num_workers=0))
    two = batches(DataLoader(dataset, batch_size=8, sampler=EpochSampler(64), num_workers=2))
    for a, b in zip(one, two, strict=True):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    other_epoch = batches(
        DataLoader(dataset, batch_size=8, sampler=EpochSampler(64, start_epoch=1))
    )
    assert not torch.equal(one[0][0], other_epoch[0][0])
    _, reseeded = fold_parts(seed=7)
    assert not torch.equal(reseeded.train_loader.dataset[0][0], dataset[0][0])
    assert torch.equal(fold_parts()[1].train_loader.dataset[5][0], dataset[5][0])


def test_sets_are_drawn_with_their_probabilities(tiny_data):
    config = micro_config(
        "corr_noisy_007", datasets={"noisy": 0.3, "corrected": 0.0, "curated": 0.7}
    )
    _, parts = fold_parts(config)
    mix = parts.train_loader.dataset
    rng_draws = Counter()
    for key in range(2000):
        rng = np.random.default_rng([*mix.seed, key])
        rng_draws[int(rng.choice(len(mix.datasets), p=mix.probabilities))] += 1
    assert abs(rng_draws[0] / 2000 - 0.3) < 0.04
    flags = Counter(int(mix[k][2]) for k in range(300))  # noisy clips carry flag 1
    assert abs(flags[1] / 300 - 0.3) < 0.09
    image, target, noisy = mix[0]
    assert image.shape == (3, 128, 64) and target.shape == (6,) and noisy.dtype == torch.uint8


def test_validation_is_the_fold_and_training_the_rest(tiny_data):
    data, parts = fold_parts()
    val = parts.val_loader.dataset
    folds = data.tables.curated
    assert set(val.fnames) == set(folds.loc[folds["fold"] == 0, "fname"])
    curated_train = [d for d in parts.train_loader.dataset.datasets if d.noisy.item() == 0][-1]
    assert not set(curated_train.fnames) & set(val.fnames)
    assert torch.equal(val[0][0], val[0][0])  # deterministic validation transform


def write_corrections(name, content):
    path = get_paths().corrections_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def test_label_tables_apply_curated_and_noisy_corrections(tiny_data):
    paths = get_paths()
    vocabulary = load_vocabulary(paths)
    curated = pd.read_csv(paths.folds_csv)
    noisy = pd.read_csv(paths.train_noisy_csv)
    removed, relabelled = curated["fname"][0], curated["fname"][1]
    write_corrections(
        "corrections.json", {removed: "remove", relabelled: f"{vocabulary.classes[0]}"}
    )
    kept_noisy = noisy["fname"][0]
    write_corrections(
        "noisy_corrections.json",
        {kept_noisy: vocabulary.classes[2], noisy["fname"][1]: "remove"},
    )
    files = {
        "curated": "corrections.json",
        "noisy": "noisy_corrections.json",
        "noisy_labels": "corrected",
    }
    tables = load_label_tables(paths, vocabulary, files, need_noisy=True)
    assert removed not in set(tables.curated["fname"]) and len(tables.curated) == len(curated) - 1
    assert tables.curated.set_index("fname").loc[relabelled, "labels"] == vocabulary.classes[0]
    assert tables.corrected["fname"].tolist() == [kept_noisy]  # relabelled only, not removed
    assert len(tables.noisy) == len(noisy) - 1
    raw = load_label_tables(paths, vocabulary, {**files, "noisy_labels": "raw"}, need_noisy=True)
    assert len(raw.noisy) == len(noisy) and raw.corrected["fname"].tolist() == [kept_noisy]


def test_bad_correction_files_name_the_file_and_the_problem(tiny_data):
    paths = get_paths()
    vocabulary = load_vocabulary(paths)
    files = {"curated": "corrections.json"}
    with pytest.raises(
        ConfigError, match="corrections.json: correction file not found.*--no-corrections"
    ):
        load_label_tables(paths, vocabulary, files, need_noisy=False)
    write_corrections("corrections.json", {"nope.wav": "remove"})
    with pytest.raises(
        ConfigError, match=r"corrections.json: fnames not in the dataset \(1\).*nope.wav"
    ):
        load_label_tables(paths, vocabulary, files, need_noisy=False)
    fname = pd.read_csv(paths.folds_csv)["fname"][0]
    write_corrections("corrections.json", {fname: "Bark,Not_a_class"})
    with pytest.raises(ConfigError, match="unknown labels.*'Not_a_class'"):
        load_label_tables(paths, vocabulary, files, need_noisy=False)


def test_corrected_share_moves_to_curated_without_noisy_corrections(tiny_data, caplog):
    data, _ = fold_parts()
    assert data.probabilities == {"noisy": 0.01, "corrected": 0.0, "curated": pytest.approx(0.99)}
    assert "moves to the curated set" in caplog.text
