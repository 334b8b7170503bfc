"""Lightning callbacks that run the analyses and log what they find.

Every figure goes to `<run dir>/figures/<name>.png` and to each logger that takes images (W&B);
every number goes to every logger and to `trainer.callback_metrics`, from which the run loop
writes metrics.json.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

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
    """Save `fig` as figures/<name>.png and log it as an image to every logger that takes one
    (under DDP: rank 0 only, from its share of the data)."""
    path = figure_dir(trainer) / f"{name.replace('/', '_')}.png"
    if trainer.is_global_zero:
        fig.savefig(path, dpi=110, bbox_inches="tight")
        for lg in trainer.loggers:
            if hasattr(lg, "log_image"):
                lg.log_image(key=name, images=[str(path)], step=trainer.global_step)
    plt.close(fig)
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
        names = class_names(trainer, int(labels.max()) + 1)
        originals, recons = self.first
        log_figure(
            trainer,
            "vae/reconstructions",
            figures.image_rows({"test images": originals.numpy(), "reconstructions (posterior mean)": recons.numpy()}),
        )

        g = torch.Generator().manual_seed(self.seed)
        shape = (self.num_images, vae.latent_dim)
        priors = {
            name: embedding.sample_prior(kind, shape, g)
            for name, kind in (("N(0, I)", "gaussian"), ("Laplace(0, 1)", "laplace"))
        }
        decoded = {
            f"samples from {k}": vae.decode(v.to(pl_module.device)).float().cpu().numpy() for k, v in priors.items()
        }
        log_figure(trainer, "vae/samples", figures.image_rows(decoded, title="decoded prior samples"))

        points = embedding.project_2d(z, self.projection, seed=self.seed)
        how = "latent means" if z.shape[1] <= 2 else f"latent means, {self.projection.upper()} of {z.shape[1]}-D"
        axes = ("z1", "z2") if z.shape[1] <= 2 else (f"{self.projection} 1", f"{self.projection} 2")
        log_figure(
            trainer,
            "vae/latent_space",
            figures.scatter_by_class(points, labels, names, title=f"test set: {how}", axis_labels=axes),
        )

        if vae.latent_dim == 2:
            grid = torch.from_numpy(embedding.latent_grid(self.latent_grid_size, self.latent_grid_quantile)).float()
            images = vae.decode(grid.to(pl_module.device)).float().cpu().numpy()
            q = self.latent_grid_quantile
            title = f"decoded latent grid, {q:g}-{1 - q:g} quantiles of N(0, 1)"
            log_figure(trainer, "vae/latent_grid", figures.image_grid(images, self.latent_grid_size, title=title))

        numbers = {"test/latent_silhouette": embedding.silhouette(z, labels, seed=self.seed)}
        try:
            numbers["test/latent_knn_acc"] = embedding.knn_accuracy(z, labels, self.knn_k, self.knn_folds, self.seed)
        except ValueError:
            pass  # too few samples per class for cross-validation (tiny smoke runs)
        log_numbers(trainer, numbers)


# -- classification ---------------------------------------------------------------------------
def class_names(trainer: pl.Trainer, n: int) -> list[str]:
    """The data module's class names, or 0..n-1 where it has none for n classes (n: labels seen,
    which may fall short of the data set's count in a tiny run: then the data set's names win)."""
    names = list(getattr(trainer.datamodule, "classes", []))
    return names if len(names) >= n else [str(c) for c in range(n)]


def test_batches(
    trainer: pl.Trainer, pl_module: pl.LightningModule, max_images: int | None = None, split: str = "test"
):
    """(transformed images, labels) on the model's device, from the start of a split (test)."""
    dm = trainer.datamodule
    seen = 0
    for x, y in dm.eval_dataloader(split):
        if max_images is not None and seen >= max_images:
            return
        if max_images is not None:
            x, y = x[: max_images - seen], y[: max_images - seen]
        seen += len(y)
        yield dm.on_after_batch_transfer((x.to(pl_module.device), y.to(pl_module.device)), 0)


@torch.no_grad()
def accuracy(trainer: pl.Trainer, pl_module: pl.LightningModule, max_images: int | None = None) -> float:
    was_training = pl_module.training
    pl_module.eval()
    correct = total = 0
    with torch.autocast(pl_module.device.type, dtype=torch.bfloat16, enabled=pl_module.device.type == "cuda"):
        for x, y in test_batches(trainer, pl_module, max_images):
            correct += int((pl_module(x).argmax(1) == y).sum())
            total += len(y)
    pl_module.train(was_training)
    return correct / max(total, 1)


class ClassificationReport(Callback):
    """After testing: confusion matrix and per-class accuracy (torchmetrics) as a figure, a W&B
    table and numbers."""

    def __init__(self, num_classes: int = 10):
        from torchmetrics.classification import MulticlassConfusionMatrix

        self.confusion = MulticlassConfusionMatrix(num_classes)

    def on_test_epoch_start(self, trainer, pl_module):
        self.confusion = self.confusion.to(pl_module.device)
        self.confusion.reset()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.confusion.update(outputs["preds"], batch[1])

    def on_test_epoch_end(self, trainer, pl_module):
        matrix = self.confusion.compute().cpu().numpy()
        names = class_names(trainer, len(matrix))
        per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
        log_figure(trainer, "test/confusion_matrix", figures.confusion_figure(matrix, names, title="test set"))
        log_numbers(
            trainer,
            {
                f"test/acc_{n.replace(' ', '_').replace('/', '_')}": float(a)
                for n, a in zip(names, per_class, strict=False)
            },
        )
        log_table(
            trainer,
            "test/per_class_accuracy",
            ["class", "accuracy", "images"],
            [[n, float(a), int(c)] for n, a, c in zip(names, per_class, matrix.sum(1), strict=False)],
        )


