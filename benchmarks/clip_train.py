"""Contrastive training steps of the tiny CLIP of experiment=clip_scratch_fashion_mnist: the
framework vs a plain PyTorch loop vs compute only, steady state (benchmarks/harness.py).

    .venv/bin/python benchmarks/clip_train.py [--tiny] [--batch-size 256] [--out clip_train.json]

All three train the same open_clip model (the preset's model.scratch keys), AdamW with open_clip's
no-decay groups, open_clip's ClipLoss at the learned temperature, the same batch size, on the same
synthetic FashionMNIST-shaped data (uint8, 1x28x28, 10 classes) with captions from the preset's 8
train templates:
- framework: `python -m experiments experiment=clip_scratch_fashion_mnist data.synthetic=true` as a
  user runs it (no validation, no test pass, no logger, no measurement of the untrained model),
  timed by a callback between training steps
- seed: a plain loop over the same uint8 tensor on the device: index a batch, scale, repeat the
  grey channel, normalise, draw a template per image, tokenise its caption (open_clip's tokenizer,
  per batch, as a plain loop over captions would), encode both towers, loss, backward, step,
  clamp the logit scale (bf16 autocast on a GPU, as the framework's bf16-mixed)
- bound: the same model, loss and optimizer on one batch already normalised on the device with its
  captions already tokenised and de-duplicated (each distinct caption encoded once, as the
  framework does: a batch holds at most classes x templates of them)
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from harness import arguments, bf16, compose, conclude, rate, time_framework, timed_windows, training_overrides


def main() -> None:
    args = arguments(__doc__.splitlines()[0], batch_size=256, warmup=5, steps=20, repeats=3).parse_args()
    if args.tiny:
        args.warmup, args.steps, args.repeats, args.batch_size = 1, 2, 2, 16
    device = torch.device(args.device)
    preset = ("experiment=clip_scratch_fashion_mnist", "data.synthetic=true")
    total = args.warmup + args.steps * args.repeats
    n = total * args.batch_size * 5 // 4 + args.batch_size  # a fifth of synthetic train is held out for val
    settings = {"model": "clip_scratch_fashion_mnist", "batch_size": args.batch_size, "warmup_steps": args.warmup}
    settings.update({"steps_per_window": args.steps, "windows": args.repeats})

    import open_clip

    from datamodules import FashionMNISTDataModule
    from models.clip import MAX_LOGIT_SCALE, load_clip, register_config, scratch_config

    cfg = compose(*preset)
    lr, wd = cfg.model.optimizer.lr, cfg.model.optimizer.weight_decay
    name, path = register_config(scratch_config(**cfg.model.scratch, temperature=cfg.model.temperature))
    templates = list(cfg.model.train_templates)
    classes = list(FashionMNISTDataModule.classes)
    mean = torch.tensor(list(cfg.data.mean), device=device).view(1, 3, 1, 1)
    std = torch.tensor(list(cfg.data.std), device=device).view(1, 3, 1, 1)
    amp = bf16(device)

    def plain_model():
        torch.manual_seed(0)
        model, tokenizer = load_clip(name, None, path)
        model = model.to(device).train()
        decay = [p for k, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in k]
        no_decay = [p for k, p in model.named_parameters() if p.ndim < 2 or "logit_scale" in k]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        return model, tokenizer, torch.optim.AdamW(groups, lr=lr, weight_decay=wd)

    loss_fn = open_clip.ClipLoss()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, 10, (n,), generator=g)

    def train_step(model, optimizer, x, tokens, inverse=None):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            image = F.normalize(model.encode_image(x).float(), dim=-1)
            text = model.encode_text(tokens)
            text = F.normalize((text if inverse is None else text[inverse]).float(), dim=-1)
            loss = loss_fn(image, text, model.logit_scale.exp())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    model, tokenizer, optimizer = plain_model()
    position = [0]

    def seed_step():
        i = position[0] % (n - args.batch_size)
        position[0] += args.batch_size
        x = images[i : i + args.batch_size].float().div(255).expand(-1, 3, -1, -1)
        which = torch.randint(len(templates), (args.batch_size,))
        captions = [
            templates[t].format(classes[c]) for c, t in zip(labels[i : i + args.batch_size], which, strict=True)
        ]
        train_step(model, optimizer, (x - mean) / std, tokenizer(captions).to(device))

    items = args.steps * args.batch_size
    contenders = {"seed": rate(timed_windows(seed_step, args.warmup, args.steps, args.repeats, device), items)}
    model, tokenizer, optimizer = plain_model()
    x = (images[: args.batch_size].float().div(255).expand(-1, 3, -1, -1) - mean) / std
    captions = [templates[i % len(templates)].format(classes[c]) for i, c in enumerate(labels[: args.batch_size])]
    tokens, inverse = torch.unique(tokenizer(captions), dim=0, return_inverse=True)
    tokens, inverse = tokens.to(device), inverse.to(device)
    contenders["bound"] = rate(
        timed_windows(
            lambda: train_step(model, optimizer, x, tokens, inverse), args.warmup, args.steps, args.repeats, device
        ),
        items,
    )
    assert math.isfinite(float(model.logit_scale.detach()))
    with tempfile.TemporaryDirectory() as tmp:
        windows = time_framework(
            args,
            Path(tmp),
            preset[0],
            *training_overrides(args, device),
            "callbacks.clip_analyses.at_init=false",  # the untrained model's numbers: not a training step
        )
    conclude("clip training steps (images/s)", args, windows, contenders, items, settings, device)


if __name__ == "__main__":
    main()
