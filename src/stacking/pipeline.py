"""Stacking training setup and the final ensemble prediction (spec 9.3, 10.3 to 10.5)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from src.config import ConfigError, Paths, Vocabulary
from src.corrections import apply_corrections
from src.datasets import EpochSampler, check_labels, corrections_path
from src.distributed import distribute, shard_dataset
from src.experiments import resolve, tile_steps
from src.first_level import RunOptions
from src.folds import read_folds, read_labels_csv
from src.metrics import Lwlrap, MultiAccuracy
from src.prediction import (
    cv_scores,
    experiment_config,
    fold_checkpoints,
    gmean_frames,
    predict_set_cached,
    probs_frame,
)
from src.predictor import Predictor, load_checkpoint
from src.stacking.argus_model import StackingModel
from src.stacking.data import StackingDataset, check_oof_inputs, load_stacking_inputs
from src.training import FoldParts

log = logging.getLogger(__name__)


@dataclass
class StackingData:
    config: dict
    vocabulary: Vocabulary
    table: pd.DataFrame  # fname, labels (corrected), fold
    inputs: list[np.ndarray]


def load_stacking_data(
    config: dict, paths: Paths, vocabulary: Vocabulary, corrections: str = "required"
) -> StackingData:
    """Out-of-fold inputs and corrected targets of the curated clips (removed ones excluded)."""
    from src.corrections import load_corrections

    folds = read_folds(paths.folds_csv)
    check_labels(folds, vocabulary, paths.folds_csv)
    check_oof_inputs(paths.predictions_dir, config["inputs"], folds)
    path = (
        None
        if corrections == "none"
        else corrections_path(paths, config["corrections"].get("curated"))
    )
    if path is not None and path.is_file():
        folds = apply_corrections(folds, load_corrections(path, vocabulary, folds["fname"]))
    elif path is not None and corrections == "required":
        raise ConfigError(f"{path}: correction file not found (or train with --no-corrections)")
    inputs = load_stacking_inputs(
        paths.predictions_dir, config["inputs"], folds["fname"], folds["fold"]
    )
    return StackingData(config, vocabulary, folds.reset_index(drop=True), inputs)


def build_stacking_fold(data: StackingData, fold: int, options: RunOptions) -> FoldParts:
    config = data.config
    targets = data.vocabulary.encode_many(data.table["labels"].tolist())
    is_val = (data.table["fold"] == fold).to_numpy()
    train_inputs = [x for x, v in zip(data.inputs, is_val) if not v]
    val_inputs = [x for x, v in zip(data.inputs, is_val) if v]
    transforms = config["transforms"]
    size = int(config["epoch_size"])
    train_set = StackingDataset(
        train_inputs,
        targets[~is_val],
        size=size,
        seed=(options.seed, fold),
        sized_prob=transforms["sized_crop_prob"],
        stride_prob=transforms["stride_crop_prob"],
    )
    val_set = StackingDataset(val_inputs, targets[is_val])
    if options.world_size > 1:
        val_set = shard_dataset(val_set, options.rank, options.world_size)
    sampler = EpochSampler(size, options.rank, options.world_size)
    train_loader = DataLoader(
        train_set,
        batch_size=int(config["batch_size"]) // options.world_size,
        sampler=sampler,
        drop_last=True,
        num_workers=options.workers,
    )
    val_loader = DataLoader(
        val_set, batch_size=int(config["val_batch_size"]), num_workers=options.workers
    )
    torch.manual_seed(int(np.random.default_rng([options.seed, fold, 1]).integers(2**31)))
    model = StackingModel(
        stacking_params(config, data.inputs[0].shape[1], len(data.vocabulary), options.device)
    )
    parts = FoldParts(model, train_loader, val_loader, sampler, [MultiAccuracy(), Lwlrap()])
    return distribute(
        parts, options.rank, options.world_size, options.device, options.sync_batchnorm
    )


def stacking_params(config: dict, in_channels: int, num_classes: int, device: str) -> dict:
    return {
        "nn_module": (
            "FCNet",
            {**config["model"]["params"], "in_channels": in_channels, "num_classes": num_classes},
        ),
        "loss": ("BCEWithLogits", {}),
        "optimizer": (config["optimizer"]["name"], dict(config["optimizer"]["params"])),
        "device": device,
    }


# --------------------------------------------------------------------------------------
# Predicting with stacking models
# --------------------------------------------------------------------------------------


def predict_mlp(model, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(
            np.ascontiguousarray(inputs[start : start + batch_size], dtype=np.float32)
        )
        outputs.append(model.predict(batch).float().cpu().numpy())
    return (
        np.concatenate(outputs)
        if outputs
        else np.zeros((0, model.params["nn_module"][1]["num_classes"]))
    )


def stacking_oof(name: str, paths: Paths, vocabulary: Vocabulary, device: str) -> pd.DataFrame:
    """Out-of-fold predictions of a stacking experiment on every curated clip (spec 10.5)."""
    config = experiment_config(paths.experiment_dir(name))
    folds = read_folds(paths.folds_csv)
    inputs = load_stacking_inputs(
        paths.predictions_dir, config["inputs"], folds["fname"], folds["fold"]
    )
    means = np.stack([x.mean(axis=0) for x in inputs])
    predictions = np.zeros((len(folds), len(vocabulary)))
    for fold, checkpoint in fold_checkpoints(paths.experiment_dir(name), name).items():
        rows = (folds["fold"] == fold).to_numpy()
        predictions[rows] = predict_mlp(load_checkpoint(checkpoint, device), means[rows])
    return probs_frame(folds["fname"].tolist(), predictions, vocabulary.classes)


def first_level_test(
    name: str,
    paths: Paths,
    vocabulary: Vocabulary,
    test,
    device: str,
    batch_size: int,
    progress: bool,
) -> pd.DataFrame:
    """Test tile means of every fold model at step crop/2, geometric mean over folds (spec 10.4)."""
    experiment_dir = paths.experiment_dir(name)
    step = tile_steps(experiment_config(experiment_dir))["stacking_test"]
    frames = []
    for fold, checkpoint in fold_checkpoints(experiment_dir, name).items():
        predictor = Predictor(checkpoint, device, batch_size, tile_step=step)
        out_dir = paths.prediction_dir(name) / f"fold_{fold}" / f"test_step{step}"
        frames.append(
            predict_set_cached(
                predictor,
                test,
                test.fnames,
                out_dir,
                vocabulary.classes,
                checkpoint,
                f"{name} fold {fold}",
                progress,
            )
        )
    return gmean_frames(frames)


def stacking_test(
    name: str, paths: Paths, vocabulary: Vocabulary, stack_inputs: pd.DataFrame, device: str
) -> pd.DataFrame:
    frames = []
    for checkpoint in fold_checkpoints(paths.experiment_dir(name), name).values():
        model = load_checkpoint(checkpoint, device)
        frames.append(
            probs_frame(
                stack_inputs["fname"],
                predict_mlp(model, stack_inputs.iloc[:, 1:].to_numpy()),
                vocabulary.classes,
            )
        )
    return gmean_frames(frames)


@dataclass
class EnsembleResult:
    submission: pd.DataFrame
    table: pd.DataFrame  # level, experiment, oof_lwlrap


def ensemble_predict(
    paths: Paths,
    vocabulary: Vocabulary,
    stacking_names: Sequence[str],
    device: str = "cpu",
    batch_size: int = 64,
    progress: bool = True,
    with_oof: bool = True,
) -> EnsembleResult:
    """The final blend: geometric mean of the first-level and stacking test predictions."""
    from src.datasets import test_store

    configs = [experiment_config(paths.experiment_dir(name)) for name in stacking_names]
    inputs = configs[0]["inputs"]
    if any(c["inputs"] != inputs for c in configs):
        raise ConfigError("the stacking experiments must share their first-level inputs")
    test = test_store(paths)
    first = [
        first_level_test(n, paths, vocabulary, test, device, batch_size, progress) for n in inputs
    ]
    stack_inputs = pd.concat([first[0][["fname"]]] + [f.iloc[:, 1:] for f in first], axis=1)
    second = [stacking_test(n, paths, vocabulary, stack_inputs, device) for n in stacking_names]
    blend = gmean_frames(first + second)
    table = (
        oof_table(paths, vocabulary, inputs, stacking_names, device) if with_oof else pd.DataFrame()
    )
    return EnsembleResult(blend, table)


def oof_table(
    paths: Paths, vocabulary: Vocabulary, inputs, stacking_names, device: str
) -> pd.DataFrame:
    """Out-of-fold lwlrap of each experiment of both levels and of their blend, against the
    original curated labels."""
    from src.prediction import read_probs

    truth = read_labels_csv(paths.train_curated_csv, vocabulary)
    frames, rows = [], []
    for name in inputs:
        folds = sorted(p for p in (paths.prediction_dir(name)).glob("fold_*/val/probs.csv"))
        oof = pd.concat([read_probs(p, vocabulary.classes) for p in folds], ignore_index=True)
        frames.append(oof)
        rows.append(("first level", name, cv_scores(oof, truth, vocabulary)["overall_lwlrap"]))
    for name in stacking_names:
        oof = stacking_oof(name, paths, vocabulary, device)
        frames.append(oof)
        rows.append(("stacking", name, cv_scores(oof, truth, vocabulary)["overall_lwlrap"]))
    blend = gmean_frames(frames)
    rows.append(
        (
            "blend",
            f"geometric mean of {len(frames)}",
            cv_scores(blend, truth, vocabulary)["overall_lwlrap"],
        )
    )
    return pd.DataFrame(rows, columns=["level", "experiment", "oof_lwlrap"])


def stacking_config(name: str, smoke: bool) -> dict:
    config = resolve(name, smoke)
    if config["kind"] != "stacking":
        raise ConfigError(f"{name} is a first-level experiment: use train_folds.py")
    return config


def stacking_fold_builder(config: dict, corrections: str, options: RunOptions, device: str):
    """Picklable setup for `train_folds_parallel` (see src.first_level.fold_builder)."""
    from dataclasses import replace
    from functools import partial

    from src.config import get_paths, load_vocabulary

    paths = get_paths()
    data = load_stacking_data(config, paths, load_vocabulary(paths), corrections)
    return partial(build_stacking_fold, data, options=replace(options, device=device))
