"""The registry: every named experiment of the final ensemble as plain data, and its scales.

See docs/original.md, "Experiments".

An experiment is a JSON-like dict. A registry entry is a base (`CNN_BASE`, `STACKING_BASE`) with
only what differs, merged key by key at every depth (`merge`). `resolve(name, scale)` returns
the complete configuration that training uses and writes to `params.json` beside the weights,
so a run can always be traced back to every setting that shaped it; `SCALES` is the one table
of the sizes an experiment trains at (full, cpu, smoke) and `apply_scale` the one way a scale
changes a configuration.

First-level experiments train CNNs on spectrograms; stacking experiments train an MLP on the
out-of-fold predictions of the first-level ones. The registry holds the *intended*
configurations of the original commits: its cache bugs are documented in docs/original.md
(quirks "Noisy corrections ignored" to "Mixed noisy cache") and not reproduced.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from src.config import AudioConfig, ConfigError

Config = dict[str, Any]


def merge(config: Config, changes: Config) -> Config:
    """Recursive update of nested dicts (lists and scalars are replaced)."""
    merged = copy.deepcopy(config)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# Starting from a trained network (`train_folds.py --init-from SOURCE`, src/training/finetune.py):
# `init_from` names the source (an experiment, NAME:K, or a .pth file; None: random weights).
# With a source, only the heads train for the first `freeze_epochs` epochs, and the backbone's
# learning rate is `backbone_lr_scale` times the heads'. The defaults are what
# bench/transfer_fsdd.py measured best on few clips (docs/performance.md, "Starting from a
# trained model").
FINETUNE_DEFAULTS: Config = {"init_from": None, "freeze_epochs": 0, "backbone_lr_scale": 0.3}


def settings_that_shape_the_run(config: Config) -> Config:
    """The configuration without the settings that change nothing in its run: a `finetune`
    entry without a source (its freeze and backbone-rate settings act only on a fine-tune), so
    a change of their defaults leaves runs, resumes and searches from random weights as they
    were."""
    finetune = config.get("finetune")
    if isinstance(finetune, dict) and finetune.get("init_from") is None:
        return {k: v for k, v in config.items() if k != "finetune"}
    return config


# Settings shared by all seven first-level experiments.
CNN_BASE: Config = {
    "kind": "cnn",
    "model": {
        "name": "AuxSkipAttention",
        "params": {
            "base_size": 64,
            "dropout": 0.4,
            "ratio": 16,
            "kernel_size": 7,
            "last_filters": 8,
            "last_fc": 4,
        },
    },
    "aux_weights": [1.0, 0.4, 0.2, 0.1],
    "loss": {
        "name": "OnlyNoisyLSoftLoss",
        "params": {"beta": 0.7, "noisy_weight": 0.5, "curated_weight": 0.5},
    },
    "optimizer": {"name": "Adam", "params": {"lr": 0.0009}},
    # ReduceLROnPlateau on val lwlrap, unless `warm_restarts` names torch's
    # CosineAnnealingWarmRestarts ({"T_0": 10, "T_mult": 2, "eta_min": 1e-5}), stepped per epoch.
    "scheduler": {"patience": 6, "factor": 0.6, "min_lr": 1e-8, "warm_restarts": None},
    # Epochs without a better val lwlrap before a fold stops; null: it runs to max_epochs.
    "early_stopping": 18,
    "max_epochs": 700,
    "batch_size": 128,
    "val_batch_size": 256,
    "epoch_size": 128 * 256,
    "crop_size": 256,
    # Sampling probabilities of the three training sets; the noisy set is trained with Lsoft
    # (flag 1), the corrected-noisy and curated sets with BCE (flag 0).
    "datasets": {"noisy": 0.2, "corrected": 0.0, "curated": 0.8},
    # Correction files, by name, in the data dir's `corrections/` folder (None: not used).
    # `noisy_labels`: 'raw' keeps the noisy set's original labels, 'corrected' applies the
    # noisy corrections to it (removes and relabels).
    "corrections": {"curated": "corrections.json", "noisy": None, "noisy_labels": "raw"},
    "transforms": {
        "wrap_pad_prob": 0.5,
        "resize_scale": [0.8, 1.0],
        "resize_ratio": [1.7, 2.3],
        "resize_prob": 0.33,
        "spec_num_mask": 2,
        "spec_freq_masking": 0.15,
        "spec_time_masking": 0.2,
        "spec_prob": 0.5,
    },
    "mixer": {"prob": 0.8, "sigmoid_range": [3, 12], "p": [0.6, 0.4], "alpha_dist": "uniform"},
    "finetune": FINETUNE_DEFAULTS,
}

# The three stacking runs share everything but the random-search draws.
STACKING_BASE: Config = {
    "kind": "stacking",
    "inputs": [
        "auxiliary_016",
        "auxiliary_019",
        "corr_noisy_003",
        "corr_noisy_004",
        "corr_noisy_007",
        "corrections_002",
        "corrections_003",
    ],
    "model": {"name": "FCNet", "params": {"base_size": 512}},
    "loss": {"name": "BCEWithLogits", "params": {}},
    "early_stopping": 30,
    "max_epochs": 700,
    "epoch_size": 128 * 256,
    "batch_size": 128,
    "val_batch_size": 256,
    "optimizer": {"name": "Adam", "params": {}},
    "corrections": {"curated": "corrections.json"},
    # Random tile subsets of the out-of-fold predictions (docs/original.md, "Stacking").
    "transforms": {"sized_crop_prob": 0.5, "stride_crop_prob": 0.5},
    "scheduler": {"min_lr": 1e-8},
}


EXPERIMENTS: dict[str, Config] = {
    "auxiliary_016": merge(
        CNN_BASE,
        {
            "corrections": {"curated": "corrections_aux016.json"},
            "original": {
                "commit": "31156c7",
                "note": "curated corrections of that commit (76 entries)",
            },
        },
    ),
    "auxiliary_019": merge(
        CNN_BASE,
        {
            "transforms": {"resize_scale": [0.75, 1.0], "resize_ratio": [1.6, 2.4]},
            "corrections": {"curated": "corrections_aux019.json"},
            "original": {
                "commit": "9639288",
                "note": "curated corrections of that commit (71 entries)",
            },
        },
    ),
    "corr_noisy_003": merge(
        CNN_BASE,
        {
            "model": {"name": "RnnAuxSkipAttention"},
            "datasets": {"noisy": 0.1, "corrected": 0.2, "curated": 0.7},
            "corrections": {"noisy": "noisy_corrections_003.json", "noisy_labels": "corrected"},
            "original": {
                "commit": "1fb2eea",
                "note": "noisy corrections of that commit: 1,745 relabels, no removals; the "
                "original's noisy loader ignored them for the noisy set, here they apply",
            },
        },
    ),
    "corr_noisy_004": merge(
        CNN_BASE,
        {
            "datasets": {"noisy": 0.07, "corrected": 0.33, "curated": 0.6},
            "corrections": {"noisy": "noisy_corrections.json", "noisy_labels": "corrected"},
            "original": {
                "commit": "db945ac",
                "note": "the original's noisy set held only the 1,745 corrected clips; "
                "here it is the corrected noisy set, as corr_noisy_007",
            },
        },
    ),
    "corr_noisy_007": merge(
        CNN_BASE,
        {
            "datasets": {"noisy": 0.01, "corrected": 0.42, "curated": 0.57},
            "corrections": {"noisy": "noisy_corrections.json", "noisy_labels": "corrected"},
            "original": {"commit": "bdb9150", "note": "the original's HEAD behaviour"},
        },
    ),
    "corrections_002": merge(
        CNN_BASE,
        {
            "model": {"name": "SkipAttention", "params": {"dropout": 0.2, "last_fc": 2}},
            "aux_weights": None,
            "datasets": {"noisy": 0.33, "corrected": 0.0, "curated": 0.67},
            "corrections": {"curated": "corrections_002.json"},
            "transforms": {"resize_prob": 0.0, "resize_scale": None, "resize_ratio": None},
            "mixer": {"prob": 0.66},
            "original": {
                "commit": "05a7aee",
                "note": "no RandomResizedCrop at that commit; curated corrections of 12 "
                "entries; the pipeline's cache order changed its noisy set, here all raw "
                "noisy clips",
            },
        },
    ),
}
EXPERIMENTS["corrections_003"] = merge(
    EXPERIMENTS["corrections_002"],
    {
        "model": {"params": {"kernel_size": 3}},
        "original": {
            "commit": "24a4f20",
            "note": "as corrections_002 with a 3x3 spatial attention",
        },
    },
)
# The three stacking runs, the original's random-search draws (docs/original.md, "Stacking"):
# name suffix, commit, SE-gate reduction, dropout, lr, plateau patience and factor.
STACKING_RUNS = (
    ("43040", "1e1c265", 16, 0.0514108720891856, 4.5950585196710547e-05, 5, 0.657766056031002),
    ("45041", "bc48f8a", 2, 0.48357033916143033, 3.897529465275052e-05, 9, 0.7953702239306087),
    ("50013", "493908a", 1, 0.1662788540244386, 2.5814932060476834e-05, 7, 0.5537460438294733),
)
EXPERIMENTS.update(
    {
        f"stacking_008_fcnet_{suffix}": merge(
            STACKING_BASE,
            {
                "model": {"params": {"reduction_scale": reduction, "p_dropout": dropout}},
                "optimizer": {"params": {"lr": lr}},
                "scheduler": {"patience": patience, "factor": factor},
                "original": {"commit": commit},
            },
        )
        for suffix, commit, reduction, dropout, lr, patience, factor in STACKING_RUNS
    }
)

FIRST_LEVEL = [name for name, c in EXPERIMENTS.items() if c["kind"] == "cnn"]
STACKING = [name for name, c in EXPERIMENTS.items() if c["kind"] == "stacking"]


# --------------------------------------------------------------------------------------
# Scales: the same experiment at another size
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """What a scale does to an experiment of one kind: `changes` merged key by key, then the
    settings named in `divisors` (dotted keys) divided. A scale that narrows the crop scales
    RandomResizedCrop's aspect range with it (`follow_crop`)."""

    changes: Config = field(default_factory=dict)
    divisors: dict[str, float] = field(default_factory=dict)


