"""Tiled prediction: a spectrogram of any length -> one probability row per tile.

See docs/original.md, "Tiled prediction".

A clip of width W is cut into n = max(1, ceil((W - (tile - step)) / step)) tiles of `tile`
frames, `step` apart, after padding it to step * n + (tile - step) frames with its own minimum
(half the extra width on the left, rounded down). Each tile then goes through the validation
transform (deltas, /100) and the model. Everything after the spectrogram runs in torch on the
model's device, and tiles of many clips share batches, so a GPU is kept busy.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from src.augment.deltas import stack_deltas
from src.config import PREDICTION_AMP_CHOICES, ConfigError
from src.library_internals import strip_compile_prefix
from src.models.argus_models import FreesoundModel, StackingModel
from src.runs import CheckpointError, argus_state, read_checkpoint

# The classes a checkpoint may name (its `model_name`): nothing else is built from a file.
CHECKPOINT_CLASSES = {cls.__name__: cls for cls in (FreesoundModel, StackingModel)}


def tile_layout(width: int, tile: int, step: int) -> tuple[int, int, int]:
    """(number of tiles, left padding, right padding) of a clip of `width` frames."""
    if width < 1 or tile < 1 or not 0 < step <= tile:
        raise ValueError(f"bad tiling: width {width}, tile {tile}, step {step}")
    overlap = tile - step
    n_tiles = max(1, math.ceil((width - overlap) / step))
    extra = step * n_tiles + overlap - width
    return n_tiles, extra // 2, extra - extra // 2


def make_tiles(spectrogram: torch.Tensor, tile: int, step: int) -> torch.Tensor:
    """(n_mels, W) -> (n_tiles, n_mels, tile), padded with the clip's minimum."""
    _, left, right = tile_layout(spectrogram.shape[1], tile, step)
    padded = torch.nn.functional.pad(spectrogram, (left, right), value=float(spectrogram.min()))
    return padded.unfold(1, tile, step).permute(1, 0, 2)


# Prediction precision when none is asked for: float32, whatever precision the checkpoint was
# trained with (its params keep the training setting; a bf16 model trained on an Ampere GPU
# must not predict in bf16 on a T4/P100 or a CPU, where bf16 is emulated). Scripts set it from
# their --amp option with `set_prediction_amp`.
_prediction_amp = "off"


def set_prediction_amp(amp: str | None) -> None:
    """The precision of every checkpoint loaded for prediction from now on (None: 'off')."""
    global _prediction_amp
    if amp is not None and amp not in PREDICTION_AMP_CHOICES:
        raise ValueError(f"amp must be one of {PREDICTION_AMP_CHOICES}, got {amp!r}")
    _prediction_amp = amp or "off"


