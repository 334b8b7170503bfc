"""ResNet fine-tuning, steady state: the framework vs the seed notebook's loop vs compute only
(benchmarks/harness.py), for full fine-tuning and for head-only fine-tuning.

    .venv/bin/python benchmarks/resnet_train.py [--tiny]                       # CPU: resnet18 at 32 px
    python benchmarks/resnet_train.py --arch resnet152 --image-size 224 --batch-size 256 \
        --head-images 10000                                                   # a GPU: the real setting

Same synthetic CIFAR-10-shaped data (uint8 3x32x32, 10 classes) for every contender, random
weights (the cost does not depend on their values), Adam.

full fine-tuning (img/s of training steps):
- framework: `python -m experiments task=resnet finetune=full data.synthetic=true ...` (resize and
  normalise per batch on the device; bf16-mixed and channels_last on a GPU)
- seed: torchvision transforms per PIL image (Resize, ToTensor, Normalize) in a DataLoader with
  num_workers=0, fp32, batch 32, as the seed notebook
- bound: the same model, batch, precision and memory layout on one normalised batch on the device

head only, `--head-epochs` epochs over `--head-images` images (img/s = epochs x images / seconds):
- framework: the whole fit of `finetune=head` (the backbone once over the train split in bf16, the
  head on the cached features), from before the feature cache to the end of the last epoch
- seed: the seed's loop with a frozen backbone run on every batch of every epoch (its rate)
- bound: the backbone once over the images on the device at the framework's batch (the head's
  epochs on cached features cost next to nothing), i.e. epochs x the backbone's inference rate
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from harness import (
    accelerator,
    arguments,
    bf16,
    rate,
    report,
    run_framework,
    sync,
    time_framework,
    timed_windows,
    training_overrides,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def seed_loader(images: torch.Tensor, labels: torch.Tensor, size: int):
    """What the seed's torchvision CIFAR10 + transforms + DataLoader hands the loop: batches of 32."""
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize(size), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    class PILImages(Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return tf(transforms.functional.to_pil_image(images[i])), int(labels[i])

    return DataLoader(PILImages(), batch_size=32, shuffle=True, num_workers=0)


def cycle(loader):
    while True:
        yield from loader


def training_bound(args, device: torch.device, classes: int = 10) -> list[float]:
    """Compute only: training steps of torchvision's `args.arch` at `args.batch_size` x
    `args.image_size` on one normalised batch already on the device, with the framework's precision
    and memory layout there (bf16 autocast and channels_last on a GPU), Adam; seconds per window of
    `args.steps` steps."""
    import torchvision

    amp, layout = bf16(device), torch.channels_last if device.type == "cuda" else torch.contiguous_format
    torch.manual_seed(0)
    net = torchvision.models.get_model(args.arch, weights=None, num_classes=classes).to(device, memory_format=layout)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device).to(memory_format=layout)
    y = torch.randint(0, classes, (args.batch_size,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed_windows(step, args.warmup, args.steps, args.repeats, device)


def main() -> None:
    gpu = torch.cuda.is_available()
    p = arguments(__doc__.splitlines()[0], batch_size=256 if gpu else 64, warmup=5 if gpu else 2, steps=10, repeats=3)
    p.add_argument("--arch", default="resnet152" if gpu else "resnet18")
    p.add_argument("--image-size", type=int, default=224 if gpu else 32)
    p.add_argument("--head-images", type=int, default=10000 if gpu else 1024)
    p.add_argument("--head-epochs", type=int, default=3, help="the seed's 3")
    p.add_argument("--only", choices=["full", "head"], default=None, help="one of the two benchmarks")
    args = p.parse_args()
    if args.tiny:
        args.arch, args.image_size, args.batch_size, args.head_images = "resnet18", 32, 8, 48
        args.warmup, args.steps, args.repeats = 1, 2, 2
    device = torch.device(args.device)
    import torchvision

    amp, channels_last = bf16(device), device.type == "cuda"
    layout = torch.channels_last if channels_last else torch.contiguous_format
    task = ("task=resnet", f"model.arch={args.arch}", "model.weights=null", f"data.image_size={args.image_size}")
    g = torch.Generator().manual_seed(0)
    n_seed = (args.warmup + args.steps * args.repeats) * 32
    images = torch.randint(0, 256, (n_seed, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n_seed,), generator=g)
    settings = {"arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size, "seed_batch": 32}
    settings.update({"warmup_steps": args.warmup, "steps_per_window": args.steps, "windows": args.repeats})
    settings.update({"precision": "bf16-mixed" if amp else "32-true", "channels_last": channels_last})

    def model(frozen_backbone: bool = False):
        torch.manual_seed(0)
        net = torchvision.models.get_model(args.arch, weights=None, num_classes=10).to(device)
        if frozen_backbone:
            for name, param in net.named_parameters():
                param.requires_grad = name.startswith("fc.")
            net.eval()  # frozen BatchNorm, as the framework's freeze_bn
        return net, torch.optim.Adam([q for q in net.parameters() if q.requires_grad], lr=1e-3)

    def seed_stepper(frozen_backbone: bool):
        net, opt = model(frozen_backbone)  # the seed: fp32, contiguous, batch 32
        batches = cycle(seed_loader(images, labels, args.image_size))

        def step():
            x, y = next(batches)
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step

    results = {}
    if args.only in (None, "full"):
        contenders = {"bound": rate(training_bound(args, device), args.steps * args.batch_size)}
        timing = partial(timed_windows, warmup=args.warmup, steps=args.steps, repeats=args.repeats, device=device)
        contenders["seed"] = rate(timing(seed_stepper(False)), args.steps * 32)
        with tempfile.TemporaryDirectory() as tmp:
            windows = time_framework(
                args,
                Path(tmp),
                *task,
                "finetune=full",
                *training_overrides(args, device),
            )
        contenders = {"framework": rate(windows, args.steps * args.batch_size), **contenders}
        results["full"] = report(
            "resnet full fine-tuning (training images/s)",
            "img/s",
            contenders,
            settings,
            args.out.with_name(args.out.stem + "_full.json") if args.out else None,
            device,
        )

    if args.only in (None, "head"):
        e, n = args.head_epochs, args.head_images
        net, _ = model(frozen_backbone=True)
        net = net.to(memory_format=layout)
        backbone = torch.nn.Sequential(*list(net.children())[:-1])
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device).to(memory_format=layout)
        batches = -(-n // args.batch_size)

        @torch.no_grad()
        def backbone_pass():  # the backbone once over n images, batch by batch
            for _ in range(batches):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    backbone(x)

        backbone_pass()  # warm-up
        seconds = timed_windows(backbone_pass, 0, 1, args.repeats, device)
        contenders = {"bound": rate(seconds, e * n)}

        seed = rate(timed_windows(seed_stepper(True), args.warmup, args.steps, args.repeats, device), args.steps * 32)
        contenders["seed"] = seed  # its per-batch rate is its rate over any number of epochs
        fits = []
        with tempfile.TemporaryDirectory() as tmp:
            warm = 0 if args.tiny else 1  # the first fit is the warm-up (kernels, allocator); --tiny: none
            for i in range(warm + args.repeats):
                fits += run_framework(
                    Path(tmp) / str(i),
                    *task,
                    "finetune=head",
                    "data.synthetic=true",
                    accelerator(device),
                    "trainer.limit_val_batches=0",
                    "test=false",
                    f"data.batch_size={args.batch_size}",
                    f"data.eval_batch_size={args.batch_size}",
                    f"data.synthetic_size={(n * 5) // 4}",  # n train images once a fifth is held out
                    "callbacks.feature_cache.splits=[train]",
                    f"trainer.max_epochs={e}",
                    timer="FitTimer",
                    compile=args.compile,
                )
        contenders = {"framework": rate(fits[warm:], e * n), **contenders}
        head_settings = {**settings, "head_images": n, "head_epochs": e, "warmup_fits": warm}
        results["head"] = report(
            f"resnet head-only fine-tuning, {e} epochs (training images/s)",
            "img/s",
            contenders,
            head_settings,
            args.out.with_name(args.out.stem + "_head.json") if args.out else None,
            device,
        )
    sync(device)


if __name__ == "__main__":
    main()
