"""The model input: a log-mel image and its deltas, [x, delta, delta-delta] / 100.

One definition for every path: the deltas are `librosa.feature.delta(x, width=9,
mode='interp')`, which the original used, as two matrices (`delta_matrices`). `model_input`
applies them to one image in numpy (the training transform, `ToTensor`, in the loader
workers); `stack_deltas` to a batch of tensors on their device (tiled prediction, the GPU
augmentation path). Two array libraries, the same products: numpy's and torch's float32 matrix
products may differ in the last bit, and making the loader path use torch would change every
CPU training run's numbers by that bit.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

DELTA_WIDTH = 9  # librosa.feature.delta default, used by the original's ImageToTensor
TENSOR_SCALE = 100.0  # the original divided the stacked [x, d1, d2] by 100


@lru_cache(maxsize=16)
def delta_matrices(num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, T) float32 matrices D1, D2 with ``delta(x) == x @ D1`` and ``delta2(x) == x @ D2``.

    ``librosa.feature.delta(x, width=9, mode='interp')`` (what the original used) is SciPy's
    Savitzky-Golay filter along time (polynomial order = derivative order): linear in x and
    the same for every row, so a matrix product computes it exactly, batched and on any
    device. Column t holds the weights of the input frames for output frame t: inside, the
    filter's coefficients centred on t; in the first and last 4 frames, the derivative of the
    polynomial fitted to the first or last 9 frames. Both are computed here the way SciPy
    computes them (a least-squares solve, `numpy.polyfit`), so the float32 matrices equal
    librosa's bit for bit (tests/test_transforms.py), without importing librosa's feature
    module and scipy.signal: over a second of the start of every process that reads the stores
    (the training workers, predict_folds.py). The arrays are cached per T and read-only.
    """
    if num_frames < DELTA_WIDTH:
        raise ValueError(
            f"deltas need at least {DELTA_WIDTH} time frames (librosa 'interp' mode), "
            f"got {num_frames}"
        )
    half = DELTA_WIDTH // 2
    frames = np.arange(DELTA_WIDTH, dtype=np.float64)
    matrices = []
    for order in (1, 2):
        matrix = np.zeros((num_frames, num_frames))
        # scipy.signal.savgol_coeffs(9, order, deriv=order): convolution order, hence reversed
        powers = (frames - half)[::-1] ** np.arange(order + 1).reshape(-1, 1)
        target = np.zeros(order + 1)
        target[order] = math.factorial(order)
        taps = np.linalg.lstsq(powers, target, rcond=None)[0][::-1]
        for t in range(half, num_frames - half):
            matrix[t - half : t + half + 1, t] = taps
        # The edges: a polynomial of degree `order` fitted to each input impulse over the edge
        # window; its order-th derivative is constant, order! times the leading coefficient.
        for first, outputs in ((0, range(half)), (num_frames - DELTA_WIDTH, range(-half, 0))):
            window = np.zeros((DELTA_WIDTH, num_frames))  # rows of the identity, edge frames
            window[np.arange(DELTA_WIDTH), first + np.arange(DELTA_WIDTH)] = 1.0
            leading = np.polyfit(frames, window, order)[0]
            matrix[:, list(outputs)] = math.factorial(order) * leading[:, np.newaxis]
        matrix = matrix.astype(np.float32)
        matrix.flags.writeable = False
        matrices.append(matrix)
    return matrices[0], matrices[1]


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
