"""The real FashionMNIST written out as a data=folder tree: OUT/{train,val,test}/<class>/<i>.png.

train and val are the in-memory path's own split (data=fashion_mnist: val_size 5000 held out of the
60,000 training images with split_seed 42), test the 10,000 test images, so the two paths can be
compared on the same images. --limit N keeps the first N images of each split (the same first N
that tests/helpers/fashion_subset.py keeps in memory).

    python scripts/fashion_mnist_folder.py /tmp/fashion_mnist_folder
    python -m experiments task=resnet data=folder data.root=/tmp/fashion_mnist_folder
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def write_folder(out: Path, limit: int | None = None, root: str = "data", val_size: int = 5000, seed: int = 42):
    """Write the splits of data=fashion_mnist (its files found as the run finds them) as PNGs; the
    number of images per split."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from PIL import Image

    import experiments
    from experiments import resolvers

    resolvers.register()  # what the entry point does
    GlobalHydra.instance().clear()
    try:  # data=fashion_mnist as conf/ configures it (its keys' one home), with this script's settings
        with initialize_config_dir(config_dir=experiments.config_dir(), version_base="1.3"):
            node = compose("config", overrides=["data=fashion_mnist"]).data
    finally:
        GlobalHydra.instance().clear()
    dm = instantiate(
        node, root=root, download=False, fallback_roots=["/usr/share/datasets/fashion-mnist"], val_size=val_size,
        split_seed=seed, _convert_="all",
    )  # fmt: skip
    dm.setup()
    counts = {}
    names = [c.replace("/", "-") for c in dm.classes]  # "T-shirt/top" is a class name, not a path
    for split in ("train", "val", "test"):
        data = dm.split(split)
        n = len(data) if limit is None else min(limit, len(data))
        for name in names:
            (out / split / name).mkdir(parents=True, exist_ok=True)
        images, labels = data.images[:n, 0].numpy(), data.labels[:n].tolist()
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(img).save(out / split / names[label] / f"{i:05d}.png")
        counts[split] = n
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="a new folder")
    p.add_argument("--limit", type=int, default=None, help="the first N images of each split only")
    args = p.parse_args()
    start = time.time()
    counts = write_folder(args.out, args.limit)
    print(f"wrote {counts} to {args.out} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
