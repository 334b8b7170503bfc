"""The vit task's analyses, fed batch by batch by the test pass (models.ViTClassifier.test_step).

Each test batch arrives once as `outputs`: pixels at the model's side in [0, 1] (unnormalised),
logits, attentions (layers, B, heads, T, T), the final CLS token and mean patch token, labels
(-1: unlabelled) and data-set class scores when `model.class_map` is set. The callbacks below take
what they need from it and run extra forward passes only where the analysis needs other inputs
(masked images, gradients, the train split for the probe).

Measured against what: on a labelled set with a class map, accuracy against the labels; always,
agreement with the model's own unmasked prediction. Keys and figure titles say which.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from . import attention as A
from . import embedding, figures
from .contracts import AttentionInspectable, AttentionStep, EvaluationData, ImageFiles
from .evaluation import eval_batches
from .evidence import log_figure, log_numbers, log_table

log = logging.getLogger(__name__)


def image_names(trainer, start: int, n: int) -> list[str]:
    """File names for images start..start+n of the test split (data=images), else 'test #i'."""
    dm = trainer.datamodule
    names = list(dm.names) if isinstance(dm, ImageFiles) else None
    return [names[i] if names and i < len(names) else f"test #{i}" for i in range(start, start + n)]


def has_labels(outputs: AttentionStep) -> bool:
    return outputs["dataset_scores"] is not None and bool((outputs["labels"] >= 0).all())


def check_rollout_settings(head_fusion: str, discard_ratio: float, key: str) -> None:
    if head_fusion not in A.HEAD_FUSIONS:
        raise ValueError(f"{key}.head_fusion must be one of {list(A.HEAD_FUSIONS)}, got {head_fusion!r}")
    if not 0 <= discard_ratio < 1:
        raise ValueError(f"{key}.discard_ratio must lie in [0, 1), got {discard_ratio}")


def rollout_maps(outputs: AttentionStep, head_fusion: str, discard_ratio: float) -> torch.Tensor:
    """(B, side, side) rollout maps of a test batch, computed once per setting and kept in the
    batch's `rollouts` cache, which every callback of that batch shares (rollout figures, masking order)."""
    cache, key = outputs["rollouts"], (head_fusion, discard_ratio)
    if key not in cache:
        cache[key] = A.cls_map(A.attention_rollout(outputs["attentions"], head_fusion, discard_ratio))
    return cache[key]


class _Quota:
    """How many of the test images (in order) an analysis still takes."""

    def __init__(self, max_images: int | None):
        self.max_images, self.seen = max_images, 0

    def take(self, batch_size: int) -> int:
        n = batch_size if self.max_images is None else max(0, min(batch_size, self.max_images - self.seen))
        self.seen += n
        return n


