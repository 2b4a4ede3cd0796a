"""What lives on disk under `experiments/` and `predictions/`: every name and lookup, once.

    experiments/<exp>/params.json              the resolved configuration, classes, seed, runtime
    experiments/<exp>/fold_<k>/model-EEE-S.pth the best checkpoint (score S at epoch EEE)
    experiments/<exp>/fold_<k>/last.pth        the state to resume from; removed when done
    experiments/<exp>/fold_<k>/finished.json   written when the fold is done
    predictions/<exp>/fold_<k>/val/            out-of-fold predictions: <fname>.npy tile
                                               probabilities, probs.csv tile means, done.json
    predictions/<exp>/fold_<k>/test/           the same for the test clips
    predictions/<exp>/probs.csv                the blend of the folds' test predictions

`Paths` (src/config.py) says where the two roots are; this module says what is inside them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from src.cli import command_line
from src.config import (
    AUDIO,
    FAT2019_CLASSES,
    N_FOLDS,
    SHORT_CLIP_ENV,
    AudioConfig,
    ConfigError,
    Paths,
    Vocabulary,
    vocabulary_source,
)
from src.experiments import (
    CNN_BASE,
    EXPERIMENTS,
    settings_that_shape_the_run,
    unknown_experiment,
)
from src.utils import LOCK_FILE, tmp_name, write_json_atomic, writer_lock

log = logging.getLogger(__name__)

PARAMS_FILE = "params.json"
FINISHED_FILE = "finished.json"
STATE_FILE = "last.pth"
CHECKPOINT_FORMAT = "model-{epoch:03d}-{monitor:.6f}.pth"  # argus's MonitorCheckpoint format
CHECKPOINT_GLOB = "model-*.pth"
CHECKPOINT_PATTERN = re.compile(r"^model-(\d+)-(-?\d+(?:\.\d+)?)\.pth$")
PROBS_FILE = "probs.csv"
DONE_FILE = "done.json"  # what a prediction folder was made from (its cache key)
OOF_DIR = "val"
TEST_DIR = "test"


# --------------------------------------------------------------------------------------
# Reading .pth files
# --------------------------------------------------------------------------------------


class CheckpointError(ConfigError):
    """A .pth file that cannot be read, or is refused because loading it would run code."""


def read_checkpoint(
    source: str | os.PathLike | IO[bytes],
    where: str | os.PathLike | None = None,
    map_location: str | object = "cpu",
) -> object:
    """The plain data of a .pth file (`source`: a path or an open binary file; `where` names it
    in errors). Every .pth the project reads (checkpoints, resume states, the original's files)
    comes through here.

    `weights_only=True` is passed explicitly: torch's default is False before torch 2.6 and
    under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, and then a crafted file runs its code while it is
    unpickled. Plain data (tensors, dicts, lists, numbers, strings) is all our files hold.
    """
    import torch  # not at the top: the kernel's orchestrating process reads runs without torch

    where = str(where if where is not None else source)
    if not hasattr(source, "read") and not Path(source).is_file():
        raise CheckpointError(f"{where}: checkpoint not found")
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if str(error).startswith("Weights only load failed"):
            raise CheckpointError(
                f"{where}: refused: it holds more than plain data (loading it could run code): "
                f"{_refusal_reason(str(error))}"
            ) from None
        raise CheckpointError(f"{where}: {_unreadable(error)}") from None
    except Exception as error:  # truncated, corrupt, or not a torch file at all
        raise CheckpointError(f"{where}: {_unreadable(error)}") from None


def _refusal_reason(message: str) -> str:
    """The line of torch's weights-only refusal that names the offending object."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines[-1:] or ["not plain data"])[0]


def _unreadable(error: Exception) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    reason = f"{type(error).__name__}: {first}" if first else type(error).__name__
    return f"cannot read (truncated or corrupt file?): {reason}"


def argus_state(data: object, where: str | os.PathLike) -> dict:
    """`data` checked to be an argus checkpoint: model_name, params, nn_state_dict."""
    missing = {"model_name", "params", "nn_state_dict"} - set(
        data if isinstance(data, dict) else ()
    )
    if missing:
        raise CheckpointError(f"{where}: not an argus checkpoint (no {', '.join(sorted(missing))})")
    return data


def write_checkpoint(path: Path, model_name: str, params: dict, nn_state_dict: dict) -> None:
    """An argus checkpoint (`model_name`, `params`, `nn_state_dict`, the format
    `argus.load_model` reads), written under a temporary name and renamed into place. The one
    writer of `.pth` checkpoints (training's best checkpoints, imported weights); `params` must
    be plain data, since every reader loads with `weights_only=True`."""
    import torch  # not at the top: the kernel's orchestrating process reads runs without torch

    state = {
        "model_name": model_name,
        "params": params,
        "nn_state_dict": {key: value.cpu() for key, value in nn_state_dict.items()},
    }
    tmp = tmp_name(path)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# Fold folders and their checkpoints
# --------------------------------------------------------------------------------------


def fold_dir(run_dir: Path, fold: int) -> Path:
    """`fold_<k>` of an experiment or prediction folder."""
    return run_dir / f"fold_{fold}"


def fold_number(path: Path) -> int | None:
    """k of a `fold_<k>` folder, None for any other name."""
    suffix = path.name.removeprefix("fold_")
    return int(suffix) if path.name.startswith("fold_") and suffix.isdigit() else None


def checkpoint_score(name: str) -> float | None:
    """S of a `model-EEE-S.pth` name (its validation score), None for any other name."""
    match = CHECKPOINT_PATTERN.match(name)
    return float(match.group(2)) if match else None


def best_of(names: Iterable[str]) -> tuple[str, float] | None:
    """The checkpoint name with the highest score among `names` (the rule that picks a fold's
    best checkpoint everywhere), or None when none is a `model-EEE-S.pth`."""
    scored = [(name, checkpoint_score(name)) for name in names]
    scored = [(name, score) for name, score in scored if score is not None]
    return max(scored, key=lambda item: item[1]) if scored else None


def best_checkpoint(fold: str | os.PathLike) -> tuple[Path, float] | None:
    """The `model-EEE-S.pth` with the highest score S in a fold folder, or None."""
    best = best_of(path.name for path in Path(fold).glob(CHECKPOINT_GLOB))
    return (Path(fold) / best[0], best[1]) if best else None


def fold_finished(fold: Path) -> bool:
    return (fold / FINISHED_FILE).is_file()


def read_finished(fold: Path) -> dict:
    return json.loads((fold / FINISHED_FILE).read_text())


# finished.json's field for a fold that a hyper-parameter search stopped (pruned) after that
# epoch: the journal tells it from a fold that ran to its cap or stopped early by itself.
PRUNED_AT = "pruned_at_epoch"


def mark_pruned(fold: Path, epoch: int) -> None:
    write_json_atomic({**read_finished(fold), PRUNED_AT: epoch}, fold / FINISHED_FILE)


# --------------------------------------------------------------------------------------
# The experiment record (params.json) and the experiment folder's rules
# --------------------------------------------------------------------------------------


class ExperimentExistsError(ConfigError):
    """An experiment folder that holds a different configuration."""


def upgrade_record(record: dict) -> dict:
    """A params.json record in today's form. Records written before the `scale` field have a
    `smoke` flag instead, and a registry whose one-level merge replaced a first-level model's
    `params` whole when an experiment changed one of them (corrections_002/003 recorded no
    `base_size`, `ratio`, `last_filters`, whose network defaults equal the base's): their
    model params are completed with the base's, as the registry resolves them today."""
    record = _with_inputs_of_that_time(record)
    config = record.get("config")
    if not isinstance(config, dict) or "smoke" not in config:
        return record
    config = dict(config)
    smoke = config.pop("smoke")
    config.setdefault("scale", "smoke" if smoke else "full")
    if config.get("kind") == "cnn" and isinstance(config.get("model"), dict):
        base = CNN_BASE["model"]["params"]
        params = config["model"].get("params") or {}
        config["model"] = {**config["model"], "params": {**base, **params}}
    return {**record, "config": config}


def _with_inputs_of_that_time(record: dict) -> dict:
    """Records written before the audio settings and the label corrections were recorded:
    the audio settings of that time (the defaults, the original's short-clip rule), and the
    corrections mode its command line gave, with the correction files unknown (None: not
    compared)."""
    added = {}
    if "audio" not in record:
        added["audio"] = audio_record(AudioConfig())
    if "corrections" not in record:
        runtime = record.get("runtime") or {}
        config = record.get("config") or {}
        full = config.get("scale", "smoke" if config.get("smoke") else "full") == "full"
        mode = "none" if runtime.get("no_corrections") else ("required" if full else "if-present")
        added["corrections"] = {"mode": mode, "files": None}
    return {**record, **added} if added else record


def audio_record(audio: AudioConfig = AUDIO) -> dict:
    """The audio and log-mel settings a run trains with (short-clip rule included)."""
    return asdict(audio)


def corrections_record(paths: Paths, config: dict, mode: str) -> dict:
    """The label corrections a run trains with: the mode ('required', 'if-present', 'none')
    and the SHA-256 of each correction file it reads (None: named but not there)."""
    files: dict[str, str | None] = {}
    if mode != "none":
        for name in correction_files(config):
            path = paths.corrections_dir / name
            files[name] = file_sha256(path) if path.is_file() else None
    return {"mode": mode, "files": files}


def correction_files(config: dict) -> list[str]:
    """The correction files a configuration names (curated, then noisy), by file name."""
    named = config.get("corrections") or {}
    return [named[role] for role in ("curated", "noisy") if named.get(role)]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_differences(existing: dict, wanted: dict) -> list[str]:
    """What differs between two records' parts that shape the run, one phrase each, naming the
    setting and its values ('seed (1 -> 2)', 'config (config.max_epochs: 4 -> 5)', 'audio
    short_clip_rule (original -> centered)', 'corrections files (...)'). A value an older record
    does not know (None) is not compared."""
    existing, wanted = what_shapes_the_run(existing), what_shapes_the_run(wanted)
    changes = []
    for key in sorted(wanted):
        old, new = existing.get(key), wanted[key]
        if old is None or old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict) and key in ("audio", "corrections"):
            for part in sorted(set(old) | set(new)):
                before, after = old.get(part), new.get(part)
                if before is not None and before != after:
                    changes.append(f"{key} {part} ({_brief(before)} -> {_brief(after)})")
        elif isinstance(old, dict) and isinstance(new, dict):
            changes.append(f"{key} ({'; '.join(differences(old, new, prefix=f'{key}.'))})")
        else:
            changes.append(f"{key} ({_short(old)} -> {_short(new)})")
    return changes


