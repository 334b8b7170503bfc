"""VAE training, steady state: the framework vs the seed notebook's loop vs compute only
(benchmarks/harness.py). A training epoch is these steps end to end.

    .venv/bin/python benchmarks/vae_train.py [--tiny] [--batch-size 128]

All three train the seed's ConvVAE (conf/model/vae.yaml: latent 2, summed MSE + KL, Adam 1e-3,
batch 128) on the same synthetic FashionMNIST-shaped data (uint8 1x28x28):
- framework: `python -m experiments task=vae data.synthetic=true` (a uint8 tensor on the device,
  the transform per batch, Lightning, every metric logged each step as a user sees it)
- seed: torchvision's way, `ToTensor` per PIL image through a DataLoader with num_workers=0, fp32
- bound: the same model, loss and optimizer on one batch already on the device, fp32
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from harness import arguments, compose, conclude, rate, time_framework, timed_windows, training_overrides


def main() -> None:
    args = arguments(__doc__.splitlines()[0], batch_size=128, warmup=10, steps=50, repeats=3).parse_args()
    if args.tiny:
        args.warmup, args.steps, args.repeats, args.batch_size = 2, 3, 2, 32
    device = torch.device(args.device)
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    from models import ConvVAE, kl_divergence, reconstruction_loss

    cfg = compose("task=vae")
    total = args.warmup + args.steps * args.repeats
    n = total * args.batch_size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    settings = {"model": f"ConvVAE latent {cfg.model.latent_dim}", "batch_size": args.batch_size}
    settings.update({"warmup_steps": args.warmup, "steps_per_window": args.steps, "windows": args.repeats})

    def model():
        torch.manual_seed(0)
        vae = ConvVAE(latent_dim=cfg.model.latent_dim).to(device).train()
        return vae, torch.optim.Adam(vae.parameters(), lr=cfg.model.optimizer.lr)

    def train_step(vae, opt, x):
        x_hat, mu, logvar = vae(x)
        loss = (reconstruction_loss(x_hat, x, "mse") + kl_divergence(mu, logvar)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    class PILImages(Dataset):  # what torchvision's FashionMNIST hands ToTensor: one PIL image
        def __len__(self):
            return n

        def __getitem__(self, i):
            return transforms.functional.to_tensor(transforms.functional.to_pil_image(images[i])), 0

    loader = iter(DataLoader(PILImages(), batch_size=args.batch_size, shuffle=True, num_workers=0))
    vae, opt = model()

    def seed_step():
        x, _ = next(loader)
        train_step(vae, opt, x.to(device))

    items = args.steps * args.batch_size
    contenders = {"seed": rate(timed_windows(seed_step, args.warmup, args.steps, args.repeats, device), items)}
    vae, opt = model()
    x = images[: args.batch_size].to(device).float() / 255
    contenders["bound"] = rate(
        timed_windows(lambda: train_step(vae, opt, x), args.warmup, args.steps, args.repeats, device), items
    )
    with tempfile.TemporaryDirectory() as tmp:
        windows = time_framework(
            args,
            Path(tmp),
            "task=vae",
            *training_overrides(args, device),
            "callbacks.vae_figures=null",
        )
    conclude("vae training steps (images/s)", args, windows, contenders, items, settings, device)


if __name__ == "__main__":
    main()
