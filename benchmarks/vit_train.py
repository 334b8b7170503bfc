"""Training steps of the small ViT of experiment=vit_scratch_fashion_mnist: the framework vs a plain
PyTorch loop vs compute only, steady state (benchmarks/harness.py).

    .venv/bin/python benchmarks/vit_train.py [--tiny] [--batch-size 128] [--out vit_train.json]

All three train the same ViT (the preset's model.scratch keys), AdamW, the same batch size, on
the same synthetic FashionMNIST-shaped data (uint8, 1x28x28, 10 classes):
- framework: `python -m experiments experiment=vit_scratch_fashion_mnist data.synthetic=true` as a
  user runs it (no test pass, no logger), timed by a callback between training steps
- seed: a plain loop over the same uint8 tensor on the device: index a batch, scale, repeat
  the grey channel, normalise, forward, cross-entropy, backward, step (bf16 autocast on a GPU,
  as the framework's bf16-mixed)
- bound: the same model and optimizer on one batch already normalised on the device
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from harness import arguments, bf16, compose, conclude, rate, time_framework, timed_windows, training_overrides


def main() -> None:
    args = arguments(__doc__.splitlines()[0], batch_size=128, warmup=5, steps=20, repeats=3).parse_args()
    if args.tiny:
        args.warmup, args.steps, args.repeats, args.batch_size = 1, 2, 2, 16
    device = torch.device(args.device)
    preset = ("experiment=vit_scratch_fashion_mnist", "data.synthetic=true")
    total = args.warmup + args.steps * args.repeats
    n = total * args.batch_size * 5 // 4 + args.batch_size  # a fifth of synthetic train is held out for val
    settings = {"model": "vit_scratch_fashion_mnist", "batch_size": args.batch_size, "warmup_steps": args.warmup}
    settings.update({"steps_per_window": args.steps, "windows": args.repeats})

    from models.vit import scratch_config

    cfg = compose(*preset)
    lr = cfg.model.optimizer.lr
    config = scratch_config(**cfg.model.scratch)
    config.num_labels = 10
    config._attn_implementation = "sdpa"
    amp = bf16(device)

    def plain_model():
        from transformers import ViTForImageClassification

        torch.manual_seed(0)
        model = ViTForImageClassification(config).to(device).train()
        return model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, 10, (n,), generator=g).to(device)

    def train_step(model, optimizer, x, y):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(pixel_values=x).logits.float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model, optimizer = plain_model()
    position = [0]

    def seed_step():
        i = position[0] % (n - args.batch_size)
        position[0] += args.batch_size
        x = images[i : i + args.batch_size].float().div(255).expand(-1, 3, -1, -1)
        train_step(model, optimizer, (x - 0.5) / 0.5, labels[i : i + args.batch_size])

    items = args.steps * args.batch_size
    contenders = {"seed": rate(timed_windows(seed_step, args.warmup, args.steps, args.repeats, device), items)}
    model, optimizer = plain_model()
    x = (images[: args.batch_size].float().div(255).expand(-1, 3, -1, -1) - 0.5) / 0.5
    y = labels[: args.batch_size]
    contenders["bound"] = rate(
        timed_windows(lambda: train_step(model, optimizer, x, y), args.warmup, args.steps, args.repeats, device), items
    )
    with tempfile.TemporaryDirectory() as tmp:
        windows = time_framework(
            args,
            Path(tmp),
            preset[0],
            *training_overrides(args, device),
        )
    conclude("vit training steps (images/s)", args, windows, contenders, items, settings, device)


if __name__ == "__main__":
    main()