def _brief(value: object) -> str:
    if isinstance(value, dict):  # correction files: name -> digest
        return ", ".join(f"{k}: {str(v)[:12]}" for k, v in value.items()) or "none"
    return str(value)


def check_audio_settings(record: dict, where: object, audio: AudioConfig = AUDIO) -> None:
    """Models are used with the spectrogram settings they were trained with: a process whose
    settings differ (FREESOUND_SHORT_CLIP_RULE, ...) is refused, naming what differs."""
    trained = upgrade_record(record)["audio"]
    here = audio_record(audio)
    changed = [f"{k} {trained.get(k)} (here {here[k]})" for k in here if trained.get(k) != here[k]]
    if changed:
        raise ConfigError(
            f"{where}: trained with other audio settings: {', '.join(changed)}; run with the "
            f"settings it was trained with (e.g. {SHORT_CLIP_ENV}={trained.get('short_clip_rule')})"
        )


def read_params(experiment_dir: Path) -> dict | None:
    """The experiment's params.json record (`upgrade_record`), or None when there is none."""
    path = experiment_dir / PARAMS_FILE
    return upgrade_record(json.loads(path.read_text())) if path.is_file() else None


def what_shapes_the_run(record: dict) -> dict:
    """The parts of a record that must be equal for a rerun to continue the same experiment:
    everything but its `runtime`, the configuration's `original` entry (notes on where the
    settings come from, which may be reworded without changing the run) and the settings that
    act on nothing in it (src.experiments.settings_that_shape_the_run)."""
    config = {k: v for k, v in record.get("config", {}).items() if k != "original"}
    config = settings_that_shape_the_run(config)
    shaped = {k: v for k, v in record.items() if k != "runtime"}
    return json.loads(json.dumps({**shaped, "config": config}))  # tuples -> lists


