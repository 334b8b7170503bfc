"""torchvision ResNets: loading, fine-tuning modes and residual-block ablation.

Residual blocks are indexed globally in forward order (ResNet-152: 0-2 layer1, 3-10 layer2,
11-46 layer3, 47-49 layer4). Two ablations, each a module replacement (`AblatedBlock`) that keeps
the block's own submodules and parameter names, so state dicts load either way:

- `drop` (Veit, Wilber & Belongie 2016, "Residual networks behave like ensembles of relatively
  shallow networks"): the residual branch is removed and the block passes its input through its
  shortcut: relu(x) for an identity block (= x, since x comes out of a ReLU) and
  relu(downsample(x)) for the four projection blocks, so shapes still hold.
- `shortcut` (the seed notebook's): the identity/projection addition is removed and the block
  becomes a plain layer: relu(residual_branch(x)).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

LAYERS = ("layer1", "layer2", "layer3", "layer4")
ABLATION_MODES = ("drop", "shortcut")


def build_resnet(arch: str, weights: str | None) -> ResNet:
    """torchvision's `arch` with its ImageNet `weights` by name (IMAGENET1K_V1/V2) or None."""
    if not arch.startswith("resnet") or arch not in torchvision.models.list_models(module=torchvision.models):
        choices = [m for m in torchvision.models.list_models(module=torchvision.models) if m.startswith("resnet")]
        raise ValueError(f"model.arch={arch!r} is not a torchvision ResNet; choose one of {', '.join(choices)}")
    if weights is not None:
        try:
            weights = torchvision.models.get_model_weights(arch).verify(weights)
        except (ValueError, KeyError) as e:
            names = [w.name for w in torchvision.models.get_model_weights(arch)]
            raise ValueError(
                f"model.weights={weights!r} is not a weight of {arch}; choose one of {', '.join(names)} or null"
            ) from e
    try:
        return torchvision.models.get_model(arch, weights=weights)
    except Exception as e:  # noqa: BLE001 - offline: URLError after ~0.6 s; a corrupt cache: RuntimeError
        raise RuntimeError(
            f"could not load torchvision's {arch} weights {weights} ({type(e).__name__}: {e}). Without a network, "
            f"set model.weights=null (random init), or model.checkpoint=PATH to a local state dict"
        ) from e


def residual_blocks(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """(torchvision module name, block) of every residual block, in forward order."""
    return [(f"{layer}.{i}", block) for layer in LAYERS for i, block in enumerate(getattr(net, layer))]


def validate_blocks(blocks: Sequence, count: int, arch: str = "this ResNet") -> list[int]:
    """Checked global block indices: integers in [0, count), each once."""
    blocks = list(blocks)
    bad = [b for b in blocks if not isinstance(b, int) or isinstance(b, bool)]
    if bad:
        raise ValueError(f"ablate.blocks must be integers, got {bad!r}; {arch} has blocks 0..{count - 1}")
    out = [b for b in blocks if not 0 <= b < count]
    if out:
        raise ValueError(f"ablate.blocks {out} out of range: {arch} has {count} residual blocks, 0..{count - 1}")
    repeated = sorted({b for b in blocks if blocks.count(b) > 1})
    if repeated:
        raise ValueError(f"ablate.blocks repeats {repeated}; list each block once (valid: 0..{count - 1})")
    return blocks


def residual_branch(block: Any, x: torch.Tensor) -> torch.Tensor:
    """F(x) of a BasicBlock or Bottleneck: everything but the shortcut and the final ReLU."""
    out = block.relu(block.bn1(block.conv1(x)))
    if hasattr(block, "conv3"):  # Bottleneck: 1x1 -> 3x3 -> 1x1
        out = block.relu(block.bn2(block.conv2(out)))
        return block.bn3(block.conv3(out))
    return block.bn2(block.conv2(out))


def shortcut(block: Any, x: torch.Tensor) -> torch.Tensor:
    """The identity, or the projection (1x1 conv + BN) of the blocks that change shape."""
    return block.downsample(x) if block.downsample is not None else x


class AblatedBlock(nn.Module):
    """A residual block with its branch (`drop`) or its shortcut (`shortcut`) removed; it holds the
    original block's submodules under the same names."""

    relu: nn.Module  # the original's, registered under its name in __init__

    def __init__(self, block: nn.Module, mode: str):
        super().__init__()
        if mode not in ABLATION_MODES:
            raise ValueError(f"ablate.mode must be one of {ABLATION_MODES}, got {mode!r}")
        if not isinstance(block, (BasicBlock, Bottleneck)):
            raise TypeError(f"can only ablate torchvision BasicBlock/Bottleneck, got {type(block).__name__}")
        self.mode, self.original = mode, [block]  # a list: kept, but not registered twice
        for name, child in block.named_children():
            self.add_module(name, child)
        if "downsample" not in self._modules:
            self.downsample = None  # an identity shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "drop":
            return self.relu(shortcut(self, x))
        return self.relu(residual_branch(self, x))

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


def _set_block(net: nn.Module, name: str, module: nn.Module) -> None:
    layer, i = name.split(".")
    getattr(net, layer)[int(i)] = module


def ablate(net: nn.Module, blocks: Sequence[int], mode: str) -> list[str]:
    """Replace the given blocks in place; returns their torchvision names (e.g. ['layer2.0'])."""
    table = residual_blocks(net)
    blocks = validate_blocks(blocks, len(table), type(net).__name__)
    names = []
    for b in blocks:
        name, block = table[b]
        if isinstance(block, AblatedBlock):
            raise ValueError(f"block {b} ({name}) is already ablated")
        _set_block(net, name, AblatedBlock(block, mode))
        names.append(name)
    return names


@contextmanager
def ablated(net: nn.Module, blocks: Sequence[int], mode: str = "drop") -> Iterator[list[str]]:
    """Temporarily ablate `blocks` (those not already ablated); restores them on exit."""
    table = residual_blocks(net)
    fresh = [b for b in blocks if not isinstance(table[b][1], AblatedBlock)]
    names = ablate(net, fresh, mode)
    try:
        yield names
    finally:
        for b in fresh:
            name, block = table[b]
            _set_block(net, name, block)


def projection_blocks(net: nn.Module) -> list[int]:
    """Global indices of the blocks whose shortcut is a projection."""
    return [i for i, (_, b) in enumerate(residual_blocks(net)) if b.downsample is not None]


def stages(net: ResNet, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, activation) after the stem (conv, BN, ReLU, max-pool) and after each stage."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    yield "stem", x
    for layer in LAYERS:
        x = getattr(net, layer)(x)
        yield layer, x


def stage_features(net: ResNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Globally average-pooled activations after the stem and each stage, plus the logits.
    (`layer4` pooled is exactly the network's pool output, the input of fc.)"""
    out = {name: a.mean(dim=(2, 3)) for name, a in stages(net, x)}
    out["logits"] = net.fc(out["layer4"])
    return out


def backbone_features(net: ResNet, x: torch.Tensor) -> torch.Tensor:
    """The input of the classification head: the pooled layer4 activations."""
    *_, (_, last) = stages(net, x)
    return torch.flatten(net.avgpool(last), 1)
