"""A kernel's time estimate: measure the first test clips, extrapolate to the whole test set.

Kaggle stopped a kernel after one hour, and the private test set was about three times the
public one: teams whose kernels ran past the limit on it were disqualified (docs/kaggle.md).
So before the heavy work a kernel decodes the first test clips, computes their spectrograms,
runs one fold model of each experiment over their tiles, and scales what that cost to the
whole test folder by audio size (decoding, spectrogram and tile counts all grow with the
clips' length).

    python -m src.kaggle.estimate '<kernel parameters as JSON>' [--started T] [--scripts N]

The project's modules (and torch) are imported inside the functions on purpose: `main` times
those imports as the start-up cost every pipeline script of the kernel pays.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

KAGGLE_LIMIT_MINUTES = 60
SAMPLE_CLIPS = 20


@dataclass(frozen=True)
class Sample:
    """What the first clips cost, measured in one process."""

    clips: int
    audio_bytes: int
    spectrogram_seconds: float  # decoding + log-mel of the sample, one core
    load_seconds: dict[str, float]  # experiment -> loading one fold's checkpoint
    forward_seconds: dict[str, float]  # experiment -> one fold model over the sample's tiles


@dataclass(frozen=True)
class Estimate:
    clips: int
    elapsed: float  # already spent when the estimate was made (unpacking, checks, sample)
    startup: float  # interpreter and imports of every script
    spectrograms: float
    models: float

    @property
    def total(self) -> float:
        return self.elapsed + self.startup + self.spectrograms + self.models


def extrapolate(
    sample: Sample,
    total_clips: int,
    total_bytes: int,
    folds: int,
    scripts: int,
    startup_seconds: float,
    workers: int,
    elapsed: float,
) -> Estimate:
    """Seconds of the whole run, from the sample scaled to `total_bytes` of audio.

    Spectrograms are computed by `workers` processes (src.data.store); every fold of every
    experiment is loaded once and runs over all clips.
    """
    if sample.audio_bytes <= 0:
        raise ValueError("the sample holds no audio")
    scale = total_bytes / sample.audio_bytes
    spectrograms = sample.spectrogram_seconds * scale / max(1, workers)
    models = sum(
        folds * (sample.load_seconds[name] + seconds * scale)
        for name, seconds in sample.forward_seconds.items()
    )
    return Estimate(total_clips, elapsed, startup_seconds * scripts, spectrograms, models)


def report_lines(estimate: Estimate, limit_minutes: float = KAGGLE_LIMIT_MINUTES) -> list[str]:
    """The estimate as printed by a kernel, with a WARNING line above the Kaggle limit."""
    minutes = estimate.total / 60
    lines = [
        f"time estimate for {estimate.clips} test clips: spectrograms "
        f"{estimate.spectrograms / 60:.1f} min, models {estimate.models / 60:.1f} min, "
        f"start-up {estimate.startup / 60:.1f} min, elapsed so far {estimate.elapsed / 60:.1f} min",
        f"estimated total: {minutes:.1f} min (Kaggle limit {limit_minutes:g} min)",
    ]
    if minutes > limit_minutes:
        lines.append(
            f"WARNING: the estimated total ({minutes:.1f} min) exceeds the Kaggle limit of "
            f"{limit_minutes:g} min: Kaggle would stop this kernel before it writes "
            "submission.csv (use fewer experiments, or a GPU)"
        )
    return lines


def measure(
    files: Sequence[Path], models: dict[str, tuple[Path, int]], device: str, batch_size: int
) -> Sample:
    """Time the sample `files`: spectrograms as one extraction worker computes them, then
    loading one checkpoint per experiment ((path, tile step)) and its pass over their tiles."""
    import torch

    from src.data.audio import AudioDecodeError, file_failure, make_extractor, read_audio
    from src.data.store import Extraction
    from src.prediction.tiling import Predictor

    extraction = Extraction()
    extractor = make_extractor(extraction.backend, "cpu", precision=extraction.precision)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each extraction worker (src.data.store)
    spectrograms, audio_bytes = [], 0
    start = time.perf_counter()
    for path in files:
        try:
            with file_failure(path):  # a bad clip is skipped here, reported by the store
                spectrograms.append(extractor([read_audio(path)])[0])
        except AudioDecodeError:
            continue
        audio_bytes += path.stat().st_size
    spectrogram_seconds = time.perf_counter() - start
    torch.set_num_threads(threads)
    if not spectrograms:
        raise RuntimeError("none of the sampled test clips could be decoded")

    # Once per process, as in the real run: CUDA context, kernel selection, allocator. Each
    # model's own first pass is then timed, since every fold model's first pass is in the run.
    checkpoint, step = next(iter(models.values()))
    Predictor(checkpoint, device, batch_size, tile_step=step).predict_tiles(spectrograms[:1])
    load, forward = {}, {}
    for name, (checkpoint, step) in models.items():
        start = time.perf_counter()
        predictor = Predictor(checkpoint, device, batch_size, tile_step=step)
        load[name] = time.perf_counter() - start
        start = time.perf_counter()
        predictor.predict_tiles(spectrograms)  # returns on the CPU: the device has finished
        forward[name] = time.perf_counter() - start
    return Sample(len(spectrograms), audio_bytes, spectrogram_seconds, load, forward)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a kernel's time estimate (internal).")
    parser.add_argument("parameters", help="the kernel's PARAMETERS as JSON")
    parser.add_argument("--started", type=float, default=None, help="kernel start (epoch s)")
    parser.add_argument("--scripts", type=int, default=1, help="pipeline scripts to run")
    args = parser.parse_args(argv)
    started = args.started or time.time()

    before_imports = time.perf_counter()
    import torch

    from src.config import ConfigError, get_paths
    from src.data.store import default_extraction_workers, find_test_files
    from src.experiments import tile_steps
    from src.kaggle.runtime import KernelPlan, first_level_experiments
    from src.runs import find_experiment, locate_checkpoints

    startup_seconds = time.perf_counter() - before_imports

    try:
        plan = KernelPlan.from_parameters(json.loads(args.parameters))
        paths = get_paths()
        names = first_level_experiments(plan, paths.experiments_dir)
        checkpoints, problems = locate_checkpoints(paths.experiments_dir, names)
        if problems:
            raise ConfigError("; ".join(problems))
        step_kind = "stacking_test" if plan.kind == "stacking" else "test"
        models = {
            name: (
                next(iter(checkpoints[name].values())),
                tile_steps(find_experiment(paths.experiments_dir, name).config)[step_kind],
            )
            for name in names
        }
        files = find_test_files(paths)
        device = plan.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        sample = measure(files[:SAMPLE_CLIPS], models, device, plan.batch_size)
    except (ConfigError, RuntimeError) as error:
        print(f"error: no time estimate: {error}", file=sys.stderr)
        return 1
    total_bytes = sum(path.stat().st_size for path in files)
    estimate = extrapolate(
        sample,
        total_clips=len(files),
        total_bytes=total_bytes,
        folds=len(next(iter(checkpoints.values()))),
        scripts=args.scripts,
        startup_seconds=startup_seconds,
        workers=default_extraction_workers(),
        elapsed=time.time() - started,
    )
    print(
        f"measured on the first {sample.clips} test clips ({sample.audio_bytes / 1e6:.1f} of "
        f"{total_bytes / 1e6:.1f} MB of audio) on {device}"
    )
    print("\n".join(report_lines(estimate)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
