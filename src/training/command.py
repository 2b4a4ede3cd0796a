"""The command line of train_folds.py and stacking_train.py, and what it runs.

Parse, check the experiment folder, load the data once, train the folds (in parallel over
`--gpus` when given, under torchrun as DDP), print where the best checkpoints are.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from src.cli import (
    TRAINING_AMP,
    add_amp,
    add_data_dir,
    add_device,
    add_folds,
    add_force,
    add_no_progress,
    fail,
    parse_folds,
    resolve_device,
    use_data_dir,
)
from src.config import ConfigError, Paths, default_num_workers, get_paths, load_vocabulary
from src.data.labels import folds_digest, load_folds
from src.experiment_files import is_experiment_file, load_experiment
from src.experiments import FIRST_LEVEL, SCALES, STACKING
from src.models.argus_models import resolve_amp
from src.runs import audio_record, corrections_record, prepare_experiment_dir
from src.training.distributed import barrier, init_distributed, launched_by_torchrun
from src.training.finetune import (
    adopt_network,
    check_fits,
    check_settings,
    describe_copied,
    resolve_source,
    source_record,
)
from src.training.first_level import build_fold, fold_builder, load_first_level_data
from src.training.fold_queue import parse_devices, train_folds_parallel
from src.training.loop import train_folds
from src.training.parts import RunOptions, Schedule
from src.training.stacking import build_stacking_fold, load_stacking_data, stacking_fold_builder
from src.utils import setup_logging

log = logging.getLogger(__name__)


def add_run_arguments(parser: argparse.ArgumentParser, kind: str = "cnn") -> None:
    """How the folds run; the CNN-only options (precision, memory format, augmentation
    device, compilation) only for first-level experiments: the stacking MLP has none."""
    add_device(parser)
    if kind == "cnn":
        add_amp(parser, TRAINING_AMP)
    parser.add_argument(
        "--seed", type=int, default=2019, help="fixes every random draw (default 2019)"
    )
    parser.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    if kind == "cnn":
        parser.add_argument(
            "--channels-last", action="store_true", help="channels-last memory format"
        )
    parser.add_argument(
        "--sync-bn", action="store_true", help="SyncBatchNorm across processes under torchrun"
    )
    if kind == "cnn":
        parser.add_argument(
            "--augment-on",
            default="cpu",
            choices=["cpu", "gpu"],
            help="cpu: the faithful numpy path in the loader workers (default); gpu: the same "
            "augmentations batched on the training device",
        )
        parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    add_no_progress(parser)
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print every epoch's metrics and checkpoint moves (default: only in each fold's "
        "log.txt; the console shows a bar per fold and the summaries)",
    )
    parser.add_argument(
        "--gpus",
        default=None,
        help="train different folds on these devices at once, e.g. 0,1,2,3 (cuda:N) or cpu,cpu",
    )


# kind -> (load the data once, build a fold from it, build a fold in a worker process)
SETUPS = {
    "cnn": (load_first_level_data, build_fold, fold_builder),
    "stacking": (load_stacking_data, build_stacking_fold, stacking_fold_builder),
}


def corrections_mode(scale: str, no_corrections: bool = False) -> str:
    """How the label-correction files are used: required at full size, where present at the
    smaller scales (a synthetic or new dataset has none), or not at all."""
    if no_corrections:
        return "none"
    return "if-present" if scale != "full" else "required"


def run_record(
    config: dict, vocabulary, options: RunOptions, split, paths: Paths, corrections: str
) -> dict:
    """What params.json records of a run and a rerun must match (`prepare_experiment_dir`):
    the configuration, classes, seed and folds, the audio settings and the labels' corrections."""
    return {
        "config": config,
        "classes": list(vocabulary.classes),
        "seed": options.seed,
        "folds": folds_digest(split),
        "audio": audio_record(),
        "corrections": corrections_record(paths, config, corrections),
    }


def run_options(args: argparse.Namespace) -> RunOptions:
    device = resolve_device(args.device)
    workers = default_num_workers() if args.workers is None else args.workers
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: autotune the convolutions
    amp = getattr(args, "amp", TRAINING_AMP)
    resolve_amp(amp, device)  # validates; each device resolves 'auto' for itself
    return RunOptions(
        device=device,
        amp=amp,
        seed=args.seed,
        workers=workers,
        channels_last=getattr(args, "channels_last", False),
        sync_batchnorm=getattr(args, "sync_bn", False),
        augment_on=getattr(args, "augment_on", "cpu"),
        compile=getattr(args, "compile", False),
    )


