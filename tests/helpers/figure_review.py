"""What a reviewer checks in every figure a run saves (tests only).

`figure_problems(fig)` lists what is wrong with a matplotlib figure, one line each:

- no title: neither the figure nor every panel with content has one;
- an axis with tick labels but no label (panels of pictures have no ticks and need none);
- a colour bar without a label;
- a heat map (a 2-D array drawn with a colour map other than grey) in a figure without a colour bar;
- an epoch axis with fractional ticks;
- a legend that covers data (a line vertex or a scatter point inside its box).

tests/conftest.py runs it on every figure any test saves (`Figure.savefig`), so every task's
end-to-end test is also a figure test.
"""

from __future__ import annotations

import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.image import AxesImage

GREY = ("gray", "grey", "Greys", "Greys_r", "binary", "gray_r")


def _has_content(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.images or ax.patches)


def _tick_labels(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels() if t.get_visible() and t.get_text().strip()]


def _is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None


def _inside(box, xy: np.ndarray) -> int:
    """How many display points `xy` lie inside `box`."""
    xy = np.asarray(xy, dtype=float)
    x, y = xy[:, 0], xy[:, 1]
    return int(((x > box.x0) & (x < box.x1) & (y > box.y0) & (y < box.y1)).sum())


def figure_problems(fig) -> list[str]:
    fig.canvas.draw()  # tick labels and legend positions are known only once drawn
    problems: list[str] = []
    axes = [ax for ax in fig.axes if ax.get_visible()]
    panels = [ax for ax in axes if not _is_colorbar(ax) and _has_content(ax)]
    suptitle = fig._suptitle.get_text().strip() if fig._suptitle is not None else ""
    if not suptitle and not all(ax.get_title().strip() or ax.get_title(loc="left").strip() for ax in panels):
        problems.append("no title: neither the figure nor every panel has one")
    colorbars = [ax for ax in axes if _is_colorbar(ax)]
    for ax in colorbars:
        if not (ax.get_ylabel().strip() or ax.get_xlabel().strip()):
            problems.append("a colour bar without a label")
    for i, ax in enumerate(panels):
        name = ax.get_title().strip() or f"panel {i}"
        if ax.axison:
            for which, axis, label in (("x", ax.xaxis, ax.get_xlabel()), ("y", ax.yaxis, ax.get_ylabel())):
                if _tick_labels(axis) and not label.strip():
                    problems.append(f"{name!r}: the {which} axis has ticks but no label")
            if "epoch" in ax.get_xlabel().lower():
                lo, hi = ax.get_xlim()
                ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
                if any(abs(t - round(t)) > 1e-9 for t in ticks):
                    problems.append(f"{name!r}: fractional epoch ticks {ticks}")
        heat = [im for im in ax.images if isinstance(im, AxesImage) and np.ndim(im.get_array()) == 2]
        if any(im.get_cmap().name not in GREY for im in heat) and not colorbars:
            problems.append(f"{name!r}: a heat map without a colour scale")
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            box = legend.get_window_extent()
            covered = 0
            for line in ax.lines:
                if line.get_visible() and len(line.get_xydata()):
                    covered += _inside(box, line.get_transform().transform(line.get_xydata()))
            for coll in ax.collections:
                if isinstance(coll, PathCollection) and coll.get_visible() and len(coll.get_offsets()):
                    covered += _inside(box, coll.get_offset_transform().transform(coll.get_offsets()))
            if covered:
                problems.append(f"{name!r}: the legend covers {covered} data points")
    return problems
