"""A transformers ViT looked into, not trained: predictions, attentions, their gradients, tokens.

Images arrive as float pixels in [0, 1] (any side); the module resizes them to the model's input
and normalises them with the model's own image-processor settings, so analyses can mask patches in
pixel space before normalisation (`pixels`, then `forward`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from .hub import hub_offline
from .inference import bf16_on_gpu

log = logging.getLogger(__name__)


def load_vit(name: str):
    """(ViTForImageClassification with eager attention, processor settings) from a hub id or a
    local directory written by `save_pretrained`. Eager attention is chosen at load time: with
    transformers 5's default (SDPA) `output_attentions=True` silently returns no attentions."""
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
        model = ViTForImageClassification.from_pretrained(source, attn_implementation="eager")
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
    settings = {"image_size": size, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # ViTImageProcessor's defaults
    try:
        processor = AutoImageProcessor.from_pretrained(source)
        sizes = (
            processor.size if isinstance(processor.size, Mapping) else vars(processor.size)
        )  # a SizeDict in transformers 5
        side = sizes.get("height") or sizes.get("shortest_edge") or size
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


class ViTClassifier(pl.LightningModule):
    """A pretrained ViT classifier evaluated on a test split.

    `class_map`: null (the model's own labels; data-set labels are not compared), `identity` (the
    model's label i is the data set's class i, e.g. a fine-tuned head), or {data-set class: [model
    labels by name or index]}: a data-set class scores the summed probability of its model labels.
    """

    def __init__(
        self,
        name: str = "google/vit-base-patch16-224",
        class_map: str | Mapping[str, Sequence[str | int]] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model, settings = load_vit(name)
        for p in self.model.parameters():
            p.requires_grad = False
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

    def run_info(self) -> dict:
        """What the run records about the model (contracts.ReportsRunInfo)."""
        class_map = self.hparams.class_map
        return {
            "model": self.hparams.name,
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
        """Called by the run loop once the data is read: the class map must cover the data set."""
        classes = list(getattr(datamodule, "classes", []))
        if self.class_map is None:
            return
        if not getattr(datamodule, "labelled", True):
            log.warning("model.class_map is set but the images have no labels: predictions stay in the model's labels")
            self.class_map = None
            return
        n = len(self.id2label)
        if self.class_map == "identity":
            if len(classes) != n:
                raise ValueError(
                    f"model.class_map=identity needs the model's {n} labels to be the data set's {len(classes)} classes"
                )
            self.class_matrix = torch.eye(n, device=self.device)
            return
        missing, extra = (
            [c for c in classes if c not in self._class_labels],
            [c for c in self._class_labels if c not in classes],
        )
        if missing or extra:
            raise ValueError(
                "model.class_map must name each data-set class once: "
                f"missing {missing}, unknown {extra} (classes: {classes})"
            )
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
        """Pixels in [0, 1] at the model's side -> the transformers output (logits, attentions...)."""
        return self.model(
            pixel_values=(x - self.mean) / self.std,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with bf16_on_gpu(self.device):
            return self(x).logits.float()

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batched pass: logits (B, labels), attentions (layers, B, heads, T, T), the final CLS
        token and the mean of the final patch tokens (B, D), all float32."""
        with bf16_on_gpu(self.device):
            out = self(x, output_attentions=True, output_hidden_states=True)
        if not out.attentions or out.attentions[0] is None:
            raise RuntimeError("the model returned no attentions: it must be loaded with attn_implementation='eager'")
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
            with bf16_on_gpu(self.device):
                out = self(x, output_attentions=True)
            target = out.logits.argmax(-1) if target is None else target.clone().to(out.logits.device)
            score = out.logits.float().gather(1, target.view(-1, 1)).sum()
            grads = torch.autograd.grad(score, out.attentions)
        return torch.stack(out.attentions).detach().float(), torch.stack(grads).float()

    # -- the test pass ------------------------------------------------------------------------
    def test_step(self, batch, batch_idx):
        x, y = batch
        x = self.pixels(x)
        out = self.infer(x)
        probs = out["logits"].softmax(-1)
        n = len(y)
        self.log("test/top1_confidence", probs.max(-1).values.mean(), on_epoch=True, batch_size=n, sync_dist=True)
        scores = self.dataset_scores(out["logits"])
        if scores is not None:
            self.log("test/acc", (scores.argmax(-1) == y).float().mean(), on_epoch=True, batch_size=n, sync_dist=True)
        return {**out, "pixels": x, "labels": y, "dataset_scores": scores}

    def configure_optimizers(self):
        return None