def build_train_parser(description: str, kind: str) -> argparse.ArgumentParser:
    """The options of train_folds.py (kind 'cnn') and stacking_train.py ('stacking')."""
    names = FIRST_LEVEL if kind == "cnn" else STACKING
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiment",
        required=True,
        help=f"a registered experiment ({', '.join(names)}) or an experiment file (.json) "
        "naming one as its base and overriding settings (README, 'Experiments from a file')",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.SUB=VALUE",
        help="override one setting, e.g. --set model.params.base_size=32 (repeatable)",
    )
    add_folds(parser, "folds to train")
    scales = [scale for scale in SCALES if kind == "cnn" or scale != "cpu"]
    scale_help = (
        "full: as registered (default); cpu: small enough to learn real recordings in minutes "
        "on a laptop's CPU; smoke: tiny, for tests (= --smoke)"
        if kind == "cnn"
        else "full: as registered (default); smoke: tiny, for tests (= --smoke); there is no "
        "cpu scale for a stacking experiment: its MLP is small at full size"
    )
    parser.add_argument("--scale", choices=scales, default=None, help=scale_help)
    parser.add_argument(
        "--smoke", action="store_true", help="shrink the experiment to run on a CPU in seconds"
    )
    add_force(parser, "delete an existing experiment and train again")
    parser.add_argument(
        "--no-corrections", action="store_true", help="train without label-correction files"
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="override the experiment's epoch cap (recorded in params.json)",
    )
    if kind == "cnn":
        parser.add_argument(
            "--init-from",
            default=None,
            metavar="SOURCE",
            help="start from a trained network: an experiment (fold k from its fold k), "
            "NAME:K (every fold from its fold K) or a .pth checkpoint; its heads are rebuilt "
            "for the dataset's classes (= --set finetune.init_from=SOURCE; README, 'Start from "
            "a trained model')",
        )
    add_run_arguments(parser, kind)
    add_data_dir(parser)
    return parser


def train_command(argv: list[str] | None, description: str, kind: str) -> int:
    """Parse, check the experiment folder, load the data once, train the folds (in parallel
    over `--gpus` when given), print where the best checkpoints are."""
    parser = build_train_parser(description, kind)
    args = parser.parse_args(argv)
    use_data_dir(args)
    setup_logging()
    try:
        paths = get_paths()
        vocabulary = load_vocabulary(paths)
        if args.smoke and args.scale not in (None, "smoke"):
            raise ConfigError(f"--smoke is --scale smoke: it cannot go with --scale {args.scale}")
        scale = "smoke" if args.smoke else (args.scale or "full")
        args.smoke = scale == "smoke"
        sets = list(args.set)
        if getattr(args, "init_from", None) is not None:
            sets.append(f"finetune.init_from={json.dumps(args.init_from)}")
        config = load_experiment(args.experiment, scale=scale, sets=sets)
        if args.max_epochs is not None:
            config["max_epochs"] = args.max_epochs
        name = config["name"]
        if config["kind"] != kind:
            other = "stacking_train.py" if kind == "cnn" else "train_folds.py"
            raise ConfigError(f"{name} is not a {kind} experiment: use {other}")
        folds = parse_folds(args.folds)
        options = run_options(args)  # a device this machine lacks is the first thing said
        split = load_folds(paths, folds)  # stale or missing folds stop here, before extraction
        source = None
        if kind == "cnn" and config["finetune"]["init_from"] is not None:
            check_settings(config)
            source = resolve_source(config["finetune"]["init_from"], paths.experiments_dir, name)
            config = adopt_network(config, source)
            copied = check_fits(source, folds, vocabulary.classes)
            log.info("--init-from %s: %s", source.spec, describe_copied(copied, vocabulary.classes))
        context = None
        if launched_by_torchrun():
            if args.gpus:
                raise ConfigError("--gpus (folds in parallel) cannot be combined with torchrun")
            context = init_distributed(options.device)
            options = replace(
                options, device=context.device, rank=context.rank, world_size=context.world_size
            )
        corrections = corrections_mode(scale, args.no_corrections)
        load, build, builder = SETUPS[kind]
        experiment_dir = paths.experiment_dir(name)
        record = run_record(config, vocabulary, options, split, paths, corrections)
        if source is not None:
            record["init_from"] = source_record(source, folds)
        # Rank 0 checks every input, extracts the spectrogram stores and prepares the experiment
        # folder before the other ranks load (they then read the finished stores).
        if context is None or context.is_main:
            data = load(config, paths, vocabulary, corrections)
            runtime = dict(vars(args))
            if is_experiment_file(args.experiment):  # what a hint gives --experiment to rerun it
                runtime["experiment_file"] = str(Path(args.experiment).resolve())
            prepare_experiment_dir(experiment_dir, record, args.force, runtime=runtime)
        barrier()
        if context is not None and not context.is_main:
            data = load(config, paths, vocabulary, corrections)
        schedule = Schedule.from_config(config)
        if args.gpus:
            parallel = partial(builder, config, corrections, options)
            devices = parse_devices(args.gpus)
            results = train_folds_parallel(
                experiment_dir, folds, parallel, schedule, name, devices, args.verbose
            )
        else:
            local = partial(build, data, options=options)
            results = train_folds(
                experiment_dir, folds, local, schedule, name, not args.no_progress, args.verbose
            )
    except (ConfigError, RuntimeError) as error:
        return fail(error)
    for fold, result in sorted(results.items()):
        best, seconds = result.get("best_checkpoint"), result.get("seconds", 0)
        print(f"{name} fold {fold}: {best} ({seconds} s)")
    return 0
