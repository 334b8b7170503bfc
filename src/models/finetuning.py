"""What every model family that fine-tunes shares, in one place: the check of its fine-tuning mode,
which parameters train, the optimizer built from `model.optimizer`, and the type of backbone
features (the timm-style seam: `forward_features` makes them, `forward_head` reads them, and a
model's forward takes the head-only path for this type, whatever the tensor's shape)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn


class BackboneFeatures(torch.Tensor):
    """(B, D) features of a frozen backbone, the input of a model's head. A tensor of this type
    stays one through torch operations (cat, indexing, .to), so features computed once and served
    by a data module (experiments.feature_cache) still say what they are when a batch of them
    reaches the model."""

    @staticmethod
    def of(x: torch.Tensor) -> BackboneFeatures:
        return x.as_subclass(BackboneFeatures)


def check_mode(finetune: str | None, modes: Sequence[str], allow_none: bool = True) -> None:
    """`finetune` is one of the family's modes (or null, where the model can be used as loaded)."""
    if (finetune is None and allow_none) or finetune in modes:
        return
    raise ValueError(f"finetune must be one of {', '.join(modes)}, got {finetune!r}")


def check_scratch_sizes(sizes: dict[str, Any]) -> None:
    """The sizes of a model built from `model.scratch` (a ViT, a CLIP's towers): each a positive integer,
    and `patch_size` tiling `image_size`; a bad key fails now, naming itself, not in the first forward."""
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"model.scratch.{key} must be a positive integer, got {value!r}")
    image_size, patch_size = sizes["image_size"], sizes["patch_size"]
    if image_size % patch_size:
        raise ValueError(
            f"model.scratch.patch_size={patch_size} does not divide model.scratch.image_size={image_size}: "
            f"the patches must tile the image (e.g. patch_size={next(p for p in (4, 2, 1) if image_size % p == 0)})"
        )


def freeze(model: nn.Module, frozen: Iterable[nn.Module]) -> list[nn.Module]:
    """Every parameter of `model` trains except those of the `frozen` modules; returns those modules
    (models.frozen.FrozenStayInEval keeps them in eval mode: BatchNorm statistics, dropout)."""
    frozen = list(frozen)
    for p in model.parameters():
        p.requires_grad = True
    for module in frozen:
        for p in module.parameters():
            p.requires_grad = False
    return frozen


def build_optimizer(factory: Callable[..., Any] | None, params: Any) -> Any:
    """The optimizer `model.optimizer` (a partial) makes for `params`; the optimizer and its defaults
    live in conf/model/*.yaml only."""
    if factory is None:
        raise ValueError("model.optimizer is not set: give a partial optimizer, e.g. the one in conf/model/")
    return factory(params=params)


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
