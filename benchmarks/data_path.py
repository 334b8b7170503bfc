"""The data path alone, no model: training images/s out of a folder of JPEGs, per decoding worker.

Contenders (every one decodes the same JPEGs and gives the same training transform: a random
resized crop to --image-size, a horizontal flip, scaling and normalisation; batches of
--batch-size, shuffled, --workers worker processes):
- plain: torchvision's ImageFolder + PIL + transforms.Compose + a DataLoader (what a notebook writes)
- folder: data=folder (datamodules.FolderDataModule): torchvision's decoders in the workers, uint8 batches,
  normalised batched on --device
- shards: data=shards (datamodules.ShardsDataModule): the same, read from litdata chunks converted once
- litdata: litdata's own StreamingDataset + StreamingDataLoader over the same chunks (its order, not ours)
- webdataset: webdataset 1.0.2 tar shards of the same files, the same decode and transform
- gpu_decode (on a GPU only): data=folder with data.gpu_decode=true: the workers only read the files; each
  batch is decoded with nvJPEG (torchvision.io.decode_jpeg(list, device="cuda")), cropped, flipped and
  normalised on the GPU
The JPEGs are made here (random smooth images, --side x 3/4 --side px, quality 90), in a temporary folder.
Ratios: each contender / plain. Steady state: `warmup` batches untimed, then `repeats` windows of
`steps` batches (harness.py); passes follow each other without a pause (a new pass starts its workers).
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import arguments, compose, rate, report, timed_windows  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def make_jpegs(root: Path, images: int, side: int, classes: int = 10) -> None:
    """root/train/<class>/<i>.jpg and root/val/<class>/<i>.jpg: smooth random images (upsampled
    noise: they compress like photos, not like noise)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    h, w = side * 3 // 4, side
    for split, n in (("train", images), ("val", max(classes, images // 10))):
        for i in range(n):
            folder = root / split / f"class_{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
            img.save(folder / f"{i}.jpg", quality=90)


def cycle(make_iter):
    """Batches forever, pass after pass."""
    while True:
        yield from make_iter()


def plain(root: Path, args):
    from torchvision import datasets
    from torchvision import transforms as T

    transform = T.Compose(
        [
            T.RandomResizedCrop(args.image_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )
    ds = datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True, prefetch_factor=4
    )
    return cycle(lambda: iter(loader))


def streamed(module: str, **keys):
    """A data module's own training loader, batches on --device: data=folder (`folder`), data=shards
    (`shards`), data=folder with data.gpu_decode=true (`gpu_decode`)."""

    def make(root: Path, args):
        from hydra.utils import instantiate

        data = "shards" if module == "shards" else "folder"  # as conf/ configures it, with this benchmark's settings
        dm = instantiate(
            compose(f"data={data}").data, root=str(root), image_size=args.image_size, mean=MEAN, std=STD,
            batch_size=args.batch_size, num_workers=args.workers, drop_last=True, **keys, _convert_="all",
        )  # fmt: skip
        loader = dm._batches("train", shuffle=True, device=torch.device(args.device))
        return cycle(lambda: iter(loader))

    return make


class _Decode:
    """bytes -> normalised float image, the training transform (picklable for workers)."""

    def __init__(self, image_size: int):
        from datamodules.folder import Augment

        self.augment = Augment(image_size, image_size, (0.08, 1.0), (3 / 4, 4 / 3), True)
        self.mean, self.std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
        self.count = 0

    def __call__(self, data: bytes) -> torch.Tensor:
        from datamodules.folder import decode_bytes

        self.count += 1
        return self.augment.train(decode_bytes(data, False, "jpeg"), seed=self.count + os.getpid() * 1_000_003)


def litdata_native(root: Path, args):
    import litdata

    decode = _Decode(args.image_size)

    class Images(litdata.StreamingDataset):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            return decode(bytes(item["image"])), item["label"]

    ds = Images(str(root / "train"), shuffle=True, drop_last=True, seed=42)
    loader = litdata.StreamingDataLoader(ds, batch_size=args.batch_size, num_workers=args.workers, drop_last=True)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)

    def passes():
        for x, y in loader:
            yield (x.float() / 255 - mean) / std, y

    return cycle(passes)


def webdataset(root: Path, args):
    import webdataset as wds

    decode = _Decode(args.image_size)
    urls = sorted(str(p) for p in root.glob("*.tar"))
    pipeline = (
        wds.WebDataset(urls, shardshuffle=len(urls), nodesplitter=wds.split_by_node, empty_check=False)
        .shuffle(1000)
        .map(lambda s: (decode(s["jpg"]), int(s["cls"])))
        .batched(args.batch_size, partial=False)
    )
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=args.workers)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)

    def passes():
        for x, y in loader:
            yield (x.float() / 255 - mean) / std, y

    return cycle(passes)


def write_webdataset(folder: Path, out: Path, shard_images: int) -> None:
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    files = sorted((folder / "train").rglob("*.jpg"))
    classes = sorted(p.name for p in (folder / "train").iterdir())
    with wds.ShardWriter(str(out / "train-%06d.tar"), maxcount=shard_images, verbose=0) as sink:
        for i, f in enumerate(files):
            sink.write({"__key__": f"{i:08d}", "jpg": f.read_bytes(), "cls": str(classes.index(f.parent.name))})


def main() -> None:
    p = arguments(__doc__.split("\n")[0], batch_size=64, warmup=4, steps=8, repeats=3)
    p.add_argument("--images", type=int, default=2000, help="JPEGs in train/ (made here)")
    p.add_argument(
        "--side", type=int, default=500, help="their width (height: 3/4 of it), as ImageNet's typical 500x375"
    )
    p.add_argument("--image-size", type=int, default=224, help="the crop the model would see")
    p.add_argument("--workers", type=int, default=1, help="decoding worker processes per contender")
    p.add_argument("--only", default=None, help="comma-separated contenders to run (default: all that apply)")
    p.add_argument("--folder", type=Path, default=None, help="use this image folder instead of making JPEGs")
    args = p.parse_args()
    if args.tiny:
        args.images, args.side, args.image_size, args.batch_size = 64, 96, 32, 8
        args.warmup, args.steps, args.repeats = 1, 2, 2
    device = torch.device(args.device)
    names = ["plain", "folder", "shards", "litdata", "webdataset"] + (["gpu_decode"] if device.type == "cuda" else [])
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    for name, module in (("shards", "litdata"), ("litdata", "litdata"), ("webdataset", "webdataset")):
        if name in names and importlib.util.find_spec(module) is None:
            names.remove(name)
            print(f"  {name}: skipped, {module} is not installed", flush=True)
    contenders, settings = {}, {}
    with tempfile.TemporaryDirectory(prefix="data_path_") as tmp:
        tmp = Path(tmp)
        root = args.folder or tmp / "jpegs"
        start = time.perf_counter()
        if args.folder is None:
            make_jpegs(root, args.images, args.side)
        made = time.perf_counter() - start
        n_train = sum(1 for _ in (root / "train").rglob("*.*"))
        jpeg_bytes = sum(f.stat().st_size for f in (root / "train").rglob("*.*"))
        settings.update(
            images=n_train, mean_jpeg_kb=round(jpeg_bytes / n_train / 1024, 1), side=args.side,
            image_size=args.image_size, batch_size=args.batch_size, workers=args.workers,
            cores=len(os.sched_getaffinity(0)), made_s=round(made, 1),
        )  # fmt: skip
        if {"shards", "litdata"} & set(names):
            from datamodules.shards import convert

            start = time.perf_counter()
            with _quiet():
                convert(root, tmp / "shards", chunk_size="64MB", workers=max(1, args.workers))
            settings["convert_s"] = round(time.perf_counter() - start, 1)
        if "webdataset" in names:
            write_webdataset(root, tmp / "wds", shard_images=max(8, n_train // 8))
        sources = {"shards": tmp / "shards", "litdata": tmp / "shards", "webdataset": tmp / "wds"}  # else the folder
        makers = {
            "plain": plain, "folder": streamed("folder"), "shards": streamed("shards"), "litdata": litdata_native,
            "webdataset": webdataset, "gpu_decode": streamed("folder", gpu_decode=True),
        }  # fmt: skip
        for name in names:
            batches = makers[name](sources.get(name, root), args)
            step = lambda batches=batches: next(batches)  # noqa: E731
            with _quiet():
                seconds = timed_windows(step, args.warmup, args.steps, args.repeats, device)
            r = rate(seconds, args.steps * args.batch_size)
            r["per_worker"] = r["per_s"] / max(1, args.workers)
            contenders[name] = r
            print(f"  {name}: {r['per_s']:.1f} img/s", flush=True)
    result = report("data_path: training images/s from JPEGs", "img/s", contenders, settings, args.out, device)
    if "plain" in contenders:
        base = contenders["plain"]["per_s"]
        result["ratios"] = {f"{n}/plain": c["per_s"] / base for n, c in contenders.items() if n != "plain"}
        for name, value in result["ratios"].items():
            print(f"  {name:18s} {value:6.3f}")
        if args.out is not None:
            import json

            args.out.write_text(json.dumps(result, indent=2))


class _quiet:
    """litdata and webdataset print progress bars on stdout: not in the report."""

    def __enter__(self):
        self.saved = sys.stdout
        sys.stdout = io.StringIO()

    def __exit__(self, *exc):
        sys.stdout = self.saved


if __name__ == "__main__":
    main()
