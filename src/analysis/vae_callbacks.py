"""The vae task's analyses after the test pass: reconstructions, prior samples, the latent space."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from . import embedding, figures, latent
from .contracts import EvaluationData, LatentGenerative, LatentStep
from .evaluation import class_names
from .evidence import describe_run, log_figure, log_numbers


class VAEFigures(Callback):
    """After testing a VAE: reconstructions, prior samples, the test-set latent means by class, a
    decoded latent grid (2-D latents), and kNN accuracy + silhouette of the latent means."""

    module_needs = (LatentGenerative,)
    data_needs = (EvaluationData,)

    def __init__(
        self,
        *,
        num_images: int,
        num_points: int,
        projection: str,
        knn_k: int,
        knn_folds: int,
        latent_grid_size: int,
        latent_grid_quantile: float,
        seed: int,
    ):
        embedding.check_projection(projection, "callbacks.vae_figures.projection")
        self.num_images, self.num_points, self.projection = num_images, num_points, projection
        self.knn_k, self.knn_folds, self.seed = knn_k, knn_folds, seed
        self.latent_grid_size, self.latent_grid_quantile = latent_grid_size, latent_grid_quantile

    def on_test_epoch_start(self, trainer, pl_module):
        self.mu, self.labels, self.first = [], [], None

    def on_test_batch_end(  # type: ignore[override]  # narrower than Lightning's: what this callback needs
        self,
        trainer: Any,
        pl_module: LatentGenerative,
        outputs: LatentStep,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
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
        vae: LatentGenerative = pl_module
        z = torch.cat(self.mu)[: self.num_points].numpy()
        labels = torch.cat(self.labels)[: self.num_points].numpy()
        names = class_names(trainer, int(labels.max()) + 1)
        originals, recons = self.first
        where = describe_run(trainer, pl_module)
        error = float(((recons - originals) ** 2).flatten(1).sum(1).mean())
        log_figure(
            trainer,
            "vae/reconstructions",
            figures.image_rows(
                {"test images": originals.numpy(), "reconstructions (posterior mean)": recons.numpy()},
                title=f"reconstructions: {where}\nsquared error {error:.1f} per image (these {len(originals)})",
            ),
        )

        g = torch.Generator().manual_seed(self.seed)
        shape = (self.num_images, vae.latent_dim)
        priors = {
            name: latent.sample_prior(kind, shape, g)
            for name, kind in (("N(0, I)", "gaussian"), ("Laplace(0, 1)", "laplace"))
        }
        decoded = {
            f"samples from {k}": vae.decode(v.to(pl_module.device)).float().cpu().numpy() for k, v in priors.items()
        }
        log_figure(trainer, "vae/samples", figures.image_rows(decoded, title=f"decoded prior samples: {where}"))

        numbers = {"test/latent_silhouette": embedding.silhouette(z, labels, seed=self.seed)}
        try:
            numbers["test/latent_knn_acc"] = embedding.knn_accuracy(z, labels, self.knn_k, self.knn_folds, self.seed)
        except ValueError:
            pass  # too few samples per class for cross-validation (tiny smoke runs)
        points = embedding.project_2d(z, self.projection, seed=self.seed)
        how = "latent means" if z.shape[1] <= 2 else f"latent means, {self.projection.upper()} of {z.shape[1]}-D"
        axes = ("z1", "z2") if z.shape[1] <= 2 else (f"{self.projection} 1", f"{self.projection} 2")
        scores = f"silhouette {numbers['test/latent_silhouette']:.3f}"
        if "test/latent_knn_acc" in numbers:
            scores += f", {self.knn_k}-NN accuracy {numbers['test/latent_knn_acc']:.1%}"
        log_figure(
            trainer,
            "vae/latent_space",
            figures.scatter_by_class(
                points, labels, names, title=f"{how}: {where} ({len(z)} images)\n{scores}", axis_labels=axes
            ),
        )

        if vae.latent_dim == 2:
            self._latent_grid(trainer, pl_module, z, where)
        log_numbers(trainer, numbers)

    def _latent_grid(self, trainer, pl_module, z, where: str) -> None:
        """The decoder shown a grid over the 2-D latent space, its axes the latent coordinates."""
        vae: LatentGenerative = pl_module
        grid = torch.from_numpy(latent.latent_grid(self.latent_grid_size, self.latent_grid_quantile)).float()
        images = vae.decode(grid.to(pl_module.device)).float().cpu().numpy()
        q = self.latent_grid_quantile
        lo, hi = z.min(0), z.max(0)
        title = (
            f"decoded latent grid, {q:g}-{1 - q:g} quantiles of N(0, 1): {where}\n"
            f"(the test latent means span z1 {lo[0]:.1f}..{hi[0]:.1f}, z2 {lo[1]:.1f}..{hi[1]:.1f})"
        )
        ticks = grid.numpy()[: self.latent_grid_size, 0]  # z1 along a row; z2 from high to low down a column
        log_figure(
            trainer,
            "vae/latent_grid",
            figures.image_grid(
                images,
                self.latent_grid_size,
                title=title,
                col_values=[float(v) for v in ticks],
                row_values=[float(v) for v in grid.numpy()[:: self.latent_grid_size, 1]],
                axis_labels=("z1", "z2"),
            ),
        )
