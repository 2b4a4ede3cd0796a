"""The model input: a log-mel image and its deltas, [x, delta, delta-delta] / 100.

One implementation for every path: the training transform (`ToTensor`, one image in the loader
workers), the GPU augmentation path (batches on the device) and tiled prediction. The deltas are
`librosa.feature.delta(x, width=9, mode='interp')`, which the original used, written as a 9-tap
filter whose coefficients come from librosa itself (`delta_matrices`).
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


def delta_first_frames(width: int) -> np.ndarray:
    """First input frame of the 9-frame window that delta output frame t reads:
    clip(t - 4, 0, W - 9), the centred Savitzky-Golay window inside, the edge windows of
    librosa's 'interp' polynomial fits at the first and last 4 frames."""
    return np.clip(np.arange(width) - DELTA_WIDTH // 2, 0, width - DELTA_WIDTH)


@lru_cache(maxsize=16)
def delta_coefficients(width: int, device: torch.device) -> torch.Tensor:
    """`delta_matrices(width)` as a banded filter: (2, 9, W) float32 with
    delta_order[t] = sum_k coefficients[order, k, t] * x[first(t) + k]."""
    frames = np.arange(width)
    rows = delta_first_frames(width)[None, :] + np.arange(DELTA_WIDTH)[:, None]
    bands = np.stack([matrix[rows, frames] for matrix in delta_matrices(width)])
    return torch.as_tensor(bands, dtype=torch.float32, device=device)


def stack_deltas(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, 3, H, W) = [x, delta, delta-delta] / 100, on x's device.

    A 9-tap filter on slices rather than `x @ D`: the same sums without the zero terms, and
    no matrix product whose precision TF32 settings could lower.
    """
    batch, height, width = x.shape
    coefficients = delta_coefficients(width, x.device)
    out = x.new_zeros((batch, 3, height, width))
    out[:, 0] = x
    deltas = out[:, 1:]
    edge = DELTA_WIDTH // 2
    interior = width - 2 * edge  # output frames [edge, W - edge) read x[t - edge + k]
    source = x[:, None]  # (B, 1, H, W), broadcast over the two delta orders
    for k in range(DELTA_WIDTH):
        tap = coefficients[:, k, None, :]  # (2, 1, W): per order and output frame
        deltas[..., :edge].addcmul_(source[..., k : k + 1], tap[..., :edge])
        deltas[..., edge:-edge].addcmul_(source[..., k : k + interior], tap[..., edge:-edge])
        last = width - DELTA_WIDTH + k
        deltas[..., -edge:].addcmul_(source[..., last : last + 1], tap[..., -edge:])
    return out.div_(TENSOR_SCALE)
