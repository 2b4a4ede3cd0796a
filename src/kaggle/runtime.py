"""What a Kaggle kernel runs once it has unpacked its sources.

A generated kernel (see `src.kaggle.build` and `src/kaggle/templates/kernel.py`) checks and
unpacks the embedded sources, then runs `python -m src.kaggle.runtime '<parameters as JSON>'`, which

1. checks every input before the heavy work: the competition's test audio, the weights
   dataset, each experiment and fold the kernel needs, the class list;
2. prints a time estimate from the first test clips (`src.kaggle.estimate`, in a process of its
   own so that its CUDA context is gone before the real work starts);
3. runs the pipeline scripts with `sys.executable` in the kernel's environment (MODE set);
4. removes its intermediate outputs (spectrogram cache, per-clip predictions), so that the
   working directory ends up holding submission.csv only; after a failure it also removes a
   submission.csv written during the run, so that no partial result can be submitted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from src.config import (
    COMPETITION,
    REPO_ROOT,
    WEIGHTS_DATASET_PREFIX,
    ConfigError,
    Paths,
    describe_kaggle_input,
    find_weights_dataset,
    get_paths,
    load_vocabulary,
    vocabulary_source,
)
from src.runs import PARAMS_FILE, class_order, locate_checkpoints, read_params

KINDS = ("single", "blend", "stacking")
MODES = ("predict", "train")
DEVICES = ("auto", "cpu", "cuda")
REPACKAGE_HINT = (
    "package the weights with `python package_weights.py` and upload the zip again (docs/kaggle.md)"
)


# --------------------------------------------------------------------------------------
# The kernel's parameters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelPlan:
    """What one kernel does: its kind, experiments and run settings (its PARAMETERS)."""

    kind: str  # 'single' (one experiment), 'blend' (several) or 'stacking' (the final ensemble)
    experiments: tuple[str, ...]  # for 'stacking': the stacking experiments
    mode: str = "predict"  # 'train' is possible for the single-experiment kernel only
    device: str = "auto"  # 'auto': the scripts' default, cuda when available
    batch_size: int = 64
    fill_undecodable: bool = True  # a clip that cannot be decoded must not sink the submission
    keep_intermediate: bool = False  # keep the spectrogram cache and per-clip predictions
    train_args: tuple[str, ...] = ()  # extra train_folds.py arguments in train mode

    def __post_init__(self) -> None:
        object.__setattr__(self, "experiments", tuple(self.experiments))
        object.__setattr__(self, "train_args", tuple(self.train_args))
        if self.kind not in KINDS:
            raise ConfigError(f"kernel kind must be one of {KINDS}, got {self.kind!r}")
        if self.mode not in MODES:
            raise ConfigError(f"kernel mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "train" and self.kind != "single":
            raise ConfigError("only the single-experiment kernel can run in train mode")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError(f"kernel device must be one of {DEVICES} or cuda:N")
        wanted = {"single": "exactly one", "blend": "at least two", "stacking": "at least one"}
        count = len(self.experiments)
        if (
            (self.kind == "single" and count != 1)
            or (self.kind == "blend" and count < 2)
            or count < 1
            or not all(self.experiments)
        ):
            raise ConfigError(
                f"a {self.kind} kernel needs {wanted[self.kind]} experiment name(s), "
                f"got {list(self.experiments)}"
            )

    @property
    def file_name(self) -> str:
        return f"{self.kind}_kernel.py"

    def to_parameters(self) -> dict:
        values = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_parameters(cls, parameters: dict) -> KernelPlan:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(parameters) - known)
        if unknown:
            raise ConfigError(f"unknown kernel parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**parameters)


# --------------------------------------------------------------------------------------
# The weights a kernel needs
# --------------------------------------------------------------------------------------


def with_stacking_inputs(names: Sequence[str], experiments_dir: Path) -> list[str]:
    """`names` preceded by the first-level inputs of the stacking experiments among them, as
    their params.json records them (the trained configuration is what prediction uses)."""
    needed: list[str] = []
    for name in names:
        params = read_params(experiments_dir / name)
        if params and params["config"].get("kind") == "stacking":
            needed.extend(params["config"]["inputs"])
    needed.extend(names)
    return list(dict.fromkeys(needed))


def needed_experiments(plan: KernelPlan, experiments_dir: Path) -> list[str]:
    if plan.kind == "stacking":
        return with_stacking_inputs(plan.experiments, experiments_dir)
    return list(plan.experiments)


def first_level_experiments(plan: KernelPlan, experiments_dir: Path) -> list[str]:
    """The CNN experiments whose models run over the test clips (the stacking MLPs do not)."""
    if plan.kind == "stacking":
        return [n for n in needed_experiments(plan, experiments_dir) if n not in plan.experiments]
    return list(plan.experiments)


# --------------------------------------------------------------------------------------
# Checks before the heavy work
# --------------------------------------------------------------------------------------


def check_predict_inputs(plan: KernelPlan, paths: Paths) -> dict[str, dict[int, Path]]:
    """Every input of a predict kernel, or one ConfigError saying what is missing and where."""
    # Imported here: this parent process only checks and orchestrates the pipeline's
    # subprocesses, and the store module would load torch into it.
    from src.data.store import find_test_files

    listing = describe_kaggle_input(paths.kaggle_input) if paths.kaggle_input else ""
    if not paths.input_dir.is_dir():
        raise ConfigError(
            f"the competition data is not attached: {paths.input_dir} not found "
            f"(add the '{COMPETITION}' competition to the kernel)\n{listing}"
        )
    find_test_files(paths)
    weights = find_weights_dataset(paths.kaggle_input) if paths.kaggle_input else None
    if weights is None:
        raise ConfigError(
            f"no weights dataset found: expected {WEIGHTS_DATASET_PREFIX}*/experiments/ under "
            f"{paths.kaggle_input}; attach the weights dataset '{WEIGHTS_DATASET_PREFIX}' "
            f"(docs/kaggle.md)\n{listing}"
        )
    names = needed_experiments(plan, weights)
    checkpoints, problems = locate_checkpoints(weights, names)
    if problems:
        raise ConfigError(
            f"the weights dataset {weights} lacks what the {plan.kind} kernel needs:\n  "
            + "\n  ".join(problems)
            + f"\n{REPACKAGE_HINT}"
        )
    # The scripts match the models' classes to the submission's columns by name: the sets must
    # agree (src.runs.class_order, the rule of every script).
    classes = load_vocabulary(paths).classes
    for name in names:
        trained = read_params(weights / name).get("classes")
        if trained is not None:
            class_order(trained, classes, weights / name / PARAMS_FILE, vocabulary_source(paths))
    return checkpoints


def check_train_inputs(paths: Paths) -> None:
    if not paths.train_curated_csv.is_file():
        listing = describe_kaggle_input(paths.kaggle_input) if paths.kaggle_input else ""
        raise ConfigError(
            f"{paths.train_curated_csv} not found: attach the '{COMPETITION}' competition "
            f"data\n{listing}"
        )


def copy_corrections(paths: Paths) -> Path | None:
    """Train mode: label-correction files come from an attached dataset's `corrections/`."""
    if paths.corrections_dir.is_dir() or not (paths.kaggle_input and paths.kaggle_input.is_dir()):
        return None
    for dataset in sorted(paths.kaggle_input.iterdir()):
        if (dataset / "corrections").is_dir():
            shutil.copytree(dataset / "corrections", paths.corrections_dir)
            return dataset / "corrections"
    return None


