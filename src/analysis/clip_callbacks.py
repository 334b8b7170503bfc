"""The clip task's analyses, run once the test pass has embedded the test images.

Needs a module that is contracts.ImageTextEmbedder (models.ClipModule) and data that is
contracts.EvaluationData; the train split is embedded here, once, when something is fitted.
Every number goes to metrics.json and the loggers, every table to tables/*.csv and W&B, every
figure to figures/*.png and W&B. When the model trains first, the zero-shot accuracy and the gap
are also measured on the untrained model (`init/...`), before the first step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from sklearn.metrics import confusion_matrix

from . import clip as C
from . import embedding, figures
from .contracts import EvaluationData, ExportsOpenClip, ImageTextEmbedder, TwoTowerEmbedder
from .evaluation import class_names, eval_batches
from .evidence import describe_run, log_figure, log_numbers, log_table

log = logging.getLogger(__name__)


def at_initialisation(trainer) -> bool:
    """Whether fitting starts from step 0 (not a resumed run): the model is still as initialised."""
    return trainer.global_step == 0 and not trainer.ckpt_path


class ClipAnalyses(Callback):
    module_needs = (ImageTextEmbedder,)
    data_needs = (EvaluationData,)

    def __init__(
        self,
        *,
        templates: Mapping[str, Sequence[str] | None],
        pair_template: str,
        train_templates: Sequence[str] | None,
        at_init: bool,
        gap_lambdas: Sequence[float],
        procrustes_fit_split: str,
        tsne_pairs: int,
        projections: Sequence[str],
        seed: int,
    ):
        sets: dict[str, list[str]] = {k: list(v) for k, v in templates.items() if v}  # a set set to null: left out
        if train_templates:
            sets = {"train_templates": list(train_templates), **sets}
        if pair_template not in sets:
            raise ValueError(
                f"callbacks.clip_analyses.pair_template={pair_template!r} is not one of the template sets {list(sets)}"
            )
        if procrustes_fit_split not in ("train", "test"):
            raise ValueError(
                f"callbacks.clip_analyses.procrustes_fit_split must be train or test, got {procrustes_fit_split!r}"
            )
        self.templates = sets
        self.train_templates, self.at_init = set(train_templates or []), at_init
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

    def zero_shot(self, pl_module, img, labels, names, prefix: str = "zeroshot"):
        """Zero-shot metrics per template set: (numbers, table rows, class embeddings by set,
        predictions by set). A row says which share of its prompts the model was trained on."""
        numbers, rows, classes_by_set, preds_by_set = {}, [], {}, {}
        for set_name, templates in self.templates.items():
            classes = classes_by_set[set_name] = self.class_embeddings(pl_module, names, templates)
            scores = C.zero_shot_scores(img, classes)
            m = C.classification_metrics(scores, labels)
            preds_by_set[set_name] = scores.argmax(1)
            per_class = C.per_class_accuracy(preds_by_set[set_name], labels, len(names))
            seen = sum(t in self.train_templates for t in templates) / len(templates)
            rows.append([set_name, len(templates), seen, m["top1"], m["top5"], m["balanced_acc"], *per_class.tolist()])
            numbers.update({f"{prefix}/{set_name}/{k}": v for k, v in m.items()})
        numbers[f"{prefix}/best_top1"] = max(r[3] for r in rows)
        return numbers, rows, classes_by_set, preds_by_set

    def gap_numbers(self, img, text, prefix: str = "gap") -> dict[str, float]:
        """The modality gap of image/paired-prompt rows: norm, pair cosine, separability."""
        return {
            f"{prefix}/norm": C.modality_gap(img, text),
            f"{prefix}/pair_cosine": C.pair_cosine(img, text),
            f"{prefix}/modality_separability": C.modality_separability(img, text, seed=self.seed),
        }

    def on_train_start(self, trainer, pl_module):
        """The untrained model, before the first step: zero-shot accuracy and the gap on the test
        split, as `init/...` (not on a resumed run: its weights are no longer the initial ones)."""
        if not self.at_init or not at_initialisation(trainer) or not trainer.datamodule.has_split("test"):
            return
        was_training = pl_module.training
        pl_module.eval()
        img, labels = self.embed_split(trainer, pl_module, "test")
        names = class_names(trainer, int(labels.max()) + 1)
        numbers, _, classes_by_set, _ = self.zero_shot(pl_module, img, labels, names, prefix="init/zeroshot")
        numbers.update(self.gap_numbers(img, classes_by_set[self.pair_template][labels], prefix="init/gap"))
        pl_module.train(was_training)
        log_numbers(trainer, numbers)

    def on_test_end(self, trainer, pl_module):
        """Each analysis is one method below: zero-shot, the gap and its shift, Procrustes (and the
        linear probe on the same train embeddings), the before/after pictures."""
        img, labels = pl_module.test_embeddings()
        logging.getLogger("analysis").info(
            "CLIP analyses on %d test images: zero-shot, the gap, Procrustes, projections", len(labels)
        )
        names = class_names(trainer, int(labels.max()) + 1)
        numbers, preds, classes = self.zero_shot_report(trainer, pl_module, img, labels, names)
        text = classes[labels]  # each image's class prompt: its paired text
        numbers.update(self.gap_report(trainer, pl_module, img, labels, classes))
        procrustes, tag, mapped = self.procrustes_report(trainer, pl_module, img, labels, preds, classes)
        numbers.update(procrustes)
        self.pair_pictures(trainer, pl_module, img, text, mapped, tag, labels, names)
        log_numbers(trainer, numbers)

    def zero_shot_report(self, trainer, pl_module, img, labels, names):
        """Zero-shot accuracy per template set (a table) and the pairing set's confusion matrix:
        (numbers, the pairing set's predictions, its class embeddings)."""
        numbers, rows, classes_by_set, preds_by_set = self.zero_shot(pl_module, img, labels, names)
        log_table(
            trainer,
            "zeroshot/by_template_set",
            ["templates", "prompts", "seen_in_training", "top1", "top5", "balanced_acc", *names],
            rows,
        )
        classes, preds = classes_by_set[self.pair_template], preds_by_set[self.pair_template]
        cm = confusion_matrix(labels, preds, labels=range(len(names)))
        top1 = numbers[f"zeroshot/{self.pair_template}/top1"]
        log_figure(
            trainer,
            "zeroshot/confusion_matrix",
            figures.confusion_figure(
                cm,
                names,
                title=f"zero-shot, templates: {self.pair_template}, top-1 {top1:.1%}\n{describe(trainer, pl_module)}",
            ),
        )
        return numbers, preds, classes

    def gap_report(self, trainer, pl_module, img, labels, classes) -> dict:
        """The modality gap (each image against its class prompt), and zero-shot accuracy as the
        images and prompts are shifted along it (`gap_lambdas`)."""
        text = classes[labels]
        numbers = self.gap_numbers(img, text)
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
                ylabels={"modality gap": "gap norm (embedding units)", "zero-shot top-1": "accuracy (fraction)"},
                title=f"shift along the gap (templates: {self.pair_template}): top-1 {accs[0]:.1%} at lambda "
                f"{self.gap_lambdas[0]:g}, {accs[-1]:.1%} at {self.gap_lambdas[-1]:g}\n{describe(trainer, pl_module)}",
                x=self.gap_lambdas,
                xlabel="lambda (shift, in gap lengths)",
            ),
        )
        return numbers

    def procrustes_report(self, trainer, pl_module, img, labels, preds, classes):
        """Procrustes image -> paired text, fitted on the train split (or, on request, the test set),
        centred and not; and the linear probe on the same train embeddings. (numbers, the tag the
        numbers carry, the uncentred alignment of the test images)."""
        text = classes[labels]
        train_img, train_labels = self.embed_split(trainer, pl_module, "train")  # once: the fit and the probe
        fit_img, fit_labels = (train_img, train_labels) if self.fit_split == "train" else (img, labels)
        tag = "procrustes" if self.fit_split == "train" else "procrustes_FITTED_ON_TEST"
        before = float((preds == labels).mean())
        numbers, mapped_by = {}, {}
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
        return numbers, tag, mapped_by[False]

    def pair_pictures(self, trainer, pl_module, img, text, mapped, tag, labels, names) -> None:
        """Images and their paired texts, before and after alignment, one picture per projection."""
        n = min(self.tsne_pairs, len(img))
        pick = np.random.default_rng(self.seed).choice(len(img), size=n, replace=False)
        panels = {
            "before alignment": (img[pick], text[pick]),
            f"after {tag} (uncentred)": (mapped[pick], text[pick]),
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
                    projected,
                    labels[pick],
                    names,
                    title=f"{n} test images and their class prompts ({method}): {describe(trainer, pl_module)}",
                ),
            )


