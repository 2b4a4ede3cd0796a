"""Self-contained Kaggle kernels and the weights dataset they read.

A kernel is one Python script: the template `src/kaggle/templates/kernel.py` with its
PARAMETERS filled in (a `KernelPlan`), followed by a call that hands it the payload, every file
it needs as `<relative path> <base64 of gzip level 9>` lines, and the SHA-256 of that text.

See docs/original.md, "Kaggle kernels", for what the original built.

What goes in: `src/**/*.py` (not the templates), the pipeline scripts a kernel runs, and the
argus package of the current environment (every file but caches; Kaggle's image does not have
it and kernels have no internet). Not data, caches, tests, weights or earlier kernels.

Truncation: the payload is the last literal and one triple-quoted string, so a script cut
anywhere inside it is a SyntaxError whose message shows the payload's first line, which says
what happened. An edited payload fails the hash check before anything is written.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from src.config import REPO_ROOT, WEIGHTS_DATASET_PREFIX, ConfigError, get_paths
from src.experiments import STACKING, resolve
from src.kaggle.runtime import KernelPlan, with_stacking_inputs
from src.runs import PARAMS_FILE, fold_dir, locate_checkpoints, read_experiment, read_params
from src.utils import tmp_name, write_text_atomic

TEMPLATE = Path(__file__).parent / "templates" / "kernel.py"
KERNEL_SCRIPTS = (
    "make_folds.py",
    "train_folds.py",
    "predict_folds.py",
    "blend_predict.py",
    "stacking_predict.py",
)
SKIPPED_PARTS = {"__pycache__", "templates"}
PAYLOAD_NOTE = (
    "freesound kernel payload: if Python stops here with 'unterminated triple-quoted string', "
    "this file was truncated: rebuild it with python build_kernel.py"
)
CALL_NOTE = "if Python reports \"'(' was never closed\" here, this file was truncated"

DEFAULT_SINGLE = "corr_noisy_007"  # the original's kernel_template.py experiment
DEFAULT_BLEND = ("corr_noisy_003", "corr_noisy_007", "corrections_002")  # three model families


# --------------------------------------------------------------------------------------
# What a kernel carries
# --------------------------------------------------------------------------------------


def _files_under(folder: Path, pattern: str) -> Iterable[Path]:
    for path in sorted(folder.rglob(pattern)):
        if path.is_file() and not SKIPPED_PARTS & set(path.relative_to(folder).parts):
            yield path


def collect_sources(repo_root: Path = REPO_ROOT) -> dict[str, Path]:
    """{path inside the kernel: file}: the project's package and scripts, and argus."""
    import argus

    files = {
        f"src/{p.relative_to(repo_root / 'src').as_posix()}": p
        for p in _files_under(repo_root / "src", "*.py")
    }
    for script in KERNEL_SCRIPTS:
        if not (repo_root / script).is_file():
            raise ConfigError(f"{repo_root / script}: a script the kernels run is missing")
        files[script] = repo_root / script
    argus_dir = Path(argus.__file__).parent
    for path in _files_under(argus_dir, "*"):
        if path.suffix != ".pyc":
            files[f"argus/{path.relative_to(argus_dir).as_posix()}"] = path
    bad = [name for name in files if " " in name or '"' in name or "\\" in name]
    if bad:
        raise ConfigError(f"file names a kernel cannot carry (space, quote, backslash): {bad}")
    return dict(sorted(files.items()))


def encode_payload(files: Mapping[str, bytes]) -> str:
    """The payload text: a note line, then `<path> <base64(gzip(bytes))>` per file, sorted.

    gzip's timestamp is fixed, so the same sources give the same kernel and hash.
    """
    lines = [PAYLOAD_NOTE]
    for name in sorted(files):
        packed = gzip.compress(files[name], compresslevel=9, mtime=0)
        lines.append(f"{name} {base64.b64encode(packed).decode('ascii')}")
    return "\n".join(lines) + "\n"


def payload_hash(payload: str) -> str:
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _replace_marked_line(text: str, marker: str, line: str) -> str:
    lines = text.splitlines()
    hits = [i for i, existing in enumerate(lines) if existing.endswith(f"# {marker}")]
    if len(hits) != 1:
        raise ValueError(f"the kernel template must have one line marked '# {marker}'")
    lines[hits[0]] = line
    return "\n".join(lines) + "\n"


def _parameters_block(plan: KernelPlan) -> str:
    items = [f"    {key!r}: {value!r}," for key, value in plan.to_parameters().items()]
    return "PARAMETERS = {\n" + "\n".join(items) + "\n}"


def render_kernel(plan: KernelPlan, payload: str, kernel_file: str, template: str) -> str:
    """The kernel script: template with parameters, then the call carrying the payload."""
    text = _replace_marked_line(template, "@parameters", _parameters_block(plan))
    text = _replace_marked_line(text, "@kernel-file", f"KERNEL_FILE = {kernel_file!r}")
    return (
        f"{text}\n\n"
        f"main(  # {CALL_NOTE}\n"
        f'    "{payload_hash(payload)}",\n'
        f"    {len(payload)},\n"
        f'    """{payload}""",\n'
        ")\n"
    )


