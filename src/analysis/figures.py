"""Matplotlib figures. Arrays in, a Figure out; nothing here knows Lightning or W&B."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def image_grid(
    images: np.ndarray,
    ncols: int,
    title: str = "",
    col_values: Sequence[float] | None = None,
    row_values: Sequence[float] | None = None,
    axis_labels: tuple[str, str] = ("", ""),
) -> plt.Figure:
    """(N, C, H, W) in [0, 1] tiled into one picture, row-major, no gaps. With `col_values` /
    `row_values` (e.g. the latent coordinates each tile decodes), the axes are ticked with them and
    labelled `axis_labels`; without, the picture has no axes."""
    images = np.asarray(images)
    n, c, h, w = images.shape
    nrows = int(np.ceil(n / ncols))
    canvas = np.zeros((c, nrows * h, ncols * w), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        canvas[:, r * h : (r + 1) * h, col * w : (col + 1) * w] = images[i]
    fig, ax = plt.subplots(figsize=(min(12, ncols * 0.6 + 1), min(12, nrows * 0.6 + 1)))
    ax.imshow(_as_hwc(canvas).clip(0, 1), cmap="gray", vmin=0, vmax=1)
    if col_values is None and row_values is None:
        ax.axis("off")
    for values, size, set_ticks in ((col_values, w, ax.set_xticks), (row_values, h, ax.set_yticks)):
        if values is not None:
            step = max(1, len(values) // 8)
            at = np.arange(len(values))[::step]
            set_ticks(at * size + (size - 1) / 2, [f"{values[i]:.2f}" for i in at], fontsize=7)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def curves(
    history: Mapping[str, Mapping[str, Sequence[float]]],
    title: str = "",
    x: Sequence[float] | None = None,
    xlabel: str = "epoch",
    ylim: tuple[float, float] | None = None,
    ylabels: Mapping[str, str] | str | None = None,
    ncols: int = 2,
) -> plt.Figure:
    """One panel per quantity (at most `ncols` a row); in each, one line per split. history[quantity][split]
    = values per epoch (or at the given x). `ylabels`: each panel's y label with its unit (one string
    for all; default the quantity's name). `ylim`: a fixed y range (e.g. (0, 1) for proportions).
    Epochs are counted from 1 and ticked at integers; the legend sits below the panels, off the data."""
    n = len(history)
    cols = min(n, ncols)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows + 0.9), squeeze=False, layout="constrained")
    handles: dict[str, object] = {}
    for ax, (quantity, by_split) in zip(axes.flat, history.items(), strict=False):
        for split, values in by_split.items():
            xs = np.arange(1, len(values) + 1) if x is None else x
            (line,) = ax.plot(xs, values, marker="o", ms=3, label=split)
            handles.setdefault(split, line)
        ax.set_title(quantity, fontsize=10)
        ax.set_xlabel(xlabel)
        label = ylabels.get(quantity, quantity) if isinstance(ylabels, Mapping) else (ylabels or quantity)
        ax.set_ylabel(label)
        if "epoch" in xlabel:
            last = max((len(v) for v in by_split.values()), default=1) if x is None else max(x)
            ax.set_xticks(np.arange(1, int(last) + 1, max(1, int(np.ceil(last / 10)))))
            ax.set_xlim(0.5, last + 0.5)
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    shared = all(list(b) == list(next(iter(history.values()))) for b in history.values())
    if shared and len(handles) > 1:  # the same lines in every panel: one legend, below them all
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 3))  # type: ignore[call-overload]  # matplotlib 3.8+ takes "outside ..."; its stubs do not say so
    elif not shared:  # each panel its own lines: a legend under each panel
        for ax in list(axes.flat)[:n]:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    fig.suptitle(title)
    return fig


def scatter_by_class(
    points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str = "", axis_labels=("z1", "z2")
) -> plt.Figure:
    """2-D points coloured by class with a legend of class names."""
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        sel = labels == c
        ax.scatter(points[sel, 0], points[sel, 1], s=3, alpha=0.6, color=cmap(c % cmap.N), label=name)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title)
    ax.legend(markerscale=4, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="class")
    fig.tight_layout()
    return fig


def lesion_figure(
    single: Sequence[float],
    baseline: float,
    projection: Sequence[int],
    names: Sequence[str],
    k_values: Sequence[int],
    k_acc: Sequence[Sequence[float]],
    chance: float,
    title: str = "",
) -> plt.Figure:
    """Left: accuracy with each single block dropped, projection blocks marked. Right: accuracy
    with k random blocks dropped (mean and spread over trials)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4))
    idx = np.arange(len(single))
    a.plot(idx, single, marker="o", ms=3, label="one block dropped")
    proj = list(projection)
    a.scatter(
        proj,
        [single[i] for i in proj],
        s=60,
        facecolors="none",
        edgecolors="red",
        label="projection shortcut",
        zorder=3,
    )
    a.axhline(baseline, color="gray", ls="--", label=f"intact ({baseline:.1%})")  # as the title says it
    a.axhline(chance, color="gray", ls=":", label=f"chance ({chance:.0%})")
    step = max(1, len(names) // 12)
    a.set_xticks(idx[::step], [f"{i}\n{names[i]}" for i in idx[::step]], fontsize=7)
    a.set_xlabel("block dropped (global index, module)")
    a.set_ylabel("test accuracy (fraction correct)")
    a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=4)
    a.grid(alpha=0.3)
    acc = np.array([np.mean(v) for v in k_acc])
    lo, hi = np.array([np.min(v) for v in k_acc]), np.array([np.max(v) for v in k_acc])
    b.plot(k_values, acc, marker="o", ms=3, label="mean over trials")
    b.fill_between(k_values, lo, hi, alpha=0.25, label="min-max over trials")
    b.axhline(chance, color="gray", ls=":", label=f"chance ({chance:.0%})")
    b.set_xlabel("number of random blocks dropped")
    b.set_ylabel("test accuracy (fraction correct)")
    b.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    b.grid(alpha=0.3)
    fig.suptitle(title or "lesion study (Veit et al. 2016): blocks dropped after training, no retraining")
    fig.tight_layout()
    return fig


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str = "") -> plt.Figure:
    """Row-normalised confusion matrix (rows: true class): colour and text both the percentage of the
    true class, each row's image count beside its name."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(1, keepdims=True)
    norm = matrix / np.maximum(totals, 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(0.6 * n + 3.4, 0.6 * n + 2))
    im = ax.imshow(norm * 100, cmap="Blues", vmin=0, vmax=100)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{norm[i, j] * 100:.0f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), [f"{c} ({int(t)})" for c, t in zip(class_names, totals[:, 0], strict=False)], fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (images)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="% of the true class")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def projection_grid(
    points: Mapping[str, np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str],
    scores: Mapping[str, str] | None = None,
    title: str = "",
) -> plt.Figure:
    """One 2-D scatter per entry (e.g. per depth), coloured by class, with a score line each."""
    n = len(points)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for ax, (name, pts) in zip(axes.flat, points.items(), strict=False):
        for c, cname in enumerate(class_names):
            sel = labels == c
            ax.scatter(pts[sel, 0], pts[sel, 1], s=2, alpha=0.6, color=cmap(c % cmap.N), label=cname)
        ax.set_title(f"{name}\n{(scores or {}).get(name, '')}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    fig.legend(handles, names, markerscale=5, fontsize=7, loc="center right", title="class")
    return fig


def pairs_figure(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]], labels: np.ndarray, class_names: Sequence[str], title: str = ""
) -> plt.Figure:
    """Per panel: 2-D image points (dots) and their paired text points (crosses), by class."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.5), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for ax, (name, (img, txt)) in zip(axes[0], panels.items(), strict=False):
        for c, cname in enumerate(class_names):
            sel = labels == c
            ax.scatter(img[sel, 0], img[sel, 1], s=6, alpha=0.6, color=cmap(c % cmap.N), label=cname)
            ax.scatter(txt[sel, 0], txt[sel, 1], s=40, marker="x", color=cmap(c % cmap.N))
        ax.set_title(f"{name}\n(dots: images, crosses: their class prompts)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    fig.legend(handles, names, markerscale=2, fontsize=7, loc="center right", title="class")
    return fig


# -- ViT: predictions and maps over images ------------------------------------------------------
def prediction_figure(
    images: np.ndarray,
    top_labels: Sequence[Sequence[str]],
    top_probs: np.ndarray,
    titles: Sequence[str],
    title: str = "",
) -> plt.Figure:
    """One row per image: the image, and its top-k labels as horizontal bars of probability."""
    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(7.5, 1.9 * n + 0.5), squeeze=False, gridspec_kw={"width_ratios": [1, 2]})
    for i in range(n):
        axes[i, 0].imshow(_as_hwc(images[i]).clip(0, 1))
        axes[i, 0].axis("off")
        axes[i, 0].set_title(titles[i], fontsize=7)
        k = len(top_labels[i])
        axes[i, 1].barh(np.arange(k)[::-1], top_probs[i], color="tab:blue")
        axes[i, 1].set_yticks(np.arange(k)[::-1], [str(s)[:32] for s in top_labels[i]], fontsize=7)
        axes[i, 1].set_xlim(0, 1)
        axes[i, 1].set_ylabel(f"top-{k} labels", fontsize=7)
        if i < n - 1:
            axes[i, 1].tick_params(labelbottom=False)
        for j, p in enumerate(top_probs[i]):
            axes[i, 1].text(min(float(p), 0.85) + 0.01, k - 1 - j, f"{float(p):.3f}", va="center", fontsize=7)
    axes[-1, 1].set_xlabel("predicted probability")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _overlay(ax, image: np.ndarray, heat: np.ndarray, cmap: str, alpha: float):
    """The image with a map (any grid, stretched to the image, scaled to its own [min, max]) on top,
    both over the same pixel edges (imshow's default extent), so no strip of either shows at an edge."""
    img = _as_hwc(image).clip(0, 1)
    h, w = img.shape[:2]
    heat = np.asarray(heat, dtype=np.float64)
    span = heat.max() - heat.min()
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    ax.imshow(img, cmap="gray", extent=extent)
    im = ax.imshow(
        (heat - heat.min()) / span if span > 0 else np.zeros_like(heat),
        cmap=cmap,
        alpha=alpha,
        extent=extent,
        interpolation="bilinear",
        vmin=0,
        vmax=1,
    )
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.axis("off")
    return im


