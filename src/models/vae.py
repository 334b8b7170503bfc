"""A convolutional VAE (Kingma & Welling 2014) for 28x28 images, the seed notebook's architecture.

Encoder: conv(64, 3x3, stride 2) -> conv(128, 3x3, stride 2) -> fc(hidden) -> (mu, log sigma^2).
Decoder: fc(128*7*7) -> deconv(64) -> deconv(1) -> sigmoid, so outputs are pixel intensities in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per sample, summed over latent dimensions."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample reconstruction error summed over pixels: `mse` (squared error, the seed's) or
    `bce` (Bernoulli negative log-likelihood)."""
    if kind == "mse":
        err = F.mse_loss(x_hat, x, reduction="none")
    elif kind == "bce":
        err = F.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x, reduction="none")
    else:
        raise ValueError(f"model.reconstruction must be 'mse' or 'bce', got {kind!r}")
    return err.flatten(1).sum(dim=1)


class ConvVAE(nn.Module):
    def __init__(
        self, latent_dim: int = 2, in_channels: int = 1, image_size: int = 28, channels=(64, 128), hidden_dim: int = 16
    ):
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"model.latent_dim must be a positive integer, got {latent_dim!r}")
        if image_size % 4:
            raise ValueError(f"the VAE halves the image twice: image size must be a multiple of 4, got {image_size}")
        c1, c2 = channels
        side = image_size // 4
        self.latent_dim, self.feature_shape = latent_dim, (c2, side, side)
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden_dim),
            nn.ReLU(),
        )
        self.to_mu = nn.Linear(hidden_dim, latent_dim)
        self.to_logvar = nn.Linear(hidden_dim, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, c2 * side * side),
            nn.ReLU(),
            nn.Unflatten(1, self.feature_shape),
            nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c1, in_channels, 3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp()

    def forward(self, x: torch.Tensor, sample: bool = True):
        """Returns (reconstruction, mu, logvar); `sample=False` decodes the posterior mean."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if sample else mu
        return self.decode(z), mu, logvar
