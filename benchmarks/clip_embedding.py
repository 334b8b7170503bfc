"""Zero-shot evaluation over several template sets: images embedded once (the framework) vs
re-encoded for every template set (the seed notebook did the test set four times).

    .venv/bin/python benchmarks/clip_embedding.py [--model ViT-B-32] [--images 256] [--template-sets 5]

Random weights (no hub here) and synthetic STL-10-shaped images resized to the model's input on
the device: the cost is the same as with real weights. Prints wall time and images/s.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--template-sets", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    from datamodules import STL10DataModule
    from models import ClipZeroShot

    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = ClipZeroShot(name=args.model, pretrained=None).to(device)
    dm = STL10DataModule(
        synthetic=True,
        synthetic_size=args.images,
        image_size=module.image_size,
        mean=[0.481, 0.458, 0.408],
        std=[0.269, 0.261, 0.276],
    )
    images = dm.split("test").images
    names = list(dm.classes)
    sets = [
        ["a photo of a {}."],
        ["{}"],
        ["a photo of a {}, a type of object or animal"],
        ["a photo of the {}."],
        ["itap of a {}."],
    ][: args.template_sets]

    def encode_all() -> torch.Tensor:
        return torch.cat(
            [
                module.encode_images(dm.transform(images[i : i + args.batch_size].to(device)))
                for i in range(0, len(images), args.batch_size)
            ]
        )

    def classify(z: torch.Tensor, templates) -> torch.Tensor:
        t = torch.from_numpy(module.encode_texts([tpl.format(c) for c in names for tpl in templates])).to(device)
        return (z @ t.view(len(names), len(templates), -1).mean(1).T).argmax(1)

    encode_all()  # warm-up
    start = time.perf_counter()
    for templates in sets:  # seed-style: the images again for every template set
        classify(encode_all(), templates)
    seed_s = time.perf_counter() - start
    start = time.perf_counter()
    z = encode_all()  # the framework: once, then every template set on the cached embeddings
    for templates in sets:
        classify(z, templates)
    cached_s = time.perf_counter() - start
    n = len(images) * len(sets)
    print(
        f"device={device} threads={torch.get_num_threads()} "
        f"model={args.model} images={len(images)} template sets={len(sets)}"
    )
    print(f"re-encoding per template set (seed): {seed_s:7.2f} s  {n / seed_s:8.1f} img/s evaluated")
    print(f"embeddings cached (framework):       {cached_s:7.2f} s  {n / cached_s:8.1f} img/s evaluated")
    print(f"speed-up: {seed_s / cached_s:.2f}x")


if __name__ == "__main__":
    main()