def describe(trainer, pl_module) -> str:
    """Which model and data a figure comes from, for its title: e.g. 'clip_scratch_1a2b3c4d
    (trained here: scratch) on fashion_mnist test'."""
    info = pl_module.run_info() if hasattr(pl_module, "run_info") else {}
    text = describe_run(trainer, pl_module)
    return text if info.get("finetune") else text.replace(" on ", " (as loaded) on ", 1)


class ExportOpenClip(Callback):
    """Writes the tested model (with train=true: the best checkpoint's weights) as open_clip loads
    it: `open_clip/<name>.json` (its model config) and `open_clip/<name>.pt` (its state dict), and
    says how to load it back: model.name=<name> model.model_config=<json> model.pretrained=<pt>."""

    module_needs = (ExportsOpenClip,)

    def __init__(self, *, only_trained: bool):
        self.only_trained = only_trained

    def on_test_end(self, trainer, pl_module):
        if not trainer.is_global_zero or (self.only_trained and not pl_module.run_info().get("finetune")):
            return
        config, state = pl_module.open_clip_export()
        name = pl_module.run_info()["model"]
        folder = Path(trainer.default_root_dir) / "open_clip"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        torch.save(state, folder / f"{name}.pt")
        log.info(
            "open_clip model written: load it back with model.name=%s model.model_config=%s model.pretrained=%s",
            name,
            folder / f"{name}.json",
            folder / f"{name}.pt",
        )


