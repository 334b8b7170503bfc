"""A transformers ViT looked into (predictions, attentions, their gradients, tokens), and trained
first when `finetune` is set: a pretrained ViT's head, last layer or everything, or a ViT built
from nothing (`scratch`, a ViTConfig from documented keys).

Images arrive as float pixels in [0, 1] (any side, grey or RGB); the module resizes them to the
model's input and normalises them with the model's own image-processor settings, so analyses can
mask patches in pixel space before normalisation (`pixels`, then `forward`).

Attention: SDPA while training and for plain logits (fast, no attention maps); eager only inside
the passes that return attention maps or their gradients (`eager_attention`). Both compute the
same function (tested).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from .finetuning import build_optimizer, check_mode, freeze, trainable
from .frozen import FrozenStayInEval
from .hub import hub_offline
from .inference import bf16_on_gpu

if TYPE_CHECKING:  # the type checker's only: a model does not depend on the analyses at run time
    from analysis.contracts import AttentionStep

log = logging.getLogger(__name__)

FINETUNE_MODES = ("head", "last_stage", "full", "scratch")
VIT_PROCESSOR_DEFAULTS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # ViTImageProcessor's


def scratch_config(
    image_size: int = 224,
    patch_size: int = 16,
    hidden_size: int = 768,
    layers: int = 12,
    heads: int = 12,
    mlp_size: int = 3072,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
):
    """A transformers ViTConfig from the keys of `model.scratch` (defaults: ViT-B/16's shape),
    checked so that a bad key fails now, naming itself, not deep inside the first forward pass."""
    from transformers import ViTConfig

    sizes = {"image_size": image_size, "patch_size": patch_size, "hidden_size": hidden_size}
    sizes.update({"layers": layers, "heads": heads, "mlp_size": mlp_size})
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"model.scratch.{key} must be a positive integer, got {value!r}")
    if image_size % patch_size:
        raise ValueError(
            f"model.scratch.patch_size={patch_size} does not divide model.scratch.image_size={image_size}: "
            f"the patches must tile the image (e.g. patch_size={next(p for p in (4, 2, 1) if image_size % p == 0)})"
        )
    if hidden_size % heads:
        raise ValueError(
            f"model.scratch.heads={heads} does not divide model.scratch.hidden_size={hidden_size}: "
            "each head takes hidden_size / heads dimensions"
        )
    rates: dict[str, float] = {"dropout": dropout, "attention_dropout": attention_dropout}
    for key, rate in rates.items():
        if not 0 <= rate < 1:
            raise ValueError(f"model.scratch.{key} must lie in [0, 1), got {rate!r}")
    return ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=attention_dropout,
        num_channels=3,
    )


def load_vit(name: str):
    """(ViTForImageClassification with SDPA attention, processor settings) from a hub id or a
    local directory written by `save_pretrained`. The passes that need attention maps switch to
    eager (`ViTClassifier.eager_attention`): with SDPA `output_attentions=True` returns none."""
    from transformers import AutoImageProcessor, ViTForImageClassification

    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"model.name={name} is a directory without config.json (write one with save_pretrained)"
            )
        source, hub_down = str(local), False
    elif name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"model.name={name}: no such directory")
    else:
        source, hub_down = name, hub_offline()
    try:
        model = ViTForImageClassification.from_pretrained(source, attn_implementation="sdpa")
    except Exception as e:  # noqa: BLE001
        why = (
            "the hub is unreachable and no cached copy exists"
            if hub_down
            else f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        )
        raise RuntimeError(
            f"could not load model.name={name} ({why}). Offline: set model.name=DIR, a directory saved with "
            f"save_pretrained (config.json, model.safetensors, preprocessor_config.json)"
        ) from e
    size = model.config.image_size
    settings: dict[str, Any] = {"image_size": size, **VIT_PROCESSOR_DEFAULTS}
    try:
        processor = AutoImageProcessor.from_pretrained(source)
        sizes = (
            processor.size if isinstance(processor.size, Mapping) else vars(processor.size)
        )  # a SizeDict in transformers 5
        side: Any = sizes.get("height") or sizes.get("shortest_edge") or size
        settings = {"image_size": int(side), "mean": list(processor.image_mean), "std": list(processor.image_std)}
    except Exception as e:  # noqa: BLE001
        log.warning("no image processor for %s (%s): using %s", name, type(e).__name__, settings)
    return model.eval(), settings


def resolve_labels(entries: Sequence[str | int], id2label: Mapping[int, str], key: str) -> list[int]:
    """Model label indices for names or indices. A name matches a label exactly or one of its
    comma-separated synonyms ('tabby' matches 'tabby, tabby cat'); an ambiguous name is an error."""
    out = []
    for e in entries:
        if isinstance(e, int):
            if e not in id2label:
                raise ValueError(f"{key}: label index {e} is out of range 0..{len(id2label) - 1}")
            out.append(e)
            continue
        want = str(e).strip().lower()
        hits = [
            i
            for i, lab in id2label.items()
            if want == lab.lower() or want in [s.strip().lower() for s in lab.split(",")]
        ]
        if len(hits) != 1:
            found = (
                "no model label"
                if not hits
                else f"several model labels ({', '.join(f'{i}: {id2label[i]}' for i in hits)}); give the index"
            )
            raise ValueError(f"{key}: {e!r} matches {found}")
        out.append(hits[0])
    return out


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

    model: Any  # a transformers ViTForImageClassification
    patch_size: int  # the model's patch side, its layers and heads per layer (read from its config)
    num_layers: int
    num_heads: int
    mean: torch.Tensor  # (1, 3, 1, 1): the model's own normalisation (its processor's)
    std: torch.Tensor
    class_matrix: torch.Tensor | None  # (data-set classes, model labels), once checked

    def __init__(
        self,
        name: str | None = "google/vit-base-patch16-224",
        class_map: str | Mapping[str, Sequence[str | int]] | None = None,
        finetune: str | None = None,
        scratch: Mapping | None = None,
        optimizer: Callable | None = None,
    ):
        super().__init__()
        self._eager_depth = 0  # eager_attention() nesting
        check_mode(finetune, FINETUNE_MODES)
        self.save_hyperparameters(ignore=["optimizer"])
        self.finetune, self.optimizer_factory = finetune, optimizer
        if finetune == "scratch":
            from transformers import ViTForImageClassification

            config = scratch_config(**(scratch or {}))
            self.model = ViTForImageClassification(config)
            self.model.set_attn_implementation("sdpa")
            settings = {"image_size": config.image_size, **VIT_PROCESSOR_DEFAULTS}
        else:
            if not name:
                raise ValueError(
                    f"finetune={finetune} starts from pretrained weights: set model.name=<hub id or save_pretrained "
                    "folder>, or train from nothing with finetune=scratch"
                    if finetune
                    else "model.name is not set: give a hub id or a save_pretrained folder"
                )
            self.model, settings = load_vit(name)
        self.frozen_modules = self._freeze(finetune)
        self.image_size = settings["image_size"]
        self.register_buffer("mean", torch.tensor(settings["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(settings["std"]).view(1, -1, 1, 1), persistent=False)
        config = self.model.config
        self.patch_size, self.num_layers, self.num_heads = (
            config.patch_size,
            config.num_hidden_layers,
            config.num_attention_heads,
        )
        self.id2label = {int(k): v for k, v in config.id2label.items()}
        if class_map is not None and class_map != "identity":
            if not isinstance(class_map, Mapping) or not class_map:
                raise ValueError("model.class_map must be null, identity, or {data-set class: [model labels]}")
            self._class_labels = {
                str(c): resolve_labels(v, self.id2label, f"model.class_map.{c}") for c, v in class_map.items()
            }
        self.class_map = class_map
        self.register_buffer("class_matrix", None, persistent=False)  # (data-set classes, model labels), once checked

    def _freeze(self, finetune: str | None) -> list[nn.Module]:
        """requires_grad per mode; returns the modules that are wholly frozen (kept in eval mode)."""
        vit = self.model.vit
        layers = vit.layers if hasattr(vit, "layers") else vit.encoder.layer  # transformers 5 | 4
        frozen: list[nn.Module] = {
            None: [self.model],
            "head": [vit],
            "last_stage": [vit.embeddings, *layers[:-1]],
        }.get(finetune, [])
        return freeze(self.model, frozen)

    def set_classes(self, classes: Sequence[str]) -> None:
        """A new head for these classes (what every finetune mode trains): the model's labels become
        the data set's, so predictions are named by class and scored against the labels."""
        config = self.model.config
        config.num_labels = len(classes)  # also resets id2label/label2id in transformers
        config.id2label = dict(enumerate(map(str, classes)))
        config.label2id = {c: i for i, c in config.id2label.items()}
        self.model.classifier = nn.Linear(config.hidden_size, len(classes))
        self.model.num_labels = len(classes)
        self.id2label = dict(config.id2label)
        self.class_map = "identity"

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

    @property
    def grid_side(self) -> int:
        return self.image_size // self.patch_size

    def label_index(self, label: str | int, key: str) -> int:
        """A model label given by name or index -> its index (ValueError naming `key`)."""
        return resolve_labels([label], self.id2label, key)[0]

    def label_name(self, index: int) -> str:
        return self.id2label.get(int(index), str(int(index))).split(",")[0]

    # -- data-set classes ---------------------------------------------------------------------
    def check_setup(self, model, datamodule) -> None:
        """Checks only (contracts.ChecksSetup; nothing changes): training needs the data set's labelled
        classes and no class map of a pretrained model's labels; a class map must fit the data set."""
        classes = list(getattr(datamodule, "classes", []))
        labelled = getattr(datamodule, "labelled", True)
        if self.finetune is not None:
            if not classes or not labelled:
                raise ValueError(
                    f"finetune={self.finetune} trains on labels: choose a labelled data set "
                    "(data=fashion_mnist | cifar10 | stl10, or data.synthetic=true), not a folder of images"
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
        classes; a class map becomes the matrix from the model's labels onto the data set's classes."""
        classes = list(getattr(datamodule, "classes", []))
        if self.finetune is not None and list(self.id2label.values()) != classes:
            self.set_classes(classes)
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

    # -- inference ----------------------------------------------------------------------------
    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] (uint8 scaled) at the model's input side; still unnormalised."""
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False
            )
        return x

    def forward(self, x: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False):
        """Pixels in [0, 1] (brought to the model's side) -> the transformers output (logits,
        attentions...). Attention maps come back only inside `eager_attention()`."""
        return self.model(
            pixel_values=(self.pixels(x) - self.mean) / self.std,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )

    @contextmanager
    def eager_attention(self) -> Iterator[None]:
        """Eager attention inside (attention maps and their gradients), SDPA again after."""
        outermost = not self._eager_depth  # the model is built and loaded with SDPA (see above)
        self._eager_depth += 1
        if outermost:
            self.model.set_attn_implementation("eager")
        try:
            yield
        finally:
            self._eager_depth -= 1
            if outermost:
                self.model.set_attn_implementation("sdpa")

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with bf16_on_gpu(self.device):
            return self(x).logits.float()

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batched pass: logits (B, labels), attentions (layers, B, heads, T, T), the final CLS
        token and the mean of the final patch tokens (B, D), all float32."""
        with bf16_on_gpu(self.device), self.eager_attention():
            out = self(x, output_attentions=True, output_hidden_states=True)
        if not out.attentions or out.attentions[0] is None:
            raise RuntimeError("the model returned no attentions: the pass must run inside eager_attention()")
        last = self.model.vit.layernorm(out.hidden_states[-1]).float()  # what the classifier head reads
        return {
            "logits": out.logits.float(),
            "attentions": torch.stack(out.attentions).float(),
            "cls": last[:, 0],
            "patch_mean": last[:, 1:].mean(1),
        }

    def attention_gradients(
        self, x: torch.Tensor, target: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attentions and d(logit of `target`)/d(attention), both (layers, B, heads, T, T), for
        gradient-weighted rollout; target None: each image's predicted class. Images do not
        interact, so one backward serves the batch."""
        with torch.inference_mode(False), torch.enable_grad():
            x = x.clone().requires_grad_(True)  # the weights are frozen: the input starts the graph
            with bf16_on_gpu(self.device), self.eager_attention():
                out = self(x, output_attentions=True)
            target = out.logits.argmax(-1) if target is None else target.clone().to(out.logits.device)
            score = out.logits.float().gather(1, target.view(-1, 1)).sum()
            grads = torch.autograd.grad(score, out.attentions)
        return torch.stack(out.attentions).detach().float(), torch.stack(grads).float()

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
            "rollouts": {},  # filled by the analyses that need rollout maps (analysis.vit_callbacks.rollout_maps)
        }
