"""Reading a data module's splits again after the test pass, and scoring a classifier on them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch

from .contracts import EvaluationData


def class_names(trainer: Any, n: int) -> list[str]:
    """The data module's class names, or 0..n-1 where it has none for n classes (n: labels seen,
    which may fall short of the data set's count in a tiny run: then the data set's names win)."""
    dm = trainer.datamodule
    names = list(dm.classes) if isinstance(dm, EvaluationData) else []
    return names if len(names) >= n else [str(c) for c in range(n)]


def eval_batches(
    trainer: Any, pl_module: pl.LightningModule, max_images: int | None = None, split: str = "test"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(model-ready images, labels) on the model's device, from the start of a split, unaugmented.
    A run whose test pass is limited to a count of batches (debug=smoke, trainer.limit_test_batches=2)
    analyses those batches' test images only, as the feature cache does for train and val."""
    dm: EvaluationData = trainer.datamodule
    return dm.eval_batches(
        split, pl_module.device, tested_images(trainer, max_images) if split == "test" else max_images
    )


def tested_images(trainer: Any, max_images: int | None) -> int | None:
    """max_images, at most the images of an integer `limit_test_batches` (a fraction: no cap)."""
    limit, size = getattr(trainer, "limit_test_batches", None), getattr(trainer.datamodule, "eval_batch_size", None)
    if not isinstance(limit, int) or isinstance(limit, bool) or not isinstance(size, int):
        return max_images
    return limit * size if max_images is None else min(max_images, limit * size)


def accuracy(trainer: Any, pl_module: Any, max_images: int | None = None, split: str = "test") -> float:
    """Top-1 accuracy of a contracts.Classifier's `predict_logits` on (the first `max_images` of) a split."""
    was_training = pl_module.training
    pl_module.eval()
    correct = total = 0
    for x, y in eval_batches(trainer, pl_module, max_images, split):
        correct += int((pl_module.predict_logits(x).argmax(1) == y).sum())
        total += len(y)
    pl_module.train(was_training)
    return correct / max(total, 1)
