"""Matplotlib figures. Arrays in, a Figure out; nothing here knows Lightning or W&B."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _as_hwc(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.float32)
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


def image_rows(rows: Mapping[str, np.ndarray], title: str = "") -> plt.Figure:
    """One labelled row per entry; each entry is (N, C, H, W) in [0, 1]."""
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0 + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(_as_hwc(images[c]).clip(0, 1), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(label, fontsize=8, loc="left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def image_grid(images: np.ndarray, ncols: int, title: str = "") -> plt.Figure:
    """(N, C, H, W) in [0, 1] tiled into one picture, row-major, no gaps."""
    images = np.asarray(images)
    n, c, h, w = images.shape
    nrows = int(np.ceil(n / ncols))
    canvas = np.zeros((c, nrows * h, ncols * w), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        canvas[:, r * h : (r + 1) * h, col * w : (col + 1) * w] = images[i]
    fig, ax = plt.subplots(figsize=(min(12, ncols * 0.6 + 1), min(12, nrows * 0.6 + 1)))
    ax.imshow(_as_hwc(canvas).clip(0, 1), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def curves(history: Mapping[str, Mapping[str, Sequence[float]]], title: str = "") -> plt.Figure:
    """One panel per quantity; in each, one line per split. history[quantity][split] = values per epoch."""
    fig, axes = plt.subplots(1, len(history), figsize=(4 * len(history), 3.2), squeeze=False)
    for ax, (quantity, by_split) in zip(axes[0], history.items()):
        for split, values in by_split.items():
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", ms=3, label=split)
        ax.set_title(quantity)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def scatter_by_class(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str = "", axis_labels=("z1", "z2")) -> plt.Figure:
    """2-D points coloured by class with a legend of class names."""
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        sel = labels == c
        ax.scatter(points[sel, 0], points[sel, 1], s=3, alpha=0.6, color=cmap(c % cmap.N), label=name)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title)
    ax.legend(markerscale=4, fontsize=7, loc="best")
    fig.tight_layout()
    return fig
