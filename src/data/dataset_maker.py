"""Your own recordings -> the Kaggle layout the pipeline trains on (`make_dataset.py`).

A source is either

* a folder with one sub-folder per class: every audio file below a class folder (at any depth)
  is a clip of that class; or
* a CSV with a path column (`path`, `fname` or `file`) and a labels column (`labels` or
  `label`): paths relative to the CSV (or absolute), several labels comma-separated.

The output folder gets `train_curated/` + `train_curated.csv`, optionally `train_noisy/` +
`train_noisy.csv` (`--noisy`) and `test/` + `test_labels.csv` (`--test` or `--test-share`),
`sample_submission.csv` with the class columns, `sources.csv` (each written file and the
recording it came from) and `dataset.json` (the command and its report). Files are linked
(symlinks by default) or copied under unique content-derived names.

What is found on the way is reported, not silently fixed: class names changed to be valid CSV
columns, empty class folders (left out of the classes), recordings present more than once
(kept once; with the union of their labels when filed under several classes), undecodable
files and missing CSV paths (left out, named), files that are not audio (ignored).

The layout is written in a temporary folder beside the output and renamed into place at the
end, so an error leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile

from src.config import ConfigError
from src.data.audio import AUDIO_EXTENSIONS, AudioDecodeError, decode, file_failure
from src.utils import FILE_NOT_FOUND, file_problem, readable_files, staged_folder

PATH_COLUMNS = ("path", "fname", "file")
LABEL_COLUMNS = ("labels", "label")
LINK_MODES = ("symlink", "hardlink", "copy")
MARKER = "dataset.json"
SPLITS = {
    "curated": ("train_curated", "train_curated.csv"),
    "noisy": ("train_noisy", "train_noisy.csv"),
    "test": ("test", "test_labels.csv"),
}


@dataclass
class Clip:
    path: Path  # the recording
    labels: list[str]  # cleaned class names, in order of first appearance
    digest: str = ""  # sha1 of the file's bytes


@dataclass
class Report:
    """Everything found while reading the sources, for the console and dataset.json."""

    renamed: dict[str, str] = field(default_factory=dict)  # raw class name -> cleaned
    empty_classes: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)  # "path: reason"
    missing: list[str] = field(default_factory=list)  # CSV paths that do not exist
    not_audio: list[str] = field(default_factory=list)
    not_regular: list[str] = field(default_factory=list)  # "path: a FIFO, ..." (never opened)
    duplicates: list[str] = field(default_factory=list)  # "path = kept path"
    merged_labels: list[str] = field(default_factory=list)  # duplicates filed under other classes
    unknown_labels: list[str] = field(default_factory=list)  # noisy/test labels not in classes
    cross_split: list[str] = field(default_factory=list)  # same recording in two splits

    def lines(self) -> list[str]:
        out = []
        if self.renamed:
            changes = ", ".join(f"{a!r} -> {b!r}" for a, b in self.renamed.items())
            out.append(f"class names cleaned for CSV columns ({len(self.renamed)}): {changes}")
        for title, items in (
            ("empty classes, left out", self.empty_classes),
            ("undecodable files, left out", self.undecodable),
            ("CSV paths not found, left out", self.missing),
            ("not regular readable files (FIFOs, sockets, links, ...), left out", self.not_regular),
            ("duplicate recordings, kept once", self.duplicates),
            ("duplicates filed under several classes, labels merged", self.merged_labels),
            ("labels outside the training classes, left out", self.unknown_labels),
            ("recordings in two splits", self.cross_split),
            ("files that are not audio, ignored", self.not_audio),
        ):
            if items:
                shown = "; ".join(items[:20])
                if len(items) > 20:
                    shown += f"; ... ({len(items) - 20} more, all in dataset.json)"
                out.append(f"{title} ({len(items)}): {shown}")
        return out


# --------------------------------------------------------------------------------------
# Class names
# --------------------------------------------------------------------------------------


def clean_class_name(name: str) -> str:
    """A class name usable as a CSV column and a label: no commas, quotes or spaces.

    Letters of any script, digits and `_ - ( ) .` are kept; every other run of characters
    becomes one `_` (Kaggle's own names look like `Bathtub_(filling_or_washing)`).
    """
    text = unicodedata.normalize("NFC", str(name)).strip()
    text = re.sub(r"[^\w\-().]+", "_", text)
    text = re.sub(r"_+", "_", text).strip("_")
    if not text:
        raise ConfigError(f"class name {name!r} holds no usable character")
    return text


class ClassNames:
    """Raw -> cleaned names, refusing two raw names that clean to the same column."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.raw_of: dict[str, str] = {}

    def __call__(self, raw: str) -> str:
        cleaned = clean_class_name(raw)
        other = self.raw_of.setdefault(cleaned, raw)
        if other != raw:
            raise ConfigError(f"class names {other!r} and {raw!r} both become {cleaned!r}")
        if cleaned != raw:
            self.report.renamed[raw] = cleaned
        return cleaned


# --------------------------------------------------------------------------------------
# Reading a source
# --------------------------------------------------------------------------------------


def is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def decode_problem(path: Path) -> str | None:
    """None when `path` decodes to at least one sample, else the reason."""
    problem = file_problem(path)
    if problem is not None:
        return problem
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError as error:
        return error.strerror or str(error)
    try:
        info = soundfile.info(str(path))
        if info.frames > 0:
            return None
    except (soundfile.LibsndfileError, RuntimeError, TypeError):
        pass
    try:  # formats libsndfile cannot read go through the pipeline's own fallback
        with file_failure(path):  # any decoder failure is this file's
            data, _ = decode(path)
    except AudioDecodeError as error:
        return error.reason
    return None if data.size else "no audio samples"


def read_folder(root: Path, names: ClassNames, report: Report) -> list[Clip]:
    """One sub-folder per class; audio files at any depth below it."""
    clips = []
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ConfigError(f"{root}: no class folders (expected one sub-folder per class)")
    for entry in sorted(root.iterdir()):
        if entry.is_file():
            report.not_audio.append(f"{entry} (outside any class folder)")
    for folder in classes:
        entries = (
            p
            for p in folder.rglob("*")
            if not p.is_dir()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        files, odd = readable_files(entries)
        report.not_regular.extend(odd)
        audio = [p for p in files if is_audio(p)]
        report.not_audio.extend(str(p) for p in files if not is_audio(p))
        name = names(folder.name)
        if not audio:
            report.empty_classes.append(name)
            continue
        clips.extend(Clip(p, [name]) for p in audio)
    return clips


def read_csv_source(path: Path, names: ClassNames, report: Report) -> list[Clip]:
    """`path,labels` rows; paths relative to the CSV's folder."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise ConfigError(f"{path}: not a readable CSV ({error})") from None
    path_column = next((c for c in PATH_COLUMNS if c in table.columns), None)
    label_column = next((c for c in LABEL_COLUMNS if c in table.columns), None)
    if path_column is None or label_column is None:
        raise ConfigError(
            f"{path}: expected a path column ({'/'.join(PATH_COLUMNS)}) and a labels column "
            f"({'/'.join(LABEL_COLUMNS)}), found {list(table.columns)}"
        )
    clips, unlabelled = [], []
    for row, (file, labels) in enumerate(zip(table[path_column], table[label_column]), start=2):
        parts = [part.strip() for part in str(labels).split(",") if part.strip()]
        if not str(file).strip():
            raise ConfigError(f"{path}: line {row} has no path")
        audio = (path.parent / file).resolve() if not Path(file).is_absolute() else Path(file)
        if not parts:
            unlabelled.append(f"line {row} ({file})")
            continue
        problem = file_problem(audio)
        if problem == FILE_NOT_FOUND:
            report.missing.append(str(file))
            continue
        if problem is not None:
            report.not_regular.append(f"{audio}: {problem}")
            continue
        clips.append(Clip(audio, list(dict.fromkeys(names(p) for p in parts))))
    if unlabelled:
        raise ConfigError(f"{path}: rows without labels ({len(unlabelled)}): {unlabelled[:5]}")
    return clips


def read_source(source: str | os.PathLike, names: ClassNames, report: Report) -> list[Clip]:
    """The clips of a folder or CSV source: decodable, each recording once."""
    source = Path(source).expanduser()
    if source.is_dir():
        clips = read_folder(source, names, report)
    elif source.is_file():
        clips = read_csv_source(source, names, report)
    else:
        raise ConfigError(f"{source}: no such folder or CSV file")
    good = []
    for clip in clips:
        problem = decode_problem(clip.path)
        if problem is None:
            good.append(clip)
        else:
            report.undecodable.append(f"{clip.path}: {problem}")
    return merge_duplicates(good, report)


def file_digest(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def merge_duplicates(clips: list[Clip], report: Report) -> list[Clip]:
    """One clip per distinct content; a recording filed under several classes gets them all."""
    kept: dict[str, Clip] = {}
    for clip in clips:
        clip.digest = file_digest(clip.path)
        first = kept.get(clip.digest)
        if first is None:
            kept[clip.digest] = clip
            continue
        report.duplicates.append(f"{clip.path} = {first.path}")
        new = [label for label in clip.labels if label not in first.labels]
        if new:
            first.labels.extend(new)
            report.merged_labels.append(f"{first.path}: {','.join(first.labels)}")
    return list(kept.values())


# --------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------


def stratified_split(clips: list[Clip], share: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Hold out about `share` of each class (a clip counts for its rarest label), keeping at
    least one clip of every class in training."""
    if not 0 < share < 1:
        raise ConfigError(f"--test-share must be between 0 and 1, got {share}")
    counts = Counter(label for clip in clips for label in clip.labels)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, clip in enumerate(clips):
        groups[min(clip.labels, key=lambda label: (counts[label], label))].append(index)
    rng = np.random.default_rng(seed)
    test_index = set()
    for key in sorted(groups):
        members = groups[key]
        n_test = min(round(share * len(members)), len(members) - 1)
        test_index.update(rng.permutation(members)[:n_test].tolist())
    train = [c for i, c in enumerate(clips) if i not in test_index]
    test = [c for i, c in enumerate(clips) if i in test_index]
    return train, test


def keep_known_labels(clips: list[Clip], classes: list[str], what: str, report: Report):
    """Clips of a noisy or test source: labels outside the training classes are left out."""
    known = set(classes)
    kept = []
    for clip in clips:
        unknown = [label for label in clip.labels if label not in known]
        if unknown:
            report.unknown_labels.append(f"{what} {clip.path}: {','.join(unknown)}")
            clip.labels = [label for label in clip.labels if label in known]
        if clip.labels:
            kept.append(clip)
    return kept


# --------------------------------------------------------------------------------------
# Writing the layout
# --------------------------------------------------------------------------------------


def unique_name(clip: Clip, used: set[str]) -> str:
    """Content-derived, ASCII, unique within the dataset: <sha1[:12]><ext>."""
    stem, suffix = clip.digest[:12], clip.path.suffix.lower()
    name, n = f"{stem}{suffix}", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}{suffix}"
    used.add(name)
    return name


def place(source: Path, target: Path, mode: str) -> None:
    if mode == "symlink":
        target.symlink_to(source.resolve())
    elif mode == "hardlink":
        try:
            os.link(source, target)
        except OSError:  # another file system: copy instead
            shutil.copy2(source, target)
    else:
        shutil.copy2(source, target)


@dataclass
class MadeDataset:
    out: Path
    classes: list[str]
    counts: pd.DataFrame  # class, curated, noisy, test: clips per class and split
    clips: dict[str, int]  # clips per split
    report: Report


def make_dataset(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    noisy: str | os.PathLike | None = None,
    test: str | os.PathLike | None = None,
    test_share: float | None = None,
    seed: int = 0,
    mode: str = "symlink",
    force: bool = False,
) -> MadeDataset:
    """Read the sources, check them, and write the Kaggle layout into `out` atomically."""
    if mode not in LINK_MODES:
        raise ConfigError(f"mode must be one of {LINK_MODES}, got {mode!r}")
    if test is not None and test_share is not None:
        raise ConfigError("give either --test (a test source) or --test-share, not both")
    out = Path(out).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ConfigError(f"{out}: exists and is not empty (use --force to replace it)")
        if not (out / MARKER).is_file():
            raise ConfigError(
                f"{out}: not made by make_dataset.py ({MARKER} missing); --force only replaces "
                "folders it made"
            )

    report = Report()
    names = ClassNames(report)
    curated = read_source(source, names, report)
    if not curated:
        raise ConfigError(f"{source}: no decodable recordings found")
    splits = {"curated": curated}
    if test_share is not None:
        splits["curated"], splits["test"] = stratified_split(curated, test_share, seed)
    classes = sorted({label for clip in splits["curated"] for label in clip.labels})
    if noisy is not None:
        splits["noisy"] = keep_known_labels(
            read_source(noisy, names, report), classes, "noisy", report
        )
    if test is not None:
        splits["test"] = keep_known_labels(
            read_source(test, names, report), classes, "test", report
        )
    # Empty class folders of the noisy or test sources are not empty training classes.
    report.empty_classes = sorted(set(report.empty_classes) - set(classes))
    seen: dict[str, str] = {}
    for split, clips in splits.items():
        for clip in clips:
            other = seen.setdefault(clip.digest, split)
            if other != split:
                report.cross_split.append(f"{clip.path} ({other} and {split})")

    with staged_folder(out) as tmp:
        used: set[str] = set()
        sources, counts = [], {}
        for split, clips in splits.items():
            folder, csv_name = SPLITS[split]
            (tmp / folder).mkdir()
            rows = []
            for clip in clips:
                fname = unique_name(clip, used)
                place(clip.path, tmp / folder / fname, mode)
                rows.append((fname, ",".join(clip.labels)))
                sources.append((split, f"{folder}/{fname}", str(clip.path)))
            table = pd.DataFrame(rows, columns=["fname", "labels"])
            table.to_csv(tmp / csv_name, index=False)
            counts[split] = Counter(label for clip in clips for label in clip.labels)
        test_fnames = [f for split, f, _ in sources if split == "test"]
        submission = pd.DataFrame(0.0, index=range(len(test_fnames)), columns=classes)
        submission.insert(0, "fname", [Path(f).name for f in test_fnames])
        submission.to_csv(tmp / "sample_submission.csv", index=False)
        pd.DataFrame(sources, columns=["split", "file", "source"]).to_csv(
            tmp / "sources.csv", index=False
        )
        count_table = pd.DataFrame(
            {
                "class": classes,
                **{split: [counts.get(split, {}).get(c, 0) for c in classes] for split in SPLITS},
            }
        )
        record = {
            "source": str(source),
            "noisy": None if noisy is None else str(noisy),
            "test": None if test is None else str(test),
            "test_share": test_share,
            "seed": seed,
            "mode": mode,
            "classes": classes,
            "clips": {split: len(clips) for split, clips in splits.items()},
            "report": report.__dict__,
        }
        (tmp / MARKER).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    return MadeDataset(out, classes, count_table, record["clips"], report)
