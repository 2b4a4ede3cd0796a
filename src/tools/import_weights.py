"""Importing the original solution's released checkpoints.

The original published the weights of its final submission as a zip of its `experiments/`
folder: `experiments/<experiment>/fold_<k>/model-EEE-S.pth`, each an argus 0.x checkpoint
(`model_name`, `params`, `nn_state_dict`) in torch's legacy serialisation, with the CNN weights
in float16 (apex O2) and two architectures naming their layers differently from ours.

`import_source` reads every experiment and fold found (zip or unpacked folder), loads each file
with `weights_only=True`, casts float16 tensors to float32, renames the keys, builds our model
from the checkpoint's own architecture arguments, loads the state dict strictly, and writes the
experiment in this project's layout (`<experiments>/<exp>/params.json`,
`fold_<k>/model-EEE-S.pth`, `fold_<k>/finished.json`) through a temporary folder renamed into
place, so an import that fails or is interrupted leaves nothing half-made.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from src.config import ConfigError, Vocabulary
from src.experiments import CNN_BASE, EXPERIMENTS, STACKING_BASE, resolve
from src.models import MODELS
from src.models.argus_models import model_params
from src.models.fcnet import FCNet
from src.models.losses import LOSSES
from src.runs import (
    CHECKPOINT_GLOB,
    FINISHED_FILE,
    PARAMS_FILE,
    CheckpointError,
    argus_state,
    best_of,
    checkpoint_score,
    read_checkpoint,
    read_params,
    write_checkpoint,
)
from src.utils import remove_leftovers, staged_folder, tmp_name, write_json_atomic, writer_lock

log = logging.getLogger(__name__)

SOURCE_NOTE = (
    "imported by import_weights.py from the original solution's released checkpoints; "
    "float16 tensors cast to float32, keys renamed to this project's layers"
)
# <experiment>/fold_<k>/<checkpoint> anywhere in a zip or folder; the checkpoint's name must be
# a model-EEE-S.pth (`src.runs.checkpoint_score`)
_FOLD_PATH = re.compile(r"(?:^|/)([^/]+)/fold_(\d+)/([^/]+\.pth)$")


class ImportFailure(ConfigError):
    """An experiment that cannot be imported; the message names the file and the reason."""


@dataclass(frozen=True)
class Architecture:
    """How one of the original's network classes maps onto ours."""

    kind: str  # 'cnn' or 'stacking'
    model_name: str  # the argus model class of this project that runs it
    renames: tuple[tuple[str, str], ...] = ()  # (original key prefix, our key prefix)
    # Every original key must match one of these prefixes ('' = any key keeps its name).
    known_prefixes: tuple[str, ...] = ("",)


ARCHITECTURES: dict[str, Architecture] = {
    "AuxSkipAttention": Architecture("cnn", "FreesoundModel"),
    "SkipAttention": Architecture("cnn", "FreesoundModel"),
    "RnnAuxSkipAttention": Architecture(
        "cnn",
        "FreesoundModel",
        renames=(("rnn.rnn.", "lstm.rnn."), ("rnn.embedding.", "lstm.embedding.")),
    ),
    "FCNet": Architecture(
        "stacking",
        "StackingModel",
        renames=(
            ("scale.fc1.", "gate.fc1."),
            ("scale.fc2.", "gate.fc2."),
            ("linear1.", "fc1."),
            ("relu1.", "act1."),
            ("linear2.", "fc2."),
            ("relu2.", "act2."),
            ("fc.", "fc3."),
        ),
        known_prefixes=(),  # every FCNet key is renamed: an unknown one cannot be mapped
    ),
}


def network_class(name: str) -> type[torch.nn.Module]:
    return {**MODELS, "FCNet": FCNet}[name]


# --------------------------------------------------------------------------------------
# Reading the source
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    experiment: str
    fold: int
    name: str  # model-EEE-S.pth
    where: str  # for messages: the file's path (or zip member)
    read: Callable[[], bytes]


