"""LightningModule for the VAE: the objective, KL annealing and what is logged."""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import torch

from .finetuning import build_optimizer
from .vae import ConvVAE, kl_divergence, reconstruction_loss


def kl_weight(step: int, steps_per_epoch: int, anneal_epochs: float, beta: float) -> float:
    """Linear KL annealing: beta * min(1, step / (anneal_epochs * steps_per_epoch)); beta at once
    when anneal_epochs is 0."""
    if anneal_epochs <= 0:
        return float(beta)
    return float(beta) * min(1.0, step / (anneal_epochs * max(1, steps_per_epoch)))


class VAEModule(pl.LightningModule):
    """Trains a `ConvVAE` on the (annealed) beta-VAE objective.

    Logged per epoch for train and val (and test at the end), all per image:
    `recon` (reconstruction error), `kl`, `loss` (the objective optimised: recon + w*kl with the
    annealed weight w; at test w = beta) and `neg_elbo` (recon + kl: the unannealed negative ELBO, comparable across
    epochs; the seed logged only the annealed total, whose rise looked like overfitting).
    Validation and test reconstruct from the posterior mean.
    """

    def __init__(
        self,
        *,
        latent_dim: int,
        beta: float,
        reconstruction: str,
        kl_anneal_epochs: float,
        in_channels: int,
        image_size: int,
        channels: tuple[int, int],
        hidden_dim: int,
        optimizer: Callable | None,
    ):
        super().__init__()
        if reconstruction not in ("mse", "bce"):
            raise ValueError(f"model.reconstruction must be 'mse' or 'bce', got {reconstruction!r}")
        if beta < 0:
            raise ValueError(f"model.beta must be >= 0, got {beta}")
        if kl_anneal_epochs < 0:
            raise ValueError(f"model.kl_anneal_epochs must be >= 0, got {kl_anneal_epochs}")
        self.save_hyperparameters(ignore=["optimizer"])
        self.vae = ConvVAE(latent_dim, in_channels, image_size, tuple(channels), hidden_dim)
        self.optimizer_factory = optimizer

    def check_setup(self, model, datamodule) -> None:
        """The data's images must be what the VAE was built for (contracts.ChecksSetup)."""
        shape = getattr(datamodule, "output_shape", None)
        want = (self.hparams["in_channels"], self.hparams["image_size"], self.hparams["image_size"])
        if shape is not None and tuple(shape) != want:
            raise ValueError(
                f"the VAE takes images of shape {want} (model.in_channels, model.image_size) but the data gives "
                f"{tuple(shape)}: set model.in_channels={shape[0]} model.image_size={shape[1]}, "
                "or data.channels / data.image_size"
            )

    @property
    def latent_dim(self) -> int:
        return self.vae.latent_dim

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] for latents z (contracts.LatentGenerative)."""
        return self.vae.decode(z)

    def forward(self, x: torch.Tensor, sample: bool = False):
        return self.vae(x, sample=sample)

    def current_kl_weight(self) -> float:
        steps = self.trainer.num_training_batches if self._trainer is not None else 1
        steps = steps if isinstance(steps, int) and steps > 0 else 1
        return kl_weight(self.global_step, steps, self.hparams["kl_anneal_epochs"], self.hparams["beta"])

    def _step(self, batch, stage: str, sample: bool):
        x, _ = batch
        x_hat, mu, logvar = self.vae(x, sample=sample)
        recon = reconstruction_loss(x_hat.float(), x.float(), self.hparams["reconstruction"]).mean()
        kl = kl_divergence(mu.float(), logvar.float()).mean()
        # train and val: the objective as it stands this epoch (annealed); test: the final beta
        w = float(self.hparams["beta"]) if stage == "test" else self.current_kl_weight()
        loss = recon + w * kl
        on_step = stage == "train"
        log = dict(on_step=on_step, on_epoch=True, batch_size=x.shape[0], sync_dist=not on_step)  # DDP: mean over ranks
        self.log(f"{stage}/recon", recon, prog_bar=stage != "train", **log)
        self.log(f"{stage}/kl", kl, **log)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train", **log)
        self.log(f"{stage}/neg_elbo", recon + kl, **log)
        if stage == "train":
            self.log("train/kl_weight", w, on_step=True, on_epoch=False)
        return {"loss": loss, "mu": mu.detach(), "x_hat": x_hat.detach()}

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", sample=True)

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val", sample=False)

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test", sample=False)

    def configure_optimizers(self):
        return build_optimizer(self.optimizer_factory, self.parameters())
