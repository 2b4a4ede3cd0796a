"""Pictures of results: training curves, per-class lwlrap, spectrograms (PNG, Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; the live demo picks its own interactive backend
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from src.utils import tmp_name


def _save(figure, path: str | os.PathLike, dpi: int = 100, palette: bool = False) -> None:
    """Write `figure` to a temporary name and rename it; `palette`: as a PNG of 256 colours
    (the colour maps have 256, so the picture keeps its look at a third of the bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)  # per process: two runs drawing the same picture never mix their bytes
    kind = path.suffix.lstrip(".") or "png"
    try:
        figure.savefig(tmp, format=kind, dpi=dpi, bbox_inches="tight")
        if palette and kind == "png":
            from PIL import Image

            with Image.open(tmp) as image:
                small = image.convert("RGB").quantize(256)
            small.save(tmp, format="PNG", optimize=True)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        tmp.unlink(missing_ok=True)


def plot_training_curves(
    log: pd.DataFrame, png_path: str | os.PathLike, title: str, best: int | None = None
) -> None:
    """Losses, validation lwlrap and learning rate per epoch, from argus's CSV log; `best`, the
    row of the epoch the fold keeps, is marked on the lwlrap."""
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for column in ("train_loss", "val_loss", "val_bce"):
        if column in log:
            axes[0].plot(log["epoch"], log[column], marker=".", label=column)
    axes[0].set_title("loss")
    axes[0].legend()
    if "val_lwlrap" in log:
        axes[1].plot(log["epoch"], log["val_lwlrap"], marker=".", color="tab:green")
        if best is not None:
            epoch, score = log["epoch"].iloc[best], log["val_lwlrap"].iloc[best]
            axes[1].plot([epoch], [score], "*", color="tab:red", markersize=12,
                         label=f"kept: {score:.4f} at epoch {epoch}")  # fmt: skip
            axes[1].legend(loc="lower right")
    axes[1].set_title("validation lwlrap")
    lr = pd.to_numeric(log["lr"].astype(str).str.strip("[]").str.split(",").str[0], errors="coerce")
    axes[2].semilogy(log["epoch"], lr, marker=".", color="tab:red")
    axes[2].set_title("learning rate")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    _save(figure, png_path)


def plot_per_class(values: Mapping[str, float], png_path: str | os.PathLike, title: str) -> None:
    """Horizontal bars of a per-class score, worst classes at the top."""
    names = sorted(values, key=values.get)
    scores = [values[name] for name in names]
    figure, axis = plt.subplots(figsize=(8, max(4, 0.18 * len(names))))
    axis.barh(range(len(names)), scores, color=plt.cm.viridis(np.clip(scores, 0, 1)))
    axis.set_yticks(range(len(names)), names, fontsize=7)
    axis.set_xlim(0, 1)
    axis.invert_yaxis()
    axis.set_title(title)
    axis.grid(axis="x", alpha=0.3)
    _save(figure, png_path)


def plot_spectrogram(
    spectrogram: np.ndarray,
    png_path: str | os.PathLike,
    title: str,
    lines: Sequence[str] = (),
) -> None:
    """A log-mel spectrogram (rows = mel bands, low at the bottom) with optional notes below."""
    figure, axis = plt.subplots(figsize=(10, 4))
    image = axis.imshow(spectrogram, origin="lower", aspect="auto", cmap="magma")
    figure.colorbar(image, ax=axis, label="dB")
    axis.set_xlabel("frame")
    axis.set_ylabel("mel band")
    axis.set_title(title)
    if lines:
        figure.text(0.01, -0.02, "\n".join(lines), va="top", fontsize=8, family="monospace")
    _save(figure, png_path)


