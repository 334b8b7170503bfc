"""Callbacks any training task can use: loss curves, and the classification report."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import Callback

from . import figures
from .contracts import Classifier, ClassifierStep, EvaluationData
from .evaluation import class_names
from .evidence import describe_run, log_figure, log_numbers, log_table


class LossCurves(Callback):
    """Records `<split>/<metric>` per epoch for train and val and plots them when fitting ends."""

    def __init__(
        self,
        *,
        metrics: Sequence[str],
        splits: Sequence[str] = ("train", "val"),
        ylabels: dict[str, str] | None,
    ):
        self.metrics, self.splits, self.ylabels = list(metrics), list(splits), dict(ylabels or {})
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
            title = f"{describe_run(trainer, pl_module, 'train and validation splits')}, per epoch"
            ckpt = getattr(trainer, "checkpoint_callback", None)
            if ckpt is not None and ckpt.monitor and ckpt.best_model_score is not None:
                title += f"\nbest {ckpt.monitor} = {float(ckpt.best_model_score):.4g} (the checkpoint tested)"
            log_figure(trainer, "curves/loss", figures.curves(history, title=title, ylabels=self.ylabels))


class ClassificationReport(Callback):
    """After testing: confusion matrix and per-class accuracy (torchmetrics) as a figure, a W&B
    table and numbers. Reads `test_step`'s {"preds"} (contracts.Classifier)."""

    module_needs = (Classifier,)

    data_needs = (EvaluationData,)

    def on_test_epoch_start(self, trainer, pl_module):
        from torchmetrics.classification import MulticlassConfusionMatrix

        # the class count is the data's (one home): read when the test pass starts
        self.confusion = MulticlassConfusionMatrix(len(trainer.datamodule.classes)).to(pl_module.device)

    def on_test_batch_end(  # type: ignore[override]  # narrower than Lightning's: what this callback needs
        self,
        trainer: Any,
        pl_module: Classifier,
        outputs: ClassifierStep,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.confusion.update(outputs["preds"], batch[1])

    def on_test_epoch_end(self, trainer, pl_module):
        matrix = self.confusion.compute().cpu().numpy()
        names = class_names(trainer, len(matrix))
        per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
        total = int(matrix.sum())
        acc = float(matrix.trace() / max(total, 1))
        title = f"confusion matrix: {describe_run(trainer, pl_module)} ({total} images)\naccuracy {acc:.2%}"
        log_figure(trainer, "test/confusion_matrix", figures.confusion_figure(matrix, names, title=title))
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
            chart=("class", "accuracy", "test accuracy per class"),
        )