def differences(old: object, new: object, prefix: str = "", limit: int = 6) -> list[str]:
    """'key.sub: old -> new' for every setting that differs between two records (the first
    `limit`, then how many more)."""
    found: list[str] = []

    def walk(a: object, b: object, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key, "(none)"), b.get(key, "(none)"), f"{path}{key}.")
        elif a != b:
            found.append(f"{path.rstrip('.')}: {_short(a)} -> {_short(b)}")

    walk(old, new, prefix)
    more = len(found) - limit
    return found[:limit] + ([f"{more} more"] if more > 0 else [])


def _short(value: object, width: int = 40) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."


def prepare_experiment_dir(
    experiment_dir: Path, record: dict, force: bool, runtime: dict | None = None
) -> None:
    """Create the folder and its `params.json`, or check that an existing one matches.

    `record` is everything that must be equal for a rerun to continue the same experiment
    (the resolved configuration, the classes, the seed, the folds); `runtime` (device, AMP,
    versions) is recorded too but may change between sessions.
    """
    params_path = experiment_dir / PARAMS_FILE
    if experiment_dir.exists() and any(experiment_dir.iterdir()):
        if force:
            log.warning("--force: deleting %s", experiment_dir)
            with ExitStack() as held:  # never under a process training one of its folds
                for lock in sorted(experiment_dir.glob(f"fold_*/{LOCK_FILE}")):
                    held.enter_context(writer_lock(lock, str(lock.parent)))
                shutil.rmtree(experiment_dir)
        elif not params_path.is_file():
            raise ExperimentExistsError(
                f"{experiment_dir} exists but holds no {PARAMS_FILE}; move it away or use --force"
            )
        else:
            # What an older record does not know (the folds fingerprint, the correction
            # files) cannot be compared: `record_differences` leaves it out.
            changed = record_differences(read_params(experiment_dir), record)
            started = any(experiment_dir.glob("fold_*"))
            if changed and started:
                raise ExperimentExistsError(
                    f"{experiment_dir} already holds a run with a different {'; '.join(changed)}; "
                    "use --force to delete it and train again"
                )
            if changed:  # no fold started: nothing trained under the old record to keep
                log.info("%s: no fold started; its %s is replaced", experiment_dir, PARAMS_FILE)
    experiment_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic({**record, "runtime": runtime or {}}, params_path)


