"""Patch masking: accuracy / agreement as patches are masked in rollout, reverse or random order.

One analysis of the vit task (conf/task/vit.yaml), fed by its test pass: what each test batch
holds, and what the ViT analyses share about it, is in analysis/vit_steps.py.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from . import attention as A
from . import figures
from .contracts import AttentionInspectable, AttentionStep, EvaluationData
from .evidence import describe_run, log_figure, log_numbers, log_table
from .vit_steps import Quota, StepAnalysis, check_rollout_settings, has_labels, rollout_maps

log = logging.getLogger(__name__)


class PatchMasking(StepAnalysis):
    """Robustness to masked patches, masked in pixel space before normalisation with `fill`:
    random patches at each fraction (`trials` seeded draws), the seed's structured masks, and
    rollout-ordered deletion (most-attended first vs least-attended first vs random), with the
    deletion curves' AUC. Over up to `max_images` test images."""

    quota: Quota  # the first max_images test images (made when the test pass starts)

    module_needs = (AttentionInspectable,)
    data_needs = (EvaluationData,)

    def __init__(
        self,
        *,
        fractions: Sequence[float],
        trials: int,
        fill: str,
        structured: Sequence[str],
        saliency: bool,
        head_fusion: str,
        discard_ratio: float,
        max_images: int | None,
        seed: int,
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
        self.quota, self.generator = Quota(self.max_images), torch.Generator().manual_seed(self.seed)
        self.agree, self.correct = defaultdict(int), defaultdict(int)  # (curve, fraction or mask, trial) -> count
        self.count, self.labelled, self.examples = 0, None, {}

    def _score(self, pl_module, key, masked, reference, labels) -> None:
        logits = pl_module.logits(masked)  # counts stay on the device (no host sync per pass) until the epoch ends
        self.agree[key] = self.agree[key] + (logits.argmax(-1) == reference).sum()
        if self.labelled:
            self.correct[key] = self.correct[key] + (pl_module.dataset_scores(logits).argmax(-1) == labels).sum()

    def take(self, trainer: Any, pl_module: AttentionInspectable, outputs: AttentionStep, n: int) -> None:
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
        measure = "accuracy" if "accuracy" in measures else "agreement"
        headline = ", ".join(
            f"{curve.replace('_', ' ')} {numbers[f'masking/{curve}/{measure}_auc']:.3f}"
            for curve in ("most_attended_first", "random", "least_attended_first")
            if f"masking/{curve}/{measure}_auc" in numbers
        )
        title = (
            f"patch masking: {describe_run(trainer, pl_module)} ({self.count} images, fill={self.fill}), "
            f"saliency order from attention rollout\n{measure} AUC: {headline}"
        )
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
