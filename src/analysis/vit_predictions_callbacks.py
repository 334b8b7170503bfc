"""The model's top-k labels per image: figures, a table, accuracy where a class map is set.

One analysis of the vit task (conf/task/vit.yaml), fed by its test pass: what each test batch
holds, and what the ViT analyses share about it, is in analysis/vit_steps.py.
"""

from __future__ import annotations

import logging
from typing import Any

from . import figures
from .contracts import AttentionInspectable, AttentionStep, EvaluationData, ImageFiles
from .evidence import describe_run, log_figure, log_numbers, log_table
from .vit_steps import StepAnalysis, has_labels, image_names

log = logging.getLogger(__name__)


class ViTPredictions(StepAnalysis):
    """Top-k labels with probabilities: a figure per batch (up to `max_figures`), a table of every
    image, and top-1/top-k accuracy on the data set's classes where a class map is set."""

    module_needs = (AttentionInspectable,)
    data_needs = (EvaluationData,)

    def __init__(self, *, top_k: int, images_per_figure: int, max_figures: int):
        self.top_k, self.images_per_figure, self.max_figures = top_k, images_per_figure, max_figures

    def on_test_epoch_start(self, trainer, pl_module):
        self.rows, self.figures, self.seen, self.top_k_hits = [], 0, 0, None  # hits: an int once labels are mapped

    def take(self, trainer: Any, pl_module: AttentionInspectable, outputs: AttentionStep, n: int) -> None:
        probs = outputs["logits"].softmax(-1)
        top = probs.topk(min(self.top_k, probs.shape[1]), dim=-1)
        labels = outputs["labels"]
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
                title=f"top-{top.indices.shape[1]} predictions of the model's labels: "
                f"{describe_run(trainer, pl_module)}",
            )
            log_figure(trainer, f"predictions/batch_{self.figures}", fig)  # figures: one a batch, from the first
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
