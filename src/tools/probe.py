"""A linear probe on a frozen trained network: the minutes-on-a-CPU way to new classes
(train_probe.py).

For each fold of `train_folds.csv`:

1. the source checkpoint of the fold (SOURCE: an experiment, fold k from its fold k; `NAME:K`,
   every fold from fold K; or one checkpoint path) embeds every curated clip: the pooled
   features its main head sees, per tile, with the tiling tag_audio.py uses (step crop/4).
   The embeddings are computed once per source checkpoint and kept in
   `<cache>/embeddings/`, under a name made of what shapes them (the curated store's key, the
   checkpoint's SHA-256, the tiling), as spectrograms are kept in their stores;
2. a scikit-learn logistic regression per class (one-vs-rest, so multi-label; features
   standardised) is fitted on the tiles of the other folds' clips, each clip weighing the same
   whatever its number of tiles;
3. the fold's clips are scored as tagging scores them (each tile's probabilities, their mean
   per clip): the fold's validation lwlrap.

The probe is saved as an experiment like any other: `fold_k/model-001-<lwlrap>.pth` is the
source network with its main head replaced by one Linear layer holding the regression
(standardisation folded in), so the sigmoid of the network's output is the regression's
probability, and tag_audio.py, predict_folds.py, the demo, ONNX export and the kernels use it
unchanged. `params.json` records the configuration (its `probe` settings) and, under
`source`, the SOURCE and the SHA-256 of each checkpoint used: a changed source is a changed
configuration (refused without --force).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from src.config import ConfigError, Paths, Vocabulary
from src.data.labels import folds_digest, load_folds
from src.data.store import SpectrogramStore, curated_store
from src.experiments import CNN_BASE
from src.models.argus_models import FreesoundModel, model_params
from src.models.metrics import lwlrap
from src.prediction.tiling import Predictor, load_checkpoint
from src.runs import (
    CHECKPOINT_FORMAT,
    FINISHED_FILE,
    CheckpointError,
    best_checkpoint,
    checkpoint_digest,
    fold_dir,
    fold_finished,
    prepare_experiment_dir,
    write_checkpoint,
)
from src.training.finetune import resolve_source
from src.utils import tmp_name, write_json_atomic

log = logging.getLogger(__name__)

PROBE = {"C": 1.0, "max_iter": 2000}  # the regression's settings, recorded in params.json
CACHE_FOLDER = "embeddings"
CACHE_VERSION = 1
EMBED_CHUNK = 32  # clips per call: their tiles share the network's batches


# --------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------


def source_checkpoints(
    spec: str, experiments_dir: Path, folds: Sequence[int], target: str
) -> dict[int, Path]:
    """The source checkpoint of each probe fold: SOURCE is a checkpoint path (every fold), an
    experiment NAME (fold k from its fold k) or NAME:K (every fold from fold K), read as
    `train_folds.py --init-from` reads it."""
    source = resolve_source(spec, experiments_dir, target)
    return {fold: path for fold, (_, path) in source.checkpoints(folds).items()}


def load_source(checkpoint: Path, device: str) -> FreesoundModel:
    """The source network, frozen; a checkpoint that is not a CNN is one error naming it."""
    model = load_checkpoint(checkpoint, device, amp="off")
    if not isinstance(model, FreesoundModel):
        raise CheckpointError(
            f"{checkpoint}: a {type(model).__name__} checkpoint; the probe needs a CNN "
            "(a first-level experiment's checkpoint)"
        )
    return model


# --------------------------------------------------------------------------------------
# Embeddings of the curated clips, cached
# --------------------------------------------------------------------------------------


@dataclass
class Embeddings:
    """Every tile's embedding of a set of clips: `tiles[i]` belongs to clip `clip[i]`."""

    fnames: list[str]
    clip: np.ndarray  # (n_tiles,) index into fnames
    tiles: np.ndarray  # (n_tiles, n_features) float32

    def rows(self, fnames: Sequence[str]) -> np.ndarray:
        """The tile rows of `fnames`."""
        wanted = np.isin(np.asarray(self.fnames), list(fnames))
        return np.flatnonzero(wanted[self.clip])


def cache_path(paths: Paths, store: SpectrogramStore, checkpoint: Path, predictor) -> Path:
    """Where the embeddings of `store` by `checkpoint` with this tiling are kept."""
    digest = checkpoint_digest(checkpoint)[:16]
    name = f"{store.path.name}-{digest}-t{predictor.tile}s{predictor.step}-v{CACHE_VERSION}.npz"
    return paths.cache_dir / CACHE_FOLDER / name


