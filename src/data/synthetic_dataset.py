"""The synthetic dataset installed in the exact Kaggle FAT2019 layout.

`generate_dataset(out_dir)` renders the clips of `src.data.synthetic_clips` and writes:

    train_curated/<fname>.wav  train_noisy/<fname>.wav  test/<fname>.wav
    train_curated.csv  train_noisy.csv      (fname,labels; several labels are quoted)
    sample_submission.csv                   (fname + one column per class, zeros)
    synthetic_truth.csv                     (fname,set,labels,true_labels,corrupted: the answers)
    synthetic.json  README.txt              (the arguments; written last, marks completeness)

The manifest `synthetic.json` lists every file the generator wrote, so a re-run keeps a
complete dataset made with the same arguments, replaces an interrupted one, deletes nothing it
did not write, and refuses a folder that holds a dataset of unknown origin. Other content of
`out_dir` (experiments/, cache/, ...) is never touched.

Clips are rendered in a staging folder beside `out_dir` (`src.utils.staged_folder`), by one
process or a pool of `workers`, and moved into place once all of them exist: the same
arguments give byte-identical files whatever the number of workers. One generator writes a
folder at a time (`src.utils.writer_lock` on `out_dir/.lock`; a second one waits, then finds
the first's dataset), and it first removes what killed generators left (their staging folders
and half-written manifests).
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from src.config import FAT2019_CLASSES
from src.data.synthetic_clips import (
    SAMPLE_RATE,
    SETS,
    ClipPlan,
    SyntheticSpec,
    plan_clips,
    render_clip,
    require_int,
)
from src.utils import (
    LOCK_FILE,
    pool_map,
    remove_leftovers_of,
    staged_folder,
    start_pool,
    write_json_atomic,
    writer_lock,
)

AUDIO_DIRS = {"curated": "train_curated", "noisy": "train_noisy", "test": "test"}
LABEL_CSVS = {"curated": "train_curated.csv", "noisy": "train_noisy.csv"}
SAMPLE_SUBMISSION = "sample_submission.csv"
TRUTH_CSV = "synthetic_truth.csv"
README = "README.txt"
MANIFEST = "synthetic.json"
# The generator's name as recorded in synthetic.json: a fixed tag of the manifest format, not a
# module path, so that moving the code never disowns the datasets already on disk.
GENERATOR_TAG = "src.synthetic"


# --------------------------------------------------------------------------------------
# Writing the files
# --------------------------------------------------------------------------------------


def _write_clip(job: tuple[ClipPlan, int, int, str]) -> None:
    plan, seed, n_classes, folder = job
    samples = render_clip(plan, seed, n_classes)
    sf.write(os.path.join(folder, plan.fname), samples, SAMPLE_RATE, subtype="PCM_16")


@dataclass(frozen=True)
class SyntheticSummary:
    out_dir: Path
    n_classes: int
    n_curated: int
    n_noisy: int
    n_noisy_corrupted: int
    n_test: int
    total_seconds: float
    generated: bool  # False when an identical dataset was already in place

    @property
    def train_curated_csv(self) -> Path:
        return self.out_dir / LABEL_CSVS["curated"]

    @property
    def train_noisy_csv(self) -> Path:
        return self.out_dir / LABEL_CSVS["noisy"]

    @property
    def sample_submission(self) -> Path:
        return self.out_dir / SAMPLE_SUBMISSION

    @property
    def truth_csv(self) -> Path:
        return self.out_dir / TRUTH_CSV


def _label_string(indices: Sequence[int], classes: Sequence[str]) -> str:
    return ",".join(classes[i] for i in indices)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    # Kaggle's files: '\n' line ends, a field quoted only when it holds a comma.
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_tables(folder: Path, plans: list[ClipPlan], spec: SyntheticSpec) -> None:
    by_set = {s: sorted((p for p in plans if p.set_name == s), key=lambda p: p.fname) for s in SETS}
    for set_name, csv_name in LABEL_CSVS.items():
        rows = [(p.fname, _label_string(p.labels, spec.classes)) for p in by_set[set_name]]
        _write_csv(folder / csv_name, ("fname", "labels"), rows)
    zeros = [0] * spec.n_classes
    _write_csv(
        folder / SAMPLE_SUBMISSION,
        ("fname", *spec.classes),
        [(p.fname, *zeros) for p in by_set["test"]],
    )
    truth = [
        (
            p.fname,
            p.set_name,
            _label_string(p.labels, spec.classes),
            _label_string(p.true_labels, spec.classes),
            int(p.corrupted),
        )
        for s in SETS
        for p in by_set[s]
    ]
    _write_csv(folder / TRUTH_CSV, ("fname", "set", "labels", "true_labels", "corrupted"), truth)


def _readme_text(spec: SyntheticSpec, total_seconds: float) -> str:
    counts = spec.counts
    custom_classes = spec.classes != FAT2019_CLASSES
    command = (
        "python make_synthetic.py --out DIR"
        f" --curated-per-class {spec.curated_per_class} --noisy-per-class {spec.noisy_per_class}"
        f" --test {spec.n_test} --noisy-wrong-share {spec.noisy_wrong_share}"
        f" --min-seconds {spec.min_seconds} --max-seconds {spec.max_seconds} --seed {spec.seed}"
    )
    return (
        "SYNTHETIC DATA - not the Freesound Audio Tagging 2019 competition data.\n\n"
        "Generated by src/data/synthetic_dataset.py (generate_dataset) in the Kaggle layout: "
        "train_curated/, train_noisy/, test/, train_curated.csv, train_noisy.csv, "
        "sample_submission.csv.\n"
        f"{counts['curated']} curated, {counts['noisy']} noisy "
        f"({spec.n_noisy_corrupted} with wrong labels) and {counts['test']} test clips over "
        f"{spec.n_classes} classes, {total_seconds / 60:.1f} minutes of 16-bit mono audio at "
        f"{SAMPLE_RATE} Hz.\n"
        "The true labels of every clip (test included) are in synthetic_truth.csv; "
        "corrupted = 1 marks a noisy clip whose labels are wrong.\n\n"
        f"Arguments: {json.dumps(spec.arguments() | {'classes': f'{spec.n_classes} names'})}\n"
        f"Regenerate with: {command}"
        + (" (with the same custom class list, through the Python API)" if custom_classes else "")
        + "\n"
    )


def _generate_into(
    folder: Path, spec: SyntheticSpec, plans: list[ClipPlan], workers: int, progress: bool
) -> list[str]:
    """Write every file except the manifest into `folder`; return their relative paths."""
    for directory in AUDIO_DIRS.values():
        (folder / directory).mkdir(parents=True)
    jobs = [(p, spec.seed, spec.n_classes, str(folder / AUDIO_DIRS[p.set_name])) for p in plans]
    bar = tqdm(total=len(jobs), desc="synthetic clips", unit="clip", disable=not progress)
    with bar:
        if workers > 1 and len(jobs) > 1:
            with start_pool(multiprocessing.get_context("spawn"), workers) as pool:
                for _ in pool_map(pool, _write_clip, jobs, 4, ordered=False):
                    bar.update()
        else:
            for job in jobs:
                _write_clip(job)
                bar.update()
    _write_tables(folder, plans, spec)
    total_seconds = sum(p.n_samples for p in plans) / SAMPLE_RATE
    (folder / README).write_text(_readme_text(spec, total_seconds), encoding="utf-8")
    audio = [f"{AUDIO_DIRS[p.set_name]}/{p.fname}" for p in plans]
    return [*sorted(audio), *LABEL_CSVS.values(), SAMPLE_SUBMISSION, TRUTH_CSV, README]


def _manifest(spec: SyntheticSpec, plans: list[ClipPlan], files: list[str]) -> dict:
    return {
        "generator": GENERATOR_TAG,
        "complete": True,
        "arguments": spec.arguments(),
        "counts": spec.counts | {"noisy_corrupted": spec.n_noisy_corrupted},
        "total_seconds": sum(p.n_samples for p in plans) / SAMPLE_RATE,
        "files": files,
    }


# --------------------------------------------------------------------------------------
# The manifest: what the generator owns, and installing over an earlier dataset
# --------------------------------------------------------------------------------------


def read_manifest(out_dir: str | os.PathLike) -> dict | None:
    """The manifest of a synthetic dataset in `out_dir`, or None when there is none."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest["generator"] != GENERATOR_TAG or not isinstance(manifest["files"], list):
            raise ValueError("not written by src.data.synthetic_dataset")
        missing = {"complete", "arguments", "counts", "total_seconds"} - set(manifest)
        if missing:
            raise ValueError(f"missing {sorted(missing)}")
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: unreadable synthetic-dataset manifest ({error})") from None
    return manifest


