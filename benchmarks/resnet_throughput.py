"""ResNet fine-tuning throughput: the framework vs a plain loop written like the seed notebook.

    .venv/bin/python benchmarks/resnet_throughput.py                     # CPU: resnet18 at 32 px
    .venv/bin/python benchmarks/resnet_throughput.py --arch resnet152 --image-size 224 \
        --images 8192 --batch-size 256                                    # a GPU: the real setting

Same synthetic CIFAR-10-shaped data (uint8 32x32) for both:
- seed-style: torchvision transforms per PIL image (Resize, ToTensor, Normalize) in a DataLoader
  with num_workers=0, fp32, batch 32, full fine-tuning with Adam;
- framework: ResNetClassifier(finetune=full) trained by Lightning from the in-memory data
  module (resize + normalise per batch on the device; bf16 + channels_last on a GPU).
Then head-only fine-tuning through the framework with and without the cached backbone features.
Prints images/s and the ratios.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch


def synthetic(n: int):
    from datamodules import CIFAR10DataModule

    return CIFAR10DataModule(synthetic=True, synthetic_size=n, hflip=False, crop_padding=0)


def seed_style(arch: str, images: torch.Tensor, labels: torch.Tensor, size: int, device: str) -> float:
    import torchvision
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    class PILImages(Dataset):  # what torchvision's CIFAR10 hands a transform: one PIL image
        tf = transforms.Compose(
            [
                transforms.Resize(size),
                transforms.ToTensor(),
                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        )

        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return self.tf(transforms.functional.to_pil_image(images[i])), int(labels[i])

    loader = DataLoader(PILImages(), batch_size=32, shuffle=True, num_workers=0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=10).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def framework(
    arch: str, n: int, size: int, batch: int, device: str, finetune: str, cache: bool = True, epochs: int = 1
) -> float:
    import lightning.pytorch as pl

    from models import ResNetClassifier

    dm = synthetic(n)
    dm.batch_size = batch
    dm.transform.image_size, dm.transform.channels = size, 3
    dm.transform.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    dm.transform.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    dm.val_size = 0
    dm.setup()
    from experiments.feature_cache import FeatureCache

    adam = partial(torch.optim.Adam, lr=1e-3)  # conf/model/resnet.yaml's optimizer
    model = ResNetClassifier(arch=arch, weights=None, finetune=finetune, cache_features=cache, optimizer=adam)
    gpu = device == "cuda"
    trainer = pl.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision="bf16-mixed" if gpu else "32-true",
        max_epochs=epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[FeatureCache()],  # what the resnet task adds: head-only on features computed once
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    if gpu:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu = torch.cuda.is_available()
    parser.add_argument("--arch", default="resnet152" if gpu else "resnet18")
    parser.add_argument("--image-size", type=int, default=224 if gpu else 32)
    parser.add_argument("--images", type=int, default=8192 if gpu else 2048)
    parser.add_argument("--batch-size", type=int, default=256 if gpu else 128)
    parser.add_argument("--head-epochs", type=int, default=3, help="epochs of the head-only comparison (the seed's 3)")
    args = parser.parse_args()
    device = "cuda" if gpu else "cpu"
    dm = synthetic(args.images)
    train = dm.synthetic_split(args.images, seed=0)
    n = args.images
    print(
        f"device={torch.cuda.get_device_name() if gpu else 'cpu'} "
        f"threads={torch.get_num_threads()} arch={args.arch} {args.image_size}px images={n}"
    )

    framework(args.arch, min(n, 4 * args.batch_size), args.image_size, args.batch_size, device, "full")  # warm-up
    seed_s = seed_style(args.arch, train.images, train.labels, args.image_size, device)
    full_s = framework(args.arch, n, args.image_size, args.batch_size, device, "full")
    print(f"full fine-tune, seed-style (PIL per image, fp32, batch 32): {seed_s:8.2f} s {n / seed_s:9.1f} img/s")
    print(
        f"full fine-tune, framework (batch {args.batch_size}{', bf16, channels_last' if gpu else ''}): "
        f"{full_s:8.2f} s {n / full_s:9.1f} img/s"
    )
    print(f"  ratio framework / seed-style: {seed_s / full_s:.2f}x")
    same_batch = framework(args.arch, n, args.image_size, 32, device, "full")  # the input pipeline alone
    print(
        f"full fine-tune, framework at the seed's batch 32: {same_batch:8.2f} "
        f"s {n / same_batch:9.1f} img/s  ratio {seed_s / same_batch:.2f}x"
    )

    e = args.head_epochs
    uncached = framework(args.arch, n, args.image_size, args.batch_size, device, "head", cache=False, epochs=e)
    cached = framework(args.arch, n, args.image_size, args.batch_size, device, "head", cache=True, epochs=e)
    print(
        f"head only, {e} epochs, uncached: {uncached:8.2f} s   cached features (incl. "
        f"computing them once): {cached:8.2f} s   ratio {uncached / cached:.2f}x"
    )


if __name__ == "__main__":
    main()
