"""Stacking set-up: out-of-fold inputs, corrected targets, loaders and the MLP of a fold.

A stacking experiment trains an MLP on the out-of-fold tile predictions of the first-level
experiments (the inputs of its configuration), so each clip is predicted by models that never
saw it; see docs/original.md ("Stacking").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from src.config import Paths, Vocabulary, get_paths, load_vocabulary, vocabulary_source
from src.data.corrections import apply_corrections, find_corrections
from src.data.labels import check_labels, folds_digest, load_folds
from src.models.argus_models import StackingModel, model_params
from src.runs import check_oof_inputs, check_trained_folds, read_oof_tiles
from src.training.datasets import EpochSampler, StackingDataset, loader_generator
from src.training.distributed import distribute, shard_dataset
from src.training.parts import FoldParts, RunOptions

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
    folds = load_folds(paths)
    check_labels(folds, vocabulary, paths.folds_csv)
    check_oof_inputs(paths.predictions_dir, config["inputs"], sorted(folds["fold"].unique()))
    for name in config["inputs"]:
        check_trained_folds(paths.experiment_dir(name), folds_digest(folds), paths.folds_csv)
    fixes = find_corrections(
        paths.corrections_dir,
        config["corrections"].get("curated"),
        vocabulary,
        folds["fname"],
        corrections,
    )
    folds = apply_corrections(folds, fixes)
    # Each input experiment's tile columns matched by name to the dataset's classes: the order
    # of the targets, and the classes this experiment records.
    inputs = read_oof_tiles(
        paths.predictions_dir,
        config["inputs"],
        folds["fname"],
        folds["fold"],
        vocabulary.classes,
        vocabulary_source(paths),
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
        generator=loader_generator([options.seed, fold]),
    )
    val_loader = DataLoader(
        val_set,
        batch_size=int(config["val_batch_size"]),
        num_workers=options.workers,
        generator=loader_generator([options.seed, fold]),
    )
    torch.manual_seed(int(np.random.default_rng([options.seed, fold, 1]).integers(2**31)))
    params = model_params(
        config, len(data.vocabulary), options.device, in_channels=data.inputs[0].shape[1]
    )
    model = StackingModel(params)
    parts = FoldParts(model, train_loader, val_loader, sampler)
    return distribute(
        parts, options.rank, options.world_size, options.device, options.sync_batchnorm
    )


def stacking_fold_builder(config: dict, corrections: str, options: RunOptions, device: str):
    """Picklable setup for `train_folds_parallel` (see src.training.first_level.fold_builder)."""
    paths = get_paths()
    data = load_stacking_data(config, paths, load_vocabulary(paths), corrections)
    return partial(build_stacking_fold, data, options=replace(options, device=device))
