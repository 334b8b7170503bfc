"""CLIP test-set embedding, steady state: the framework's test pass vs the seed notebook's loop vs
the image encoder alone (benchmarks/harness.py).

    .venv/bin/python benchmarks/clip_embedding.py [--tiny] [--model ViT-B-32] [--batch-size 256]

Random weights (no hub here; the cost does not depend on their values) and the same synthetic
STL-10-shaped images (uint8 3x96x96) for every contender:
- framework: the test pass of `python -m experiments task=clip data.synthetic=true` with the
  analyses off: resize and normalise per batch on the device, bf16 autocast on a GPU, the
  embeddings kept on the device until the pass ends
- seed: open_clip's own preprocessing per PIL image (resize, centre crop, ToTensor, normalise)
  in a DataLoader with num_workers=0, fp32 encoding, the embeddings to the host per batch
- bound: `encode_images` (the same module and precision) on one preprocessed batch on the device
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from harness import accelerator, arguments, compose, conclude, rate, time_framework, timed_windows

TINY_CLIP = {  # a tiny open_clip config for --tiny (as the tests' tiny model)
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


def main() -> None:
    gpu = torch.cuda.is_available()
    p = arguments(__doc__.splitlines()[0], batch_size=256 if gpu else 32, warmup=3 if gpu else 1, steps=10, repeats=3)
    p.add_argument("--model", default="ViT-B-32")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    model_keys = [f"model.name={args.model}", "model.pretrained=null"]
    if args.tiny:
        args.warmup, args.steps, args.repeats, args.batch_size = 1, 2, 2, 8
        (tmp / "tiny-clip-bench.json").write_text(json.dumps(TINY_CLIP))
        args.model = "tiny-clip-bench"
        model_keys = [
            f"model.name={args.model}",
            "model.pretrained=null",
            f"model.model_config={tmp / 'tiny-clip-bench.json'}",
        ]
    elif not gpu:
        args.steps = 2
    device = torch.device(args.device)
    import open_clip
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import functional as TF

    model_config = str(tmp / "tiny-clip-bench.json") if args.tiny else None
    module = instantiate(compose("task=clip").model, name=args.model, pretrained=None, model_config=model_config)
    module = module.to(device).eval()
    size = module.image_size
    total = args.warmup + args.steps * args.repeats
    n = total * args.batch_size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 96, 96), dtype=torch.uint8, generator=g)
    settings = {"model": args.model, "image_size": size, "batch_size": args.batch_size, "images": n}
    settings.update({"warmup_batches": args.warmup, "batches_per_window": args.steps, "windows": args.repeats})

    preprocess = open_clip.image_transform(size, is_train=False)

    class PILImages(Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return preprocess(TF.to_pil_image(images[i])), 0

    loader = iter(DataLoader(PILImages(), batch_size=args.batch_size, shuffle=False, num_workers=0))
    module.float()

    @torch.no_grad()
    def seed_step():
        x, _ = next(loader)
        torch.nn.functional.normalize(module.model.encode_image(x.to(device)), dim=-1).cpu()

    items = args.steps * args.batch_size
    contenders = {"seed": rate(timed_windows(seed_step, args.warmup, args.steps, args.repeats, device), items)}
    x = torch.stack([preprocess(TF.to_pil_image(images[i])) for i in range(args.batch_size)]).to(device)
    contenders["bound"] = rate(
        timed_windows(lambda: module.encode_images(x), args.warmup, args.steps, args.repeats, device), items
    )
    windows = time_framework(
        args,
        tmp / "run",
        "task=clip",
        *model_keys,
        "data.synthetic=true",
        f"data.synthetic_size={n}",
        f"data.image_size={size}",
        f"data.eval_batch_size={args.batch_size}",
        accelerator(device),
        "callbacks.clip_analyses=null",
        stage="test",
    )
    conclude("clip test-set embedding (images/s)", args, windows, contenders, items, settings, device)


if __name__ == "__main__":
    main()
