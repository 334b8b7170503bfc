"""Lightning callbacks that run the analyses and log what they find.

Every figure goes to `<run dir>/figures/<name>.png` and to each logger that takes images (W&B);
every number goes to every logger and to `trainer.callback_metrics`, from which the run loop
writes metrics.json.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from . import embedding, figures


def figure_dir(trainer: pl.Trainer) -> Path:
    path = Path(trainer.default_root_dir) / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_figure(trainer: pl.Trainer, name: str, fig: plt.Figure) -> Path:
    """Save `fig` as figures/<name>.png and log it as an image to every logger that takes one."""
    path = figure_dir(trainer) / f"{name.replace('/', '_')}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    if trainer.is_global_zero:
        for lg in trainer.loggers:
            if hasattr(lg, "log_image"):
                lg.log_image(key=name, images=[str(path)], step=trainer.global_step)
    return path


def log_numbers(trainer: pl.Trainer, numbers: dict[str, float]) -> None:
    """Log scalars from a callback to every logger and keep them in trainer.callback_metrics."""
    for lg in trainer.loggers:
        lg.log_metrics(numbers, step=trainer.global_step)
    trainer.callback_metrics.update({k: torch.tensor(float(v)) for k, v in numbers.items()})


class LossCurves(Callback):
    """Records `<split>/<metric>` per epoch for train and val and plots them when fitting ends."""

    def __init__(self, metrics: Sequence[str] = ("loss",), splits: Sequence[str] = ("train", "val")):
        self.metrics, self.splits = list(metrics), list(splits)
        self.history: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def _record(self, trainer: pl.Trainer, split: str) -> None:
        for m in self.metrics:
            value = trainer.callback_metrics.get(f"{split}/{m}_epoch", trainer.callback_metrics.get(f"{split}/{m}"))
            if value is not None:
                self.history[m][split].append(float(value))

    def on_train_epoch_end(self, trainer, pl_module):
        self._record(trainer, "train")

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._record(trainer, "val")

    def on_fit_end(self, trainer, pl_module):
        history = {m: dict(self.history[m]) for m in self.metrics if self.history[m]}
        if history:
            log_figure(trainer, "curves/loss", figures.curves(history, title="per image, per epoch"))


class VAEFigures(Callback):
    """After testing a VAE: reconstructions, prior samples, the test-set latent means by class, a
    decoded latent grid (2-D latents), and kNN accuracy + silhouette of the latent means."""

    def __init__(
        self,
        num_images: int = 16,
        num_points: int = 10000,
        projection: str = "pca",
        knn_k: int = 5,
        knn_folds: int = 5,
        latent_grid_size: int = 15,
        latent_grid_quantile: float = 0.05,
        seed: int = 0,
    ):
        if projection not in ("pca", "tsne", "umap"):
            raise ValueError(f"callbacks.vae_figures.projection must be pca, tsne or umap, got {projection!r}")
        self.num_images, self.num_points, self.projection = num_images, num_points, projection
        self.knn_k, self.knn_folds, self.seed = knn_k, knn_folds, seed
        self.latent_grid_size, self.latent_grid_quantile = latent_grid_size, latent_grid_quantile

    def on_test_epoch_start(self, trainer, pl_module):
        self.mu, self.labels, self.first = [], [], None

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        x, y = batch
        if self.first is None:
            self.first = (x[: self.num_images].float().cpu(), outputs["x_hat"][: self.num_images].float().cpu())
        if sum(len(m) for m in self.mu) < self.num_points:
            self.mu.append(outputs["mu"].float().cpu())
            self.labels.append(y.cpu())

    @torch.no_grad()
    def on_test_epoch_end(self, trainer, pl_module):
        if not self.mu:
            return
        vae = pl_module.vae
        z = torch.cat(self.mu)[: self.num_points].numpy()
        labels = torch.cat(self.labels)[: self.num_points].numpy()
        names = list(getattr(trainer.datamodule, "classes", [])) or [str(c) for c in range(int(labels.max()) + 1)]
        originals, recons = self.first
        log_figure(trainer, "vae/reconstructions", figures.image_rows({"test images": originals.numpy(), "reconstructions (posterior mean)": recons.numpy()}))

        g = torch.Generator().manual_seed(self.seed)
        shape = (self.num_images, vae.latent_dim)
        priors = {name: embedding.sample_prior(kind, shape, g) for name, kind in (("N(0, I)", "gaussian"), ("Laplace(0, 1)", "laplace"))}
        decoded = {f"samples from {k}": vae.decode(v.to(pl_module.device)).float().cpu().numpy() for k, v in priors.items()}
        log_figure(trainer, "vae/samples", figures.image_rows(decoded, title="decoded prior samples"))

        points = embedding.project_2d(z, self.projection, seed=self.seed)
        how = "latent means" if z.shape[1] <= 2 else f"latent means, {self.projection.upper()} of {z.shape[1]}-D"
        axes = ("z1", "z2") if z.shape[1] <= 2 else (f"{self.projection} 1", f"{self.projection} 2")
        log_figure(trainer, "vae/latent_space", figures.scatter_by_class(points, labels, names, title=f"test set: {how}", axis_labels=axes))

        if vae.latent_dim == 2:
            grid = torch.from_numpy(embedding.latent_grid(self.latent_grid_size, self.latent_grid_quantile)).float()
            images = vae.decode(grid.to(pl_module.device)).float().cpu().numpy()
            title = f"decoded latent grid, {self.latent_grid_quantile:g}-{1 - self.latent_grid_quantile:g} quantiles of N(0, 1)"
            log_figure(trainer, "vae/latent_grid", figures.image_grid(images, self.latent_grid_size, title=title))

        numbers = {"test/latent_silhouette": embedding.silhouette(z, labels, seed=self.seed)}
        try:
            numbers["test/latent_knn_acc"] = embedding.knn_accuracy(z, labels, self.knn_k, self.knn_folds, self.seed)
        except ValueError:
            pass  # too few samples per class for cross-validation (tiny smoke runs)
        log_numbers(trainer, numbers)