# smoke: the same experiment, small enough to train on two CPU cores in seconds. A network 64
# times smaller than the original learns far too slowly in a few hundred steps with dropout 0.4
# and lr 0.0009, so the smoke scale also divides dropout by 4 and raises lr.
SMOKE_CNN = Scale(
    {
        "model": {"params": {"base_size": 8}},
        "crop_size": 64,
        "batch_size": 16,
        "val_batch_size": 64,
        "epoch_size": 256,
        "max_epochs": 4,
        "early_stopping": 3,
        "scheduler": {"patience": 2},
        "optimizer": {"params": {"lr": 0.003}},
    },
    divisors={"model.params.dropout": 4},
)
SMOKE_STACKING = Scale(
    {
        "model": {"params": {"base_size": 64}},
        "batch_size": 32,
        "val_batch_size": 64,
        "epoch_size": 1024,
        "max_epochs": 15,
        "early_stopping": 5,
        "scheduler": {"patience": 2},
        "optimizer": {"params": {"lr": 0.01}},
    }
)
# cpu, the laptop scale (`train_folds.py --scale cpu`): what bench/fsdd_learning.py found to
# learn real recordings (ten spoken digits, held-out speaker lwlrap >= 0.9) in minutes on 2 CPU
# cores: a 16-wide network, 64-frame crops, 1,024 samples per epoch, no mixing. Absolute
# settings, applied over any first-level experiment; a stacking MLP is small at full size.
CPU_CNN = Scale(
    {
        "model": {"params": {"base_size": 16, "dropout": 0.1}},
        "crop_size": 64,
        "batch_size": 32,
        "val_batch_size": 128,
        "epoch_size": 1024,
        "max_epochs": 20,
        "early_stopping": 8,
        "scheduler": {"patience": 3, "factor": 0.6},
        "optimizer": {"params": {"lr": 0.001}},
        "mixer": {"prob": 0.0},
    }
)