def check_trained_folds(experiment_dir: Path, digest: str, folds_csv: Path) -> None:
    """The experiment must have been trained on the split `digest` fingerprints (see
    data.labels.folds_digest): after make_folds.py is rerun with another seed or fold count, its
    "out-of-fold" predictions would score clips its models trained on. Records without the
    fingerprint (imported weights) are not checked."""
    recorded = (read_params(experiment_dir) or {}).get("folds")
    if recorded is not None and recorded != digest:
        raise ConfigError(
            f"{folds_csv} changed since {experiment_dir.name} was trained (make_folds.py was "
            "rerun): its out-of-fold predictions would score clips its models trained on; "
            "restore that train_folds.csv, or retrain the experiment with --force"
        )


# --------------------------------------------------------------------------------------
# Trained experiments: the one way to find one and its checkpoints
# --------------------------------------------------------------------------------------


def train_command_hint(
    name: str, kind: str, folds: Sequence[int] = (), spec: str | None = None
) -> str:
    """The command that trains `name` (or its `folds`), quoted: an experiment from a file by
    the file's path (`spec`), as its name alone is not registered."""
    script = "stacking_train.py" if kind == "stacking" else "train_folds.py"
    folds_words = ["--folds", ",".join(map(str, folds))] if folds else []
    return f"`{command_line(script, '--experiment', spec or name, *folds_words)}`"


