"""CLIP itself: open_clip's model (a plain nn.Module) and what is done to it outside training:
loading (offline-aware), scratch configs (an open_clip model config from documented keys,
registered with `open_clip.add_model_config` and built by `open_clip.create_model`, as a JSON
config would be), captions made from class names, the same-modality control's second image
tower, and the embeddings the analyses read.

models/clip_module.py trains and tests it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from private_api import open_clip_vision_tower

from .finetuning import check_scratch_sizes
from .hub import hub_offline
from .inference import bf16_on_gpu

log = logging.getLogger(__name__)

FINETUNE_MODES = ("full", "scratch")
PARTNERS = ("text", "image")
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learned logit scale at 100 (temperature 0.01)


def load_clip(name: str, pretrained: str | None, model_config: str | None = None):
    """(model, tokenizer) from open_clip. `pretrained`: an open_clip tag ('openai', 'laion2b_...'),
    a local checkpoint file, or None for random weights. `model_config`: a JSON model config to
    register first (its file name, without .json, is then a valid `name`)."""
    import open_clip

    if model_config:
        if not Path(model_config).is_file():
            raise FileNotFoundError(f"model.model_config={model_config} does not exist")
        open_clip.add_model_config(model_config)
    if name not in open_clip.list_models():
        raise ValueError(
            f"model.name={name!r} is not an open_clip model (see open_clip.list_models(), or set model.model_config)"
        )
    is_file = pretrained is not None and Path(pretrained).is_file()
    if pretrained and not is_file:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ValueError(
                f"model.pretrained={pretrained!r}: not a file and not a tag of {name} ({', '.join(tags) or 'none'})"
            )
        hub_offline()  # without a network: fail at once unless cached, not after ~46 s of retries
    try:
        with quiet_open_clip(logging.WARNING if pretrained is None else logging.INFO):  # random weights: asked for
            model = open_clip.create_model(name, pretrained=pretrained)
            tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:  # noqa: BLE001
        raise RuntimeError(
            f"could not load open_clip {name} with pretrained={pretrained} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
            f"Offline: set model.pretrained=PATH to a local checkpoint, or model.pretrained=null for random weights"
        ) from e
    return model.eval(), tokenizer


@contextmanager
def quiet_open_clip(level: int = logging.INFO) -> Iterator[None]:
    """open_clip logs every step of building a model at INFO on the root logger: not for a user."""
    logging.disable(level)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def scratch_config(
    embed_dim: int = 512,
    image_size: int = 224,
    patch_size: int = 32,
    vision_width: int = 768,
    vision_layers: int = 12,
    vision_head_width: int = 64,
    text_width: int = 512,
    text_heads: int = 8,
    text_layers: int = 12,
    context_length: int = 77,
    temperature: float = 0.07,
) -> dict:
    """An open_clip model config (the schema of open_clip's model_configs/*.json) from the keys of
    `model.scratch` (defaults: ViT-B-32's shape), checked so that a bad key fails now, naming
    itself. `temperature` sets the config's init_logit_scale (log 1/temperature)."""
    sizes = {"embed_dim": embed_dim, "image_size": image_size, "patch_size": patch_size}
    sizes.update({"vision_width": vision_width, "vision_layers": vision_layers, "vision_head_width": vision_head_width})
    sizes.update({"text_width": text_width, "text_heads": text_heads, "text_layers": text_layers})
    check_scratch_sizes(sizes | {"context_length": context_length})
    if vision_width % vision_head_width:
        raise ValueError(
            f"model.scratch.vision_head_width={vision_head_width} does not divide "
            f"model.scratch.vision_width={vision_width}: each head takes vision_head_width dimensions"
        )
    if text_width % text_heads:
        raise ValueError(
            f"model.scratch.text_heads={text_heads} does not divide model.scratch.text_width={text_width}: "
            "each head takes text_width / text_heads dimensions"
        )
    return {
        "embed_dim": embed_dim,
        "init_logit_scale": math.log(1.0 / temperature),
        "vision_cfg": {
            "image_size": image_size,
            "patch_size": patch_size,
            "width": vision_width,
            "layers": vision_layers,
            "head_width": vision_head_width,
        },
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,  # open_clip's BPE tokenizer (it ships with the package)
            "width": text_width,
            "heads": text_heads,
            "layers": text_layers,
        },
    }


def register_config(config: dict, stem: str = "clip_scratch") -> tuple[str, str]:
    """Write an open_clip model config as JSON and register it: (model name, file). The name carries
    a hash of the config, so two different configs in one process never share a name."""
    text = json.dumps(config, indent=2, sort_keys=True)
    name = f"{stem}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    path = Path(tempfile.mkdtemp(prefix="open_clip_config_")) / f"{name}.json"
    path.write_text(text)
    return name, str(path)


def two_views(x: torch.Tensor, scale: tuple[float, float] = (0.7, 1.0), shift: float = 0.15) -> torch.Tensor:
    """A random augmentation per image, batched on the device: zoom (scale of the crop), shift (as a
    fraction of the side) and horizontal flip, one affine resampling."""
    n = x.shape[0]
    s = torch.empty(n, device=x.device).uniform_(*scale)
    flip = torch.where(torch.rand(n, device=x.device) < 0.5, -1.0, 1.0)
    t = torch.empty(n, 2, device=x.device).uniform_(-shift, shift)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = s * flip, s, t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass
class LoadedClip:
    """An open_clip model as built for a run: the model, its tokenizer, its name and its config."""

    model: Any  # open_clip.CLIP
    tokenizer: Any
    name: str
    config: dict  # its open_clip model config (what open_clip.create_model loads back)


def build_clip(
    name: str | None, pretrained: str | None, model_config: str | None, finetune: str | None, scratch: dict | None,
    temperature: float,
) -> LoadedClip:  # fmt: skip
    """The model a run uses: built from the keys of `model.scratch` (finetune=scratch, its initial
    temperature `temperature`), or loaded by name (`load_clip`)."""
    if finetune == "scratch":
        config = scratch_config(**{**(scratch or {}), "temperature": temperature})
        registered, path = register_config(config)
        model, tokenizer = load_clip(registered, None, path)
        return LoadedClip(model, tokenizer, registered, config)
    if not name:
        raise ValueError(
            "model.name is not set: give an open_clip architecture, or train from nothing with finetune=scratch"
        )
    model, tokenizer = load_clip(name, pretrained, model_config)
    import open_clip

    return LoadedClip(model, tokenizer, name, open_clip.get_model_config(name))


def second_image_tower(config: dict) -> nn.Module:
    """A fresh image tower of the shape of `config`'s (the same-modality control's partner)."""
    return open_clip_vision_tower(config["embed_dim"], config["vision_cfg"])


def image_side(model) -> int:
    """The side of the square images an open_clip model's image tower takes."""
    size = model.visual.image_size
    return size[0] if isinstance(size, (tuple, list)) else int(size)


def caption_tokens(tokenizer, classes: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """(classes, templates, context) tokens of every caption: each template filled with each class name."""
    tokens = tokenizer([t.format(c) for c in classes for t in templates])
    return tokens.view(len(classes), len(templates), -1)


@torch.no_grad()
def encode_texts(model, tokenizer, texts: Sequence[str], device: torch.device) -> np.ndarray:
    """Normalised text embeddings (len(texts), D), 256 texts at a time."""
    out = []
    for i in range(0, len(texts), 256):
        tokens = tokenizer(list(texts[i : i + 256])).to(device)
        with bf16_on_gpu(device):
            out.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
    return torch.cat(out).numpy()


def parameter_groups(named_parameters: Iterator[tuple[str, nn.Parameter]]) -> list[dict]:
    """The trainable parameters in two optimizer groups, as open_clip's training: no weight decay on
    gains, biases and the logit scale."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in named_parameters:
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