# --------------------------------------------------------------------------------------
# The scripts a kernel runs
# --------------------------------------------------------------------------------------


def script_steps(plan: KernelPlan) -> list[list[str]]:
    """The pipeline scripts of a kernel and their arguments, in order."""
    device = [] if plan.device == "auto" else ["--device", plan.device]
    if plan.mode == "train":
        (name,) = plan.experiments
        return [
            ["make_folds.py"],
            ["train_folds.py", "--experiment", name, *device, "--no-progress", *plan.train_args],
        ]
    fill = ["--fill-undecodable"] if plan.fill_undecodable else []
    run = [*device, "--batch-size", str(plan.batch_size), "--no-progress"]
    if plan.kind == "stacking":
        return [["stacking_predict.py", "--experiments", ",".join(plan.experiments), *run, *fill]]
    predict = [["predict_folds.py", "--experiment", n, *run, *fill] for n in plan.experiments]
    if plan.kind == "single":
        return predict
    return [*predict, ["blend_predict.py", "--experiments", ",".join(plan.experiments), *fill]]


@dataclass(frozen=True)
class Step:
    arguments: list[str]  # after `python`: a script of the sources, or `-m module ...`
    title: str
    required: bool = True  # a failing optional step is reported and the kernel goes on


def kernel_steps(plan: KernelPlan, started: float) -> list[Step]:
    """The time estimate (predict mode), then the pipeline scripts."""
    scripts = [Step(arguments, " ".join(arguments)) for arguments in script_steps(plan)]
    if plan.mode == "train":
        return scripts
    parameters = json.dumps(plan.to_parameters())
    estimate = ["-m", "src.kaggle.estimate", parameters, "--started", repr(started)]
    estimate += ["--scripts", str(len(scripts))]
    return [Step(estimate, "time estimate", required=False), *scripts]


