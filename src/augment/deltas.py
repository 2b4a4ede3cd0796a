"""The model input: a log-mel image and its deltas, [x, delta, delta-delta] / 100.

One definition for every path: the deltas are `librosa.feature.delta(x, width=9,
mode='interp')`, which the original used, as two matrices taken from librosa itself
(`delta_matrices`). `model_input` applies them to one image in numpy (the training transform,
`ToTensor`, in the loader workers); `stack_deltas` to a batch of tensors on their device (tiled
prediction, the GPU augmentation path). Two array libraries, the same products: numpy's and
torch's float32 matrix products may differ in the last bit, and making the loader path use
torch would change every CPU training run's numbers by that bit.
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numpy as np
import torch

DELTA_WIDTH = 9  # librosa.feature.delta default, used by the original's ImageToTensor
TENSOR_SCALE = 100.0  # the original divided the stacked [x, d1, d2] by 100


@lru_cache(maxsize=16)
def delta_matrices(num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, T) float32 matrices D1, D2 with ``delta(x) == x @ D1`` and ``delta2(x) == x @ D2``.

    ``librosa.feature.delta(x, width=9, mode='interp')`` (what the original used) is a
    Savitzky-Golay filter along time: linear in x and identical for every row. Applying it to
    the identity therefore yields its matrix (row s is the response to a unit impulse at frame
    s), polynomial edge fits included. A matrix product is then exact, batchable and
    GPU-friendly. The arrays are cached per T and read-only.
    """
    if num_frames < DELTA_WIDTH:
        raise ValueError(
            f"deltas need at least {DELTA_WIDTH} time frames (librosa 'interp' mode), "
            f"got {num_frames}"
        )
    identity = np.eye(num_frames, dtype=np.float64)
    matrices = tuple(
        librosa.feature.delta(
            identity, width=DELTA_WIDTH, order=order, axis=-1, mode="interp"
        ).astype(np.float32)
        for order in (1, 2)
    )
    for matrix in matrices:
        matrix.flags.writeable = False
    return matrices


def model_input(x: np.ndarray) -> torch.Tensor:
    """One (F, T) image -> the (3, F, T) float32 tensor: numpy, as the loader workers build it."""
    x = np.asarray(x, dtype=np.float32)
    delta1, delta2 = delta_matrices(x.shape[1])
    stacked = np.stack([x, x @ delta1, x @ delta2]) / np.float32(TENSOR_SCALE)
    return torch.from_numpy(stacked.astype(np.float32, copy=False))


@lru_cache(maxsize=16)
def _torch_matrices(width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    d1, d2 = delta_matrices(width)
    return torch.from_numpy(np.array(d1)).to(device), torch.from_numpy(np.array(d2)).to(device)


def stack_deltas(x: torch.Tensor) -> torch.Tensor:
    """(B, F, T) -> (B, 3, F, T) = [x, delta, delta-delta] / 100, on x's device: the batched
    form of `model_input` (tiled prediction, the GPU augmentation path).

    Both run outside autocast in float32 (PyTorch keeps TF32 off for matrix products unless
    asked, and this project never asks), so they agree with `model_input` to float rounding.
    """
    d1, d2 = _torch_matrices(x.shape[-1], x.device)
    return torch.stack([x, x @ d1, x @ d2], dim=1) / TENSOR_SCALE