class SameModalityGap(Callback):
    """The same-modality control (Fahim et al. 2024, model.partner=image): two image towers trained
    contrastively on two augmentations of the same image. Measures, on the unaugmented test
    images through both towers, before the first step (`init/...`) and after training: the gap
    between the towers' embeddings (Liang et al.'s norm), the pair cosine, how linearly separable
    the two towers' embeddings are, and how often an image's embedding in one tower retrieves its
    own embedding in the other (top-1 among `retrieval_images` images)."""

    module_needs = (TwoTowerEmbedder,)
    data_needs = (EvaluationData,)

    def __init__(self, *, retrieval_images: int, seed: int):
        self.retrieval_images, self.seed = retrieval_images, seed

    def numbers(self, a: np.ndarray, b: np.ndarray, prefix: str) -> dict[str, float]:
        n = min(self.retrieval_images, len(a))
        return {
            f"{prefix}/norm": C.modality_gap(a, b),
            f"{prefix}/pair_cosine": C.pair_cosine(a, b),
            f"{prefix}/modality_separability": C.modality_separability(a, b, seed=self.seed),
            f"{prefix}/retrieval_top1": C.retrieval_top1(a[:n], b[:n]),
        }

    def on_train_start(self, trainer, pl_module):
        if not at_initialisation(trainer) or not trainer.datamodule.has_split("test"):
            return
        was_training = pl_module.training
        pl_module.eval()
        a, b = [], []
        for x, _ in eval_batches(trainer, pl_module, split="test"):
            za, zb = pl_module.encode_pair(x)
            a.append(za.float().cpu())
            b.append(zb.float().cpu())
        pl_module.train(was_training)
        log_numbers(trainer, self.numbers(torch.cat(a).numpy(), torch.cat(b).numpy(), "init/gap"))

    def on_test_end(self, trainer, pl_module):
        a, b = pl_module.test_pair_embeddings()
        log_numbers(trainer, self.numbers(a, b, "gap"))