# scale -> kind -> what it does (None: that kind does not train at that scale, with the reason).
SCALES: dict[str, dict[str, Scale | str]] = {
    "full": {"cnn": Scale(), "stacking": Scale()},
    "cpu": {
        "cnn": CPU_CNN,
        "stacking": "--scale cpu is for first-level experiments; a stacking experiment trains "
        "at --smoke or full size (its MLP is small)",
    },
    "smoke": {"cnn": SMOKE_CNN, "stacking": SMOKE_STACKING},
}
DEFAULT_SCALE = "full"


def apply_scale(config: Config, scale: str) -> Config:
    """`config` (at full size) at `scale`, recorded as its `scale` field."""
    if scale not in SCALES:
        raise ConfigError(f"scale must be one of {tuple(SCALES)}, got {scale!r}")
    rule = SCALES[scale][config["kind"]]
    if isinstance(rule, str):
        raise ConfigError(rule)
    scaled = follow_crop(merge(config, rule.changes), config.get("crop_size"))
    for dotted, divisor in rule.divisors.items():
        *parents, key = dotted.split(".")
        owner = scaled
        for part in parents:
            owner = owner[part]
        owner[key] = owner[key] / divisor
    scaled["scale"] = scale
    return scaled


def follow_crop(config: Config, old_crop: int | None) -> Config:
    """RandomResizedCrop's aspect range scaled as the crop width changed from `old_crop`.

    The range (crop width / height, e.g. [1.7, 2.3]) was set for the original's 256-frame crops
    over 128 mel bands (aspect 2). Kept as it is on a 64-frame crop (aspect 0.5), no box fits in
    the sampler's 10 attempts and every resized crop falls back to one fixed centre box: 38 mel
    bands stretched over 128. So a scale that changes the crop width scales the range with it.
    """
    ratio = config.get("transforms", {}).get("resize_ratio")
    if old_crop and ratio is not None and config["crop_size"] != old_crop:
        factor = config["crop_size"] / old_crop
        config["transforms"]["resize_ratio"] = [round(r * factor, 6) for r in ratio]
    return config


