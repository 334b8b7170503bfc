"""CLIP's LightningModule: an open_clip model (models/clip.py) used zero-shot, or trained here first.

Without `finetune` an open_clip model is used as it is (zero-shot). With it, the model is trained
first on image-caption pairs made from a labelled data set: each image's caption is one of
`train_templates` filled with its class name, drawn anew every step; the loss is open_clip's own
`ClipLoss` (symmetric InfoNCE) at a learned or fixed temperature. `finetune=scratch` builds the
two towers from nothing from `scratch` keys; `finetune=full` trains every weight of a loaded model.

`partner=image` is the same-modality control (Fahim et al. 2024): the text tower is replaced by a
second image tower of the same shape, and the pair of an image is a second random augmentation
of the same image, through the other tower.

Loading, scratch configs, captions and text embeddings live in models/clip.py; here: the data
set's classes, the training and validation steps, and the test pass's embeddings.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from .clip import (
    FINETUNE_MODES,
    MAX_LOGIT_SCALE,
    PARTNERS,
    build_clip,
    caption_tokens,
    encode_texts,
    image_side,
    parameter_groups,
    second_image_tower,
    two_views,
)
from .finetuning import build_optimizer, check_mode, freeze
from .inference import bf16_on_gpu

log = logging.getLogger(__name__)


def check_settings(finetune: str | None, partner: str, temperature: float, templates: list[str]) -> None:
    """ClipModule's settings, each mistake one ValueError naming its key."""
    check_mode(finetune, FINETUNE_MODES)
    if partner not in PARTNERS:
        raise ValueError(f"model.partner must be one of {', '.join(PARTNERS)}, got {partner!r}")
    if partner == "image" and finetune is None:
        raise ValueError("model.partner=image (the same-modality control) trains: set train=true")
    if not (isinstance(temperature, int | float) and 0 < temperature):
        raise ValueError(f"model.temperature must be a positive number, got {temperature!r}")
    if finetune is not None and partner == "text":
        if not templates or any("{}" not in t for t in templates):
            raise ValueError("model.train_templates must be a list of captions, each with {} for the class name")


