"""What the vit task's analyses share about a test batch (models.ViTClassifier.test_step).

Each test batch arrives once as `outputs`: pixels at the model's side in [0, 1] (unnormalised),
logits, attentions (layers, B, heads, T, T), the final CLS token and mean patch token, labels
(-1: unlabelled) and data-set class scores when `model.class_map` is set, and `rollouts`: the
one per-batch cache the analyses share (`rollout_maps`). The callbacks (analysis/vit_*_callbacks.py,
one analysis a file) take what they need from it and run extra forward passes only where the
analysis needs other inputs (masked images, gradients, the train split for the probe).

Measured against what: on a labelled set with a class map, accuracy against the labels; always,
agreement with the model's own unmasked prediction. Keys and figure titles say which.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from . import attention as A
from .contracts import AttentionInspectable, AttentionStep, ImageFiles


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


def check_overlay(colormap: str, alpha: float, key: str) -> None:
    """A heat map drawn over an image: a matplotlib colormap, an opacity in [0, 1]."""
    import matplotlib

    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"{key}.alpha must lie in [0, 1], got {alpha!r}")
    if colormap not in matplotlib.colormaps:
        raise ValueError(f"{key}.colormap={colormap!r} is not a matplotlib colormap (e.g. inferno, jet, viridis)")


def rollout_maps(outputs: AttentionStep, head_fusion: str, discard_ratio: float) -> torch.Tensor:
    """(B, side, side) rollout maps of a test batch, computed once per setting and kept in the
    batch's `rollouts` cache, which every callback of that batch shares (rollout figures, masking order)."""
    cache, key = outputs["rollouts"], (head_fusion, discard_ratio)
    if key not in cache:
        cache[key] = A.cls_map(A.attention_rollout(outputs["attentions"], head_fusion, discard_ratio))
    return cache[key]


class Quota:
    """How many of the test images (in order) an analysis still takes."""

    def __init__(self, max_images: int | None):
        self.max_images, self.seen = max_images, 0

    def take(self, batch_size: int) -> int:
        n = batch_size if self.max_images is None else max(0, min(batch_size, self.max_images - self.seen))
        self.seen += n
        return n


class StepAnalysis(Callback):
    """A vit analysis fed by each test step's outputs: a subclass implements `take`. One that looks at
    the first `max_images` test images only sets `self.quota = Quota(max_images)` when the test pass
    starts; `take` then gets the images of each batch that are still within it, and no call after."""

    quota: Quota | None = None

    def on_test_batch_end(  # type: ignore[override]  # narrower than Lightning's: what the analyses need
        self,
        trainer: Any,
        pl_module: AttentionInspectable,
        outputs: AttentionStep,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        size = len(outputs["labels"])
        n = size if self.quota is None else self.quota.take(size)
        if n:
            self.take(trainer, pl_module, outputs, n)

    def take(self, trainer: Any, pl_module: AttentionInspectable, outputs: AttentionStep, n: int) -> None:
        """The first `n` images of this test batch (all of them where there is no quota)."""
        raise NotImplementedError
