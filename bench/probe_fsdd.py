"""The linear probe's whole run (embeddings included) on FSDD-size data, through the user's
commands, and what the probed experiment scores on a held-out speaker:

    make_dataset.py own/ --out DIR --test held_out/     digits 5-9: CLIPS per digit of five
                                                        speakers; the sixth speaker's for test
    make_folds.py
    train_probe.py --init-from SOURCE --experiment probe     (timed: the target's figure)
    tag_audio.py DIR/test --experiment probe --score DIR/test_labels.csv

    python bench/probe_fsdd.py [--clips 10] [--threads 2] [--source SPEC --source-data DIR]

Without --source, the source is an untrained network of each size the probe is meant for (the
timing does not depend on the weights): `cpu` (the --scale cpu network: 16 wide, 64-frame
crops) and `full` (the competition's: 64 wide, 17 M parameters, 256-frame crops; the released
winners' size). With --source, a trained experiment (or checkpoint) of --source-data's
experiments folder, copied in. Prints per source: the probe's wall time, the mean validation
lwlrap over its folds and the held-out speaker's lwlrap. Target: the probe's run under
2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

FSDD = REPO_ROOT.parent / "shared/data/real-audio/fsdd"
SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo"]
HELD_OUT = "yweweler"
SIZES = {"cpu": (16, 64), "full": (64, 256)}  # base_size, crop_size


def run(args: list[str], env: dict, what: str) -> tuple[str, float]:
    started = time.time()
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    seconds = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"{what} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result.stdout, seconds


def layout(work: Path, clips: int, env: dict) -> Path:
    for digit in range(5, 10):
        for speaker in SPEAKERS:
            for i in range(clips):
                target = work / "own" / f"digit_{digit}" / f"{digit}_{speaker}_{i}.wav"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(FSDD / "recordings" / target.name)
        for i in range(50):
            target = work / "held_out" / f"digit_{digit}" / f"{digit}_{HELD_OUT}_{i}.wav"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(FSDD / "recordings" / target.name)
    data = work / "data"
    run(
        [
            "make_dataset.py",
            str(work / "own"),
            "--test",
            str(work / "held_out"),
            "--out",
            str(data),
        ],
        env,
        "make_dataset.py",
    )
    run(["make_folds.py"], {**env, "FREESOUND_DATA_DIR": str(data)}, "make_folds.py")
    return data


def untrained_source(experiments: Path, size: str) -> str:
    """A one-fold experiment of an untrained network of the size (80 classes): SOURCE:0."""
    import json

    import torch

    from src.config import FAT2019_CLASSES
    from src.experiments import CNN_BASE
    from src.models.argus_models import FreesoundModel, model_params
    from src.training.callbacks.checkpoints import save_model_atomic

    base, crop = SIZES[size]
    config = {
        **CNN_BASE,
        "crop_size": crop,
        "model": {
            "name": "AuxSkipAttention",
            "params": {**CNN_BASE["model"]["params"], "base_size": base},
        },
    }
    torch.manual_seed(0)
    model = FreesoundModel(model_params(config, len(FAT2019_CLASSES)))
    name = f"untrained_{size}"
    folder = experiments / name / "fold_0"
    folder.mkdir(parents=True)
    save_model_atomic(model, folder / "model-001-0.500000.pth")
    (folder / "finished.json").write_text("{}")
    record = {"config": config, "classes": list(FAT2019_CLASSES)}
    (experiments / name / "params.json").write_text(json.dumps(record))
    return f"{name}:0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10, help="clips per digit and speaker (10)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--source", help="a trained experiment NAME[:K] or checkpoint")
    parser.add_argument("--source-data", type=Path, help="the data directory holding --source")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    work = args.keep or Path(tempfile.mkdtemp(prefix="probe_fsdd-"))
    try:
        data = layout(work, args.clips, env)
        env["FREESOUND_DATA_DIR"] = str(data)
        experiments = data / "experiments"
        if args.source:
            name = args.source.split(":")[0]
            if args.source_data is not None:
                shutil.copytree(args.source_data / "experiments" / name, experiments / name)
            sources = {args.source: args.source}
        else:
            sources = {size: untrained_source(experiments, size) for size in SIZES}
        clips = len(list((data / "train_curated").iterdir()))
        print(f"{clips} curated clips (digits 5-9, {args.clips} per digit of 5 speakers), "
              f"250 test clips ({HELD_OUT}), {args.threads} thread(s)")  # fmt: skip
        print(f"{'source':<22} {'probe run':>10} {'val lwlrap':>11} {'test lwlrap':>12}")
        for label, spec in sources.items():
            name = f"probe_{label.replace(':', '_')}"
            out, seconds = run(
                ["train_probe.py", "--init-from", spec, "--experiment", name, "--no-progress",
                 "--device", "cpu"],
                env,
                "train_probe.py",
            )  # fmt: skip
            mean = next(x for x in out.splitlines() if "mean validation lwlrap" in x).split()
            scored, _ = run(
                ["tag_audio.py", str(data / "test"), "--experiment", name, "--score",
                 str(data / "test_labels.csv"), "--no-progress", "--device", "cpu"],
                env,
                "tag_audio.py",
            )  # fmt: skip
            line = next(x for x in scored.splitlines() if x.startswith("scored "))
            test = float(line.replace(",", "").split()[4])
            print(f"{label:<22} {seconds:>8.1f} s {float(mean[4]):>11.4f} {test:>12.4f}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