class ClipModule(pl.LightningModule):
    """An open_clip model: used zero-shot as loaded, or trained here first (`finetune`).

    After the test pass `test_embeddings()` holds the test split's (normalised image embeddings,
    labels) as numpy arrays: computed once per run and shared by every analysis
    (contracts.ImageTextEmbedder). With `partner=image`, `test_pair_embeddings()` holds both image
    towers' embeddings of the unaugmented test images (contracts.TwoTowerEmbedder).
    """

    def __init__(
        self,
        *,
        name: str | None,
        pretrained: str | None,
        model_config: str | None,
        finetune: str | None = None,
        scratch: dict | None,
        train_templates: Sequence[str],
        temperature: float,
        learn_temperature: bool,
        partner: str,
        optimizer: Callable | None,
    ):
        super().__init__()
        templates = list(train_templates or [])
        check_settings(finetune, partner, temperature, templates)
        self.save_hyperparameters(ignore=["optimizer"])
        self.finetune, self.partner, self.optimizer_factory = finetune, partner, optimizer
        self.train_templates = templates
        self.learn_temperature = learn_temperature
        loaded = build_clip(name, pretrained, model_config, finetune, scratch, temperature)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.model_name, self.open_clip_config = loaded.name, loaded.config
        if finetune is not None:
            with torch.no_grad():  # the loss temperature: the model's logit scale, log(1 / temperature)
                self.model.logit_scale.fill_(math.log(1.0 / temperature))
        if partner == "image":
            self.model.transformer = None  # the text tower is not used; a second image tower takes its place
            self.partner_tower = second_image_tower(self.open_clip_config)
        trains = finetune is not None
        freeze(self, [] if trains else [self])  # both modes train every weight; zero-shot none
        self.model.logit_scale.requires_grad = trains and learn_temperature
        self.model.train(trains)  # Lightning keeps each module's mode: a model that trains must start in train mode
        self.loss: Any = None  # open_clip's ClipLoss, made in setup() once the world size is known
        self.classes: list[str] = []
        self.register_buffer("caption_tokens", None, persistent=False)  # (classes, templates, context)
        self._test_embeddings: tuple[np.ndarray, np.ndarray] | None = None  # set by the test pass
        self._test_pairs: tuple[np.ndarray, np.ndarray] | None = None
        self._test: list = []
        self._val: list = []
        self._val_classes: torch.Tensor | None = None

    # -- what the model is ---------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return image_side(self.model)

    def run_info(self) -> dict:
        """What the run records about the model (contracts.ReportsRunInfo)."""
        return {
            "model": self.model_name,
            "finetune": self.finetune,
            "partner": self.partner,
            "trainable_parameters": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "image_size": self.image_size,
            "temperature": "learned" if self.learn_temperature else self.hparams["temperature"],
            "final_temperature": float(1.0 / self.model.logit_scale.detach().exp()),
            "train_templates": len(self.train_templates) if self.partner == "text" else 0,
        }

    def open_clip_export(self) -> tuple[dict, dict]:
        """(open_clip model config, open_clip state dict): what open_clip.create_model loads back
        (contracts.ExportsOpenClip)."""
        if self.partner != "text":
            raise ValueError("model.partner=image is not a CLIP: nothing to export")
        return self.open_clip_config, {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    # -- data-set classes ----------------------------------------------------------------------
    def check_setup(self, model, datamodule) -> None:
        """Checks only (contracts.ChecksSetup): training needs the data set's class names, from which
        the captions are made."""
        if self.finetune is None:
            return
        if not list(getattr(datamodule, "classes", [])) or not getattr(datamodule, "labelled", True):
            raise ValueError(
                f"a CLIP trained here (finetune={self.finetune}) trains and is tested on captions made from class "
                "names: choose a labelled data set "
                "(data=fashion_mnist | cifar10 | stl10, data=images with data.class_folders=true, "
                "or data.synthetic=true)"
            )

    def adapt_to_data(self, datamodule) -> None:
        """After the checks (contracts.AdaptsToData): a CLIP that trains takes the data set's class
        names and tokenises its training captions from them."""
        if self.finetune is None:
            return
        self.classes = [str(c) for c in getattr(datamodule, "classes", [])]
        if self.partner == "text":
            self.caption_tokens = caption_tokens(self.tokenizer, self.classes, self.train_templates).to(self.device)

    def setup(self, stage: str) -> None:
        if self.finetune is not None and self.loss is None:
            from open_clip import ClipLoss

            world = self.trainer.world_size if self._trainer is not None else 1
            rank = self.trainer.global_rank if self._trainer is not None else 0
            self.loss = ClipLoss(cache_labels=True, rank=rank, world_size=world)  # all ranks' pairs are negatives

    # -- embedding -----------------------------------------------------------------------------
    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Model-ready images at the model's input side (resized on the device where they differ)."""
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model-ready images -> unnormalised image features (what the model summary counts)."""
        return self.model.encode_image(self.pixels(x))

    @torch.no_grad()
    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        with bf16_on_gpu(self.device):
            return F.normalize(self.model.encode_image(self.pixels(x)).float(), dim=-1)

    @torch.no_grad()
    def encode_pair(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """partner=image: both towers' normalised embeddings of the same images (contracts.TwoTowerEmbedder)."""
        x = self.pixels(x)
        with bf16_on_gpu(self.device):
            a = self.model.encode_image(x).float()
            b = self.partner_tower(x).float()
        return F.normalize(a, dim=-1), F.normalize(b, dim=-1)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised text embeddings (len(texts), D)."""
        return encode_texts(self.model, self.tokenizer, texts, self.device)

    def test_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(normalised image embeddings, labels) of the test split, gathered by the test pass."""
        if self._test_embeddings is None:
            raise RuntimeError("no test embeddings: run trainer.test first")
        return self._test_embeddings

    def test_pair_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """partner=image: (tower A, tower B) normalised embeddings of the test images."""
        if self._test_pairs is None:
            raise RuntimeError("no test pair embeddings: run trainer.test first (with model.partner=image)")
        return self._test_pairs

    # -- training ------------------------------------------------------------------------------
    def pair_features(self, x: torch.Tensor, y: torch.Tensor, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised (image, partner) features of a batch of pairs, with gradients. Captions: a
        random train template per image while training, template i mod T otherwise; each distinct
        caption is encoded once per batch (a batch repeats few: classes x templates)."""
        x = self.pixels(x)
        if self.partner == "image":
            return self.model.encode_image(two_views(x)), self.partner_tower(two_views(x))
        n_templates = self.caption_tokens.shape[1]
        if train:
            which = torch.randint(n_templates, y.shape, device=y.device)
        else:
            which = torch.arange(len(y), device=y.device) % n_templates
        index = y * n_templates + which
        unique, inverse = torch.unique(index, return_inverse=True)
        text = self.model.encode_text(self.caption_tokens.flatten(0, 1)[unique])[inverse]
        return self.model.encode_image(x), text

    def _contrastive(self, batch, stage: str):
        x, y = batch
        image, partner = self.pair_features(x, y, train=stage == "train")
        image, partner = F.normalize(image.float(), dim=-1), F.normalize(partner.float(), dim=-1)
        loss = self.loss(image, partner, self.model.logit_scale.exp())
        n = len(y)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, batch_size=n, prog_bar=True)
        return loss, image.detach(), partner.detach()

    def training_step(self, batch, batch_idx):
        loss, _, _ = self._contrastive(batch, "train")
        self.log("train/temperature", 1.0 / self.model.logit_scale.detach().exp(), on_step=False, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.learn_temperature:
            with torch.no_grad():  # as CLIP: the learned logit scale stays within [1, 100]
                self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def on_validation_epoch_start(self):
        self._val = []
        if self.partner == "text":  # the class prompts of the train templates, ensembled, once per epoch
            c, t, _ = self.caption_tokens.shape
            with torch.no_grad():
                text = F.normalize(self.model.encode_text(self.caption_tokens.flatten(0, 1)).float(), dim=-1)
                self._val_classes = F.normalize(text.view(c, t, -1).mean(1), dim=-1)

    def validation_step(self, batch, batch_idx):
        _, image, partner = self._contrastive(batch, "val")
        y = batch[1]
        self._val.append((image, partner, y))
        if self.partner == "text":
            acc = ((image @ self._val_classes.T).argmax(-1) == y).float().mean()
            self.log("val/zeroshot_top1", acc, on_epoch=True, batch_size=len(y), prog_bar=True, sync_dist=True)

    def on_validation_epoch_end(self):
        """The modality gap on the validation pairs, each epoch (Liang et al.: ||mean image - mean partner||)."""
        if not self._val:
            return
        image, partner, _ = (torch.cat(t) for t in zip(*self._val, strict=True))
        gap = (image.mean(0) - partner.mean(0)).norm()
        self.log("val/gap_norm", gap, sync_dist=True)
        self.log("val/pair_cosine", (image * partner).sum(-1).mean(), sync_dist=True)
        self._val = []

    def configure_optimizers(self):
        if self.finetune is None:
            return None  # zero-shot: nothing trains
        return build_optimizer(self.optimizer_factory, parameter_groups(self.named_parameters()))

    # -- the test pass -------------------------------------------------------------------------
    def on_test_epoch_start(self):
        self._test = []

    def test_step(self, batch, batch_idx):
        x, y = batch
        if self.partner == "image":
            a, b = self.encode_pair(x)
            self._test.append((a, b, y))
            return {"embeddings": a}
        z = self.encode_images(x)
        self._test.append((z, y))  # kept on the device: a copy to the host per batch would wait for each
        return {"embeddings": z}

    def on_test_epoch_end(self):
        parts = [torch.cat(t).cpu().numpy() for t in zip(*self._test, strict=True)]
        if self.partner == "image":
            self._test_pairs = (parts[0], parts[1])
            self._test_embeddings = (parts[0], parts[2])
        else:
            self._test_embeddings = (parts[0], parts[1])
        self._test = []


ClipZeroShot = ClipModule  # the name this module had while it could only evaluate