def log_table(trainer: pl.Trainer, key: str, columns: list[str], rows: list[list]) -> None:
    """A table to W&B (where a logger takes tables) and as tables/<key>.csv in the run folder."""
    import csv

    path = Path(trainer.default_root_dir) / "tables" / f"{key.replace('/', '_')}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([columns, *rows])
    if trainer.is_global_zero:
        for lg in trainer.loggers:
            if hasattr(lg, "log_table"):
                lg.log_table(key=key, columns=columns, data=rows)


class LesionSweep(Callback):
    """After testing (Veit et al. 2016): test accuracy with each single residual block dropped in
    turn, and with k random blocks dropped for k = 0..N, with no retraining. Needs a module with
    `residual_block_names()` and `ablated(blocks, mode)` (models.ResNetClassifier)."""

    def __init__(
        self,
        num_images: int | None = 2000,
        random_trials: int = 3,
        k_values: Sequence[int] | None = None,
        seed: int = 0,
    ):
        self.num_images, self.random_trials, self.k_values, self.seed = num_images, random_trials, k_values, seed

    def on_test_end(self, trainer, pl_module):
        names = pl_module.residual_block_names()
        n = len(names)
        baseline = accuracy(trainer, pl_module, self.num_images)
        single = []
        for b in range(n):
            with pl_module.ablated([b], "drop"):
                single.append(accuracy(trainer, pl_module, self.num_images))
        k_values = list(self.k_values) if self.k_values is not None else list(range(n + 1))
        k_acc = []
        for k in k_values:
            accs = []
            for blocks in embedding.random_block_subsets(n, k, self.random_trials if 0 < k < n else 1, self.seed):
                with pl_module.ablated(blocks, "drop"):
                    accs.append(accuracy(trainer, pl_module, self.num_images))
            k_acc.append(accs)
        projection = pl_module.run_info.get("projection_blocks", [])
        chance = 1 / trainer.datamodule.num_classes
        log_figure(
            trainer, "lesion/sweep", figures.lesion_figure(single, baseline, projection, names, k_values, k_acc, chance)
        )
        log_table(
            trainer,
            "lesion/single_block",
            ["block", "module", "projection", "test_acc"],
            [[i, names[i], i in projection, a] for i, a in enumerate(single)],
        )
        log_table(
            trainer,
            "lesion/random_k",
            ["k", "mean_acc", "min_acc", "max_acc", "trials"],
            [[k, float(np.mean(a)), min(a), max(a), len(a)] for k, a in zip(k_values, k_acc, strict=False)],
        )
        identity = [a for i, a in enumerate(single) if i not in projection]
        numbers = {
            "lesion/intact_acc": baseline,
            "lesion/mean_single_drop_acc": float(np.mean(single)),
            "lesion/worst_single_drop_acc": float(min(single)),
        }
        if identity:
            numbers["lesion/mean_identity_drop_acc"] = float(np.mean(identity))
        log_numbers(trainer, numbers)


class DepthFeatures(Callback):
    """After testing: pooled activations after the stem, each stage and the logits on N test
    images; PCA to 50 dims, then t-SNE (or UMAP/PCA) per depth in one grid figure; silhouette
    and kNN accuracy per depth (in the PCA-50 space) as numbers, so clustering by depth is measured."""

    def __init__(
        self,
        num_images: int = 2000,
        projection: str = "tsne",
        pca_dims: int = 50,
        knn_k: int = 5,
        knn_folds: int = 5,
        seed: int = 0,
    ):
        if projection not in ("pca", "tsne", "umap"):
            raise ValueError(f"callbacks.depth_features.projection must be pca, tsne or umap, got {projection!r}")
        self.num_images, self.projection, self.pca_dims = num_images, projection, pca_dims
        self.knn_k, self.knn_folds, self.seed = knn_k, knn_folds, seed

    def on_test_end(self, trainer, pl_module):
        from sklearn.decomposition import PCA

        feats, labels = defaultdict(list), []
        pl_module.eval()
        for x, y in test_batches(trainer, pl_module, self.num_images):
            for name, f in pl_module.stage_features(x).items():
                feats[name].append(f.cpu())
            labels.append(y.cpu())
        labels = torch.cat(labels).numpy()
        points, scores, numbers = {}, {}, {}
        for name, chunks in feats.items():
            z = torch.cat(chunks).numpy()
            dims = min(self.pca_dims, z.shape[1], len(z))
            z = PCA(n_components=dims, random_state=self.seed).fit_transform(z) if z.shape[1] > dims else z
            sil = embedding.silhouette(z, labels, seed=self.seed)
            numbers[f"depth/{name}/silhouette"] = sil
            try:
                knn = embedding.knn_accuracy(z, labels, self.knn_k, self.knn_folds, self.seed)
                numbers[f"depth/{name}/knn_acc"] = knn
                scores[name] = f"silhouette {sil:.3f}, kNN acc {knn:.3f}"
            except ValueError:
                scores[name] = f"silhouette {sil:.3f}"
            points[name] = embedding.project_2d(z, self.projection, seed=self.seed)
        names = class_names(trainer, int(labels.max()) + 1)
        title = f"test features by depth ({len(labels)} images, PCA-{self.pca_dims} then {self.projection})"
        log_figure(trainer, "depth/features", figures.projection_grid(points, labels, names, scores, title=title))
        log_numbers(trainer, numbers)