_OWN_TABLES = (*LABEL_CSVS.values(), SAMPLE_SUBMISSION, TRUTH_CSV, README)
_OWN_AUDIO = re.compile(rf"({'|'.join(AUDIO_DIRS.values())})/[0-9a-f]{{8}}\.wav")


def _is_own_file(relative: str) -> bool:
    """Whether a path could have been written by this module (guards what a manifest deletes)."""
    return relative in _OWN_TABLES or _OWN_AUDIO.fullmatch(relative) is not None


def _unowned_files(out_dir: Path) -> list[str]:
    """Files that a generation would replace although no manifest says they are ours."""
    found = [name for name in (*_OWN_TABLES, MANIFEST) if (out_dir / name).exists()]
    for directory in AUDIO_DIRS.values():
        if (out_dir / directory).is_dir() and any((out_dir / directory).glob("*.wav")):
            found.append(f"{directory}/*.wav")
    return found


def _remove_listed(out_dir: Path, files: Sequence[str]) -> None:
    """Delete the synthetic files of an earlier generation, and nothing else."""
    for relative in files:
        if _is_own_file(relative):
            (out_dir / relative).unlink(missing_ok=True)
    for directory in AUDIO_DIRS.values():
        path = out_dir / directory
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _install(
    staging: Path, out_dir: Path, files: list[str], old_files: Sequence[str], final_manifest: dict
) -> None:
    """Move the staged files into `out_dir`; the complete manifest is written last.

    An 'incomplete' manifest listing old and new files goes in first, so an interrupted
    install is recognised as a broken synthetic dataset and cleaned up by the next run.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    listed = sorted(set(old_files) | set(files))
    write_json_atomic(final_manifest | {"complete": False, "files": listed}, out_dir / MANIFEST)
    _remove_listed(out_dir, old_files)
    for directory in AUDIO_DIRS.values():
        (out_dir / directory).mkdir(exist_ok=True)
    for relative in files:
        os.replace(staging / relative, out_dir / relative)
    write_json_atomic(final_manifest, out_dir / MANIFEST)


def _changed_arguments(old: dict, new: dict) -> str:
    """'seed: 2019 -> 7, ...' for the arguments that differ ('' when none do)."""
    new = json.loads(json.dumps(new))  # compare in the manifest's JSON form
    changes = []
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before != after:
            if name == "classes":
                before, after = f"{len(before or [])} names", f"{len(after or [])} other names"
            changes.append(f"{name}: {before} -> {after}")
    return ", ".join(changes)


def _summary(out_dir: Path, manifest: dict, generated: bool) -> SyntheticSummary:
    counts = manifest["counts"]
    return SyntheticSummary(
        out_dir=out_dir,
        n_classes=len(manifest["arguments"]["classes"]),
        n_curated=counts["curated"],
        n_noisy=counts["noisy"],
        n_noisy_corrupted=counts["noisy_corrupted"],
        n_test=counts["test"],
        total_seconds=manifest["total_seconds"],
        generated=generated,
    )


def generate_dataset(
    out_dir: str | os.PathLike,
    *,
    curated_per_class: int = 4,
    noisy_per_class: int = 4,
    n_test: int = 80,
    noisy_wrong_share: float = 0.4,
    min_seconds: float = 0.3,
    max_seconds: float = 30.0,
    seed: int = 2019,
    classes: Sequence[str] = FAT2019_CLASSES,
    workers: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> SyntheticSummary:
    """Write a synthetic dataset into `out_dir` (see the module docstring).

    Files are generated in a staged folder beside `out_dir` (`.<name>.tmp-<pid>`) and then
    moved into place. A complete dataset made with the same arguments is kept as it is
    (`generated=False`); one made with other arguments is replaced only with `overwrite=True`;
    one whose installation was interrupted is replaced; files this module did not write are
    never touched (a dataset of unknown origin is refused). Other content of `out_dir`
    (experiments/, cache/, ...) is left alone. One generator writes a folder at a time
    (`out_dir/.lock`): a second one waits for it.
    """
    spec = SyntheticSpec(
        curated_per_class=curated_per_class,
        noisy_per_class=noisy_per_class,
        n_test=n_test,
        noisy_wrong_share=noisy_wrong_share,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        seed=seed,
        classes=tuple(classes),
    )
    require_int("workers", workers, minimum=1)
    # Absolute, so that `.` or `..` has a name to stage beside it under.
    out_dir = Path(os.path.abspath(out_dir))
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a directory")

    # One generator per folder: a second one waits, then finds the first's dataset (kept when
    # its arguments are the same). Holding the lock, it removes what killed generators left.
    with writer_lock(out_dir / LOCK_FILE, f"the synthetic dataset in {out_dir}", wait=True):
        remove_leftovers_of(out_dir)  # their staged folders
        remove_leftovers_of(out_dir / MANIFEST)  # their manifests written halfway
        return _generate(out_dir, spec, workers, progress, overwrite)


def _generate(
    out_dir: Path, spec: SyntheticSpec, workers: int, progress: bool, overwrite: bool
) -> SyntheticSummary:
    """generate_dataset's work, under the folder's lock."""
    old = read_manifest(out_dir)
    old_files: list[str] = []
    if old is None:
        unowned = _unowned_files(out_dir)
        if unowned:
            raise ValueError(
                f"{out_dir} already holds dataset files that were not generated by "
                f"src.data.synthetic_dataset ({', '.join(unowned)}); choose another directory"
            )
    else:
        old_files = old["files"]
        changed = _changed_arguments(old["arguments"], spec.arguments())
        present = all((out_dir / f).is_file() for f in old_files)
        if old["complete"] and not changed and present:
            return _summary(out_dir, old, generated=False)
        if old["complete"] and changed and not overwrite:
            raise ValueError(
                f"{out_dir} holds a synthetic dataset generated with other arguments "
                f"({changed}); pass overwrite=True (--force) to replace it"
            )

    plans = plan_clips(spec)
    with staged_folder(out_dir) as staging:
        files = _generate_into(staging, spec, plans, workers, progress)
        manifest = _manifest(spec, plans, files)
        _install(staging, out_dir, files, old_files, manifest)
    return _summary(out_dir, manifest, generated=True)
