"""Where every analysis leaves its evidence: figures as PNG, numbers, tables as CSV, and the same
to every logger that takes them (W&B, TensorBoard, CSV).

    figures/<name>.png   tables/<name>.csv   trainer.callback_metrics -> metrics.json
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import matplotlib.pyplot as plt
import torch


def figure_dir(trainer: pl.Trainer) -> Path:
    path = Path(trainer.default_root_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_figure(trainer: pl.Trainer, name: str, fig: plt.Figure) -> Path:
    """Save `fig` as figures/<name>.png and log it as an image to every logger that takes one
    (under DDP: rank 0 only, from its share of the data)."""
    path = figure_dir(trainer) / f"{name.replace('/', '_')}.png"
    if trainer.is_global_zero:
        fig.savefig(path, dpi=110, bbox_inches="tight")
        for lg in trainer.loggers:
            if hasattr(lg, "log_image"):  # W&B
                lg.log_image(key=name, images=[str(path)], step=trainer.global_step)
            elif hasattr(getattr(lg, "experiment", None), "add_image"):  # TensorBoard: the PNG as it was saved
                image = plt.imread(path)[..., :3]
                lg.experiment.add_image(name, image, global_step=trainer.global_step, dataformats="HWC")
    plt.close(fig)
    return path


def log_numbers(trainer: pl.Trainer, numbers: dict[str, float]) -> None:
    """Log scalars from a callback to every logger and keep them in trainer.callback_metrics."""
    for lg in trainer.loggers:
        lg.log_metrics(numbers, step=trainer.global_step)
    trainer.callback_metrics.update({k: torch.tensor(float(v)) for k, v in numbers.items()})


def log_table(trainer: pl.Trainer, key: str, columns: list[str], rows: list[list]) -> None:
    """A table to W&B (where a logger takes tables) and as tables/<key>.csv in the run folder."""

    path = Path(trainer.default_root_dir) / "tables" / f"{key.replace('/', '_')}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([columns, *rows])
    if trainer.is_global_zero:
        for lg in trainer.loggers:
            if hasattr(lg, "log_table"):
                lg.log_table(key=key, columns=columns, data=rows)


def describe_run(trainer: pl.Trainer, pl_module: pl.LightningModule, split: str = "test") -> str:
    """Which model and data a figure comes from, for its title: e.g. 'ResNetClassifier resnet18
    (ablated: layer2.1) on fashion_mnist test' or 'clip_scratch_1a2b3c4d (trained here: scratch) on stl10
    (synthetic) test'."""
    info = pl_module.run_info() if hasattr(pl_module, "run_info") else {}
    info = info or {}
    hparams = getattr(pl_module, "hparams", {}) or {}
    model = info.get("model") or " ".join(str(p) for p in (type(pl_module).__name__, hparams.get("arch")) if p)
    how = f" (trained here: {info['finetune']})" if info.get("finetune") else ""
    if info.get("ablated_modules"):
        how += f" with {', '.join(map(str, info['ablated_modules']))} ablated"
    dm = trainer.datamodule
    data = getattr(dm, "name", None) or type(dm).__name__.removesuffix("DataModule")
    synthetic = " (synthetic)" if getattr(dm, "synthetic", False) else ""
    return f"{model}{how} on {data}{synthetic} {split}"