def overlay_grid(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    row_titles: Sequence[str],
    cmap: str = "inferno",
    alpha: float = 0.5,
    title: str = "",
    colorbar: str = "map value, scaled to each map's own range (0: its min, 1: its max)",
) -> plt.Figure:
    """Rows: images (R, C, H, W); first column the image, then one column per map (R, side, side)
    overlaid with `cmap` at `alpha`, each map scaled to its own range (the colour bar's 0..1)."""
    cols = 1 + len(maps)
    fig, axes = plt.subplots(len(images), cols, figsize=(2.1 * cols + 0.8, 2.1 * len(images) + 0.7), squeeze=False)
    im = None
    for r, image in enumerate(images):
        axes[r, 0].imshow(_as_hwc(image).clip(0, 1), cmap="gray")
        axes[r, 0].axis("off")
        axes[r, 0].set_title(row_titles[r], fontsize=7)
        for c, (name, m) in enumerate(maps.items(), start=1):
            im = _overlay(axes[r, c], image, m[r], cmap, alpha)
            if r == 0:
                axes[r, c].set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # the title clear of the first row's
    if im is not None:
        fig.colorbar(im, ax=axes, fraction=0.025, pad=0.02, label=colorbar)
    return fig


def panel_grid(
    panels: Mapping[str, np.ndarray],
    ncols: int,
    cmap: str = "inferno",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str = "",
    colorbar: str = "",
) -> plt.Figure:
    """Small titled heat maps in a grid (e.g. one per layer and head), one shared colour scale."""
    n = len(panels)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    values = np.concatenate([np.ravel(p) for p in panels.values()])
    lo, hi = (values.min() if vmin is None else vmin), (values.max() if vmax is None else vmax)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.25 * ncols + 1, 1.25 * nrows + 0.6), squeeze=False)
    im = None
    for ax, (name, p) in zip(axes.flat, panels.items(), strict=False):
        im = ax.imshow(p, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    assert im is not None, "no panel was drawn"
    fig.colorbar(im, ax=axes, fraction=0.02, label=colorbar)
    return fig


def matrix_figure(
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str = "",
    cmap: str = "viridis",
    colorbar: str = "",
    annotate: bool = True,
    xlabel: str = "",
    ylabel: str = "",
) -> plt.Figure:
    """A labelled matrix of numbers (e.g. entropy per layer and head), values annotated."""
    matrix = np.asarray(matrix, dtype=np.float64)
    r, c = matrix.shape
    fig, ax = plt.subplots(figsize=(0.55 * c + 2.5, 0.45 * r + 1.8))
    im = ax.imshow(matrix, cmap=cmap, aspect="auto")
    if annotate:
        mid = (matrix.max() + matrix.min()) / 2
        for i in range(r):
            for j in range(c):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if matrix[i, j] < mid else "black",
                )
    ax.set_xticks(range(c), col_labels, fontsize=7)
    ax.set_yticks(range(r), row_labels, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, fraction=0.046, label=colorbar)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def titled_images(images: np.ndarray, titles: Sequence[str], ncols: int = 6, title: str = "") -> plt.Figure:
    """(N, C, H, W) in [0, 1], each with its own title (e.g. a mask and the score under it)."""
    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 2.1 * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, t in zip(axes.flat, images, titles, strict=False):
        ax.imshow(_as_hwc(image).clip(0, 1), cmap="gray")
        ax.set_title(t, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
