"""Attention rollout and patch masking for ViTs: tensors in, tensors out (batched, no model).

Shapes: attentions (layers, batch, heads, tokens, tokens) with token 0 the CLS token and
tokens 1.. the patches in row-major order of the patch grid.
"""

from __future__ import annotations

import math

import torch

HEAD_FUSIONS = ("mean", "max", "min")
STRUCTURED_MASKS = ("centre", "border", "stripes", "checkerboard")
FILLS = ("zero", "mean", "noise")


def fuse_heads(attentions: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """(..., heads, T, T) -> (..., T, T)."""
    if head_fusion == "mean":
        return attentions.mean(dim=-3)
    if head_fusion == "max":
        return attentions.amax(dim=-3)
    if head_fusion == "min":
        return attentions.amin(dim=-3)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")


def discard_lowest(attention: torch.Tensor, discard_ratio: float) -> torch.Tensor:
    """Zero the `discard_ratio` fraction of smallest weights of each (batch) attention matrix,
    never those of the CLS token's column (Abnar & Zuidema's rollout as commonly implemented)."""
    if discard_ratio <= 0:
        return attention
    b, t, _ = attention.shape
    flat = attention.reshape(b, -1).clone()
    candidates = flat.clone()
    candidates.view(b, t, t)[:, :, 0] = float("inf")  # keep attention to CLS
    k = int(round(t * t * discard_ratio))
    k = min(k, t * t - t)
    if k > 0:
        idx = candidates.topk(k, dim=1, largest=False).indices
        flat.scatter_(1, idx, 0.0)
    return flat.view(b, t, t)


def attention_rollout(attentions: torch.Tensor, head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """Abnar & Zuidema 2020: per layer fuse the heads, (optionally) discard the weakest weights,
    add the identity for the residual path, renormalise the rows, and multiply through the
    layers, first layer rightmost. Returns (batch, T, T); row 0 from index 1 is the CLS map."""
    layers, b, _, t, _ = attentions.shape
    eye = torch.eye(t, dtype=attentions.dtype, device=attentions.device).expand(b, t, t)
    result = eye
    for layer in range(layers):
        a = discard_lowest(fuse_heads(attentions[layer], head_fusion), discard_ratio)
        a = a + eye
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result


def cls_map(rollout: torch.Tensor) -> torch.Tensor:
    """(batch, T, T) -> (batch, side, side): the CLS token's row over the patch grid."""
    patches = rollout[:, 0, 1:]
    side = math.isqrt(patches.shape[1])
    return patches.reshape(-1, side, side)


def cls_attention(attentions: torch.Tensor) -> torch.Tensor:
    """(layers, batch, heads, T, T) -> (layers, batch, heads, patches): the CLS token's attention to
    each patch (its weight on itself left out, so a row sums to 1 minus that)."""
    return attentions[..., 0, 1:]


def attention_entropy(maps: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each map (..., patches) taken as a distribution over the patches
    (renormalised); log(patches) for a uniform map, 0 for one patch."""
    p = maps / maps.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return -(p * p.clamp_min(1e-12).log()).sum(dim=-1)


def head_correlation(maps: torch.Tensor) -> torch.Tensor:
    """(batch, heads, patches) -> (heads, heads): Pearson correlation between the heads' maps of
    each image, averaged over images (a constant map correlates 0 with everything)."""
    centred = maps - maps.mean(dim=-1, keepdim=True)
    unit = centred / centred.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (unit @ unit.transpose(-1, -2)).mean(dim=0)


def gradient_rollout(attentions: torch.Tensor, gradients: torch.Tensor, discard_ratio: float = 0.0) -> torch.Tensor:
    """Chefer et al. 2021 style: weight each head's attention by its gradient for the target
    class, keep the positive part, average the heads, then roll out as above."""
    weighted = (attentions * gradients).clamp(min=0)
    return attention_rollout(weighted, head_fusion="mean", discard_ratio=discard_ratio)


def random_patch_mask(fraction: float, num_patches: int, generator: torch.Generator, batch: int = 1) -> torch.Tensor:
    """(batch, num_patches) bool: exactly round(fraction * num_patches) masked patches per row."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"masking fractions must lie in [0, 1], got {fraction}")
    k = int(round(fraction * num_patches))
    order = torch.rand(batch, num_patches, generator=generator).argsort(dim=1)
    mask = torch.zeros(batch, num_patches, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask


def saliency_patch_mask(saliency: torch.Tensor, fraction: float, most_salient_first: bool = True) -> torch.Tensor:
    """(batch, num_patches) saliency -> bool mask of the round(fraction * n) most (or least)
    salient patches of each row."""
    n = saliency.shape[1]
    k = int(round(fraction * n))
    order = saliency.argsort(dim=1, descending=most_salient_first)
    mask = torch.zeros_like(saliency, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask


def structured_patch_mask(kind: str, side: int = 14) -> torch.Tensor:
    """(side*side,) bool masks of the seed's shapes: centre, border, stripes, checkerboard."""
    r = torch.arange(side).view(-1, 1).expand(side, side)
    c = torch.arange(side).view(1, -1).expand(side, side)
    q, edge = side // 4, max(1, side // 7)  # 14x14 patches: the centre 8x8, a border 2 patches wide
    masks = {
        "centre": (r >= q) & (r < side - q) & (c >= q) & (c < side - q),
        "border": (r < edge) | (r >= side - edge) | (c < edge) | (c >= side - edge),
        "stripes": (r // 2) % 2 == 0,
        "checkerboard": (r + c) % 2 == 0,
    }
    if kind not in STRUCTURED_MASKS:
        raise ValueError(f"structured mask must be one of {list(STRUCTURED_MASKS)}, got {kind!r}")
    return masks[kind].reshape(-1)


def apply_patch_mask(
    images: torch.Tensor,
    mask: torch.Tensor,
    patch_size: int,
    fill: str = "zero",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fill the masked patches of (B, C, H, W) images in [0, 1] pixel space (before normalising):
    `zero`, `mean` (each image's mean colour) or `noise` (uniform). mask: (B, n) or (n,)."""
    b, ch, h, w = images.shape
    side_h, side_w = h // patch_size, w // patch_size
    mask = mask.expand(b, -1) if mask.ndim == 1 else mask
    pixel = (
        mask.view(b, 1, side_h, side_w)
        .repeat_interleave(patch_size, 2)
        .repeat_interleave(patch_size, 3)
        .to(images.device)
    )
    if fill == "zero":
        value = torch.zeros_like(images)
    elif fill == "mean":
        value = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    elif fill == "noise":
        value = torch.rand(images.shape, generator=generator).to(images.device)
    else:
        raise ValueError(f"fill must be zero, mean or noise, got {fill!r}")
    return torch.where(pixel, value, images)


def deletion_auc(fractions, scores) -> float:
    """Area under a deletion curve (score vs fraction masked), trapezoidal, over [0, 1] of x."""
    import numpy as np

    x, y = np.asarray(fractions, float), np.asarray(scores, float)
    span = x.max() - x.min()
    return float(np.trapezoid(y, x) / span) if span > 0 else float(y.mean())
