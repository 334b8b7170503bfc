"""The vit task's analyses over a test set, steady state: the framework's test pass vs one image at
a time (the seed's Test_ViT loop) vs the same forward passes batched on the device
(benchmarks/harness.py).

    .venv/bin/python benchmarks/vit_analyses.py [--tiny] [--batch-size 64]

The work per image, as conf/task/vit.yaml's defaults make it: one eager forward with attention
maps, attention rollout, and the patch-masking passes (fractions x trials random masks,
the structured masks, most- and least-attended-first at each fraction: 34 forwards), plus the
attention statistics. Random weights (no hub here): a ViT-B/16 of the real shape at 224 px on a
GPU, the small ViT of experiment=vit_scratch_fashion_mnist (28 px) on a CPU; synthetic CIFAR-10
shaped images resized to the model's side.
- framework: the test pass of `python -m experiments task=vit data=cifar10 data.synthetic=true
  model.name=<that model>` with every analysis on every image (max_images=null) but the linear
  probe (an epoch-end fit) and the prediction figures
- seed: the same passes one image at a time, fp32, the rollout in a per-layer Python loop
- bound: the same passes on one batch already on the device, nothing else
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from harness import accelerator, arguments, compose, conclude, rate, time_framework, timed_windows


def reference_rollout(attentions: torch.Tensor) -> torch.Tensor:
    """Per image, per layer, as notebooks write it: (layers, 1, heads, T, T) -> (T, T)."""
    result = torch.eye(attentions.shape[-1], device=attentions.device)
    for layer in attentions[:, 0]:
        a = layer.mean(0) + torch.eye(layer.shape[-1], device=layer.device)
        result = (a / a.sum(-1, keepdim=True)) @ result
    return result


def main() -> None:
    gpu = torch.cuda.is_available()
    p = arguments(__doc__.splitlines()[0], batch_size=64 if gpu else 32, warmup=2, steps=5 if gpu else 2, repeats=3)
    args = p.parse_args()
    from hydra.utils import instantiate
    from transformers import ViTConfig, ViTForImageClassification

    from analysis import attention as A
    from models.vit import scratch_config

    if args.tiny:
        args.warmup, args.steps, args.repeats, args.batch_size = 1, 1, 2, 4
        config = scratch_config(image_size=32, patch_size=8, hidden_size=32, layers=2, heads=4, mlp_size=64)
        name = "tiny ViT (32 px, patch 8, 2 layers)"
    elif args.device == "cuda" or gpu:
        config, name = ViTConfig(), "ViT-B/16 224 px"  # google/vit-base-patch16-224's shape, 1,000 labels
    else:
        config = scratch_config(**compose("experiment=vit_scratch_fashion_mnist").model.scratch)
        name = "vit_scratch_fashion_mnist's ViT (28 px, patch 4)"
    device = torch.device(args.device)
    folder = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(folder / "vit")
    module = instantiate(compose("task=vit").model, name=str(folder / "vit"), _convert_="all").to(device).eval()
    task = compose("task=vit").callbacks.patch_masking
    fractions, trials, structured = list(task.fractions), task.trials, list(task.structured)
    side, patch = module.grid_side, module.patch_size
    total = args.warmup + args.steps * args.repeats
    n = total * args.batch_size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    passes = len(fractions) * trials + len(structured) + 2 * len(fractions)
    settings = {"model": name, "batch_size": args.batch_size, "masked_forwards_per_image": passes}
    settings.update({"warmup_batches": args.warmup, "batches_per_window": args.steps, "windows": args.repeats})
    masks = [A.random_patch_mask(f, side * side, g, 1).view(-1) for f in fractions for _ in range(trials)]
    masks += [A.structured_patch_mask(kind, side) for kind in structured]

    def analyses(x: torch.Tensor, batched: bool):
        out = module.infer(x)
        if batched:
            rollout = A.cls_map(A.attention_rollout(out["attentions"]))
        else:
            rollout = reference_rollout(out["attentions"])[0, 1:].view(1, side, side)
        order = rollout.flatten(1).cpu()
        every = masks + [
            A.saliency_patch_mask(order, f, most_salient_first=m) for f in fractions for m in (True, False)
        ]
        for mask in every:
            module.logits(A.apply_patch_mask(x, mask, patch, "zero", g))

    position = [0]

    def seed_step():  # a batch's worth of images, one at a time, fp32
        i = position[0] % (n - args.batch_size)
        position[0] += args.batch_size
        with torch.autocast(device.type, enabled=False):
            for j in range(i, i + args.batch_size):
                analyses(module.pixels(images[j : j + 1].to(device)), batched=False)

    items = args.steps * args.batch_size
    contenders = {"seed": rate(timed_windows(seed_step, args.warmup, args.steps, args.repeats, device), items)}
    x = module.pixels(images[: args.batch_size].to(device))
    contenders["bound"] = rate(
        timed_windows(lambda: analyses(x, batched=True), args.warmup, args.steps, args.repeats, device), items
    )
    everything = [f"callbacks.{c}.max_images=null" for c in ("attention_maps", "attention_rollout", "patch_masking")]
    windows = time_framework(
        args,
        folder / "run",
        "task=vit",
        "data=cifar10",
        "data.synthetic=true",
        f"data.synthetic_size={n}",
        f"data.eval_batch_size={args.batch_size}",
        f"model.name={folder / 'vit'}",
        accelerator(device),
        "callbacks.linear_probe=null",
        "callbacks.vit_predictions.max_figures=0",
        *everything,
        stage="test",
    )
    conclude("vit analyses over a test set (images/s)", args, windows, contenders, items, settings, device)


if __name__ == "__main__":
    main()