def experiment_kind(name: str) -> str:
    """'cnn' or 'stacking': from the trained experiment's params.json (experiments from a file
    are not in the registry), else from the registry (unknown names fail there, listing it)."""
    record = read_params(get_paths().experiment_dir(name))
    return record["config"]["kind"] if record is not None else resolve(name)["kind"]


def default_plans(
    experiment: str = DEFAULT_SINGLE,
    mode: str = "predict",
    blend: Sequence[str] = DEFAULT_BLEND,
    stacking: Sequence[str] = tuple(STACKING),
    **settings,
) -> list[KernelPlan]:
    """The three kernels: one experiment (predict or train), a blend, the final ensemble.
    `settings` (device, batch_size, ...) apply to all three; `train_args` to train mode only."""
    train_args = settings.pop("train_args", ())
    for names, kind in (([experiment, *blend], "cnn"), (stacking, "stacking")):
        for name in names:
            if experiment_kind(name) != kind:
                raise ConfigError(f"{name} is not a {kind} experiment")
    return [
        KernelPlan("single", (experiment,), mode=mode, train_args=train_args, **settings),
        KernelPlan("blend", tuple(blend), **settings),
        KernelPlan("stacking", tuple(stacking), **settings),
    ]


def untrained(plans: Sequence[KernelPlan], experiments_dir: Path) -> list[str]:
    """What the kernels of `plans` would miss on Kaggle (`missing_folds`); a train-mode kernel
    trains its own."""
    names: list[str] = []
    for plan in plans:
        if plan.mode != "train":
            names.extend(with_stacking_inputs(plan.experiments, experiments_dir))
    return missing_folds(names, experiments_dir)


def missing_folds(names: Sequence[str], experiments_dir: Path) -> list[str]:
    """One entry per experiment without a checkpoint for each of its five folds under
    `experiments_dir` ('NAME (why)')."""
    missing = []
    for name in dict.fromkeys(names):
        experiment = read_experiment(experiments_dir / name)
        if experiment is None:
            missing.append(f"{name} (not trained)")
        elif experiment.missing():
            folds = ",".join(map(str, experiment.missing()))
            missing.append(f"{name} (no checkpoint for fold(s) {folds})")
    return missing


def build_kernels(
    out_dir: str | os.PathLike, plans: Sequence[KernelPlan], repo_root: Path = REPO_ROOT
) -> list[Path]:
    """Write one kernel per plan into `out_dir` (other files there are left alone)."""
    out_dir = Path(out_dir)
    if out_dir.resolve().is_relative_to((repo_root / "src").resolve()):
        raise ConfigError(f"{out_dir}: kernels inside src/ would be embedded in the next build")
    files = {name: path.read_bytes() for name, path in collect_sources(repo_root).items()}
    payload = encode_payload(files)
    template = TEMPLATE.read_text(encoding="utf-8")
    written = []
    for plan in plans:
        target = out_dir / plan.file_name
        write_text_atomic(render_kernel(plan, payload, target.as_posix(), template), target)
        written.append(target)
    return written


# --------------------------------------------------------------------------------------
# The weights dataset
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsPackage:
    path: Path
    experiments: list[str]
    files: list[str]  # paths inside the zip
    size: int  # bytes


def package_weights(
    experiments_dir: Path, names: Sequence[str], out: str | os.PathLike
) -> WeightsPackage:
    """A zip of `experiments/<exp>/params.json` and the best checkpoint of each fold of the
    experiments (stacking ones bring their first-level inputs), to upload as a Kaggle dataset."""
    experiments = with_stacking_inputs(names, experiments_dir)
    missing = missing_folds(experiments, experiments_dir)
    if missing:
        raise ConfigError(
            f"cannot package the weights from {experiments_dir}: {'; '.join(missing)} (the "
            "kernels predict with the five fold models of each experiment: train or import "
            "them first)"
        )
    checkpoints, _ = locate_checkpoints(experiments_dir, experiments)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(out)
    members = []
    try:
        with zipfile.ZipFile(tmp, "w") as archive:
            for name in experiments:
                inside = f"experiments/{name}"
                archive.write(
                    experiments_dir / name / PARAMS_FILE,
                    f"{inside}/{PARAMS_FILE}",
                    compress_type=zipfile.ZIP_DEFLATED,
                )
                members.append(f"{inside}/{PARAMS_FILE}")
                for fold, checkpoint in sorted(checkpoints[name].items()):
                    # Stored: float weights barely compress, and Kaggle unpacks the zip anyway.
                    member = f"{fold_dir(Path(inside), fold).as_posix()}/{checkpoint.name}"
                    archive.write(checkpoint, member, compress_type=zipfile.ZIP_STORED)
                    members.append(member)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return WeightsPackage(out, experiments, members, out.stat().st_size)


def upload_instructions(package: WeightsPackage) -> str:
    return (
        f"Upload {package.path} as a Kaggle dataset named '{WEIGHTS_DATASET_PREFIX}' "
        "(kaggle.com/datasets -> New Dataset; Kaggle unpacks the zip), then add it to the "
        "kernel with the competition data: it appears as "
        f"/kaggle/input/{WEIGHTS_DATASET_PREFIX}/experiments/. Details: docs/kaggle.md."
    )