def intermediate_outputs(plan: KernelPlan, paths: Paths) -> list[Path]:
    """What the run writes besides its result; a Kaggle kernel's output is every file left in
    /kaggle/working, and per-clip predictions would be tens of thousands of them."""
    if plan.mode == "train":
        return [paths.cache_dir]
    return [paths.cache_dir, paths.predictions_dir]


def run_step(step: Step) -> int:
    """One script (or `-m module`) of the unpacked sources, in this kernel's environment."""
    command = [sys.executable, *step.arguments]
    if command[1].endswith(".py"):
        command[1] = str(REPO_ROOT / command[1])
    print(f"\n==> {step.title}", flush=True)
    # Run inside the sources folder: `python -m` puts the current directory first on sys.path.
    return subprocess.run(command, cwd=REPO_ROOT).returncode


def describe_sources() -> str:
    import argus

    return f"sources: {REPO_ROOT} (argus {argus.__version__} from {Path(argus.__file__).parent})"


def run_kernel(plan: KernelPlan, started: float) -> int:
    """Checks, time estimate, scripts, cleanup; the exit status of the kernel."""
    paths = get_paths()
    print(f"{plan.kind} kernel, MODE={paths.mode}: {', '.join(plan.experiments)}")
    print(describe_sources(), flush=True)
    try:
        if paths.mode == "predict":
            check_predict_inputs(plan, paths)
        else:
            check_train_inputs(paths)
            copied = copy_corrections(paths)
            if copied is not None:
                print(f"correction files copied from {copied}")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    cleanup = [] if plan.keep_intermediate else intermediate_outputs(plan, paths)
    existed = {path for path in cleanup if path.exists()}
    submission_before = paths.submission.stat().st_mtime_ns if paths.submission.exists() else None
    try:
        for step in kernel_steps(plan, started):
            status = run_step(step)
            if status != 0 and not step.required:
                print(f"warning: {step.title} failed (see above); the kernel goes on", flush=True)
            elif status != 0:
                print(
                    f"error: `{step.title}` failed with exit status {status} "
                    "(its message is above)",
                    file=sys.stderr,
                )
                discard_submission(paths.submission, submission_before)
                return status
    finally:
        for path in cleanup:
            if path not in existed:
                shutil.rmtree(path, ignore_errors=True)
    if paths.mode == "predict":
        print(f"\nsubmission: {paths.submission}")
    else:
        print(f"\ntrained weights: {paths.experiments_dir}")
    return 0


def discard_submission(submission: Path, mtime_before: int | None) -> None:
    if submission.exists() and submission.stat().st_mtime_ns != mtime_before:
        submission.unlink()
        print(f"removed {submission}: it was written before the failure and is incomplete")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a Kaggle kernel's pipeline (internal).")
    parser.add_argument("parameters", help="the kernel's PARAMETERS as JSON")
    parser.add_argument("--started", type=float, default=None, help="kernel start (epoch s)")
    args = parser.parse_args(argv)
    try:
        plan = KernelPlan.from_parameters(json.loads(args.parameters))
        if os.environ.get("MODE") != plan.mode:
            raise ConfigError(f"MODE must be {plan.mode!r} for this kernel")
    except (ConfigError, ValueError, TypeError) as error:
        print(f"error: bad kernel parameters: {error}", file=sys.stderr)
        return 2
    return run_kernel(plan, args.started or time.time())


if __name__ == "__main__":
    sys.exit(main())