def find_checkpoints(source: Path) -> dict[str, list[SourceFile]]:
    """Experiment -> its checkpoint files, from a zip or a folder holding experiments."""
    files: list[SourceFile] = []
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise ConfigError(f"{source}: neither a zip file nor a folder")
        with zipfile.ZipFile(source) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]

        def reader(member: str) -> Callable[[], bytes]:
            def read() -> bytes:
                with zipfile.ZipFile(source) as archive:
                    return archive.read(member)

            return read

        for member in members:
            match = _FOLD_PATH.search(member)
            if match and checkpoint_score(match.group(3)) is not None:
                experiment, fold, name = match.groups()
                files.append(
                    SourceFile(experiment, int(fold), name, f"{source}:{member}", reader(member))
                )
    elif source.is_dir():
        for path in sorted(source.rglob(f"fold_*/{CHECKPOINT_GLOB}")):
            match = _FOLD_PATH.search(path.as_posix())
            if match and checkpoint_score(match.group(3)) is not None:
                experiment, fold, name = match.groups()
                files.append(SourceFile(experiment, int(fold), name, str(path), path.read_bytes))
    else:
        raise ConfigError(f"{source}: not found")
    found: dict[str, list[SourceFile]] = {}
    for item in sorted(files, key=lambda f: (f.experiment, f.fold, f.name)):
        found.setdefault(item.experiment, []).append(item)
    if not found:
        raise ConfigError(
            f"{source}: no checkpoint found (expected <experiment>/fold_<k>/model-EEE-S.pth)"
        )
    return found


def best_per_fold(files: Sequence[SourceFile]) -> dict[int, SourceFile]:
    """The best model-EEE-S.pth of each fold (`src.runs.best_of`, the rule of every fold)."""
    by_fold: dict[int, dict[str, SourceFile]] = {}
    for item in files:
        by_fold.setdefault(item.fold, {})[item.name] = item
    best = {fold: best_of(names) for fold, names in sorted(by_fold.items())}
    return {fold: by_fold[fold][chosen[0]] for fold, chosen in best.items() if chosen}


# --------------------------------------------------------------------------------------
# Converting one checkpoint
# --------------------------------------------------------------------------------------


def read_original(item: SourceFile) -> dict:
    try:
        return argus_state(read_checkpoint(io.BytesIO(item.read()), item.where), item.where)
    except CheckpointError as error:  # truncated, corrupt, refused, or not a checkpoint
        raise ImportFailure(str(error)) from None


def rename_key(key: str, architecture: Architecture) -> str | None:
    for old, new in architecture.renames:
        if key.startswith(old):
            return new + key[len(old) :]
    if any(key.startswith(prefix) for prefix in architecture.known_prefixes):
        return key
    return None


def to_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


@dataclass
class Converted:
    network: str
    kwargs: dict
    state: dict[str, torch.Tensor]
    original_params: dict
    parameters: int
    original_model_name: str


def convert(item: SourceFile, vocabulary: Vocabulary) -> Converted:
    """One original checkpoint as our network's float32 state dict, loaded strictly."""
    data = read_original(item)
    params = data["params"]
    try:
        network, kwargs = params["nn_module"]
        kwargs = dict(kwargs)
    except (KeyError, TypeError, ValueError):
        raise ImportFailure(f"{item.where}: params hold no nn_module (name, kwargs)") from None
    architecture = ARCHITECTURES.get(network)
    if architecture is None:
        raise ImportFailure(
            f"{item.where}: unknown architecture {network!r} (known: {', '.join(ARCHITECTURES)})"
        )
    classes = kwargs.get("num_classes")
    if classes != len(vocabulary):
        raise ImportFailure(
            f"{item.where}: {classes} classes, but the vocabulary has {len(vocabulary)}"
        )
    try:
        module = network_class(network)(**kwargs)
    except TypeError as error:
        raise ImportFailure(
            f"{item.where}: {network} arguments {kwargs} not accepted: {error}"
        ) from None
    state = {}
    for key, tensor in data["nn_state_dict"].items():
        new_key = rename_key(key, architecture)
        if new_key is None:
            raise ImportFailure(f"{item.where}: cannot map key {key!r} of {network}")
        state[new_key] = to_float32(tensor)
    expected = module.state_dict()
    unexpected = sorted(set(state) - set(expected))
    absent = sorted(set(expected) - set(state))
    if unexpected or absent:
        parts = []
        if unexpected:
            parts.append(f"unexpected key(s) {unexpected[:5]}")
        if absent:
            parts.append(f"missing key(s) {absent[:5]}")
        raise ImportFailure(f"{item.where}: {network} does not load: {'; '.join(parts)}")
    shapes = [k for k in state if state[k].shape != expected[k].shape]
    if shapes:
        k = shapes[0]
        raise ImportFailure(
            f"{item.where}: {network} key {k!r} has shape {tuple(state[k].shape)}, "
            f"ours {tuple(expected[k].shape)}"
        )
    module.load_state_dict(state, strict=True)
    parameters = sum(p.numel() for p in module.parameters())
    return Converted(network, kwargs, state, dict(params), parameters, str(data["model_name"]))


