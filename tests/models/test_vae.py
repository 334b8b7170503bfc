import pytest
import torch
from configured import configured
from torch.distributions import Normal
from torch.distributions import kl_divergence as torch_kl

from models import ConvVAE, kl_divergence, kl_weight, reconstruction_loss


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    expected = torch_kl(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(dim=1)
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)


def test_kl_is_zero_at_the_prior():
    assert kl_divergence(torch.zeros(3, 2), torch.zeros(3, 2)).abs().max() == 0


def test_reconstruction_losses_are_summed_per_image():
    g = torch.Generator().manual_seed(1)
    x, x_hat = torch.rand(4, 1, 28, 28, generator=g), torch.rand(4, 1, 28, 28, generator=g).clamp(0.01, 0.99)
    torch.testing.assert_close(reconstruction_loss(x_hat, x, "mse"), ((x_hat - x) ** 2).sum(dim=(1, 2, 3)))
    bce = -(x * x_hat.log() + (1 - x) * (1 - x_hat).log()).sum(dim=(1, 2, 3))
    torch.testing.assert_close(reconstruction_loss(x_hat, x, "bce"), bce)
    with pytest.raises(ValueError, match="model.reconstruction"):
        reconstruction_loss(x_hat, x, "l1")


def test_kl_annealing_is_linear_then_flat():
    steps = 100
    assert kl_weight(0, steps, anneal_epochs=10, beta=1.0) == 0.0
    assert kl_weight(500, steps, anneal_epochs=10, beta=1.0) == pytest.approx(0.5)
    assert kl_weight(1000, steps, anneal_epochs=10, beta=2.0) == 2.0
    assert kl_weight(5000, steps, anneal_epochs=10, beta=1.0) == 1.0
    assert kl_weight(0, steps, anneal_epochs=0, beta=0.5) == 0.5


def test_vae_shapes_and_posterior_mean_is_deterministic():
    torch.manual_seed(0)
    vae = ConvVAE(latent_dim=3)
    x = torch.rand(5, 1, 28, 28)
    x_hat, mu, logvar = vae(x, sample=False)
    assert x_hat.shape == x.shape and mu.shape == logvar.shape == (5, 3)
    assert 0 <= x_hat.min() and x_hat.max() <= 1
    torch.testing.assert_close(vae(x, sample=False)[0], x_hat)
    torch.testing.assert_close(vae.decode(mu), x_hat)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_latent_dim_names_the_key(bad):
    with pytest.raises(ValueError, match="model.latent_dim"):
        ConvVAE(latent_dim=bad)


def test_module_objective_is_recon_plus_weighted_kl_and_training_lowers_it():
    torch.manual_seed(0)
    module = configured("task=vae", "model", latent_dim=2, kl_anneal_epochs=0, beta=0.5)
    templates = (torch.rand(4, 1, 7, 7) > 0.5).float().repeat_interleave(4, -1).repeat_interleave(4, -2)
    x = templates.repeat(8, 1, 1, 1)  # 32 images, 4 distinct binary patterns: learnable
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(
        name, float(value.detach() if hasattr(value, "detach") else value)
    )
    torch.manual_seed(1)
    out = module.validation_step((x, torch.zeros(32)), 0)
    assert logged["val/loss"] == pytest.approx(logged["val/recon"] + 0.5 * logged["val/kl"], rel=1e-5)
    assert logged["val/neg_elbo"] == pytest.approx(logged["val/recon"] + logged["val/kl"], rel=1e-5)
    assert float(out["loss"]) == pytest.approx(logged["val/loss"], rel=1e-5)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    first = float(out["loss"])
    for _ in range(100):
        opt.zero_grad()
        module.validation_step((x, torch.zeros(32)), 0)["loss"].backward()
        opt.step()
    assert logged["val/loss"] < 0.5 * first


def test_a_checkpoint_loads_in_a_notebook_with_load_from_checkpoint(tmp_path):
    """What a user does with `<run>/checkpoints/best.ckpt` outside the framework (README): Lightning's
    own `load_from_checkpoint`; the optimizer is not a saved hyper-parameter, so it is given as None."""
    import lightning.pytorch as pl

    from models.vae_module import VAEModule

    module = configured("task=vae", "model", latent_dim=3)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "best.ckpt")
    loaded = VAEModule.load_from_checkpoint(tmp_path / "best.ckpt", optimizer=None, map_location="cpu")
    assert loaded.hparams["latent_dim"] == 3
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