def curated_embeddings(
    paths: Paths,
    store: SpectrogramStore,
    checkpoint: Path,
    fnames: Sequence[str],
    device: str,
    batch_size: int = 64,
    progress: bool = True,
) -> Embeddings:
    """The embeddings of `fnames` (every curated clip) by the frozen `checkpoint`, read from
    the cache when it holds them, else computed and cached."""
    model = load_source(checkpoint, device)
    predictor = Predictor(model, device, batch_size)
    predictor.name = str(checkpoint)
    path = cache_path(paths, store, checkpoint, predictor)
    if path.is_file():
        with np.load(path) as cached:
            if list(cached["fnames"]) == list(fnames):
                log.info("reusing the embeddings in %s", path)
                return Embeddings(list(fnames), cached["clip"], cached["tiles"])
    log.info("embedding %d clips with %s into %s", len(fnames), checkpoint, path)
    per_clip = []
    bar = tqdm(total=len(fnames), desc="embeddings", unit="clip", disable=not progress)
    for start in range(0, len(fnames), EMBED_CHUNK):
        names = fnames[start : start + EMBED_CHUNK]
        # Copies: the store's read-only memory map is not handed to torch.
        spectrograms = [np.array(store[f]) for f in names]
        per_clip.extend(predictor.predict_tiles_and_embeddings(spectrograms)[1])
        bar.update(len(names))
    bar.close()
    clip = np.concatenate([np.full(len(t), i, np.int64) for i, t in enumerate(per_clip)])
    embeddings = Embeddings(list(fnames), clip, np.concatenate(per_clip).astype(np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, fnames=np.array(fnames), clip=clip, tiles=embeddings.tiles)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return embeddings


# --------------------------------------------------------------------------------------
# The regression
# --------------------------------------------------------------------------------------


@dataclass
class LinearHead:
    """logits = features @ weight.T + bias (the regression with its standardisation folded in)."""

    weight: np.ndarray  # (n_classes, n_features)
    bias: np.ndarray  # (n_classes,)

    def tile_probabilities(self, features: np.ndarray) -> np.ndarray:
        logits = features.astype(np.float64) @ self.weight.T + self.bias
        return 1.0 / (1.0 + np.exp(-logits))


def fit_head(
    features: np.ndarray, targets: np.ndarray, weights: np.ndarray, settings: dict = PROBE
) -> LinearHead:
    """One scikit-learn LogisticRegression per class (one-vs-rest: multi-label) on
    standardised features; a class without positive (or without negative) training tiles gets
    the constant its training share says."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features, sample_weight=weights)
    scaled = scaler.transform(features)
    n_classes, n_features = targets.shape[1], features.shape[1]
    weight, bias = np.zeros((n_classes, n_features)), np.zeros(n_classes)
    for c in range(n_classes):
        column = targets[:, c] > 0.5
        if column.all() or not column.any():
            share = float(np.average(column, weights=weights))
            share = min(max(share, 1e-4), 1 - 1e-4)
            bias[c] = np.log(share / (1 - share))
            continue
        regression = LogisticRegression(C=settings["C"], max_iter=settings["max_iter"])
        regression.fit(scaled, column, sample_weight=weights)
        weight[c], bias[c] = regression.coef_[0], regression.intercept_[0]
    # z = (x - mean) / scale: w.z + b = (w / scale).x + (b - w.(mean / scale))
    folded = weight / scaler.scale_
    return LinearHead(folded, bias - folded @ scaler.mean_)


def clip_probabilities(head: LinearHead, embeddings: Embeddings, fnames: Sequence[str]):
    """Each clip's probabilities as tagging gives them: the mean of its tiles'."""
    rows = embeddings.rows(fnames)
    probabilities = head.tile_probabilities(embeddings.tiles[rows])
    frame = pd.DataFrame(probabilities)
    frame["fname"] = np.asarray(embeddings.fnames)[embeddings.clip[rows]]
    means = frame.groupby("fname", sort=False).mean()
    return means.loc[list(fnames)].to_numpy()


# --------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------


def probe_network(source: FreesoundModel) -> tuple[str, dict]:
    """(architecture, arguments) of the probe: the source's trunk and pooling, a Linear main
    head. AuxSkipAttention's auxiliary heads are left out (SkipAttention, the same trunk)."""
    name, kwargs = source.params["nn_module"]
    kwargs = {k: v for k, v in dict(kwargs).items() if k != "num_classes"}
    return ("SkipAttention" if name == "AuxSkipAttention" else name), {**kwargs, "head": "linear"}


def probe_config(name: str, source: FreesoundModel) -> dict:
    """A first-level configuration (CNN_BASE) holding the probe network and settings."""
    network, kwargs = probe_network(source)
    config = copy.deepcopy(CNN_BASE)
    config.update(
        name=name,
        scale="full",
        model={"name": network, "params": kwargs},
        aux_weights=None,
        crop_size=int(source.params.get("crop_size", 256)),
        probe=dict(PROBE),
    )
    return config


def probe_state(source: FreesoundModel, network, head: LinearHead) -> dict:
    """The probe network's state: every trunk tensor from the source (strictly: same names,
    same shapes), the Linear head from the regression."""
    import torch

    from src.library_internals import plain_module

    theirs = plain_module(source.get_nn_module()).state_dict()
    state = network.state_dict()
    for key in state:
        if key.startswith("fc."):
            continue
        if key.startswith("aux"):  # RnnAuxSkipAttention's unused auxiliary heads keep their init
            continue
        if key not in theirs or theirs[key].shape != state[key].shape:
            raise ConfigError(f"the probe network's {key} does not come from the source network")
        state[key] = theirs[key].detach().clone()
    state["fc.weight"] = torch.as_tensor(head.weight, dtype=torch.float32)
    state["fc.bias"] = torch.as_tensor(head.bias, dtype=torch.float32)
    return state


@dataclass
class FoldResult:
    fold: int
    lwlrap: float
    checkpoint: Path
    seconds: float
    reused: bool = False


def train_probe(
    name: str,
    spec: str,
    paths: Paths,
    vocabulary: Vocabulary,
    folds: Sequence[int],
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    runtime: dict | None = None,
) -> list[FoldResult]:
    """Probe `folds` of `name` on the frozen SOURCE `spec` (see the module docstring)."""
    import torch

    from src.models import MODELS

    sources = source_checkpoints(spec, paths.experiments_dir, folds, name)
    split = load_folds(paths, folds)
    digest = folds_digest(split)  # of the whole table, as training and prediction record it
    store = curated_store(paths, progress=progress)
    split = split[split["fname"].isin(store.fnames)]  # undecodable clips are not in the store
    fnames = split["fname"].tolist()
    targets = vocabulary.encode_many(split["labels"].fillna("").tolist())
    first = load_source(sources[folds[0]], "cpu")
    config = probe_config(name, first)
    record = {
        "config": config,
        "classes": list(vocabulary.classes),
        "seed": 0,
        "folds": digest,
        "source": {
            "probe_of": spec,
            "checkpoints": {
                str(fold): {"file": str(path), "sha256": checkpoint_digest(path)}
                for fold, path in sources.items()
            },
        },
    }
    experiment_dir = paths.experiment_dir(name)
    prepare_experiment_dir(experiment_dir, record, force, runtime)
    network_name, kwargs = probe_network(first)
    params = model_params(config, len(vocabulary), "cpu")
    cache: dict[Path, Embeddings] = {}
    results = []
    for fold in folds:
        folder = fold_dir(experiment_dir, fold)
        done = best_checkpoint(folder)
        if fold_finished(folder) and done is not None:
            log.info("fold %d: already probed (%s)", fold, done[0].name)
            results.append(FoldResult(fold, done[1], done[0], 0.0, reused=True))
            continue
        started = time.perf_counter()
        checkpoint = sources[fold]
        if checkpoint not in cache:
            cache[checkpoint] = curated_embeddings(
                paths, store, checkpoint, fnames, device, progress=progress
            )
        embeddings = cache[checkpoint]
        validation = (split["fold"] == fold).to_numpy()
        train_names = [f for f, v in zip(fnames, validation) if not v]
        val_names = [f for f, v in zip(fnames, validation) if v]
        # embeddings.fnames is `fnames`: a tile's clip index is its row of `targets`.
        rows = embeddings.rows(train_names)
        clip = embeddings.clip[rows]
        weights = 1.0 / np.bincount(clip, minlength=len(fnames))[clip]  # a clip weighs 1
        head = fit_head(embeddings.tiles[rows], targets[clip], weights)
        scores = clip_probabilities(head, embeddings, val_names)
        score = float(lwlrap(targets[validation], scores))
        torch.manual_seed(0)  # the unused auxiliary heads of a recurrent source, if any
        network = MODELS[network_name](num_classes=len(vocabulary), **kwargs)
        state = probe_state(load_source(checkpoint, "cpu"), network, head)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("model-*.pth"):
            stale.unlink()
        path = folder / CHECKPOINT_FORMAT.format(epoch=1, monitor=score)
        write_checkpoint(path, "FreesoundModel", params, state)
        seconds = time.perf_counter() - started
        finished = {
            "best_checkpoint": path.name,
            "best_val_lwlrap": score,
            "probe_of": str(checkpoint),
            "train_clips": len(train_names),
            "val_clips": len(val_names),
            "seconds": seconds,
        }
        write_json_atomic(finished, folder / FINISHED_FILE)
        log.info(
            "fold %d: validation lwlrap %.4f (%d clips) in %.1f s",
            fold,
            score,
            len(val_names),
            seconds,
        )
        results.append(FoldResult(fold, score, path, seconds))
    return results