# --------------------------------------------------------------------------------------
# This project's checkpoint and params.json
# --------------------------------------------------------------------------------------


def registry_config(experiment: str, converted: Converted) -> tuple[dict, bool]:
    """The registry's configuration for a known name (else the base of its kind), with the
    checkpoint's own model arguments. Returns (config, known)."""
    kind = ARCHITECTURES[converted.network].kind
    known = experiment in EXPERIMENTS and EXPERIMENTS[experiment]["kind"] == kind
    if known:
        config = resolve(experiment)
    else:
        config = copy.deepcopy(CNN_BASE if kind == "cnn" else STACKING_BASE)
        config.update(name=experiment, scale="full")
    model_params = {
        k: v for k, v in converted.kwargs.items() if k not in ("num_classes", "in_channels")
    }
    config["model"] = {"name": converted.network, "params": model_params}
    if kind == "cnn":
        aux = converted.original_params.get("aux")
        config["aux_weights"] = list(aux["weights"]) if isinstance(aux, dict) else None
    return config, known


def project_params(converted: Converted, config: dict) -> dict:
    """argus params of our FreesoundModel / StackingModel for the imported network
    (`model_params`): the checkpoint's own optimizer and, for a CNN, its loss when it is one of
    ours; float32 prediction (the original trained with apex O2, fp16)."""
    original = converted.original_params
    optimizer = original.get("optimizer") or (config["optimizer"]["name"], {})
    recorded = {**config, "optimizer": {"name": optimizer[0], "params": dict(optimizer[1])}}
    loss = original.get("loss")
    ours = isinstance(loss, list | tuple) and len(loss) == 2 and loss[0] in LOSSES
    if recorded["kind"] == "cnn" and ours:
        recorded["loss"] = {"name": loss[0], "params": dict(loss[1])}
    kwargs = converted.kwargs
    return model_params(
        recorded, kwargs["num_classes"], "cpu", in_channels=kwargs.get("in_channels")
    )


def jsonable(value):
    """Tuples -> lists, anything else that is not JSON -> its repr."""
    return json.loads(json.dumps(value, default=repr))


# --------------------------------------------------------------------------------------
# Importing experiments
# --------------------------------------------------------------------------------------


@dataclass
class ImportResult:
    experiment: str
    folds: list[int] = field(default_factory=list)
    architecture: str = ""
    parameters: int = 0
    error: str | None = None
    skipped: bool = False  # exists and --force not given
    already: bool = False  # imported before from the same files: nothing to do


def import_experiment(
    experiment: str,
    files: Sequence[SourceFile],
    experiments_dir: Path,
    vocabulary: Vocabulary,
    source: Path,
    force: bool = False,
) -> ImportResult:
    """Convert every fold of one experiment, then move it into place in one rename. One
    process imports an experiment at a time (LockedError naming the other); holding the
    lock, it first removes a killed import's staging and replaced folders."""
    experiments_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = experiments_dir.parent / f".{experiment}.import.lock"
    with writer_lock(lock, f"the import of {experiment}"):
        for prefix in (f".import-{experiment}.", f".replaced-{experiment}."):
            remove_leftovers(experiments_dir.parent, prefix=prefix)
        return _import_experiment(experiment, files, experiments_dir, vocabulary, source, force)


