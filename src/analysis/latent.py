"""The latent space of a generative model: prior samples and the grid the decoder is shown."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import norm


def latent_grid(size: int, quantile: float = 0.05) -> np.ndarray:
    """(size*size, 2) points on a grid over a 2-D standard normal, evenly spaced in probability
    (Kingma & Welling's manifold figure): rows run from high z2 to low, columns low z1 to high."""
    if not 0 < quantile < 0.5:
        raise ValueError(f"quantile must lie in (0, 0.5), got {quantile}")
    ticks = norm.ppf(np.linspace(quantile, 1 - quantile, size))
    z1, z2 = np.meshgrid(ticks, ticks[::-1])
    return np.stack([z1.ravel(), z2.ravel()], axis=1)


def sample_prior(kind: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Seeded samples of a standard prior: `gaussian` N(0, 1) or `laplace` Laplace(0, 1) (variance 2,
    heavier tails: decodes what the VAE makes of latents off its Gaussian prior)."""
    if kind == "gaussian":
        return torch.randn(shape, generator=generator)
    if kind == "laplace":  # inverse CDF of Laplace(0, 1) at u ~ U(-1/2, 1/2)
        u = torch.rand(shape, generator=generator) - 0.5
        return -torch.sign(u) * torch.log1p(-2 * u.abs())
    raise ValueError(f"prior must be gaussian or laplace, got {kind!r}")