def experiment_spec(record: dict) -> str | None:
    """The experiment file a run was trained from (what --experiment takes to train it
    again), when it still exists."""
    path = (record.get("runtime") or {}).get("experiment_file")
    return path if path and Path(path).is_file() else None


def checkpoint_file(path: Path, option: str = "checkpoint") -> Path:
    """`path` when it is a checkpoint file; else an error saying what it is instead: missing,
    a folder (its best checkpoint named when it holds some), an exported ONNX network."""
    path = Path(path)
    if path.is_dir():
        best = best_checkpoint(path)
        inside = f": give a checkpoint file, e.g. {best[0]}" if best else ": give a checkpoint file"
        raise ConfigError(f"{option} {path}: is a folder, not a checkpoint{inside}")
    if not path.is_file():
        raise ConfigError(f"{option} {path}: checkpoint not found")
    if path.suffix.lower() == ".onnx":
        raise ConfigError(
            f"{option} {path}: an ONNX network (export_onnx.py's output), not a checkpoint: "
            "tag_audio.py and demo.py run it with --onnx"
        )
    return path


@dataclass(frozen=True)
class TrainedExperiment:
    """An experiment folder with a params.json, and the best checkpoint of each fold found."""

    name: str
    directory: Path
    kind: str  # 'cnn' (first level) or 'stacking'
    classes: tuple[str, ...]
    config: dict
    folds: dict[int, tuple[Path, float]]  # fold -> (best checkpoint, its validation score)
    spec: str | None = None  # the experiment file it was trained from, if any

    @property
    def mean_score(self) -> float:
        return float(np.mean([score for _, score in self.folds.values()]))

    @property
    def best_fold(self) -> int:
        return max(self.folds, key=lambda fold: (self.folds[fold][1], -fold))

    def checkpoint(self, fold: int | None = None) -> Path:
        """The best checkpoint of `fold`, or of the best-scoring fold."""
        fold = self.best_fold if fold is None else fold
        if fold not in self.folds:
            trained = ", ".join(map(str, sorted(self.folds)))
            raise ConfigError(
                f"experiment {self.name!r} has no checkpoint for fold {fold} (trained: {trained})"
            )
        return self.folds[fold][0]

    def missing(self, folds: Sequence[int] = range(N_FOLDS)) -> list[int]:
        """The folds among `folds` that have no checkpoint."""
        return [fold for fold in folds if fold not in self.folds]

    def checkpoints(self, folds: Sequence[int] = range(N_FOLDS)) -> dict[int, Path]:
        """The best checkpoint of each of `folds`, or an error naming what to run."""
        missing = self.missing(folds)
        if missing:
            trained = ",".join(map(str, sorted(self.folds)))
            use = f"pass --folds {trained} to use the trained one(s), or " if trained else ""
            absent = ",".join(map(str, missing))
            raise ConfigError(
                f"experiment {self.name!r} has no checkpoint for fold(s) {absent} in "
                f"{self.directory} (trained: {trained or 'none'}); {use}train the rest: "
                f"{train_command_hint(self.name, self.kind, missing, self.spec)}"
            )
        return {fold: self.folds[fold][0] for fold in folds}


def read_experiment(directory: Path) -> TrainedExperiment | None:
    """The experiment in `directory` (its folds may be none yet), or None without params.json."""
    record = read_params(directory)
    if record is None:
        return None
    folds = {}
    for path in sorted(directory.glob("fold_*")):
        number = fold_number(path)
        best = best_checkpoint(path) if number is not None else None
        if best is not None:
            folds[number] = best
    config = record["config"]
    return TrainedExperiment(
        directory.name,
        directory,
        config.get("kind", "cnn"),
        tuple(record.get("classes", ())),
        config,
        folds,
        experiment_spec(record),
    )