def check_resize_ratio(config: Config, n_mels: int = AudioConfig.n_mels) -> None:
    """A ConfigError when RandomResizedCrop is on and its aspect range misses the crop's aspect
    (every draw would then fall back to the same centre box; see `rescale`)."""
    transforms = config.get("transforms") or {}
    resizes = transforms.get("resize_prob") and transforms.get("resize_scale") is not None
    if config.get("kind") != "cnn" or not resizes:
        return
    low, high = transforms["resize_ratio"]
    aspect = config["crop_size"] / n_mels
    if not low <= aspect <= high:
        raise ConfigError(
            f"transforms.resize_ratio [{low:g}, {high:g}] does not contain the crop's aspect "
            f"(crop_size {config['crop_size']} / {n_mels} mel bands = {aspect:g}): every "
            "RandomResizedCrop would fall back to one fixed centre box; set a range around "
            f"{aspect:g} (the original's [1.7, 2.3] is 2 +/- 15 % for 256-frame crops)"
        )


def check_datasets(config: Config) -> None:
    """A ConfigError when the training sets' probabilities (`datasets`) are negative or do not
    sum to 1: checked with the configuration, before anything is written or extracted."""
    datasets = config.get("datasets")
    if not isinstance(datasets, dict) or not datasets:
        return
    values = list(datasets.values())
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"datasets: probabilities must be numbers, got {datasets}")
    if any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ConfigError(
            f"datasets: the sets' probabilities must be >= 0 and sum to 1, got {datasets} "
            f"(sum {sum(values):g}; a file's datasets are merged key by key into its base's, "
            "so give every set: noisy, corrected and curated)"
        )


def unknown_experiment(name: str, trained: Sequence[str] = ()) -> ConfigError:
    """The error for a name that is neither registered nor trained: the closest names first
    ("did you mean"), then every registered and trained one."""
    candidates = list(dict.fromkeys([*EXPERIMENTS, *trained]))
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    known = f"registered: {', '.join(EXPERIMENTS)}"
    if trained:
        known += f"; trained: {', '.join(trained)}"
    return ConfigError(f"unknown experiment {name!r}{hint} ({known})")


def resolve(name: str, scale: str = DEFAULT_SCALE) -> Config:
    """The complete configuration of a registered experiment at `scale` (`SCALES`)."""
    if name not in EXPERIMENTS:
        raise unknown_experiment(name)
    config = apply_scale(EXPERIMENTS[name], scale)
    config["name"] = name
    return config


def tile_steps(config: Config) -> dict[str, int]:
    """Tile steps of prediction, relative to the crop as the original's 64 and 128 were to 256."""
    crop = int(config["crop_size"])
    return {"oof": crop // 4, "test": crop // 4, "stacking_test": crop // 2}
