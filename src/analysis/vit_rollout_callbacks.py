"""Attention rollout (Abnar & Zuidema 2020) and its gradient-weighted variant, overlaid on the images.

One analysis of the vit task (conf/task/vit.yaml), fed by its test pass: what each test batch
holds, and what the ViT analyses share about it, is in analysis/vit_steps.py.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from . import attention as A
from . import figures
from .contracts import AttentionInspectable, AttentionStep, EvaluationData
from .evidence import describe_run, log_figure, log_numbers
from .vit_steps import Quota, StepAnalysis, check_overlay, check_rollout_settings, image_names, rollout_maps

log = logging.getLogger(__name__)


class AttentionRollout(StepAnalysis):
    """Attention rollout (Abnar & Zuidema 2020) and gradient-weighted rollout (Chefer et al. 2021
    style) for the first `num_images`, batched, overlaid on the images; the entropy of the
    rollout maps over up to `max_images` as a number."""

    quota: Quota  # the first max_images test images (made when the test pass starts)

    module_needs = (AttentionInspectable,)
    data_needs = (EvaluationData,)

    def __init__(
        self,
        *,
        head_fusion: str,
        discard_ratio: float,
        gradient: bool,
        target_class: str | int | None,
        num_images: int,
        colormap: str,
        alpha: float,
        max_images: int | None,
    ):
        check_rollout_settings(head_fusion, discard_ratio, "callbacks.attention_rollout")
        check_overlay(colormap, alpha, "callbacks.attention_rollout")
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
        self.quota, self.rows, self.entropy, self.count = Quota(self.max_images), [], 0.0, 0

    def take(self, trainer: Any, pl_module: AttentionInspectable, outputs: AttentionStep, n: int) -> None:
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
                title="attention rollout, where the CLS token's information comes from:\n"
                + describe_run(trainer, pl_module),
            ),
        )
        log_numbers(trainer, {"rollout/entropy": float(self.entropy) / self.count})
