"""The ViT itself: a transformers ViT as a plain nn.Module, with its loading (a hub id or a
save_pretrained folder, offline-aware), its scratch config, its labels, and timm-style seams.

`forward_features` runs the encoder (tokens after the final layer norm: what the head reads),
`forward_head` maps them to logits from the CLS token, `forward` is both, as transformers'
ViTForImageClassification computes it. The parameters keep transformers' names (`vit.*`,
`classifier.*`), so a checkpoint holds the same keys as the loaded model.

Images arrive as float pixels in [0, 1] (any side, grey or RGB): `pixels` brings them to the
model's input side, `normalize` applies the model's own image-processor settings, so analyses can
mask patches in pixel space before normalisation.

Attention: SDPA while training and for plain logits (fast, no attention maps); eager only inside
the passes that return attention maps or their gradients (`eager_attention`). Both compute the
same function (tested). models/vit_module.py trains and tests it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .finetuning import check_scratch_sizes
from .hub import hub_offline
from .inference import bf16_on_gpu

log = logging.getLogger(__name__)

FINETUNE_MODES = ("head", "last_stage", "full", "scratch")
PROCESSOR_DEFAULTS = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}  # ViTImageProcessor's


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
    check_scratch_sizes(sizes | {"layers": layers, "heads": heads, "mlp_size": mlp_size})
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
    eager (`ViT.eager_attention`): with SDPA `output_attentions=True` returns none."""
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
    settings: dict[str, Any] = {"image_size": size, **PROCESSOR_DEFAULTS}
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


class ViT(nn.Module):
    """A transformers ViT classifier: its encoder (`vit`, a ViTModel), its head (`classifier`), its
    labels (`id2label`) and its input settings. Build one with `ViT.pretrained(name)` or
    `ViT.scratch(**keys)`."""

    mean: torch.Tensor  # (1, 3, 1, 1): the model's own normalisation (its processor's)
    std: torch.Tensor

    def __init__(self, model: Any, settings: Mapping[str, Any]):
        """`model`: a transformers ViTForImageClassification, whose encoder and head this takes over;
        `settings`: its processor's image_size, mean and std."""
        super().__init__()
        self.vit, self.classifier, self.config = model.vit, model.classifier, model.config
        self.image_size = int(settings["image_size"])
        self.register_buffer("mean", torch.tensor(settings["mean"]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(settings["std"]).view(1, -1, 1, 1), persistent=False)
        self.patch_size = self.config.patch_size
        self.num_layers, self.num_heads = self.config.num_hidden_layers, self.config.num_attention_heads
        self.id2label = {int(k): v for k, v in self.config.id2label.items()}
        self._eager_depth = 0  # eager_attention() nesting

    @classmethod
    def pretrained(cls, name: str) -> ViT:
        """A hub id or a save_pretrained folder (`load_vit`), as loaded, in eval mode."""
        model, settings = load_vit(name)
        return cls(model, settings).eval()

    @classmethod
    def scratch(cls, **keys: Any) -> ViT:
        """A ViT of random weights from the keys of `model.scratch` (`scratch_config`)."""
        from transformers import ViTForImageClassification

        config = scratch_config(**keys)
        model = ViTForImageClassification(config)
        model.set_attn_implementation("sdpa")
        return cls(model, {"image_size": config.image_size, **PROCESSOR_DEFAULTS})

    # -- what trains ----------------------------------------------------------------------------
    def frozen_parts(self, finetune: str | None) -> list[nn.Module]:
        """The modules a fine-tuning mode keeps frozen (models.finetuning.freeze): everything when
        nothing trains, the encoder for `head`, all but the last layer (and the final norm) for
        `last_stage`, nothing for `full` and `scratch`."""
        layers = self.vit.layers if hasattr(self.vit, "layers") else self.vit.encoder.layer  # transformers 5 | 4
        parts: dict[str | None, list[nn.Module]] = {
            None: [self],
            "head": [self.vit],
            "last_stage": [self.vit.embeddings, *layers[:-1]],
        }
        return parts.get(finetune, [])

    def set_classes(self, classes: Sequence[str]) -> None:
        """A new head for these classes: the model's labels become the data set's."""
        config = self.config
        config.num_labels = len(classes)  # also resets id2label/label2id in transformers
        config.id2label = dict(enumerate(map(str, classes)))
        config.label2id = {c: i for i, c in config.id2label.items()}
        self.classifier = nn.Linear(config.hidden_size, len(classes)).to(self.mean.device)
        self.id2label = dict(config.id2label)

    # -- labels ---------------------------------------------------------------------------------
    @property
    def grid_side(self) -> int:
        return self.image_size // self.patch_size

    def label_index(self, label: str | int, key: str) -> int:
        """A model label given by name or index -> its index (ValueError naming `key`)."""
        return resolve_labels([label], self.id2label, key)[0]

    def label_name(self, index: int) -> str:
        return self.id2label.get(int(index), str(int(index))).split(",")[0]

    # -- the forward pass -------------------------------------------------------------------------
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

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def forward_features(self, pixel_values: torch.Tensor, output_attentions: bool = False, output_hidden_states=False):
        """Normalised pixels -> the encoder's output: `last_hidden_state` (B, tokens, D) after the
        final layer norm, and the attentions / hidden states when asked (attention maps only inside
        `eager_attention()`)."""
        return self.vit(pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states)

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, tokens, D) final tokens -> (B, labels) logits, from the CLS token."""
        return self.classifier(tokens[:, 0, :])

    def forward(self, pixel_values: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False):
        """Normalised pixels -> transformers' ImageClassifierOutput (logits, hidden states, attentions)."""
        from transformers.modeling_outputs import ImageClassifierOutput

        features = self.forward_features(pixel_values, output_attentions, output_hidden_states)
        return ImageClassifierOutput(
            logits=self.forward_head(features.last_hidden_state),
            hidden_states=features.hidden_states,
            attentions=features.attentions,
        )

    def set_attn_implementation(self, implementation: str) -> None:
        self.vit.set_attn_implementation(implementation)

    @contextmanager
    def eager_attention(self) -> Iterator[None]:
        """Eager attention inside (attention maps and their gradients), SDPA again after."""
        outermost = not self._eager_depth  # the model is built and loaded with SDPA (see above)
        self._eager_depth += 1
        if outermost:
            self.set_attn_implementation("eager")
        try:
            yield
        finally:
            self._eager_depth -= 1
            if outermost:
                self.set_attn_implementation("sdpa")

    # -- what the analyses read -------------------------------------------------------------------
    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batched pass over pixels in [0, 1]: logits (B, labels),
        attentions (layers, B, heads, T, T), the final CLS token and the mean of the final patch
        tokens (B, D), all float32."""
        with bf16_on_gpu(self.mean.device), self.eager_attention():
            features = self.forward_features(self.normalize(self.pixels(x)), output_attentions=True)
            logits = self.forward_head(features.last_hidden_state)
        if not features.attentions or features.attentions[0] is None:
            raise RuntimeError("the model returned no attentions: the pass must run inside eager_attention()")
        last = features.last_hidden_state.float()  # what the classifier head reads
        return {
            "logits": logits.float(),
            "attentions": torch.stack(features.attentions).float(),
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
            with bf16_on_gpu(self.mean.device), self.eager_attention():
                out = self(self.normalize(self.pixels(x)), output_attentions=True)
            target = out.logits.argmax(-1) if target is None else target.clone().to(out.logits.device)
            score = out.logits.float().gather(1, target.view(-1, 1)).sum()
            grads = torch.autograd.grad(score, out.attentions)
        return torch.stack(out.attentions).detach().float(), torch.stack(grads).float()