def plot_experiment_scores(
    names: Sequence[str],
    cv: Sequence[float],
    fold_scores: Sequence[Sequence[float]],
    png_path: str | os.PathLike,
    title: str,
) -> None:
    """One line per experiment, best CV at the top: its out-of-fold CV (a diamond; none when
    not predicted) and its folds' best validation scores (dots, with their mean +- one
    standard deviation as a bar)."""
    order = sorted(
        range(len(names)),
        key=lambda i: (-cv[i] if np.isfinite(cv[i]) else np.inf, -_mean(fold_scores[i])),
    )
    figure, axis = plt.subplots(figsize=(9, max(3, 0.35 * len(names) + 1.2)), layout="constrained")
    for row, i in enumerate(order):
        folds = np.asarray(fold_scores[i], dtype=float)
        folds = folds[np.isfinite(folds)]
        if len(folds):
            axis.scatter(folds, [row] * len(folds), s=14, color="tab:blue", alpha=0.6, zorder=2)
            spread = folds.std(ddof=1) if len(folds) > 1 else 0.0
            axis.errorbar(
                folds.mean(), row, xerr=spread, fmt="|", color="tab:blue", capsize=4, zorder=2
            )
        if np.isfinite(cv[i]):
            axis.scatter(cv[i], row, marker="D", s=40, color="tab:red", zorder=3)
            axis.annotate(
                f"{cv[i]:.4f}",
                (cv[i], row),
                xytext=(0, 5),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                color="tab:red",
            )
    axis.set_yticks(range(len(order)), [names[i] for i in order], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("lwlrap")
    axis.scatter([], [], marker="D", color="tab:red", label="out-of-fold CV")
    axis.scatter([], [], s=14, color="tab:blue", label="fold best validation (mean +- std)")
    figure.legend(loc="outside lower center", ncol=2, fontsize=8)
    axis.grid(axis="x", alpha=0.3)
    axis.set_title(title)
    _save(figure, png_path)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else -np.inf


def plot_per_class_change(
    classes: Sequence[str],
    ours: Sequence[float],
    reference: Sequence[float],
    png_path: str | os.PathLike,
    title: str,
    labels: tuple[str, str],
) -> None:
    """Per-class scores of two predictions side by side (`labels` names them), the classes
    that gain most at the top, with each class's change written beside it."""
    ours, reference = np.asarray(ours, dtype=float), np.asarray(reference, dtype=float)
    order = np.argsort(-(ours - reference), kind="stable")
    figure, axis = plt.subplots(figsize=(9, max(4, 0.2 * len(classes) + 1)), layout="constrained")
    rows = np.arange(len(order))
    axis.barh(rows - 0.2, ours[order], height=0.4, color="tab:green", label=labels[0])
    axis.barh(rows + 0.2, reference[order], height=0.4, color="tab:gray", label=labels[1])
    for row, i in zip(rows, order):
        change = ours[i] - reference[i]
        color = "tab:green" if change > 0 else ("tab:red" if change < 0 else "black")
        axis.annotate(f"{change:+.3f}", (1.01, row), va="center", fontsize=6, color=color)
    axis.set_yticks(rows, [classes[i] for i in order], fontsize=6)
    axis.set_xlim(0, 1.08)
    axis.invert_yaxis()
    figure.legend(loc="outside lower center", ncol=2, fontsize=8)
    axis.grid(axis="x", alpha=0.3)
    axis.set_title(title)
    _save(figure, png_path)


def plot_search(
    trials: Sequence[tuple[int, str, float | None, Mapping[int, float]]],
    png_path: str | os.PathLike,
    title: str,
) -> None:
    """A search's trials, given as (number, state, value, per-step validation lwlrap): left,
    each trial's lwlrap step by step (finished trials blue, pruned ones red, ending where the
    pruner stopped them); right, each trial's result by number with the best so far."""
    figure, (steps, results) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    best, best_line = -np.inf, []
    for number, state, value, curve in trials:
        if curve:
            x = sorted(curve)
            colour = "tab:red" if state == "PRUNED" else "tab:blue"
            steps.plot(x, [curve[k] for k in x], color=colour, alpha=0.5, linewidth=1)
        if state == "COMPLETE" and value is not None:
            results.scatter(number, value, color="tab:blue", s=18, zorder=3)
            best = max(best, value)
        elif state == "PRUNED" and curve:
            results.scatter(number, curve[max(curve)], color="tab:red", marker="x", s=22)
        if np.isfinite(best):
            best_line.append((number, best))
    if best_line:
        x, y = zip(*best_line)
        results.step(x, y, where="post", color="black", linewidth=1, label="best so far")
    steps.set_xlabel("step (fold x max epochs + epoch)")
    steps.set_ylabel("validation lwlrap")
    steps.plot([], [], color="tab:blue", label="finished")
    steps.plot([], [], color="tab:red", label="pruned")
    steps.legend(fontsize=8)
    results.scatter([], [], color="tab:blue", s=18, label="finished: mean best lwlrap")
    results.scatter([], [], color="tab:red", marker="x", s=22, label="pruned: last lwlrap")
    results.set_xlabel("trial")
    results.legend(fontsize=8)
    for axis in (steps, results):
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    _save(figure, png_path)
