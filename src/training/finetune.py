"""Starting a first-level experiment from a trained network (`train_folds.py --init-from`).

A source is a trained or imported experiment (fold k starts from the source's fold k; `NAME:K`
starts every fold from fold K) or one checkpoint file. The network (architecture and arguments)
is the source's. Its classification heads (src.models.heads) are rebuilt for the experiment's
classes: their hidden layers load from the source, and in each head's last Linear the row of a
class the source also has (matched by name) is the source's row, the others freshly drawn.
Everything else loads strictly: a missing or unexpected key, or a shape that does not fit, is
one error naming it. The run's settings are the experiment's `finetune` entry
(src/experiments.py, FINETUNE_DEFAULTS): `freeze_epochs` epochs that train only the heads, and
the backbone's learning rate as a share of the heads' (`backbone_lr_scale`).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from argus.callbacks import Callback
from argus.engine import State
from torch import nn

from src.config import ConfigError
from src.experiments import EXPERIMENTS
from src.library_internals import plain_module, strip_compile_prefix
from src.models import MODELS, AuxSkipAttention
from src.models.heads import output_layers
from src.runs import (
    CheckpointError,
    TrainedExperiment,
    argus_state,
    checkpoint_classes,
    checkpoint_digest,
    find_experiment,
    read_checkpoint,
)
from src.training.distributed import rewrap_model

log = logging.getLogger(__name__)

FOLD_SUFFIX = re.compile(r"^(?P<name>.+):(?P<fold>-?\d+)$")


@dataclass(frozen=True)
class Source:
    """Where a fine-tune starts: the source's classes and network, and each fold's checkpoint
    (`fold_rule`: None for fold k from fold k, else the one fold every fold starts from)."""

    spec: str
    name: str  # the experiment's name, or the checkpoint's path
    classes: tuple[str, ...]
    network: tuple[str, dict]  # the network class's name and its arguments (no num_classes)
    aux_weights: list[float] | None
    experiment: TrainedExperiment | None = None  # None: a checkpoint file
    fold_rule: int | None = None

    @property
    def base(self) -> str:
        """The spec without its :K, as the user wrote it (a name or a folder)."""
        match = FOLD_SUFFIX.match(self.spec)
        return match["name"] if match else self.spec

    def checkpoint(self, fold: int) -> tuple[int | None, Path]:
        """(the source's fold, its checkpoint) that target fold `fold` starts from."""
        return self.checkpoints([fold])[fold]

    def checkpoints(self, folds: Sequence[int]) -> dict[int, tuple[int | None, Path]]:
        """`checkpoint` of each of `folds`; the source's missing folds are one error."""
        if self.experiment is None:
            return {fold: (None, Path(self.name)) for fold in folds}
        wanted = {fold: fold if self.fold_rule is None else self.fold_rule for fold in folds}
        missing = sorted(set(wanted.values()) - set(self.experiment.folds))
        if missing:
            trained = sorted(self.experiment.folds)
            which = (
                f"fold {missing[0]}"
                if len(missing) == 1
                else f"fold(s) {','.join(map(str, missing))}"
            )
            raise ConfigError(
                f"--init-from {self.spec}: experiment {self.name!r} has no checkpoint for "
                f"{which} (trained: {','.join(map(str, trained))}); start every fold from one "
                f"of them with --init-from {self.base}:K (e.g. --init-from "
                f"{self.base}:{trained[0]}), or choose --folds {','.join(map(str, trained))}"
            )
        return {
            fold: (source_fold, self.experiment.folds[source_fold][0])
            for fold, source_fold in wanted.items()
        }


def is_checkpoint_spec(spec: str) -> bool:
    return spec.endswith(".pth") or Path(spec).is_file()


def read_source_checkpoint(path: Path, where: str) -> dict:
    """A first-level (FreesoundModel) argus checkpoint, or one error naming the file."""
    state = argus_state(read_checkpoint(path, where=where), where)
    name = state["model_name"]
    network = state["params"].get("nn_module")
    if name != "FreesoundModel" or not isinstance(network, (list, tuple)) or len(network) != 2:
        raise CheckpointError(
            f"{where}: a {name} checkpoint; --init-from takes a first-level (CNN) network"
        )
    if network[0] not in MODELS:
        raise CheckpointError(
            f"{where}: unknown network {network[0]!r} (known: {', '.join(MODELS)})"
        )
    return state


def _network_of(state: dict) -> tuple[tuple[str, dict], list[float] | None, int]:
    name, arguments = state["params"]["nn_module"]
    arguments = dict(arguments)
    num_classes = int(arguments.pop("num_classes"))
    aux = state["params"].get("aux_weights")
    return (name, arguments), (list(aux) if aux else None), num_classes


def resolve_source(spec: str, experiments_dir: Path, target: str) -> Source:
    """The source `spec` names (an experiment of `experiments_dir`, an experiment folder
    anywhere, either with :K, or a .pth file), checked to be a trained first-level network, or
    one error naming what is wrong."""
    spec = str(spec)
    if is_checkpoint_spec(spec):
        path = Path(spec)
        state = read_source_checkpoint(path, f"--init-from {spec}")
        network, aux, num_classes = _network_of(state)
        classes = checkpoint_classes(path, num_classes)
        return Source(spec, str(path), tuple(classes), network, aux)
    match = FOLD_SUFFIX.match(spec)
    if match is None and ":" in spec:  # experiment names hold no ':'
        raise ConfigError(f"--init-from {spec}: expected NAME:K with a fold number K")
    name, fold_rule = (match["name"], int(match["fold"])) if match else (spec, None)
    own = experiments_dir
    if len(Path(name).parts) > 1:  # names are one path part: a folder, e.g. data/experiments/X
        folder = Path(name)
        if not folder.is_dir():
            raise ConfigError(f"--init-from {spec}: no experiment folder {folder}")
        experiments_dir, name = folder.resolve().parent, folder.resolve().name
    if (experiments_dir / name).resolve() == (own / target).resolve():
        raise ConfigError(
            f"--init-from {spec}: the source is the experiment being trained; fine-tune into "
            "another name (an experiment file with its own `name`)"
        )
    if name in EXPERIMENTS and not (experiments_dir / name).is_dir():
        raise ConfigError(
            f"--init-from {spec}: no experiment {name!r} in {experiments_dir}; import or train it "
            f"there, or give its folder (--init-from path/to/experiments/{name}) or a checkpoint"
        )
    experiment = find_experiment(experiments_dir, name)
    if experiment.kind != "cnn":
        raise ConfigError(
            f"--init-from {spec}: {name!r} is a {experiment.kind} experiment; the source must "
            "be a first-level (CNN) one"
        )
    source = Source(spec, name, experiment.classes, ("", {}), None, experiment, fold_rule)
    first = source.checkpoint(fold_rule if fold_rule is not None else min(experiment.folds))[1]
    state = read_source_checkpoint(first, str(first))
    network, aux, num_classes = _network_of(state)
    if num_classes != len(experiment.classes):
        raise ConfigError(
            f"{first}: {num_classes} outputs, but {experiment.directory}/params.json records "
            f"{len(experiment.classes)} classes"
        )
    return Source(spec, name, experiment.classes, network, aux, experiment, fold_rule)


def source_record(source: Source, folds: Sequence[int]) -> dict:
    """What params.json records of the source: its name, and for each trained fold the source's
    fold and the SHA-256 of the checkpoint it starts from (a changed file is another run)."""
    record: dict = {"source": source.spec, "name": source.name, "folds": {}}
    for fold in folds:
        source_fold, path = source.checkpoint(fold)
        record["folds"][str(fold)] = {
            "fold": source_fold,
            "checkpoint": path.name,
            "sha256": checkpoint_digest(path),
        }
    return record


def adopt_network(config: dict, source: Source) -> dict:
    """`config` with the source's network in place of its own model settings (logged in one
    line), the auxiliary weights following the network's heads."""
    name, arguments = source.network
    adopted = copy.deepcopy(config)
    adopted["model"] = {"name": name, "params": dict(arguments)}
    if issubclass(MODELS[name], AuxSkipAttention):
        adopted["aux_weights"] = source.aux_weights or config.get("aux_weights")
        if not adopted["aux_weights"]:
            raise ConfigError(
                f"--init-from {source.spec}: {name} has auxiliary heads but neither the source "
                "nor the experiment gives their loss weights (aux_weights)"
            )
    else:
        adopted["aux_weights"] = None
    own = config["model"]
    if (own["name"], own["params"]) == (name, arguments):
        log.info("--init-from %s: the network is the source's, as the experiment's", source.spec)
    else:
        shown = ", ".join(f"{key}={value}" for key, value in sorted(arguments.items()))
        log.info(
            "--init-from %s: the network is the source's, %s(%s); the experiment's model "
            "settings (%s) give way",
            source.spec,
            name,
            shown,
            own["name"],
        )
    return adopted


def check_settings(config: dict) -> None:
    settings = config["finetune"]
    freeze, scale = settings["freeze_epochs"], settings["backbone_lr_scale"]
    if not isinstance(freeze, int) or freeze < 0:
        raise ConfigError(f"finetune.freeze_epochs must be an integer >= 0, got {freeze!r}")
    if not isinstance(scale, (int, float)) or scale < 0:
        raise ConfigError(f"finetune.backbone_lr_scale must be a number >= 0, got {scale!r}")


def transplant(
    network: nn.Module,
    state: dict[str, torch.Tensor],
    source_classes: Sequence[str],
    classes: Sequence[str],
    where: object,
) -> list[str]:
    """Load `state` (the source's weights) into `network` (built for `classes`): every key but
    the heads' last Linear strictly, those row by row for the classes the source also has.
    Returns the copied classes, in the order of `classes`."""
    state = strip_compile_prefix(state)
    own = network.state_dict()
    outputs = {f"{layer}.{part}" for layer in output_layers(network) for part in ("weight", "bias")}
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    if missing or unexpected:
        named = [f"missing key {key!r}" for key in missing[:3]]
        named += [f"unexpected key {key!r}" for key in unexpected[:3]]
        more = len(missing) + len(unexpected) - len(named)
        extra = f" and {more} more" if more > 0 else ""
        raise CheckpointError(f"{where}: does not fit the network: {', '.join(named)}{extra}")
    for key, value in own.items():
        theirs = state[key]
        fits = theirs.shape == value.shape
        if key in outputs:  # one row per class: only the other dimensions must fit
            fits = theirs.shape[1:] == value.shape[1:] and len(theirs) == len(source_classes)
        if not fits:
            raise CheckpointError(
                f"{where}: key {key!r} has shape {tuple(theirs.shape)}, the network's is "
                f"{tuple(value.shape)}"
            )
    position = {name: index for index, name in enumerate(source_classes)}
    shared = [(row, position[name]) for row, name in enumerate(classes) if name in position]
    loaded = {}
    for key, value in own.items():
        theirs = state[key].to(value.dtype)
        if key in outputs:
            rows = value.clone()
            for row, source_row in shared:
                rows[row] = theirs[source_row]
            theirs = rows
        loaded[key] = theirs
    network.load_state_dict(loaded, strict=True)
    return [classes[row] for row, _ in shared]


def initialise(model, source: Source, fold: int, classes: Sequence[str]) -> list[str]:
    """Fold `fold`'s network (an argus model's) from the source; returns the copied classes."""
    _, path = source.checkpoint(fold)
    state = read_source_checkpoint(path, str(path))
    return transplant(
        plain_module(model.get_nn_module()), state["nn_state_dict"], source.classes, classes, path
    )


def check_fits(source: Source, folds: Sequence[int], classes: Sequence[str]) -> list[str]:
    """Every checkpoint the folds start from, loaded into the network as a fold will load it,
    before anything is written; returns the copied classes."""
    name, arguments = source.network
    network = MODELS[name](num_classes=len(classes), **arguments)
    copied: list[str] = []
    for path in dict.fromkeys(source.checkpoint(fold)[1] for fold in folds):
        state = read_source_checkpoint(path, str(path))
        copied = transplant(network, state["nn_state_dict"], source.classes, classes, path)
    return copied


def describe_copied(copied: Sequence[str], classes: Sequence[str]) -> str:
    """The report's line on the heads' rows."""
    if not copied:
        return f"heads rebuilt for {len(classes)} classes; the source has none of their names"
    if len(copied) == len(classes):
        return f"heads: all {len(classes)} classes' rows from the source (the same classes)"
    return (
        f"heads rebuilt for {len(classes)} classes; rows copied from the source for "
        f"{len(copied)}: {', '.join(copied)}"
    )


class FreezeBackbone(Callback):
    """Only the heads train in the epochs before `epochs`; then every weight does (under
    torchrun each change of the trained weights rebuilds the DDP wrapper)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def epoch_start(self, state: State) -> None:
        frozen = state.epoch < self.epochs
        if frozen != state.model.backbone_frozen:
            state.model.freeze_backbone(frozen)
            rewrap_model(state.model)

    def complete(self, state: State) -> None:
        state.model.freeze_backbone(False)
