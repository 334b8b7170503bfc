"""A linear probe on the final CLS and mean patch tokens: how separable the classes are.

One analysis of the vit task (conf/task/vit.yaml), fed by its test pass: what each test batch
holds, and what the ViT analyses share about it, is in analysis/vit_steps.py.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from . import embedding
from .contracts import AttentionInspectable, AttentionStep, EvaluationData
from .evaluation import eval_batches
from .evidence import log_numbers, log_table
from .vit_steps import StepAnalysis

log = logging.getLogger(__name__)


class LinearProbe(StepAnalysis):
    """Logistic regression on the final CLS token vs the mean of the final patch tokens, fitted on
    up to `train_images` of the train split, scored on the test images seen (labelled sets only)."""

    module_needs = (AttentionInspectable,)
    data_needs = (EvaluationData,)

    def __init__(self, *, train_images: int | None, c: float):
        self.train_images, self.c = train_images, c

    def on_test_epoch_start(self, trainer, pl_module):
        self.test = defaultdict(list)

    def take(self, trainer: Any, pl_module: AttentionInspectable, outputs: AttentionStep, n: int) -> None:
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