class ViTPredictions(Callback):
    """Top-k labels with probabilities: a figure per batch (up to `max_figures`), a table of every
    image, and top-1/top-k accuracy on the data set's classes where a class map is set."""

    module_needs = (AttentionInspectable,)
    data_needs = (EvaluationData,)

    def __init__(self, top_k: int = 5, images_per_figure: int = 8, max_figures: int = 4):
        self.top_k, self.images_per_figure, self.max_figures = top_k, images_per_figure, max_figures

    def on_test_epoch_start(self, trainer, pl_module):
        self.rows, self.figures, self.seen, self.top_k_hits = [], 0, 0, None  # hits: an int once labels are mapped

    def on_test_batch_end(  # type: ignore[override]  # narrower than Lightning's: what this callback needs
        self,
        trainer: Any,
        pl_module: AttentionInspectable,
        outputs: AttentionStep,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        probs = outputs["logits"].softmax(-1)
        top = probs.topk(min(self.top_k, probs.shape[1]), dim=-1)
        labels = outputs["labels"]
        n = len(labels)
        names = image_names(trainer, self.seen, n)
        classes = list(trainer.datamodule.classes)
        top_labels = [[pl_module.label_name(i) for i in row] for row in top.indices.tolist()]
        scores = outputs["dataset_scores"] if has_labels(outputs) else None
        mapped = scores is not None
        if scores is not None:
            k_top = scores.topk(min(self.top_k, scores.shape[1]), dim=-1).indices
            self.top_k_hits = (self.top_k_hits or 0) + int((k_top == labels.view(-1, 1)).any(1).sum())
            mapped_pred = scores.argmax(-1).tolist()
        titles = []
        for i in range(n):
            true = classes[labels[i]] if labels[i] >= 0 and classes else ""
            row = [
                names[i],
                true,
                top_labels[i][0],
                float(top.values[i, 0]),
                "; ".join(f"{lab} {p:.3f}" for lab, p in zip(top_labels[i], top.values[i].tolist(), strict=False)),
            ]
            if mapped:
                row.append(classes[mapped_pred[i]])
            self.rows.append(row)
            titles.append(
                names[i]
                + (f"\ntrue: {true}" if true else "")
                + (f", as class: {classes[mapped_pred[i]]}" if mapped else "")
            )
        if self.figures < self.max_figures and trainer.is_global_zero:
            k = min(self.images_per_figure, n)
            fig = figures.prediction_figure(
                outputs["pixels"][:k].cpu().numpy(),
                top_labels[:k],
                top.values[:k].cpu().numpy(),
                titles[:k],
                title=f"top-{top.indices.shape[1]} predictions of the model's labels",
            )
            log_figure(trainer, f"predictions/batch_{batch_idx}", fig)
            self.figures += 1
        self.seen += n

    def on_test_epoch_end(self, trainer, pl_module):
        mapped = self.top_k_hits is not None
        columns = ["image", "true_class", "top1_label", "top1_prob", "top_k"] + (["predicted_class"] if mapped else [])
        log_table(trainer, "predictions/top_k", columns, self.rows)
        skipped = list(trainer.datamodule.skipped) if isinstance(trainer.datamodule, ImageFiles) else []
        if skipped:
            log_table(trainer, "data/skipped_files", ["file", "reason"], [list(s) for s in skipped])
        numbers = {"predictions/images": float(self.seen), "data/skipped_files": float(len(skipped))}
        if mapped:
            numbers[f"test/top{self.top_k}_acc"] = self.top_k_hits / max(self.seen, 1)
        log_numbers(trainer, numbers)


class AttentionMaps(Callback):
    """The CLS token's attention to each patch, per layer and head (every head), for the first
    `num_images`; the heads fused (mean / max / min) per layer, overlaid on the image; and over
    up to `max_images`, the entropy of each head's map and the correlation between heads."""

    module_needs = (AttentionInspectable,)
    data_needs = (EvaluationData,)

    def __init__(
        self,
        num_images: int = 2,
        head_fusions: Sequence[str] = A.HEAD_FUSIONS,
        colormap: str = "inferno",
        alpha: float = 0.5,
        max_images: int | None = 512,
    ):
        bad = [f for f in head_fusions if f not in A.HEAD_FUSIONS]
        if bad:
            raise ValueError(f"callbacks.attention_maps.head_fusions: {bad} not in {list(A.HEAD_FUSIONS)}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"callbacks.attention_maps.alpha must lie in [0, 1], got {alpha}")
        import matplotlib

        if colormap not in matplotlib.colormaps:
            raise ValueError(f"callbacks.attention_maps.colormap={colormap!r} is not a matplotlib colormap")
        self.num_images, self.head_fusions, self.colormap, self.alpha = num_images, list(head_fusions), colormap, alpha
        self.max_images = max_images

    def on_test_epoch_start(self, trainer, pl_module):
        self.quota, self.examples, self.entropy, self.correlation, self.count = _Quota(self.max_images), [], 0.0, 0.0, 0

    def on_test_batch_end(  # type: ignore[override]  # narrower than Lightning's: what this callback needs
        self,
        trainer: Any,
        pl_module: AttentionInspectable,
        outputs: AttentionStep,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        n = self.quota.take(len(outputs["labels"]))
        if n == 0:
            return
        maps = A.cls_attention(outputs["attentions"][:, :n])  # (layers, n, heads, patches)
        # sums stay on the device until the epoch ends: a copy to the host per batch would wait for it
        self.entropy = self.entropy + A.attention_entropy(maps).sum(1)  # (layers, heads)
        self.correlation = self.correlation + torch.stack([A.head_correlation(m) * n for m in maps])  # (l, h, h)
        self.count += n
        start = self.quota.seen - n
        for i in range(min(n, self.num_images - len(self.examples))):
            self.examples.append(
                (image_names(trainer, start + i, 1)[0], outputs["pixels"][i].cpu().numpy(), maps[:, i].cpu())
            )

    def on_test_epoch_end(self, trainer, pl_module):
        if not self.count:
            return
        side = pl_module.grid_side
        for idx, (name, image, maps) in enumerate(self.examples):
            self.example_figures(trainer, idx, name, image, maps, side)
        self.head_statistics(trainer, side)

    def example_figures(self, trainer, idx: int, name: str, image, maps: torch.Tensor, side: int) -> None:
        """One image: every layer's and head's map, and the heads fused per layer over the image."""
        # maps: (layers, heads, patches)
        layers, heads = maps.shape[:2]
        grid = maps.view(layers, heads, side, side).numpy()
        panels = {f"L{layer + 1} H{h + 1}": grid[layer, h] for layer in range(layers) for h in range(heads)}
        log_figure(
            trainer,
            f"attention/heads_{idx}",
            figures.panel_grid(
                panels,
                ncols=heads,
                cmap=self.colormap,
                title=f"{name}: CLS-to-patch attention, every layer (rows) and head (columns)",
                colorbar="attention weight",
            ),
        )
        fused = {
            f"layer {layer + 1}": np.stack(
                [A.fuse_heads(maps[layer : layer + 1], f)[0].view(side, side).numpy() for f in self.head_fusions]
            )
            for layer in range(layers)
        }
        images = np.repeat(image[None], len(self.head_fusions), axis=0)
        log_figure(
            trainer,
            f"attention/fused_{idx}",
            figures.overlay_grid(
                images,
                fused,
                [f"{name}\nheads: {f}" for f in self.head_fusions],
                self.colormap,
                self.alpha,
                title="CLS-to-patch attention, heads fused per layer (each map scaled to its range)",
            ),
        )

    def head_statistics(self, trainer, side: int) -> None:
        """Over every image seen: each head's entropy, the correlation between heads, per layer."""
        entropy = (self.entropy / self.count).cpu().numpy()
        correlation = (self.correlation / self.count).cpu().numpy()
        layers, heads = entropy.shape
        max_entropy = math.log(side * side)
        rows = [f"layer {layer + 1}" for layer in range(layers)]
        cols = [f"H{h + 1}" for h in range(heads)]
        title = (
            f"entropy of each head's CLS-to-patch map, mean over {self.count} images (uniform: {max_entropy:.2f} nats)"
        )
        entropy_figure = figures.matrix_figure(
            entropy, rows, cols, title, colorbar="nats", xlabel="head", ylabel="layer"
        )
        log_figure(trainer, "attention/head_entropy", entropy_figure)
        panels = {f"layer {layer + 1}": correlation[layer] for layer in range(layers)}
        log_figure(
            trainer,
            "attention/head_correlation",
            figures.panel_grid(
                panels,
                ncols=6,
                cmap="coolwarm",
                vmin=-1,
                vmax=1,
                title=f"correlation between heads' CLS-to-patch maps, mean over {self.count} images",
                colorbar="Pearson r",
            ),
        )
        off = ~np.eye(heads, dtype=bool)
        log_table(
            trainer,
            "attention/heads",
            ["layer", "head", "entropy_nats", "entropy_over_uniform", "mean_corr_with_other_heads"],
            [
                [
                    layer + 1,
                    h + 1,
                    float(entropy[layer, h]),
                    float(entropy[layer, h] / max_entropy),
                    float(correlation[layer, h][off[h]].mean()) if heads > 1 else 1.0,
                ]
                for layer in range(layers)
                for h in range(heads)
            ],
        )
        numbers = {}
        for layer in range(layers):
            numbers[f"attention/layer_{layer + 1}/entropy"] = float(entropy[layer].mean())
            if heads > 1:
                numbers[f"attention/layer_{layer + 1}/head_correlation"] = float(correlation[layer][off].mean())
        log_numbers(trainer, numbers)


class AttentionRollout(Callback):
    """Attention rollout (Abnar & Zuidema 2020) and gradient-weighted rollout (Chefer et al. 2021
    style) for the first `num_images`, batched, overlaid on the images; the entropy of the
    rollout maps over up to `max_images` as a number."""

    module_needs = (AttentionInspectable,)
    data_needs = (EvaluationData,)

    def __init__(
        self,
        head_fusion: str = "mean",
        discard_ratio: float = 0.9,
        gradient: bool = True,
        target_class: str | int | None = None,
        num_images: int = 8,
        colormap: str = "inferno",
        alpha: float = 0.5,
        max_images: int | None = 512,
    ):
        check_rollout_settings(head_fusion, discard_ratio, "callbacks.attention_rollout")
        self.head_fusion, self.discard_ratio, self.gradient, self.target_class = (
            head_fusion,
            discard_ratio,
            gradient,
            target_class,
        )
        self.num_images, self.colormap, self.alpha, self.max_images = num_images, colormap, alpha, max_images
        self.target: int | None = None

    def check_setup(self, model, datamodule) -> None:
        """Called by the run loop before the test pass: the chosen class must be a model label."""
        if self.target_class is not None:
            self.target = model.label_index(self.target_class, "callbacks.attention_rollout.target_class")

    def on_test_epoch_start(self, trainer, pl_module):
        self.quota, self.rows, self.entropy, self.count = _Quota(self.max_images), [], 0.0, 0

    def on_test_batch_end(  # type: ignore[override]  # narrower than Lightning's: what this callback needs
        self,
        trainer: Any,
        pl_module: AttentionInspectable,
        outputs: AttentionStep,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        n = self.quota.take(len(outputs["labels"]))
        if n == 0:
            return
        rollout = rollout_maps(outputs, self.head_fusion, self.discard_ratio)[:n]
        self.entropy = self.entropy + A.attention_entropy(rollout.flatten(1)).sum()  # on the device until the end
        self.count += n
        k = min(n, self.num_images - len(self.rows))
        if k <= 0:
            return
        x = outputs["pixels"][:k]
        preds = outputs["logits"][:k].argmax(-1)
        target = preds if self.target is None else torch.full_like(preds, self.target)
        grad_map = None
        if self.gradient:
            attentions, grads = pl_module.attention_gradients(x, target)
            grad_map = A.cls_map(A.gradient_rollout(attentions, grads, self.discard_ratio)).cpu()
        names = image_names(trainer, self.quota.seen - n, k)
        classes = list(trainer.datamodule.classes)
        for i in range(k):
            label = int(outputs["labels"][i])
            true = f", true: {classes[label]}" if 0 <= label < len(classes) else ""
            self.rows.append(
                (
                    f"{names[i]}{true}\npred: {pl_module.label_name(int(preds[i]))}",
                    x[i].cpu().numpy(),
                    rollout[i].cpu().numpy(),
                    None if grad_map is None else grad_map[i].numpy(),
                    pl_module.label_name(int(target[i])),
                )
            )

    def on_test_epoch_end(self, trainer, pl_module):
        if not self.rows:
            return
        titles, images, maps, grads, targets = zip(*self.rows, strict=False)
        columns = {f"rollout ({self.head_fusion}, discard {self.discard_ratio:g})": np.stack(maps)}
        if self.gradient:
            which = "predicted class" if self.target is None else f"class {targets[0]}"
            columns[f"gradient rollout ({which})"] = np.stack(grads)
        log_figure(
            trainer,
            "rollout/maps",
            figures.overlay_grid(
                np.stack(images),
                columns,
                list(titles),
                self.colormap,
                self.alpha,
                title="attention rollout: where the CLS token's information comes from",
            ),
        )
        log_numbers(trainer, {"rollout/entropy": float(self.entropy) / self.count})


class PatchMasking(Callback):
    """Robustness to masked patches, masked in pixel space before normalisation with `fill`:
    random patches at each fraction (`trials` seeded draws), the seed's structured masks, and
    rollout-ordered deletion (most-attended first vs least-attended first vs random), with the
    deletion curves' AUC. Over up to `max_images` test images."""

    module_needs = (AttentionInspectable,)
    data_needs = (EvaluationData,)

    def __init__(
        self,
        fractions: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9),
        trials: int = 3,
        fill: str = "zero",
        structured: Sequence[str] = A.STRUCTURED_MASKS,
        saliency: bool = True,
        head_fusion: str = "mean",
        discard_ratio: float = 0.9,
        max_images: int | None = 512,
        seed: int = 0,
    ):
        bad = [f for f in fractions if not 0 <= f <= 1]
        if not fractions or bad:
            raise ValueError(
                f"callbacks.patch_masking.fractions must be a non-empty list of values in [0, 1], got {list(fractions)}"
            )
        if fill not in A.FILLS:
            raise ValueError(f"callbacks.patch_masking.fill must be one of {list(A.FILLS)}, got {fill!r}")
        unknown = [s for s in structured if s not in A.STRUCTURED_MASKS]
        if unknown:
            raise ValueError(f"callbacks.patch_masking.structured: {unknown} not in {list(A.STRUCTURED_MASKS)}")
        if not isinstance(trials, int) or trials < 1:
            raise ValueError(f"callbacks.patch_masking.trials must be a positive integer, got {trials!r}")
        check_rollout_settings(head_fusion, discard_ratio, "callbacks.patch_masking")  # the saliency order's rollout
        self.fractions, self.trials, self.fill, self.structured = (
            sorted(float(f) for f in fractions),
            trials,
            fill,
            list(structured),
        )
        self.saliency, self.head_fusion, self.discard_ratio, self.max_images, self.seed = (
            saliency,
            head_fusion,
            discard_ratio,
            max_images,
            seed,
        )

    def on_test_epoch_start(self, trainer, pl_module):
        self.quota, self.generator = _Quota(self.max_images), torch.Generator().manual_seed(self.seed)
        self.agree, self.correct = defaultdict(int), defaultdict(int)  # (curve, fraction or mask, trial) -> count
        self.count, self.labelled, self.examples = 0, None, {}

    def _score(self, pl_module, key, masked, reference, labels) -> None:
        logits = pl_module.logits(masked)  # counts stay on the device (no host sync per pass) until the epoch ends
        self.agree[key] = self.agree[key] + (logits.argmax(-1) == reference).sum()
        if self.labelled:
            self.correct[key] = self.correct[key] + (pl_module.dataset_scores(logits).argmax(-1) == labels).sum()

    def on_test_batch_end(  # type: ignore[override]  # narrower than Lightning's: what this callback needs
        self,
        trainer: Any,
        pl_module: AttentionInspectable,
        outputs: AttentionStep,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        n = self.quota.take(len(outputs["labels"]))
        if n == 0:
            return
        if self.labelled is None:
            self.labelled = has_labels(outputs)
        x, labels, reference = outputs["pixels"][:n], outputs["labels"][:n], outputs["logits"][:n].argmax(-1)
        patch, side = pl_module.patch_size, pl_module.grid_side
        num_patches = side * side
        first, middle = not self.examples, self.fractions[len(self.fractions) // 2]

        def masked(mask):
            return A.apply_patch_mask(x, mask, patch, self.fill, self.generator)

        for f in self.fractions:
            for t in range(self.trials):
                m = masked(A.random_patch_mask(f, num_patches, self.generator, n))
                self._score(pl_module, ("random", f, t), m, reference, labels)
                if first and t == 0:
                    self.examples[f"random {f:g}"] = m[0].cpu().numpy()
        for kind in self.structured:
            m = masked(A.structured_patch_mask(kind, side))
            self._score(pl_module, ("structured", kind, 0), m, reference, labels)
            if first:
                self.examples[kind] = m[0].cpu().numpy()
        if self.saliency:
            rollout = rollout_maps(outputs, self.head_fusion, self.discard_ratio)[:n].flatten(1).cpu()
            for f in self.fractions:
                for curve, most in (("most_attended_first", True), ("least_attended_first", False)):
                    m = masked(A.saliency_patch_mask(rollout, f, most_salient_first=most))
                    self._score(pl_module, (curve, f, 0), m, reference, labels)
                    if first and f == middle:
                        self.examples[f"{curve.replace('_', ' ')} {f:g}"] = m[0].cpu().numpy()
        self.count += n

    def on_test_epoch_end(self, trainer, pl_module):
        if not self.count:
            return
        measures = {"agreement": (self.agree, "agreement with the unmasked prediction")}
        if self.labelled:
            against = (
                " (through model.class_map)" if getattr(pl_module, "class_map", None) not in (None, "identity") else ""
            )
            measures["accuracy"] = (self.correct, f"accuracy against the data set's labels{against}")
        curves_fig, numbers, rows = {}, {"masking/images": float(self.count)}, []
        for measure, (counts, label) in measures.items():
            curves_fig[label] = self.measure_curves(pl_module, measure, counts, numbers, rows)
        log_table(trainer, "masking/curves", ["measure", "curve", "fraction_masked", "trial", "value"], rows)
        title = f"patch masking, fill={self.fill}, {self.count} images; saliency order from attention rollout"
        log_figure(
            trainer,
            "masking/deletion_curves",
            figures.curves(
                curves_fig,
                title=title,
                x=self.fractions,
                xlabel="fraction of patches masked",
                ylim=(-0.02, 1.02),
                ylabels={label: "fraction of images" for label in curves_fig},
            ),
        )
        self.example_figure(trainer, numbers)
        log_numbers(trainer, numbers)

    def measure_curves(self, pl_module, measure: str, counts: dict, numbers: dict, rows: list) -> dict:
        """One measure (agreement or accuracy): its deletion curves (returned, for the figure), their
        AUCs and points added to `numbers`, a row per point added to `rows`."""
        value = {k: float(v) / self.count for k, v in counts.items()}
        random = np.array(
            [[value[("random", f, t)] for t in range(self.trials)] for f in self.fractions]
        )  # (fractions, trials)
        auc = numbers[f"masking/random/{measure}_auc"] = A.deletion_auc(self.fractions, random.mean(1))
        lines = {f"random (mean of {self.trials}), AUC {auc:.3f}": random.mean(1).tolist()}
        for i, f in enumerate(self.fractions):
            rows += [[measure, "random", f, t, float(random[i, t])] for t in range(self.trials)]
            numbers[f"masking/random/{measure}@{f:g}"] = float(random[i].mean())
        if self.saliency:
            for curve in ("most_attended_first", "least_attended_first"):
                ys = [value[(curve, f, 0)] for f in self.fractions]
                auc = numbers[f"masking/{curve}/{measure}_auc"] = A.deletion_auc(self.fractions, ys)
                lines[f"{curve.replace('_', ' ')}, AUC {auc:.3f}"] = ys
                rows += [[measure, curve, f, 0, y] for f, y in zip(self.fractions, ys, strict=False)]
        for kind in self.structured:
            numbers[f"masking/structured/{kind}/{measure}"] = value[("structured", kind, 0)]
            rows.append(
                [
                    measure,
                    f"structured_{kind}",
                    float(A.structured_patch_mask(kind, pl_module.grid_side).float().mean()),
                    0,
                    value[("structured", kind, 0)],
                ]
            )
        return lines

    def example_figure(self, trainer, numbers: dict) -> None:
        """The masks on the first image; the structured ones titled with their score over all images."""
        main = "accuracy" if self.labelled else "agreement"
        titles = [
            k + (f"\n{main} {numbers[f'masking/structured/{k}/{main}']:.3f}" if k in self.structured else "")
            for k in self.examples
        ]
        log_figure(
            trainer,
            "masking/examples",
            figures.titled_images(
                np.stack(list(self.examples.values())),
                titles,
                ncols=6,
                title=(
                    f"masks on the first image (fill={self.fill}); structured masks with their {main} over all images"
                ),
            ),
        )


class LinearProbe(Callback):
    """Logistic regression on the final CLS token vs the mean of the final patch tokens, fitted on
    up to `train_images` of the train split, scored on the test images seen (labelled sets only)."""

    module_needs = (AttentionInspectable,)
    data_needs = (EvaluationData,)

    def __init__(self, train_images: int | None = 5000, c: float = 1.0):
        self.train_images, self.c = train_images, c

    def on_test_epoch_start(self, trainer, pl_module):
        self.test = defaultdict(list)

    def on_test_batch_end(  # type: ignore[override]  # narrower than Lightning's: what this callback needs
        self,
        trainer: Any,
        pl_module: AttentionInspectable,
        outputs: AttentionStep,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        for key in ("cls", "patch_mean", "labels"):
            self.test[key].append(outputs[key].cpu())

    def on_test_epoch_end(self, trainer, pl_module):
        test = {k: torch.cat(v).numpy() for k, v in self.test.items()}
        if not len(test.get("labels", [])) or (test["labels"] < 0).any() or not trainer.datamodule.has_split("train"):
            log.info("linear probe skipped: the data set has no labelled train split")
            return
        train = defaultdict(list)
        for x, y in eval_batches(trainer, pl_module, self.train_images, split="train"):
            out = pl_module.infer(pl_module.pixels(x))
            for key in ("cls", "patch_mean"):
                train[key].append(out[key].cpu())
            train["labels"].append(y.cpu())
        train = {k: torch.cat(v).numpy() for k, v in train.items()}
        if len(np.unique(train["labels"])) < 2:
            log.info("linear probe skipped: fewer than two classes among the train images")
            return
        numbers, rows = {}, []
        for key in ("cls", "patch_mean"):
            probe = embedding.linear_probe(
                train[key], train["labels"], test[key], test["labels"], c=self.c, scale="standard"
            )
            numbers.update({f"probe/{key}/train_acc": probe["train_acc"], f"probe/{key}/test_acc": probe["test_acc"]})
            rows.append([key, len(train["labels"]), len(test["labels"]), probe["train_acc"], probe["test_acc"]])
        log_table(trainer, "probe/linear", ["features", "train_images", "test_images", "train_acc", "test_acc"], rows)
        log_numbers(trainer, numbers)
