"""The ViT's LightningModule: a models.vit.ViT looked into (predictions, attentions, their
gradients, tokens), and trained first when `finetune` is set: a pretrained ViT's head, last layer
or everything, or a ViT built from nothing (`scratch`, a ViTConfig from documented keys).

The network, its loading, labels and attention switch live in models/vit.py; which parts train
in models/finetuning.py. Here: the data set's classes (a new head, a class map), the training
steps and the test step the analyses read (contracts.AttentionStep).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from .finetuning import build_optimizer, check_mode, freeze, trainable
from .frozen import FrozenStayInEval
from .inference import bf16_on_gpu
from .vit import FINETUNE_MODES, ViT, resolve_labels

if TYPE_CHECKING:  # the type checker's only: a model does not depend on the analyses at run time
    from analysis.contracts import AttentionStep

log = logging.getLogger(__name__)


class ViTClassifier(FrozenStayInEval, pl.LightningModule):
    """A ViT classifier, trained on a labelled data set first when `finetune` is set, then
    evaluated on its test split.

    `finetune`: null (look only: the model as loaded, nothing trains), `head` (a new head for the
    data set's classes trains on the frozen ViT), `last_stage` (the last encoder layer, the final
    layer norm and the head), `full` (everything), `scratch` (a ViT built from `scratch`, random
    init, everything). Every mode but null gives the model the data set's classes as its labels
    (`class_map` becomes identity). Frozen parts stay in eval mode (no dropout) while training.

    `class_map` (look only): null (the model's own labels; data-set labels are not compared),
    `identity` (the model's label i is the data set's class i, e.g. a ViT trained here), or
    {data-set class: [model labels by name or index]}: a data-set class scores the summed
    probability of its model labels.
    """

    model: ViT
    patch_size: int  # the model's patch side, its layers and heads per layer (read from its config)
    num_layers: int
    num_heads: int
    class_matrix: torch.Tensor | None  # (data-set classes, model labels), once checked

    def __init__(
        self,
        *,
        name: str | None,
        class_map: str | Mapping[str, Sequence[str | int]] | None,
        finetune: str | None = None,
        scratch: Mapping | None,
        optimizer: Callable | None,
    ):
        super().__init__()
        check_mode(finetune, FINETUNE_MODES)
        self.save_hyperparameters(ignore=["optimizer"])
        self.finetune, self.optimizer_factory = finetune, optimizer
        if finetune == "scratch":
            self.model = ViT.scratch(**(scratch or {}))
        elif not name:
            raise ValueError(
                f"finetune={finetune} starts from pretrained weights: set model.name=<hub id or save_pretrained "
                "folder>, or train from nothing with finetune=scratch"
                if finetune
                else "model.name is not set: give a hub id or a save_pretrained folder"
            )
        else:
            self.model = ViT.pretrained(name)
        self.frozen_modules = freeze(self.model, self.model.frozen_parts(finetune))
        self.image_size, self.patch_size = self.model.image_size, self.model.patch_size
        self.num_layers, self.num_heads = self.model.num_layers, self.model.num_heads
        if class_map is not None and class_map != "identity":
            if not isinstance(class_map, Mapping) or not class_map:
                raise ValueError("model.class_map must be null, identity, or {data-set class: [model labels]}")
            self._class_labels = {
                str(c): resolve_labels(v, self.model.id2label, f"model.class_map.{c}") for c, v in class_map.items()
            }
        self.class_map = class_map
        self.register_buffer("class_matrix", None, persistent=False)  # (data-set classes, model labels), once checked

    @property
    def id2label(self) -> dict[int, str]:
        return self.model.id2label

    @property
    def mean(self) -> torch.Tensor:
        return self.model.mean

    @property
    def std(self) -> torch.Tensor:
        return self.model.std

    def run_info(self) -> dict:
        """What the run records about the model (contracts.ReportsRunInfo)."""
        class_map = self.class_map
        return {
            "model": self.hparams["name"] if self.finetune != "scratch" else "scratch",
            "finetune": self.finetune,
            "trainable_parameters": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "layers": self.num_layers,
            "heads": self.num_heads,
            "num_labels": len(self.id2label),
            "class_map": class_map if class_map in (None, "identity") else f"{len(class_map)} classes",
        }

    # -- data-set classes ---------------------------------------------------------------------
    def check_setup(self, model, datamodule) -> None:
        """Checks only (contracts.ChecksSetup; nothing changes): training needs the data set's labelled
        classes and no class map of a pretrained model's labels; a class map must fit the data set."""
        classes = list(getattr(datamodule, "classes", []))
        labelled = getattr(datamodule, "labelled", True)
        if self.finetune is not None:
            if not classes or not labelled:
                raise ValueError(
                    f"a ViT trained here (finetune={self.finetune}) trains and is tested on labels: choose a labelled "
                    "data set (data=fashion_mnist | cifar10 | stl10, or data.synthetic=true), not a folder of images"
                )
            if self.hparams["class_map"] not in (None, "identity"):
                raise ValueError(
                    "model.class_map maps a pretrained model's labels; a ViT trained here gets the data set's "
                    "classes as its labels: leave model.class_map null"
                )
            return  # its new head has the data set's classes: identity fits by construction
        if self.class_map is None or not labelled:
            return
        n = len(self.id2label)
        if self.class_map == "identity":
            if len(classes) != n:
                raise ValueError(
                    f"model.class_map=identity needs the model's {n} labels to be the data set's {len(classes)} classes"
                )
            return
        missing = [c for c in classes if c not in self._class_labels]
        extra = [c for c in self._class_labels if c not in classes]
        if missing or extra:
            raise ValueError(
                "model.class_map must name each data-set class once: "
                f"missing {missing}, unknown {extra} (classes: {classes})"
            )

    def adapt_to_data(self, datamodule) -> None:
        """After the checks (contracts.AdaptsToData): a ViT that trains gets a head for the data set's
        classes (its labels become the classes: class_map identity); a class map becomes the matrix
        from the model's labels onto the data set's classes."""
        classes = list(getattr(datamodule, "classes", []))
        if self.finetune is not None and list(self.id2label.values()) != classes:
            self.model.set_classes(classes)
            self.class_map = "identity"
        if self.class_map is None:
            return
        if not getattr(datamodule, "labelled", True):
            log.warning("model.class_map is set but the images have no labels: predictions stay in the model's labels")
            self.class_map = None
            return
        n = len(self.id2label)
        if self.class_map == "identity":
            self.class_matrix = torch.eye(n, device=self.device)
            return
        matrix = torch.zeros(len(classes), n, device=self.device)
        for i, c in enumerate(classes):
            matrix[i, self._class_labels[c]] = 1.0
        self.class_matrix = matrix

    def dataset_scores(self, logits: torch.Tensor) -> torch.Tensor | None:
        """(B, data-set classes) probabilities, or None where no class map is configured."""
        if self.class_matrix is None:
            return None
        return logits.float().softmax(-1) @ self.class_matrix.to(logits.device).T

    # -- what the analyses read (contracts.AttentionInspectable): the network's ------------------
    @property
    def grid_side(self) -> int:
        return self.model.grid_side

    def label_index(self, label: str | int, key: str) -> int:
        return self.model.label_index(label, key)

    def label_name(self, index: int) -> str:
        return self.model.label_name(index)

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.pixels(x)

    def forward(self, x: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False):
        """Pixels in [0, 1] (brought to the model's side) -> the transformers output (logits,
        attentions...). Attention maps come back only inside `eager_attention()`."""
        return self.model(self.model.normalize(self.model.pixels(x)), output_attentions, output_hidden_states)

    def eager_attention(self) -> AbstractContextManager[None]:
        return self.model.eager_attention()

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with bf16_on_gpu(self.device):
            return self(x).logits.float()

    def infer(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.infer(x)

    def attention_gradients(
        self, x: torch.Tensor, target: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.attention_gradients(x, target)

    # -- training (finetune set) --------------------------------------------------------------
    def _step(self, batch, stage: str):
        x, y = batch
        logits = self(x).logits
        loss = F.cross_entropy(logits.float(), y)
        n = len(y)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, batch_size=n, prog_bar=True)
        # the batch-size-weighted mean of per-batch accuracies over the epoch is the epoch's accuracy
        acc = (logits.argmax(-1) == y).float().mean()
        self.log(
            f"{stage}/acc", acc, on_step=False, on_epoch=True, batch_size=n, prog_bar=stage == "val", sync_dist=True
        )
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        if self.finetune is None:
            return None  # look only: nothing trains
        return build_optimizer(self.optimizer_factory, trainable(self))

    # -- the test pass ------------------------------------------------------------------------
    def test_step(self, batch, batch_idx) -> AttentionStep:
        x, y = batch
        x = self.pixels(x)
        out = self.infer(x)
        probs = out["logits"].softmax(-1)
        n = len(y)
        self.log("test/top1_confidence", probs.max(-1).values.mean(), on_epoch=True, batch_size=n, sync_dist=True)
        scores = self.dataset_scores(out["logits"])
        if scores is not None:
            self.log("test/acc", (scores.argmax(-1) == y).float().mean(), on_epoch=True, batch_size=n, sync_dist=True)
        return {
            "pixels": x,
            "logits": out["logits"],
            "attentions": out["attentions"],
            "cls": out["cls"],
            "patch_mean": out["patch_mean"],
            "labels": y,
            "dataset_scores": scores,
            "rollouts": {},  # filled by the analyses that need rollout maps (analysis.vit_steps.rollout_maps)
        }
