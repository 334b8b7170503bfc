"""The clip task's analyses, run once the test pass has embedded the test images.

Needs a module that is contracts.ImageTextEmbedder (models.ClipZeroShot) and data that is
contracts.EvaluationData; the train split is embedded here, once, when something is fitted.
Every number goes to metrics.json and the loggers, every table to tables/*.csv and W&B, every
figure to figures/*.png and W&B.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from sklearn.metrics import confusion_matrix

from . import clip as C
from . import embedding, figures
from .contracts import EvaluationData, ImageTextEmbedder
from .evaluation import class_names, eval_batches
from .evidence import log_figure, log_numbers, log_table


class ClipAnalyses(Callback):
    module_needs = (ImageTextEmbedder,)
    data_needs = (EvaluationData,)

    def __init__(
        self,
        templates: Mapping[str, Sequence[str]],
        pair_template: str = "openai_stl10",
        gap_lambdas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
        procrustes_fit_split: str = "train",
        tsne_pairs: int = 500,
        projections: Sequence[str] = ("tsne", "umap"),
        seed: int = 0,
    ):
        if pair_template not in templates:
            raise ValueError(
                f"callbacks.clip_analyses.pair_template={pair_template!r} "
                f"is not one of the template sets {list(templates)}"
            )
        if procrustes_fit_split not in ("train", "test"):
            raise ValueError(
                f"callbacks.clip_analyses.procrustes_fit_split must be train or test, got {procrustes_fit_split!r}"
            )
        self.templates = {k: list(v) for k, v in templates.items()}
        self.pair_template, self.gap_lambdas = pair_template, list(gap_lambdas)
        self.fit_split, self.tsne_pairs, self.projections, self.seed = (
            procrustes_fit_split,
            tsne_pairs,
            [embedding.check_projection(p, "callbacks.clip_analyses.projections") for p in projections],
            seed,
        )

    def class_embeddings(self, pl_module, names: list[str], templates: list[str]) -> np.ndarray:
        """(classes, D): the ensemble of `templates` per class (one template: that prompt)."""
        texts = [t.format(c) for c in names for t in templates]
        return C.ensemble(pl_module.encode_texts(texts).reshape(len(names), len(templates), -1))

    @staticmethod
    def embed_split(trainer, pl_module, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(normalised image embeddings, labels) of a whole split, batched on the model's device."""
        z, y = [], []
        for x, labels in eval_batches(trainer, pl_module, split=split):
            z.append(pl_module.encode_images(x).float().cpu())
            y.append(labels.cpu())
        return torch.cat(z).numpy(), torch.cat(y).numpy()

    def on_test_end(self, trainer, pl_module):
        img, labels = pl_module.test_embeddings()
        names = class_names(trainer, int(labels.max()) + 1)
        numbers: dict[str, float] = {}

        # zero-shot accuracy per template set, in one table
        rows, classes_by_set, preds_by_set = [], {}, {}
        for set_name, templates in self.templates.items():
            classes = classes_by_set[set_name] = self.class_embeddings(pl_module, names, templates)
            scores = C.zero_shot_scores(img, classes)
            m = C.classification_metrics(scores, labels)
            preds_by_set[set_name] = scores.argmax(1)
            per_class = C.per_class_accuracy(preds_by_set[set_name], labels, len(names))
            rows.append([set_name, len(templates), m["top1"], m["top5"], m["balanced_acc"], *per_class.tolist()])
            numbers.update({f"zeroshot/{set_name}/{k}": v for k, v in m.items()})
        log_table(
            trainer, "zeroshot/by_template_set", ["templates", "prompts", "top1", "top5", "balanced_acc", *names], rows
        )
        classes, preds = classes_by_set[self.pair_template], preds_by_set[self.pair_template]
        cm = confusion_matrix(labels, preds, labels=range(len(names)))
        log_figure(
            trainer,
            "zeroshot/confusion_matrix",
            figures.confusion_figure(cm, names, title=f"zero-shot, templates: {self.pair_template}"),
        )
        numbers["zeroshot/best_top1"] = max(r[2] for r in rows)

        # the modality gap: each image against its class prompt (the paired text)
        text = classes[labels]
        numbers.update({"gap/norm": C.modality_gap(img, text), "gap/pair_cosine": C.pair_cosine(img, text)})
        numbers["gap/modality_separability"] = C.modality_separability(img, text, seed=self.seed)
        direction = C.gap_vector(img, text)
        gaps, accs = [], []
        for lam in self.gap_lambdas:
            shifted_img, _ = C.shift_along_gap(img, text, lam, direction)
            _, shifted_classes = C.shift_along_gap(img, classes, lam, direction)
            gaps.append(C.modality_gap(shifted_img, shifted_classes[labels]))
            accs.append(C.classification_metrics(C.zero_shot_scores(shifted_img, shifted_classes), labels)["top1"])
        log_table(
            trainer,
            "gap/shift",
            ["lambda", "gap", "zeroshot_top1"],
            [[lam, g, a] for lam, g, a in zip(self.gap_lambdas, gaps, accs, strict=False)],
        )
        log_figure(
            trainer,
            "gap/shift",
            figures.curves(
                {"modality gap": {"gap": gaps}, "zero-shot top-1": {"accuracy": accs}},
                title="shift along the gap direction",
                x=self.gap_lambdas,
                xlabel="lambda",
            ),
        )

        # Procrustes image -> paired text, fitted on the train split (or, on request, the test set)
        train_img, train_labels = self.embed_split(trainer, pl_module, "train")  # once: the fit and the probe
        fit_img, fit_labels = (train_img, train_labels) if self.fit_split == "train" else (img, labels)
        tag = "procrustes" if self.fit_split == "train" else "procrustes_FITTED_ON_TEST"
        before = float((preds == labels).mean())
        mapped_by = {}
        for center in (False, True):
            fit = C.fit_procrustes(fit_img, classes[fit_labels], center=center)
            mapped = mapped_by[center] = C.apply_procrustes(img, fit)
            key = f"{tag}/{'centred' if center else 'uncentred'}"
            after_preds = C.zero_shot_scores(mapped, classes).argmax(1)
            test = C.mcnemar(preds == labels, after_preds == labels)
            numbers.update(
                {
                    f"{key}/top1_before": before,
                    f"{key}/top1_after": float((after_preds == labels).mean()),
                    f"{key}/gap_after": C.modality_gap(mapped, text),
                    f"{key}/pair_cosine_after": C.pair_cosine(mapped, text),
                    f"{key}/mcnemar_p": test["p_value"],
                }
            )
        probe = embedding.linear_probe(train_img, train_labels, img, labels)
        numbers.update({"linear_probe/train_acc": probe["train_acc"], "linear_probe/test_acc": probe["test_acc"]})

        # pictures: images and their paired texts, before and after alignment
        n = min(self.tsne_pairs, len(img))
        pick = np.random.default_rng(self.seed).choice(len(img), size=n, replace=False)
        panels = {
            "before alignment": (img[pick], text[pick]),
            f"after {tag} (uncentred)": (mapped_by[False][pick], text[pick]),
        }
        for method in self.projections:
            projected = {}
            for title, (a, b) in panels.items():
                both = embedding.project_2d(np.concatenate([a, b]), method, seed=self.seed)
                projected[title] = (both[:n], both[n:])
            log_figure(
                trainer,
                f"gap/pairs_{method}",
                figures.pairs_figure(
                    projected, labels[pick], names, title=f"{n} test images and their class prompts ({method})"
                ),
            )
        log_numbers(trainer, numbers)