def _import_experiment(
    experiment: str,
    files: Sequence[SourceFile],
    experiments_dir: Path,
    vocabulary: Vocabulary,
    source: Path,
    force: bool,
) -> ImportResult:
    result = ImportResult(experiment)
    target = experiments_dir / experiment
    folds = best_per_fold(files)
    if target.exists() and not force:
        recorded = (read_params(target) or {}).get("source", {}).get("files")
        if recorded == {str(f): item.where for f, item in folds.items()}:
            result.already, result.folds = True, sorted(folds)
            return result
        result.error = (
            f"{target} already exists (not imported from these files); use --force to replace it"
        )
        result.skipped = True
        return result
    converted: dict[int, Converted] = {}
    try:
        for fold, item in folds.items():
            converted[fold] = convert(item, vocabulary)
        networks = {c.network for c in converted.values()}
        if len(networks) > 1:
            raise ImportFailure(f"{experiment}: folds hold different architectures {networks}")
    except ImportFailure as error:
        result.error = str(error)
        return result
    first = next(iter(converted.values()))
    config, known = registry_config(experiment, first)
    model_name = ARCHITECTURES[first.network].model_name
    experiments_dir.mkdir(parents=True, exist_ok=True)
    # Staged beside experiments/ (same file system, so the rename is atomic), never inside it:
    # a killed import must not leave a folder there that looks like an experiment.
    with staged_folder(experiments_dir.parent / f"import-{experiment}") as staging:
        for fold, item in folds.items():
            fold_dir = staging / f"fold_{fold}"
            fold_dir.mkdir(parents=True)
            params = project_params(converted[fold], config)
            write_checkpoint(fold_dir / item.name, model_name, params, converted[fold].state)
            finished = {
                "imported_from": item.where,
                "best_checkpoint": item.name,
                "best_val_lwlrap": checkpoint_score(item.name),
            }
            write_json_atomic(finished, fold_dir / FINISHED_FILE)
        original = first.original_params
        record = {
            "config": config,
            "classes": list(vocabulary.classes),
            "seed": None,
            "source": {
                "note": SOURCE_NOTE,
                "from": str(source),
                "registry": "known experiment" if known else "not in the registry: base config",
                "files": {str(f): item.where for f, item in folds.items()},
                "original_model_name": first.original_model_name,
                "original_params": jsonable(original),
            },
            # The original's training precision (apex O2), recorded; prediction ignores it.
            "runtime": {"training_amp": jsonable(original.get("amp", "off"))},
        }
        write_json_atomic(record, staging / PARAMS_FILE)
        if target.exists():
            trash = tmp_name(experiments_dir.parent / f"replaced-{experiment}")
            os.replace(target, trash)
            os.replace(staging, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, target)
    result.folds = sorted(folds)
    result.architecture = first.network
    result.parameters = first.parameters
    return result


def import_source(
    source: Path,
    experiments_dir: Path,
    vocabulary: Vocabulary,
    force: bool = False,
    only: Sequence[str] | None = None,
) -> list[ImportResult]:
    found = find_checkpoints(source)
    if only:
        unknown = sorted(set(only) - set(found))
        if unknown:
            raise ConfigError(f"{source}: no experiment named {', '.join(unknown)}")
        found = {name: files for name, files in found.items() if name in only}
    return [
        import_experiment(name, files, experiments_dir, vocabulary, source, force)
        for name, files in found.items()
    ]


def format_table(results: Sequence[ImportResult]) -> str:
    rows = [("experiment", "folds", "architecture", "parameters", "status")]
    for r in results:
        status = (
            "already imported"
            if r.already
            else "skipped"
            if r.skipped
            else ("FAILED" if r.error else "imported")
        )
        rows.append(
            (
                r.experiment,
                ",".join(map(str, r.folds)) if r.folds else "-",
                r.architecture or "-",
                f"{r.parameters:,}" if r.parameters else "-",
                status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
