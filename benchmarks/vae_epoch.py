"""One VAE training epoch on the real FashionMNIST: the framework vs a plain loop like the seed's.

    .venv/bin/python benchmarks/vae_epoch.py [--epochs 1] [--device cpu|cuda]

Both train the same ConvVAE (same loss, Adam 1e-3, batch 128) on the same 55,000 training
images. The seed-style baseline reads them with torchvision's FashionMNIST dataset and ToTensor
per image (PIL), through a DataLoader with num_workers=0; the framework serves batches out of a
uint8 tensor with the transform done per batch on the device. Prints images/s and the ratio.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def seed_style_epoch(root: Path, device: str, n: int, epochs: int) -> float:
    import torchvision
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    from models import ConvVAE, kl_divergence, reconstruction_loss

    ds = torchvision.datasets.FashionMNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(Subset(ds, range(n)), batch_size=128, shuffle=True, num_workers=0)
    torch.manual_seed(0)
    model = ConvVAE(latent_dim=2).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, _ in loader:
            x = x.to(device)
            x_hat, mu, logvar = model(x)
            loss = (reconstruction_loss(x_hat, x, "mse") + kl_divergence(mu, logvar)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def framework_epoch(device: str, epochs: int) -> tuple[float, int]:
    import lightning.pytorch as pl

    from datamodules import FashionMNISTDataModule
    from models import VAEModule

    dm = FashionMNISTDataModule(
        root="/nonexistent", fallback_roots=[str(DEBIAN)], download=False, val_size=5000, batch_size=128
    )
    dm.setup()
    torch.manual_seed(0)
    module = VAEModule(latent_dim=2, kl_anneal_epochs=0, optimizer=partial(torch.optim.Adam, lr=1e-3))
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        max_epochs=epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, len(dm.splits["train"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if not DEBIAN.is_dir():
        raise SystemExit(f"needs the real FashionMNIST in {DEBIAN} (Debian's dataset-fashion-mnist)")

    with tempfile.TemporaryDirectory() as tmp:  # torchvision's layout, unpacked, for the baseline
        raw = Path(tmp) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for gz in DEBIAN.glob("*.gz"):
            with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
        framework_s, n = framework_epoch(args.device, args.epochs)
        seed_s = seed_style_epoch(Path(tmp), args.device, n, args.epochs)

    images = n * args.epochs
    print(f"device={args.device} threads={torch.get_num_threads()} images={images} ({args.epochs} epoch(s) of {n})")
    print(f"seed-style loop (PIL per image, DataLoader, 0 workers): {seed_s:8.2f} s  {images / seed_s:9.0f} img/s")
    print(
        "framework (uint8 tensor, per-batch transforms, Lightning): "
        f"{framework_s:8.2f} s  {images / framework_s:9.0f} img/s"
    )
    print(f"speed-up: {seed_s / framework_s:.2f}x")


if __name__ == "__main__":
    main()
