"""The resnet task's analyses after the test pass: the lesion sweep and features by depth."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from . import embedding, figures, lesion
from .contracts import EvaluationData, ResidualBlocks, StageFeatures
from .evaluation import accuracy, class_names, eval_batches, tested_images
from .evidence import Progress, describe_run, log_figure, log_numbers, log_table


class LesionSweep(Callback):
    """After testing (Veit et al. 2016): test accuracy with each single residual block dropped in
    turn, and with k random blocks dropped for k = 0..N, with no retraining. Needs a module with
    `residual_block_names()` and `ablated(blocks, mode)` (models.ResNetClassifier)."""

    module_needs = (ResidualBlocks,)
    data_needs = (EvaluationData,)

    def __init__(
        self,
        *,
        num_images: int | None,
        random_trials: int,
        k_values: Sequence[int] | None,
        seed: int,
    ):
        self.num_images, self.random_trials, self.k_values, self.seed = num_images, random_trials, k_values, seed

    def on_test_end(self, trainer, pl_module):
        names = pl_module.residual_block_names()
        baseline, single, k_values, k_acc = self._measure(trainer, pl_module, names)
        self._report(trainer, pl_module, names, baseline, single, k_values, k_acc)

    def _measure(self, trainer, pl_module, names):
        """Test accuracy intact, with each block dropped, and with k random blocks dropped (per trial)."""
        n = len(names)
        k_values = list(self.k_values) if self.k_values is not None else list(range(n + 1))
        subsets = {
            k: lesion.random_block_subsets(n, k, self.random_trials if 0 < k < n else 1, self.seed) for k in k_values
        }
        images = tested_images(trainer, self.num_images) or "all"
        progress = Progress(
            "lesion sweep",
            1 + n + sum(len(s) for s in subsets.values()),
            "test passes",
            f"{images} test images each: intact, each of {n} blocks dropped, k random blocks dropped",
        )
        baseline = accuracy(trainer, pl_module, self.num_images)
        progress.step("intact")
        single = []
        for b in range(n):
            with pl_module.ablated([b], "drop"):
                single.append(accuracy(trainer, pl_module, self.num_images))
            progress.step(f"{names[b]} dropped")
        k_acc = []
        for k in k_values:
            accs = []
            for blocks in subsets[k]:
                with pl_module.ablated(blocks, "drop"):
                    accs.append(accuracy(trainer, pl_module, self.num_images))
                progress.step(f"{k} random blocks dropped")
            k_acc.append(accs)
        return baseline, single, k_values, k_acc

    def _report(self, trainer, pl_module, names, baseline, single, k_values, k_acc) -> None:
        projection = pl_module.projection_blocks()
        chance = 1 / len(trainer.datamodule.classes)
        worst = int(np.argmin(single))
        images = tested_images(trainer, self.num_images) or "all"
        title = (
            f"lesion study (Veit et al. 2016): blocks dropped after training, no retraining\n"
            f"{describe_run(trainer, pl_module)} ({images} images): intact {baseline:.1%}, "
            f"worst single drop {names[worst]} {single[worst]:.1%}"
        )
        log_figure(
            trainer,
            "lesion/sweep",
            figures.lesion_figure(single, baseline, projection, names, k_values, k_acc, chance, title=title),
        )
        log_table(
            trainer,
            "lesion/single_block",
            ["block", "module", "projection", "test_acc"],
            [[i, names[i], i in projection, a] for i, a in enumerate(single)],
            chart=("module", "test_acc", "test accuracy with one block dropped"),
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

    module_needs = (StageFeatures,)
    data_needs = (EvaluationData,)

    def __init__(
        self,
        *,
        num_images: int,
        projection: str,
        pca_dims: int,
        knn_k: int,
        knn_folds: int,
        seed: int,
    ):
        embedding.check_projection(projection, "callbacks.depth_features.projection")
        for key, value, least in (("num_images", num_images, 2), ("pca_dims", pca_dims, 1), ("knn_k", knn_k, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"callbacks.depth_features.{key} must be an integer >= {least}, got {value!r}")
        self.num_images, self.projection, self.pca_dims = num_images, projection, pca_dims
        self.knn_k, self.knn_folds, self.seed = knn_k, knn_folds, seed

    def on_test_end(self, trainer, pl_module):
        from sklearn.decomposition import PCA

        feats, labels = defaultdict(list), []
        pl_module.eval()
        for x, y in eval_batches(trainer, pl_module, self.num_images):
            for name, f in pl_module.stage_features(x).items():
                feats[name].append(f.cpu())
            labels.append(y.cpu())
        labels = torch.cat(labels).numpy()
        points, scores, numbers = {}, {}, {}
        progress = Progress(
            "features by depth",
            len(feats),
            "depths",
            f"{len(labels)} test images, PCA-{self.pca_dims}, {self.projection}",
        )
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
            progress.step(f"{name}: {scores[name]}")
        names = class_names(trainer, int(labels.max()) + 1)
        title = (
            f"features by depth: {describe_run(trainer, pl_module)} ({len(labels)} images, PCA-{self.pca_dims} "
            f"then {self.projection})"
        )
        knn = {k.split("/")[1]: v for k, v in numbers.items() if k.endswith("/knn_acc")}
        if knn:
            best = max(knn, key=knn.get)
            title += f"\nbest kNN accuracy {knn[best]:.1%} at {best}"
        log_figure(trainer, "depth/features", figures.projection_grid(points, labels, names, scores, title=title))
        log_table(
            trainer,
            "depth/by_depth",
            ["depth", "index", "silhouette", "knn_acc"],
            [
                [name, i, numbers[f"depth/{name}/silhouette"], numbers.get(f"depth/{name}/knn_acc")]
                for i, name in enumerate(points)
            ],
            chart=("depth", "knn_acc" if knn else "silhouette", "class separation by depth"),
        )
        log_numbers(trainer, numbers)
