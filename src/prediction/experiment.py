"""Predictions of an experiment's fold models: out-of-fold, test, the fold blend, CV.

Writes under <data>/predictions/<experiment>/ (the layout is src.runs'): every fold's
out-of-fold and test tile probabilities and tile means, the geometric mean over folds of the
test predictions, and `val_lwlrap.json` / `val_lwlrap.png` (overall and per-class lwlrap of
the out-of-fold predictions).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from src.config import N_FOLDS, Paths, Vocabulary
from src.data.labels import folds_digest, load_folds, read_labels_csv
from src.data.store import curated_store, test_store
from src.experiments import tile_steps
from src.prediction.tables import (
    align_to_sample_submission,
    aligned_arrays,
    check_submission,
    cv_scores,
    probs_frame,
    save_cv,
)
from src.prediction.tiling import Predictor
from src.runs import (
    DONE_FILE,
    OOF_DIR,
    PROBS_FILE,
    TEST_DIR,
    check_experiment_classes,
    check_trained_folds,
    checkpoint_classes,
    checkpoint_digest,
    find_experiment,
    fold_dir,
    read_probs,
)
from src.utils import (
    LOCK_FILE,
    geometric_mean,
    progress_shown,
    remove_leftovers,
    save_npy_atomic,
    write_csv_atomic,
    write_json_atomic,
    writer_lock,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Predicting a set of clips with one model
# --------------------------------------------------------------------------------------


def predict_clips(
    predictor,
    store,
    fnames: Sequence[str],
    out_dir: Path,
    classes: Sequence[str],
    desc: str,
    progress: bool = True,
    save_tiles: bool = True,
) -> pd.DataFrame:
    """Tile means of `fnames` saved as probs.csv, and with `save_tiles` each clip's tile
    predictions as <fname>.npy."""
    means = []
    chunk = 32  # clips per call: tiles of several clips share the model's batches
    bar = tqdm(
        total=len(fnames),
        desc=desc,
        unit="clip",
        disable=not (progress and progress_shown()),
        leave=False,
    )
    for start in range(0, len(fnames), chunk):
        names = fnames[start : start + chunk]
        for fname, tiles in zip(names, predictor.predict_tiles([store[f] for f in names])):
            if save_tiles:
                save_npy_atomic(tiles.astype(np.float32), out_dir / f"{fname}.npy")
            means.append(tiles.mean(axis=0))
        bar.update(len(names))
    bar.close()
    frame = probs_frame(
        list(fnames), np.stack(means) if means else np.zeros((0, len(classes))), classes
    )
    write_csv_atomic(frame, out_dir / PROBS_FILE)
    return frame


# --------------------------------------------------------------------------------------
# The fold blend
# --------------------------------------------------------------------------------------


def fold_blend(per_fold: Sequence[np.ndarray]) -> np.ndarray:
    """An experiment's predictions from its fold models' predictions of the same rows, each
    (rows, n_classes) in one row and class order: their geometric mean over folds, element by
    element (docs/original.md, "Blending").

    With each fold's tile means as rows it gives the experiment's clip predictions (its test
    table, a first-level input of the final ensemble, the tags of an experiment); with one
    clip's tiles as rows, the experiment's prediction of each tile; with the outputs of a
    stacking experiment's fold MLPs, that experiment's prediction.
    """
    return geometric_mean(list(per_fold))


def fold_blend_frames(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """`fold_blend` of the fold models' tables of tile means (fname + classes), rows in the
    first table's fname order and columns in its class order (matched by name)."""
    fnames, arrays = aligned_arrays(frames)
    return probs_frame(fnames, fold_blend(arrays), frames[0].columns[1:])


# --------------------------------------------------------------------------------------
# A whole experiment
# --------------------------------------------------------------------------------------


def prediction_key(predictor, store, fnames: Sequence[str], classes, checkpoint: Path) -> dict:
    """What a prediction folder's content is made from (its done.json): the checkpoint's bytes,
    the spectrogram store (its key covers every file's name, size and mtime and the audio
    settings), the clips, the tiling and precision, and the classes naming the columns."""
    return {
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": checkpoint_digest(checkpoint),
        "store": store.path.name,
        "clips": len(fnames),
        "fnames_sha1": hashlib.sha1("\n".join(fnames).encode()).hexdigest(),
        "tile": predictor.tile,
        "tile_step": predictor.step,
        "amp": predictor.model.params.get("amp", "off"),
        "classes": list(classes),
    }


WHY = {  # done.json field that differs -> what changed, for the log
    "checkpoint_sha256": "the checkpoint changed",
    "store": "the clips' files changed",
    "fnames_sha1": "the list of clips changed",
    "tile": "the tiling changed",
    "tile_step": "the tiling changed",
    "amp": "the precision changed",
    "classes": "the classes changed",
}


