"""Data and per-fold setup of a first-level (CNN) experiment."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader

from src.augment.gpu import augment_batch
from src.augment.mixers import UseMixerWithProb, get_mixer
from src.augment.transforms import Compose, get_transforms
from src.config import Paths, Vocabulary, get_paths, load_vocabulary
from src.data.corrections import CORRECTIONS_MODES
from src.data.labels import LabelTables, has_noisy_set, load_label_tables
from src.data.store import Extraction, SpectrogramStore, curated_store, noisy_store
from src.models.argus_models import FreesoundModel, model_params
from src.training.datasets import (
    NOISY_FLAG,
    ClipDataset,
    EpochSampler,
    ProbabilityMix,
    RawWindowClips,
    loader_generator,
)
from src.training.distributed import distribute, shard_dataset
from src.training.finetune import FreezeBackbone, Source, initialise, resolve_source
from src.training.parts import FoldParts, RunOptions

log = logging.getLogger(__name__)


@dataclass
class FirstLevelData:
    config: dict
    vocabulary: Vocabulary
    tables: LabelTables
    probabilities: dict[str, float]
    curated: SpectrogramStore
    noisy: SpectrogramStore | None
    source: Source | None = None  # where the networks start (`finetune.init_from`)


def load_first_level_data(
    config: dict,
    paths: Paths,
    vocabulary: Vocabulary,
    corrections: str = "required",
    extraction: Extraction | None = None,
    announce: bool = True,
) -> FirstLevelData:
    """Spectrogram stores and label tables, loaded once for all folds (`announce`: log the
    probability moves; the fold workers of a parallel run load again quietly)."""
    if corrections not in CORRECTIONS_MODES:
        raise ValueError(f"corrections must be one of {CORRECTIONS_MODES}")
    probabilities = {
        name: float(config["datasets"].get(name, 0.0)) for name in ("noisy", "corrected", "curated")
    }
    need_noisy = probabilities["noisy"] > 0 or probabilities["corrected"] > 0
    if need_noisy and not has_noisy_set(paths):
        moved = probabilities["noisy"] + probabilities["corrected"]
        if announce:
            log.warning(
                "no noisy set (%s missing or empty): the noisy and corrected-noisy sampling "
                "probability %.2f moves to the curated set",
                paths.train_noisy_csv.name,
                moved,
            )
        probabilities = {
            "noisy": 0.0,
            "corrected": 0.0,
            "curated": probabilities["curated"] + moved,
        }
        need_noisy = False
    files = {} if corrections == "none" else config["corrections"]
    tables = load_label_tables(paths, vocabulary, files, need_noisy, corrections == "if-present")
    if probabilities["corrected"] > 0 and tables.corrected.empty:
        # Only reachable without noisy corrections (smoke runs, --no-corrections): the
        # corrected clips were BCE-trained like curated ones, so curated takes their share.
        if announce:
            log.warning(
                "no corrected noisy clips: their sampling probability %.2f moves to the curated "
                "set",
                probabilities["corrected"],
            )
        probabilities["curated"] += probabilities.pop("corrected")
        probabilities["corrected"] = 0.0
    spec = (config.get("finetune") or {}).get("init_from")
    return FirstLevelData(
        config=config,
        vocabulary=vocabulary,
        tables=tables,
        probabilities=probabilities,
        curated=curated_store(paths, extraction),
        noisy=noisy_store(paths, extraction) if need_noisy else None,
        source=None
        if spec is None
        else resolve_source(spec, paths.experiments_dir, config["name"]),
    )


def train_augmentations(config: dict) -> tuple[Compose, UseMixerWithProb | None]:
    """The train transform and the mixer (None: no mixing) of a first-level experiment's
    configuration, as every fold builds them (show.py augmentations draws with them too)."""
    train_transform = get_transforms(True, int(config["crop_size"]), **config["transforms"])
    mixer_config = config["mixer"]
    mixer = get_mixer(
        mixer_config["prob"],
        tuple(mixer_config["sigmoid_range"]),
        tuple(mixer_config["p"]),
        mixer_config["alpha_dist"],
    )
    return train_transform, mixer


def build_fold(data: FirstLevelData, fold: int, options: RunOptions) -> FoldParts:
    """Fresh model, loaders and metrics of one fold: validate on fold `fold`, train on the rest."""
    config, vocabulary, tables = data.config, data.vocabulary, data.tables
    crop = int(config["crop_size"])
    train_transform, mixer = train_augmentations(config)
    curated = tables.curated
    train_curated = curated[curated["fold"] != fold]
    val_curated = curated[curated["fold"] == fold]

    def clips(table, store, name, transform, with_mixer):
        return ClipDataset(
            store,
            table["fname"].tolist(),
            vocabulary.encode_many(table["labels"].tolist()),
            NOISY_FLAG[name],
            transform,
            mixer if with_mixer else None,
        )

    sets, probabilities = [], []
    for name, table, store in (
        ("noisy", tables.noisy, data.noisy),
        ("corrected", tables.corrected, data.noisy),
        ("curated", train_curated, data.curated),
    ):
        if data.probabilities[name] > 0:
            sets.append(clips(table, store, name, train_transform, True))
            probabilities.append(data.probabilities[name])
    size = int(config["epoch_size"])
    if options.augment_on == "gpu":
        # Same samples as the CPU path (the workers draw every random parameter), but the
        # tensor work happens in batches on the model's device.
        sets = [RawWindowClips(s) for s in sets]
    train_set = ProbabilityMix(sets, probabilities, size, seed=(options.seed, fold))
    sampler = EpochSampler(size, options.rank, options.world_size)
    val_set = clips(val_curated, data.curated, "curated", get_transforms(False, crop), False)
    if options.world_size > 1:
        val_set = shard_dataset(val_set, options.rank, options.world_size)

    on_gpu = torch.device(options.device).type == "cuda"
    loader_options = {
        "num_workers": options.workers,
        "pin_memory": on_gpu,
        "persistent_workers": options.workers > 0,
        "generator": loader_generator([options.seed, fold]),
    }
    train_loader = DataLoader(
        train_set,
        batch_size=int(config["batch_size"]) // options.world_size,
        sampler=sampler,
        drop_last=True,
        **loader_options,
    )
    val_loader = DataLoader(
        val_set, batch_size=int(config["val_batch_size"]), shuffle=False, **loader_options
    )

    torch.manual_seed(int(np.random.default_rng([options.seed, fold]).integers(2**31)))
    params = model_params(
        config, len(vocabulary), options.device, options.amp, options.channels_last
    )
    model = FreesoundModel(params)
    extra = []
    if data.source is not None:
        initialise(model, data.source, fold, vocabulary.classes)
        extra.append(FreezeBackbone(int(config["finetune"]["freeze_epochs"])))
    if options.augment_on == "gpu":
        model.batch_transform = augment_batch
    if options.compile:
        model.nn_module = torch.compile(model.nn_module)
    parts = FoldParts(model, train_loader, val_loader, sampler, extra_callbacks=extra)
    return distribute(
        parts, options.rank, options.world_size, options.device, options.sync_batchnorm
    )


def fold_builder(config: dict, corrections: str, options: RunOptions, device: str):
    """Picklable setup for `train_folds_parallel`: loads the data in the worker process
    (`config`: the resolved configuration, as in params.json)."""
    paths = get_paths()
    data = load_first_level_data(config, paths, load_vocabulary(paths), corrections, announce=False)
    return partial(build_fold, data, options=replace(options, device=device))