def experiment_names(experiments_dir: Path) -> list[str]:
    """The names of the experiment folders (with a params.json) under `experiments_dir`."""
    if not experiments_dir.is_dir():
        return []
    return sorted(d.name for d in experiments_dir.iterdir() if (d / PARAMS_FILE).is_file())


def trained_experiments(experiments_dir: Path) -> list[TrainedExperiment]:
    """Every experiment under `experiments_dir` with at least one fold checkpoint."""
    if not experiments_dir.is_dir():
        return []
    found = (read_experiment(d) for d in sorted(experiments_dir.iterdir()) if d.is_dir())
    return [experiment for experiment in found if experiment is not None and experiment.folds]


def find_experiment(
    experiments_dir: Path, name: str, folds: Sequence[int] | None = None
) -> TrainedExperiment:
    """The trained experiment `name` with a checkpoint for each of `folds` (None: at least one
    fold), or an error naming what to run."""
    directory = experiments_dir / name
    experiment = read_experiment(directory)
    if experiment is None and name not in EXPERIMENTS and not directory.exists():
        raise unknown_experiment(name, experiment_names(experiments_dir))
    if experiment is None or not experiment.folds:
        kind = (
            experiment.kind
            if experiment is not None
            else EXPERIMENTS.get(name, {}).get("kind", "cnn")
        )
        spec = experiment.spec if experiment is not None else None
        raise ConfigError(
            f"experiment {name!r} has no trained models in {directory}; "
            f"run {train_command_hint(name, kind, spec=spec)} first"
        )
    check_audio_settings(read_params(directory), f"experiment {name!r} ({directory})")
    if folds is not None:
        experiment.checkpoints(folds)
    return experiment


def locate_checkpoints(
    experiments_dir: Path, names: Sequence[str], folds: Sequence[int] = range(N_FOLDS)
) -> tuple[dict[str, dict[int, Path]], list[str]]:
    """The best checkpoint of every fold of every experiment, and one line per missing piece."""
    found: dict[str, dict[int, Path]] = {}
    problems = []
    for name in names:
        experiment_dir = experiments_dir / name
        experiment = read_experiment(experiment_dir)
        if not experiment_dir.is_dir():
            problems.append(f"experiment {name}: no folder {experiment_dir}")
            continue
        if experiment is None:
            problems.append(f"experiment {name}: no {PARAMS_FILE} in {experiment_dir}")
            continue
        found[name] = {f: experiment.folds[f][0] for f in folds if f in experiment.folds}
        problems.extend(
            f"experiment {name} fold {fold}: no checkpoint ({CHECKPOINT_GLOB}) in "
            f"{fold_dir(experiment_dir, fold)}"
            for fold in experiment.missing(folds)
        )
    return found, problems


def _recorded(checkpoint: Path) -> tuple[tuple[str, ...], Path] | None:
    """The classes in the params.json of a checkpoint's experiment (fold_k/ beside it), or of
    its own folder, and that file; None when neither has one."""
    for folder in (checkpoint.parent.parent, checkpoint.parent):
        record = read_params(folder)
        if record is not None:
            return tuple(record.get("classes", ())), folder / PARAMS_FILE
    return None


def checkpoint_classes(checkpoint: Path, n_outputs: int) -> tuple[str, ...]:
    """The names of a checkpoint's outputs, in output order: the classes its experiment's
    params.json records, else FAT2019's 80 for an 80-output checkpoint kept outside any
    experiment. A recorded list whose length differs from the outputs is an error."""
    found = _recorded(checkpoint)
    if found is not None:
        classes, params = found
        if len(classes) != n_outputs:
            raise ConfigError(
                f"{checkpoint}: {n_outputs} outputs, but {params} records {len(classes)} classes"
            )
        return classes
    if n_outputs == len(FAT2019_CLASSES):
        return tuple(FAT2019_CLASSES)
    raise ConfigError(
        f"{checkpoint}: cannot tell the names of its {n_outputs} classes; keep the checkpoint in "
        "its experiment folder (fold_k/ next to params.json)"
    )


