"""ViT inference with attentions, attention rollout and gradient rollout: batched (the framework)
vs one image at a time (the seed's Test_ViT loop), on the same machine in one process.

    PYTHONPATH=src .venv/bin/python benchmarks/vit_attention.py [--images 64] [--batch-size 64]

A ViT-B/16 of google/vit-base-patch16-224's shape with random weights (no hub here), saved with
save_pretrained and loaded back through models.ViTClassifier (eager attention, as the task runs it);
synthetic 224 px images. The cost of a forward pass does not depend on the weights' values.

Rows: images/s of
- seed loop: one image per forward, fp32, attentions returned, rollout per image in a Python loop
- framework, one image: the same loop through ViTClassifier (bf16 autocast on a GPU), batched rollout code
- framework, batched: `--batch-size` images per forward and one batched rollout
and the same for gradient-weighted rollout (one backward per image vs per batch).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def reference_rollout(attentions: torch.Tensor) -> torch.Tensor:
    """Per image, per layer, as notebooks write it: (layers, 1, heads, T, T) -> (T, T)."""
    result = torch.eye(attentions.shape[-1], device=attentions.device)
    for layer in attentions[:, 0]:
        a = layer.mean(0) + torch.eye(layer.shape[-1], device=layer.device)
        result = (a / a.sum(-1, keepdim=True)) @ result
    return result


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="default: 512 on a GPU, 16 on a CPU")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    from transformers import ViTConfig, ViTForImageClassification

    from analysis import attention as A
    from models import ViTClassifier

    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = args.images or (512 if device == "cuda" else 16)
    folder = tempfile.mkdtemp()
    ViTForImageClassification(ViTConfig()).save_pretrained(folder)  # ViT-B/16, 224 px, 1,000 labels
    module = ViTClassifier(folder).to(device).eval()
    images = torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, device=device)
    bs = min(args.batch_size, n)

    def seed_loop(gradient: bool):
        for i in range(n):
            x = module.pixels(images[i : i + 1])
            if gradient:
                with torch.enable_grad():
                    x = x.clone().requires_grad_(True)
                    out = module(x, output_attentions=True)
                    g = torch.autograd.grad(out.logits[0].max(), out.attentions)
                reference_rollout(
                    torch.stack([(a * b).clamp(min=0) for a, b in zip(out.attentions, g, strict=False)]).detach()
                )
            else:
                with torch.no_grad():
                    out = module(x, output_attentions=True)
                reference_rollout(torch.stack(out.attentions))

    def framework(batch: int, gradient: bool):
        for i in range(0, n, batch):
            x = module.pixels(images[i : i + batch])
            if gradient:  # one pass with gradients serves both rollouts, as in the seed loop
                att, grads = module.attention_gradients(x)
                A.attention_rollout(att)
                A.gradient_rollout(att, grads)
            else:
                A.attention_rollout(module.infer(x)["attentions"])

    framework(bs, True)  # warm-up (kernels, allocator)
    rows = {}
    for gradient in (False, True):
        what = "attentions + rollout" + (" + gradient rollout" if gradient else "")
        rows[(what, "seed loop (fp32, 1 image)")] = timed(lambda g=gradient: seed_loop(g), device)
        rows[(what, "framework, 1 image")] = timed(lambda g=gradient: framework(1, g), device)
        rows[(what, f"framework, batch {bs}")] = timed(lambda g=gradient: framework(bs, g), device)
    att = module.infer(module.pixels(images[:bs]))["attentions"]
    only = {
        "rollout only, per image loop": timed(
            lambda: [reference_rollout(att[:, i : i + 1]) for i in range(bs)], device
        ),
        f"rollout only, batched ({bs})": timed(lambda: A.attention_rollout(att), device),
    }
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device={name} images={n} model=ViT-B/16 224px (random weights, eager attention) torch={torch.__version__}")
    for (what, how), s in rows.items():
        base = rows[(what, "seed loop (fp32, 1 image)")]
        print(f"{what:45s} {how:28s} {s:8.2f} s {n / s:9.1f} img/s  {base / s:6.2f}x")
    base = only["rollout only, per image loop"]
    for how, s in only.items():
        print(f"{how:45s} {'':28s} {s * 1e3:8.2f} ms for {bs} images  {base / s:6.2f}x")


if __name__ == "__main__":
    main()
