"""The steps of bench/gpu_check.sh that no pipeline script does on its own.

    python bench/gpu_steps.py warm
    python bench/gpu_steps.py stores --json OUT.json [--device cuda] [--workers 16]
    python bench/gpu_steps.py estimate --json OUT.json [--device cuda] [--experiment E --fold K]
    python bench/gpu_steps.py resume --json OUT.json --reference LOG.csv -- TRAIN COMMAND...

`warm` imports every project module and decodes and turns into log-mel (librosa) one
generated clip: librosa's numba functions are compiled once and cached next to the freshly
installed wheels (about a minute of one core), not again in every worker of the timed steps.

`stores` builds the curated, noisy and test spectrogram stores of the data directory with the
torch log-mel on `--device` (the stores training then reads), timing each set, then builds the
curated store twice more into scratch folders, with the torch log-mel on `--device` and with
librosa: the same files and decoding workers, both warm, so the ratio is the store build's
(decoding included).

`estimate` is the stacking kernel's time estimate (src.kaggle.estimate) with the fold model
trained by the check standing in for one fold of each of the seven first-level experiments:
it times the first test clips (spectrograms, one pass per experiment) and scales to a test
set of `--clips` clips of `--mean-seconds` seconds (about FAT2019's private test set) with
5 folds per experiment, as a kernel on this machine would run it.

`resume` proves that a fold stopped by SIGTERM resumes: it starts the training command (one
fold of `--experiment`, in a fresh experiment folder), sends SIGTERM once the fold saved the
state of its first epoch, and checks the command ended with status 143 leaving the state and
no temporary file and no finished.json; then runs the same command again, which must resume.
The finished fold's log.csv must equal `--reference` (the log of the same command run without
interruption): epochs, samples and learning rates exactly, the metrics exactly on the CPU and
within the tolerance of non-deterministic kernels on CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

started_imports = time.perf_counter()
import soundfile  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from src.config import get_paths  # noqa: E402
from src.data.store import (  # noqa: E402
    Extraction,
    curated_store,
    find_test_files,
    get_store,
    noisy_store,
    test_store,
)

IMPORT_SECONDS = time.perf_counter() - started_imports


def audio_seconds(files) -> float:
    return float(sum(soundfile.info(str(f)).duration for f in files))


def warm(args: argparse.Namespace) -> dict:
    import importlib
    import tempfile

    import argus
    import librosa
    import numpy as np

    from src.data.audio import LibrosaLogMel, read_audio

    root = Path(__file__).resolve().parents[1]
    modules = sorted(
        ".".join(p.with_suffix("").relative_to(root).parts).removesuffix(".__init__")
        for p in root.glob("src/**/*.py")
    )
    for name in modules:
        importlib.import_module(name)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tone.wav"
        tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100)
        soundfile.write(path, np.concatenate([np.zeros(22050), tone]).astype(np.float32), 44100)
        spec = LibrosaLogMel()([read_audio(path)])[0]
    return {
        "modules": len(modules),
        "torch": torch.__version__,
        "librosa": librosa.__version__,
        "argus": argus.__version__,
        "soundfile": soundfile.__version__,
        "spectrogram": list(spec.shape),
    }


def stores(args: argparse.Namespace) -> dict:
    paths = get_paths()
    shutil.rmtree(paths.cache_dir, ignore_errors=True)  # time a real build, also on a rerun
    extraction = Extraction(backend="torch", device=args.device, workers=args.workers)
    result = {"device": args.device, "workers": args.workers, "sets": {}}
    folders = {"curated": paths.train_curated_dir, "noisy": paths.train_noisy_dir}
    for name, factory in (("curated", curated_store), ("noisy", noisy_store), ("test", test_store)):
        start = time.perf_counter()
        store = factory(paths, extraction)
        seconds = time.perf_counter() - start
        files = [folders.get(name, paths.test_dir) / f for f in store.fnames]
        result["sets"][name] = {
            "clips": len(store),
            "seconds": round(seconds, 3),
            "audio_seconds": round(audio_seconds(files), 1),
        }
    # The comparison: the curated files once more into scratch folders, both paths warm
    # (the CUDA context, FFT plans and librosa's compiled functions exist by now).
    curated = [paths.train_curated_dir / f for f in curated_store(paths).fnames]
    for backend, device in (("torch", args.device), ("librosa", "cpu")):
        scratch = paths.save_dir / f"cache-{backend}"
        shutil.rmtree(scratch, ignore_errors=True)
        extraction = Extraction(backend=backend, device=device, workers=args.workers)
        start = time.perf_counter()
        get_store("curated", curated, scratch, extraction, progress=False)
        result[f"{backend}_curated_seconds"] = round(time.perf_counter() - start, 3)
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def estimate(args: argparse.Namespace) -> dict:
    from src.experiments import FIRST_LEVEL, tile_steps
    from src.kaggle.estimate import SAMPLE_CLIPS, extrapolate, measure, report_lines
    from src.runs import find_experiment

    paths = get_paths()
    experiment = find_experiment(paths.experiments_dir, args.experiment, [args.fold])
    checkpoint = experiment.checkpoint(args.fold)
    step = tile_steps(experiment.config)["stacking_test"]
    files = find_test_files(paths)[:SAMPLE_CLIPS]
    sample = measure(files, {name: (checkpoint, step) for name in FIRST_LEVEL}, args.device, 64)
    sample_seconds = audio_seconds(files[: sample.clips])
    total_bytes = int(sample.audio_bytes / sample_seconds * args.clips * args.mean_seconds)
    result = extrapolate(
        sample,
        total_clips=args.clips,
        total_bytes=total_bytes,
        folds=5,
        scripts=1,  # the stacking kernel runs stacking_predict.py
        startup_seconds=IMPORT_SECONDS,
        workers=os.cpu_count() or 1,
        elapsed=0.0,
    )
    lines = report_lines(result)
    print("\n".join(lines))
    return {
        "device": args.device,
        "sample_clips": sample.clips,
        "sample_audio_seconds": round(sample_seconds, 1),
        "experiments": len(FIRST_LEVEL),
        "clips": args.clips,
        "mean_seconds": args.mean_seconds,
        "spectrograms_s": round(result.spectrograms, 1),
        "models_s": round(result.models, 1),
        "startup_s": round(result.startup, 1),
        "total_minutes": round(result.total / 60, 2),
        "lines": lines,
    }


RESUME_TOLERANCE = 0.05  # CUDA: relative (losses) or absolute (scores in [0, 1]) difference
EXACT_COLUMNS = ("epoch", "train_samples", "lr")


class CheckFailed(Exception):
    pass


def resume(args: argparse.Namespace) -> dict:
    import signal
    import subprocess

    import pandas as pd

    from src.runs import FINISHED_FILE, STATE_FILE, fold_dir

    command = args.train_command
    experiment = get_paths().experiment_dir(args.experiment)
    folder = fold_dir(experiment, args.fold)
    shutil.rmtree(experiment, ignore_errors=True)  # the runs before were kept by the check
    started = time.perf_counter()
    first = subprocess.Popen(command)
    while first.poll() is None and not (folder / STATE_FILE).is_file():
        time.sleep(0.05)  # the state is written under a temporary name, then renamed
    if first.poll() is not None:
        raise CheckFailed(f"the fold ended (status {first.returncode}) before it saved a state")
    first.send_signal(signal.SIGTERM)
    status = first.wait(timeout=120)
    stopped_seconds = time.perf_counter() - started
    if status != 128 + signal.SIGTERM:
        raise CheckFailed(f"after SIGTERM the command exited with {status}, not 143")
    leftovers = sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)
    if leftovers or (folder / FINISHED_FILE).exists() or not (folder / STATE_FILE).is_file():
        raise CheckFailed(
            f"after SIGTERM {folder} holds {sorted(p.name for p in folder.iterdir())}: "
            "expected the state, no temporary file and no finished.json"
        )
    saved_epoch = int(torch.load(folder / STATE_FILE, weights_only=True)["epoch"])
    again = subprocess.run(command, capture_output=True, text=True)
    sys.stdout.write(again.stdout)
    sys.stderr.write(again.stderr)
    if again.returncode != 0:
        raise CheckFailed(f"the same command again exited with {again.returncode}")
    if "resuming at epoch" not in again.stdout + again.stderr:
        raise CheckFailed("the same command again did not resume the fold")
    resumed = pd.read_csv(folder / "log.csv").drop(columns="time")
    reference = pd.read_csv(args.reference).drop(columns="time")
    if list(resumed.columns) != list(reference.columns) or len(resumed) != len(reference):
        raise CheckFailed(
            f"log.csv: {len(resumed)} rows {list(resumed.columns)} vs "
            f"{len(reference)} rows {list(reference.columns)} uninterrupted"
        )
    exact = args.device == "cpu"
    differences, problems = {}, []
    for column in resumed.columns:
        a, b = resumed[column].to_numpy(float), reference[column].to_numpy(float)
        difference = abs(a - b)
        if not column.endswith("loss"):
            allowed = 0.0 if exact or column in EXACT_COLUMNS else RESUME_TOLERANCE
        else:
            allowed = 0.0 if exact else RESUME_TOLERANCE * abs(b)
        differences[column] = float(difference.max())
        if (difference > allowed).any():
            problems.append(f"{column} {list(a)} vs {list(b)}")
    if problems:
        raise CheckFailed("log.csv differs from the uninterrupted run's: " + "; ".join(problems))
    return {
        "device": args.device,
        "stopped_after_seconds": round(stopped_seconds, 1),
        "saved_epoch": saved_epoch,
        "resumed_at_epoch": saved_epoch + 1,
        "epochs": len(resumed),
        "exact": exact,
        "largest_differences": differences,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["warm", "stores", "estimate", "resume"])
    parser.add_argument("--json", default=None, help="where to write the figures")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--experiment", default="corr_noisy_007")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--clips", type=int, default=3400, help="test clips to estimate for")
    parser.add_argument("--mean-seconds", type=float, default=7.8, help="their mean length")
    parser.add_argument("--reference", help="resume: the uninterrupted run's log.csv")
    argv = sys.argv[1:] if argv is None else argv
    train_command = argv[argv.index("--") + 1 :] if "--" in argv else []  # resume's command
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.train_command = train_command
    steps = {"warm": warm, "stores": stores, "estimate": estimate, "resume": resume}
    try:
        result = steps[args.command](args)
    except CheckFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