def predict_set_cached(
    predictor,
    store,
    fnames: Sequence[str],
    out_dir: Path,
    classes,
    checkpoint: Path,
    desc: str,
    progress: bool,
    save_tiles: bool = True,
) -> pd.DataFrame:
    """`predict_clips`, skipped when `out_dir` already holds predictions made from the same
    `prediction_key`. Columns (probs.csv and the <fname>.npy tiles) are `classes`: the model's
    own recorded classes, in its output order."""
    fnames = list(fnames)
    key = prediction_key(predictor, store, fnames, classes, checkpoint)
    done = out_dir / DONE_FILE
    before = json.loads(done.read_text()) if done.is_file() else None
    wanted = [out_dir / PROBS_FILE, *(out_dir / f"{f}.npy" for f in fnames if save_tiles)]
    lost = before == key and not all(path.is_file() for path in wanted)
    if before == key and not lost:
        log.info(
            "%s: reusing the predictions in %s (same checkpoint, clips and tiling)", desc, out_dir
        )
        return read_probs(out_dir / PROBS_FILE, classes, done)
    if lost:
        why = "some of its files were deleted"
    elif before is None:
        why = "no earlier predictions"
    elif set(before) != set(key):
        why = "made by an older version"
    else:
        changed = sorted({WHY.get(field, "") for field in key if before.get(field) != key[field]})
        why = ", ".join(c for c in changed if c)
    log.info("%s: predicting into %s: %s", desc, out_dir, why)
    # Stale files go first: a clip renamed or dropped must not leave its old tiles behind, and
    # an interrupted run must not leave a done.json that vouches for them.
    done.unlink(missing_ok=True)
    if out_dir.is_dir():
        for stale in [*out_dir.glob("*.npy"), out_dir / PROBS_FILE]:
            stale.unlink(missing_ok=True)
    frame = predict_clips(predictor, store, fnames, out_dir, classes, desc, progress, save_tiles)
    write_json_atomic(key, done)
    return frame


def present(fnames: Sequence[str], store, what: str) -> list[str]:
    """The clips that have spectrograms; the others failed to decode and are reported."""
    kept = [f for f in fnames if f in store]
    if len(kept) < len(fnames):
        lost = [f for f in fnames if f not in store]
        log.warning(
            "%s: %d clips could not be decoded and are skipped: %s", what, len(lost), lost[:10]
        )
    return kept


def predict_experiment(name: str, paths: Paths, *args, **kwargs) -> dict:
    """`_predict_experiment` (arguments and result) by the one writer of the experiment's
    prediction folder: a second process stops with LockedError naming the holder. Holding
    the lock, it first removes what a killed writer left (temporary files)."""
    out = paths.prediction_dir(name)
    with writer_lock(out / LOCK_FILE, f"the predictions of {name} ({out})"):
        remove_leftovers(out, recursive=True)
        return _predict_experiment(name, paths, *args, **kwargs)


def _predict_experiment(
    name: str,
    paths: Paths,
    vocabulary: Vocabulary,
    device: str = "cpu",
    batch_size: int = 64,
    progress: bool = True,
    fill_missing: bool = False,
    folds: Sequence[int] | None = None,
) -> dict:
    """Out-of-fold and test predictions of every fold model (or of `folds` only), the fold
    blend, and the CV (of the out-of-fold predictions made)."""
    experiment = find_experiment(paths.experiments_dir, name)
    checkpoints = experiment.checkpoints(range(N_FOLDS) if folds is None else folds)
    steps = tile_steps(experiment.config)
    # The models' outputs are named by their own recorded classes; the dataset's classes must be
    # the same set (matched by name in the CV and the submission): checked before any work.
    check_experiment_classes(paths, vocabulary, [name])
    out = paths.prediction_dir(name)
    validate = not paths.kernel  # a kernel predicts the test set only, as the original's
    if validate:
        folds = load_folds(paths, checkpoints)  # checked before any extraction
        check_trained_folds(paths.experiment_dir(name), folds_digest(folds), paths.folds_csv)
    test = test_store(paths)
    if validate:
        curated = curated_store(paths)

    test_frames, val_frames = [], []
    for fold, checkpoint in checkpoints.items():
        predictor = Predictor(checkpoint, device, batch_size)
        classes = checkpoint_classes(checkpoint, predictor.n_outputs)
        folder = fold_dir(out, fold)
        if validate:
            # Every clip of the fold, also those the corrections remove, as the original
            # (docs/original.md, "Out-of-fold and CV").
            fnames = present(folds.loc[folds["fold"] == fold, "fname"].tolist(), curated, "curated")
            predictor.step = steps["oof"]
            val_frames.append(
                predict_set_cached(
                    predictor,
                    curated,
                    fnames,
                    folder / OOF_DIR,
                    classes,
                    checkpoint,
                    f"{name} fold {fold} val",
                    progress,
                )
            )
        predictor.step = steps["test"]
        test_frames.append(
            predict_set_cached(
                predictor,
                test,
                test.fnames,
                folder / TEST_DIR,
                classes,
                checkpoint,
                f"{name} fold {fold} test",
                progress,
            )
        )
    blend = fold_blend_frames(test_frames)
    write_csv_atomic(blend, out / PROBS_FILE)
    summary = {"experiment": name, "test_clips": len(blend), "probs": str(out / PROBS_FILE)}
    if paths.kernel:
        submission = align_to_sample_submission(blend, paths, fill_missing)
        check_submission(submission, vocabulary.classes, len(submission))
        write_csv_atomic(submission, paths.submission)
        summary["submission"] = str(paths.submission)
    else:
        # CV against the original labels of all curated clips, comparable with the original's
        # (docs/original.md, quirk "Two validations").
        truth = read_labels_csv(paths.train_curated_csv, vocabulary)
        scores = cv_scores(pd.concat(val_frames, ignore_index=True), truth, vocabulary)
        save_cv(scores, out, name)
        summary["overall_lwlrap"] = scores["overall_lwlrap"]
    return summary
