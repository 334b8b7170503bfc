"""Attention maps: the CLS token's attention per layer and head, fused per layer, head statistics.

One analysis of the vit task (conf/task/vit.yaml), fed by its test pass: what each test batch
holds, and what the ViT analyses share about it, is in analysis/vit_steps.py.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from . import attention as A
from . import figures
from .contracts import AttentionInspectable, AttentionStep, EvaluationData
from .evidence import describe_run, log_figure, log_numbers, log_table
from .vit_steps import Quota, StepAnalysis, check_overlay, image_names

log = logging.getLogger(__name__)


class AttentionMaps(StepAnalysis):
    """The CLS token's attention to each patch, per layer and head (every head), for the first
    `num_images`; the heads fused (mean / max / min) per layer, overlaid on the image; and over
    up to `max_images`, the entropy of each head's map and the correlation between heads."""

    quota: Quota  # the first max_images test images (made when the test pass starts)

    module_needs = (AttentionInspectable,)
    data_needs = (EvaluationData,)

    def __init__(
        self,
        *,
        num_images: int,
        head_fusions: Sequence[str],
        colormap: str,
        alpha: float,
        max_images: int | None,
    ):
        bad = [f for f in head_fusions if f not in A.HEAD_FUSIONS]
        if bad:
            raise ValueError(f"callbacks.attention_maps.head_fusions: {bad} not in {list(A.HEAD_FUSIONS)}")
        check_overlay(colormap, alpha, "callbacks.attention_maps")
        self.num_images, self.head_fusions, self.colormap, self.alpha = num_images, list(head_fusions), colormap, alpha
        self.max_images = max_images

    def on_test_epoch_start(self, trainer, pl_module):
        self.quota, self.examples, self.entropy, self.correlation, self.count = Quota(self.max_images), [], 0.0, 0.0, 0

    def take(self, trainer: Any, pl_module: AttentionInspectable, outputs: AttentionStep, n: int) -> None:
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
        side, run = pl_module.grid_side, describe_run(trainer, pl_module)
        for idx, (name, image, maps) in enumerate(self.examples):
            self.example_figures(trainer, run, idx, name, image, maps, side)
        self.head_statistics(trainer, run, side)

    def example_figures(self, trainer, run: str, idx: int, name: str, image, maps: torch.Tensor, side: int) -> None:
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
                title=f"{name}: CLS-to-patch attention, every layer (rows) and head (columns)\n{run}",
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
                title=f"CLS-to-patch attention, heads fused per layer (each map scaled to its range)\n{run}",
            ),
        )

    def head_statistics(self, trainer, run: str, side: int) -> None:
        """Over every image seen: each head's entropy, the correlation between heads, per layer."""
        entropy = (self.entropy / self.count).cpu().numpy()
        correlation = (self.correlation / self.count).cpu().numpy()
        layers, heads = entropy.shape
        max_entropy = math.log(side * side)
        rows = [f"layer {layer + 1}" for layer in range(layers)]
        cols = [f"H{h + 1}" for h in range(heads)]
        title = (
            f"entropy of each head's CLS-to-patch map, mean over {self.count} images (uniform: {max_entropy:.2f} nats)"
            f"\n{run}"
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
                title=f"correlation between heads' CLS-to-patch maps, mean over {self.count} images\n{run}",
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
