"""Where every analysis leaves its evidence: figures as PNG, numbers, tables as CSV, and the same
to every logger that takes them (W&B, TensorBoard, CSV).

    figures/<name>.png   tables/<name>.csv   trainer.callback_metrics -> metrics.json
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import matplotlib.pyplot as plt
import torch

_log = logging.getLogger("analysis")


def figure_dir(trainer: pl.Trainer) -> Path:
    path = Path(trainer.default_root_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


# The longest side of a saved figure, in pixels. W&B (and TensorBoard, and the README) show an image scaled to
# its panel: a 12x9 inch grid at 110 dpi was ~1,500 px, a 2.5 inch heat map ~300 px, whose text a panel
# blurred. Figures keep their layout in inches (text sizes are in points) and are drawn at the resolution
# that brings their longest side into this range: 110 dpi where that does, more for small ones, less for big.
FIGURE_PX = (900, 1600)


def figure_dpi(fig: plt.Figure, base: float = 110.0) -> float:
    longest = max(fig.get_size_inches())
    return min(max(base, FIGURE_PX[0] / longest), FIGURE_PX[1] / longest)


def log_figure(trainer: pl.Trainer, name: str, fig: plt.Figure) -> Path:
    """Save `fig` as figures/<name>.png and log it as an image to every logger that takes one
    (under DDP: rank 0 only, from its share of the data)."""
    path = figure_dir(trainer) / f"{name.replace('/', '_')}.png"
    if trainer.is_global_zero:
        fig.savefig(path, dpi=figure_dpi(fig), bbox_inches="tight")
        for lg in trainer.loggers:
            if hasattr(lg, "log_image"):  # W&B
                lg.log_image(key=name, images=[str(path)], step=trainer.global_step)
                continue
            experiment: Any = getattr(lg, "experiment", None)
            if hasattr(experiment, "add_image"):  # TensorBoard: the PNG as it was saved
                image = plt.imread(path)[..., :3]
                experiment.add_image(name, image, global_step=trainer.global_step, dataformats="HWC")
    plt.close(fig)
    return path


def log_numbers(trainer: pl.Trainer, numbers: dict[str, float]) -> None:
    """Numbers an analysis measures once, kept in trainer.callback_metrics (-> metrics.json) and sent
    where each logger shows a single value well: W&B's run summary (not a chart of one point), the CSV
    as a row; TensorBoard gets them with the final metrics in its HParams tab, away from the training
    curves (experiments.loggers.log_final_metrics)."""
    if trainer.is_global_zero:
        for lg in trainer.loggers:
            if hasattr(lg, "log_summary"):  # W&B
                lg.log_summary(numbers)
            elif not hasattr(getattr(lg, "experiment", None), "add_scalar"):  # TensorBoard: see above
                lg.log_metrics(numbers, step=trainer.global_step)
    trainer.callback_metrics.update({k: torch.tensor(float(v)) for k, v in numbers.items()})


def log_table(
    trainer: pl.Trainer, key: str, columns: list[str], rows: list[list], chart: tuple[str, str, str] | None = None
) -> None:
    """A table to W&B (where a logger takes tables) and as tables/<key>.csv in the run folder. `chart`:
    (x column, y column, title) of a bar chart W&B draws from the table."""

    path = Path(trainer.default_root_dir) / "tables" / f"{key.replace('/', '_')}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([columns, *rows])
    if trainer.is_global_zero:
        for lg in trainer.loggers:
            # at the trainer's step, as figures are: a run resumed with no epoch left analyses before it logs
            # anything else, and W&B drops a step below the one its earlier attempt reached
            if chart is not None and hasattr(lg, "log_chart"):
                lg.log_chart(key, columns, rows, *chart, step=trainer.global_step)
            elif hasattr(lg, "log_table"):
                lg.log_table(key=key, columns=columns, data=rows, step=trainer.global_step)


def describe_run(trainer: pl.Trainer, pl_module: object, split: str = "test") -> str:
    """Which model and data a figure comes from, for its title: e.g. 'ResNetClassifier resnet18
    (ablated: layer2.1) on fashion_mnist test' or 'clip_scratch_1a2b3c4d (trained here: scratch) on stl10
    (synthetic) test'."""
    run_info = getattr(pl_module, "run_info", None)
    info = (run_info() if callable(run_info) else {}) or {}
    hparams = getattr(pl_module, "hparams", {}) or {}
    model = info.get("model") or " ".join(str(p) for p in (type(pl_module).__name__, hparams.get("arch")) if p)
    if model == "scratch":  # a model built here (vit: model.scratch.*) has no name of its own
        model = type(pl_module).__name__
    how = f" (trained here: {info['finetune']})" if info.get("finetune") else ""
    if info.get("ablated_modules"):
        how += f" with {', '.join(map(str, info['ablated_modules']))} ablated"
    dm = getattr(trainer, "datamodule", None)
    data = getattr(dm, "name", None) or type(dm).__name__.removesuffix("DataModule")
    synthetic = " (synthetic)" if getattr(dm, "synthetic", False) else ""
    return f"{model}{how} on {data}{synthetic} {split}"


class Progress:
    """A line on the terminal (and the run's log) as an analysis starts and then at most every
    `every_s` seconds while it works, so that no analysis is silent for minutes:
    `lesion sweep: 12/50 blocks dropped (41 s)`."""

    def __init__(self, name: str, total: int, unit: str, detail: str = "", every_s: float = 10.0):
        self.name, self.total, self.unit, self.every_s = name, total, unit, every_s
        self.done, self.start = 0, time.monotonic()
        self.last = self.previous = self.start
        _log.info("%s: %d %s%s", name, total, unit, f" ({detail})" if detail else "")

    def step(self, what: str = "") -> None:
        self.done += 1
        now = time.monotonic()
        # a line now if the next step, as long as this one took, would end past every_s without one
        took, self.previous = now - self.previous, now
        if now - self.last + took >= self.every_s or self.done == self.total:
            self.last = now
            at = f", {what}" if what else ""
            _log.info("%s: %d/%d %s%s (%.0f s)", self.name, self.done, self.total, self.unit, at, now - self.start)