_digests: dict[tuple[str, int, int], str] = {}


def checkpoint_digest(checkpoint: Path) -> str:
    """SHA-256 of a checkpoint's bytes (what its predictions are cached under): computed once
    per process for each file version (path, size, mtime)."""
    stat = checkpoint.stat()
    version = (str(checkpoint.resolve()), stat.st_size, stat.st_mtime_ns)
    if version not in _digests:
        digest = hashlib.sha256()
        with checkpoint.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _digests[version] = digest.hexdigest()
    return _digests[version]


# --------------------------------------------------------------------------------------
# Class columns: one rule everywhere
# --------------------------------------------------------------------------------------


def class_order(
    source: Sequence[str], target: Sequence[str], source_name: object, target_name: object
) -> np.ndarray:
    """Indices that put columns named `source` in the order of `target`: `outputs[:, index]`.

    The one rule for class columns: a model's outputs are named by its own recorded classes
    (params.json), and are matched to any other list (a submission's columns, another
    experiment's outputs) by name, never by position. A class set that differs is an error
    naming both sides, their counts and the missing and extra classes.
    """
    source, target = list(source), list(target)
    position = {name: i for i, name in enumerate(source)}
    if len(position) != len(source) or len(source) != len(target) or set(source) != set(target):
        missing = [c for c in target if c not in position]
        wanted = set(target)
        extra = [c for c in source if c not in wanted]
        raise ConfigError(
            f"class mismatch: {source_name} has {len(source)} classes, {target_name} "
            f"{len(target)}; missing (in {target_name} only): {_some(missing)}; "
            f"extra (in {source_name} only): {_some(extra)}"
        )
    return np.array([position[name] for name in target], dtype=np.int64)


def align_columns(
    frame: pd.DataFrame, classes: Sequence[str], source_name: object, target_name: object
) -> pd.DataFrame:
    """A probability table (fname + class columns) with its class columns in the order of
    `classes`, matched by name (`class_order`)."""
    index = class_order(frame.columns[1:], classes, source_name, target_name)
    aligned = frame.iloc[:, [0, *(index + 1)]]
    return aligned if aligned.columns.equals(frame.columns) else aligned.copy()


def check_experiment_classes(paths: Paths, vocabulary: Vocabulary, names: Sequence[str]) -> None:
    """Every experiment's recorded classes are the dataset's, as a set (`class_order`): checked
    before any work, since predictions are matched to the dataset's classes by name."""
    for name in names:
        experiment_dir = paths.experiment_dir(name)
        record = read_params(experiment_dir) or {}
        if not record.get("classes"):
            raise ConfigError(f"{experiment_dir / PARAMS_FILE}: no recorded classes")
        class_order(
            record["classes"],
            vocabulary.classes,
            experiment_dir / PARAMS_FILE,
            vocabulary_source(paths),
        )


def _some(names: Sequence[str], shown: int = 10) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{list(names[:shown])}{more}" if names else "none"


# --------------------------------------------------------------------------------------
# Prediction folders
# --------------------------------------------------------------------------------------


def oof_dir(predictions_dir: Path, experiment: str, fold: int) -> Path:
    return fold_dir(predictions_dir / experiment, fold) / OOF_DIR