def prediction_amp() -> str:
    return _prediction_amp


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", amp: str | None = None
):
    """An argus checkpoint loaded for prediction only (no optimizer, no loss).

    The file is read as plain data (`src.runs.read_checkpoint`, weights_only=True) and the
    model built here from its recorded class name and params, as `argus.load_model` would
    (which leaves `weights_only` to torch's default). Only the project's own classes are
    built. CNNs predict in `amp` (default: `prediction_amp()`, float32 unless a script's --amp
    asked otherwise), never in the precision recorded at training. Keys with torch.compile's
    `_orig_mod.` prefix (a network saved through its compiled wrapper) load as plain keys.
    """
    state = argus_state(read_checkpoint(path), path)
    model_class = CHECKPOINT_CLASSES.get(state["model_name"])
    if model_class is None:
        raise CheckpointError(
            f"{path}: unknown model class {state['model_name']!r} "
            f"(expected one of {', '.join(CHECKPOINT_CLASSES)})"
        )
    params = dict(state["params"], device=str(device), optimizer=None, loss=None)
    if "amp" in params:  # FreesoundModel; StackingModel has no precision setting
        params["amp"] = amp or _prediction_amp
    try:
        model = model_class(params)
        model.get_nn_module().load_state_dict(strip_compile_prefix(state["nn_state_dict"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"{path}: the weights do not fit the recorded network: {type(error).__name__}: {first}"
        ) from None
    model.eval()
    model.checkpoint_path = str(path)  # named by the output check (check_outputs)
    return model


def output_count(model) -> int:
    """How many classes an argus model (CNN or stacking MLP) outputs."""
    return int(model.params["nn_module"][1]["num_classes"])


class PredictionError(ConfigError):
    """A model whose outputs are not finite (a damaged checkpoint): the scripts' one-line
    error, naming the checkpoint."""


def check_outputs(output: torch.Tensor, name: str) -> torch.Tensor:
    """A model's outputs for finite input must be finite: NaN or inf means damaged weights."""
    if not bool(torch.isfinite(output).all()):
        raise PredictionError(
            f"{name}: the model gives non-finite outputs (NaN or infinite) for finite input: "
            "the checkpoint is damaged (NaN/inf weights?)"
        )
    return output


class Predictor:
    """Predicts tiles of spectrograms with one CNN checkpoint.

    Tiles are cut a batch at a time (never all tiles of a long clip at once), and every batch
    of outputs is checked: a non-finite probability for finite input is a PredictionError
    naming the checkpoint.
    """

    def __init__(
        self,
        model_or_path,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        tile_step: int | None = None,
        amp: str | None = None,
    ) -> None:
        self.name = "the model"
        if isinstance(model_or_path, str | Path):
            self.name = str(model_or_path)
            model_or_path = load_checkpoint(model_or_path, device, amp)
        self.model = model_or_path
        self.device = self.model.device
        self.tile = int(self.model.params.get("crop_size", 256))
        self.step = int(tile_step or self.tile // 4)
        self.batch_size = batch_size

    @property
    def n_outputs(self) -> int:
        """The model's class count (its outputs' width)."""
        return output_count(self.model)

    def _tiles(self, spectrogram) -> torch.Tensor:
        """(n_tiles, n_mels, tile): a view of the padded spectrogram, nothing copied per tile."""
        values = np.asarray(spectrogram, dtype=np.float32)
        if not values.flags.writeable:  # a read-only store map: torch wants memory it may own
            values = values.copy()
        spectrogram = torch.from_numpy(values).to(self.device)
        if not bool(torch.isfinite(spectrogram).all()):
            raise PredictionError(
                "a spectrogram to predict holds NaN or infinite values (from a spectrogram store "
                "made before log-mel was checked? delete that store to rebuild it)"
            )
        return make_tiles(spectrogram, self.tile, self.step)

    def predict_tiles(self, spectrograms: Sequence[np.ndarray | torch.Tensor]) -> list[np.ndarray]:
        """One (n_tiles, n_classes) float32 array per spectrogram."""
        return self._tile_outputs(spectrograms, embeddings=False)[0]

    def predict_tiles_and_embeddings(
        self, spectrograms: Sequence[np.ndarray | torch.Tensor]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per spectrogram, its (n_tiles, n_classes) probabilities and its (n_tiles,
        n_features) embeddings (the pooled features the main head sees), float32, from one
        pass through the network."""
        return self._tile_outputs(spectrograms, embeddings=True)

    def _tile_outputs(
        self, spectrograms: Sequence[np.ndarray | torch.Tensor], embeddings: bool
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        tiles = [self._tiles(s) for s in spectrograms]
        counts = [len(t) for t in tiles]
        if not tiles:
            return [], []
        # (clip, tile) of every tile in order; each batch stacks only its own tiles.
        where = [(clip, tile) for clip, count in enumerate(counts) for tile in range(count)]
        outputs, features = [], []
        for start in range(0, len(where), self.batch_size):
            chunk = where[start : start + self.batch_size]
            batch = stack_deltas(torch.stack([tiles[clip][tile] for clip, tile in chunk]))
            if embeddings:
                probabilities, embedding = self._forward_with_embedding(batch)
                features.append(check_outputs(embedding, self.name))
            else:
                probabilities = self._forward(batch)
            outputs.append(check_outputs(probabilities, self.name))
        bounds = np.cumsum(counts)[:-1]
        split = np.split(torch.cat(outputs).numpy(), bounds)
        return split, (np.split(torch.cat(features).numpy(), bounds) if embeddings else [])

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Probabilities (float32, on the CPU) of a batch of model inputs."""
        return self.model.predict(batch).float().cpu()

    def _forward_with_embedding(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities and embeddings (float32, on the CPU) of a batch of model inputs."""
        embed = getattr(self.model, "predict_with_embedding", None)
        if embed is None:
            raise ConfigError(f"{self.name}: a stacking network has no embeddings (a CNN has)")
        probabilities, embedding = embed(batch)
        return probabilities.float().cpu(), embedding.float().cpu()