def read_probs(
    path: str | os.PathLike, classes: Sequence[str] | None = None, against: object = "expected"
) -> pd.DataFrame:
    """A probability table (fname + one column per class); with `classes`, its columns in
    that order, matched by name (`class_order`; `against` names where `classes` come from)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: predictions not found")
    frame = pd.read_csv(path, dtype={"fname": str})
    if classes is not None:
        frame = align_columns(frame, classes, path, against)
    return frame


def check_oof_inputs(
    predictions_dir: Path,
    experiments: Sequence[str],
    folds: Sequence[int],
    experiments_dir: Path | None = None,
):
    """Every experiment must have out-of-fold predictions for every fold; the error names
    what to run: prediction, after training when the experiment is not trained (an unknown
    name gets the closest known ones). `experiments_dir` defaults to experiments/ beside
    predictions/."""
    experiments_dir = experiments_dir or predictions_dir.parent / "experiments"
    for experiment in experiments:  # a misspelt name first, before any other complaint
        if experiment not in EXPERIMENTS and read_params(experiments_dir / experiment) is None:
            raise unknown_experiment(experiment, experiment_names(experiments_dir))
    for experiment in experiments:
        for fold in folds:
            probs = oof_dir(predictions_dir, experiment, fold) / PROBS_FILE
            if probs.is_file():
                continue
            trained = read_experiment(experiments_dir / experiment)
            predict = f"`{command_line('predict_folds.py', '--experiment', experiment)}`"
            if trained is None or trained.missing(folds):
                kind = trained.kind if trained is not None else "cnn"
                spec = trained.spec if trained is not None else None
                missing = trained.missing(folds) if trained is not None else ()
                train = train_command_hint(experiment, kind, missing, spec)
                predict = f"{train} and {predict}"
            raise ConfigError(
                f"out-of-fold predictions of {experiment!r} fold {fold} are missing ({probs}); "
                f"run {predict} first"
            )


def read_oof(
    predictions_dir: Path,
    experiment: str,
    classes: Sequence[str],
    folds: Sequence[int] = range(N_FOLDS),
) -> pd.DataFrame:
    """The out-of-fold tile means of every curated clip from one experiment's folds."""
    check_oof_inputs(predictions_dir, [experiment], folds)
    frames = [
        read_probs(oof_dir(predictions_dir, experiment, fold) / PROBS_FILE, classes)
        for fold in folds
    ]
    return pd.concat(frames, ignore_index=True)


def predicted_experiment(folder: Path) -> str:
    """The experiment whose predictions a folder under predictions/<experiment>/ holds."""
    for part in [folder, *folder.parents]:
        if part.parent.name == "predictions":
            return part.name
    return folder.name


def prediction_classes(folder: Path) -> tuple[str, ...]:
    """What the columns of a prediction folder's <fname>.npy tiles and probs.csv are: the
    classes of the model that made them, as its done.json records them."""
    done = folder / DONE_FILE
    record = json.loads(done.read_text()) if done.is_file() else {}
    if not record.get("classes"):
        raise ConfigError(
            f"{done}: missing or made by an older version (no classes); rerun "
            f"`{command_line('predict_folds.py', '--experiment', predicted_experiment(folder))}`"
        )
    return tuple(record["classes"])


def read_oof_tiles(
    predictions_dir: Path,
    experiments: Sequence[str],
    fnames: Sequence[str],
    folds: Sequence[int],
    classes: Sequence[str],
    against: object = "the stacking classes",
) -> list[np.ndarray]:
    """(n_tiles, n_experiments * n_classes) per clip, from each clip's own fold: the tile
    probabilities of every experiment side by side (the stacking input), each experiment's
    columns in the order of `classes`, matched by name."""
    orders: dict[Path, np.ndarray] = {}
    inputs = []
    for fname, fold in zip(fnames, folds):
        parts = []
        for experiment in experiments:
            folder = oof_dir(predictions_dir, experiment, int(fold))
            path = folder / f"{fname}.npy"
            if not path.is_file():
                raise ConfigError(
                    f"{path}: missing; rerun "
                    f"`{command_line('predict_folds.py', '--experiment', experiment)}`"
                )
            if folder not in orders:
                orders[folder] = class_order(
                    prediction_classes(folder), classes, folder / DONE_FILE, against
                )
            parts.append(np.load(path)[:, orders[folder]])
        if len({len(p) for p in parts}) != 1:
            raise ConfigError(
                f"{fname}: the input experiments tile it differently; they must share a crop size"
            )
        inputs.append(np.concatenate(parts, axis=1).astype(np.float32))
    return inputs
