"""A folder of images too big for memory, streamed: `root/train/<class>/*`, `root/val/<class>/*`,
optionally `root/test/<class>/*` (any format torchvision or PIL reads).

Only the list of files is held (one byte string per image, no Python object per image that
worker processes would copy on touch); images are decoded, cropped and flipped in DataLoader
worker processes and arrive as uint8 batches; scaling and normalisation run batched on the
model's device, as for the in-memory data sets. Training takes a random resized crop and a
horizontal flip, evaluation a resize of the shorter side and a centre crop: the standard
fine-tuning transforms, their sizes and statistics from the model's weights unless set. With
`gpu_decode` (data.gpu_decode=true, a CUDA device) the workers only read each JPEG's bytes and each
batch is decoded on the GPU in one nvJPEG call, then given the same transforms there
(`decode_batch`).

Each pass's order is a seeded permutation, split over DDP ranks without overlap (rank r takes
every world-th image; every rank gets the same number of batches, sized within one image of each
other, so nothing is repeated or dropped), and every image's augmentation is seeded by its pass and
position: a resumed pass (`state_dict` in the checkpoint) gives the same images, in the same
order, with the same crops, whatever the number of workers.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .base import BatchTransform, EpochProgress, compute_device, mixed_seed

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def world() -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# -- the files ------------------------------------------------------------------------------------
def class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(split_dir: Path, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(paths relative to split_dir as one bytes array, int64 labels), every visible file below each
    class folder, sorted: the same list on every rank and every attempt."""
    paths: list[bytes] = []
    labels: list[int] = []
    index = {c: i for i, c in enumerate(classes)}
    for name in class_folders(split_dir):
        if name not in index:
            raise ValueError(f"data.root: {split_dir / name} is a class that train/ does not have")
        found = []
        for dirpath, dirnames, filenames in os.walk(split_dir / name):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = os.path.relpath(dirpath, split_dir)
            found += [os.path.join(rel, f) for f in filenames if not f.startswith(".")]
        found.sort()
        paths += [p.encode() for p in found]
        labels += [index[name]] * len(found)
    return np.array(paths, dtype=np.bytes_), np.array(labels, dtype=np.int64)


def decode(path: str, gray: bool = False) -> torch.Tensor:
    """uint8 (C, H, W), RGB (or grey), EXIF orientation applied, of an image file."""
    with open(path, "rb") as f:
        return decode_bytes(f.read(), gray, path)


def decode_bytes(data: bytes, gray: bool, name: str) -> torch.Tensor:
    """uint8 (C, H, W) of an encoded image: torchvision's decoders for JPEG, PNG, GIF, WebP; PIL
    (with the in-memory path's conversions: 16-bit, palette, transparency) for anything else."""
    import io

    from torchvision.io import ImageReadMode, decode_image

    mode = ImageReadMode.GRAY if gray else ImageReadMode.RGB
    try:
        img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode, apply_exif_orientation=True)
        if img.dtype == torch.uint16:  # a 16-bit PNG: scaled to 8 bits, as the in-memory path's to_rgb does
            img = ((img.to(torch.int32) * 255 + 32767) // 65535).to(torch.uint8)
        return img
    except RuntimeError:
        from PIL import Image, ImageOps

        from .images import to_rgb

        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                rgb = to_rgb(ImageOps.exif_transpose(img))
        except (OSError, ValueError, SyntaxError) as e:
            raise OSError(f"data.root: cannot read {name} as an image ({type(e).__name__}: {e})") from e
        img = rgb.convert("L") if gray else rgb
        arr = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(arr[None] if gray else arr.transpose(2, 0, 1).copy())


def crop_box(h: int, w: int, scale, ratio, g: torch.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawn from `g`: (top, left, height, width)."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(3, generator=g, dtype=torch.float64).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    in_ratio = w / h  # no luck: the central crop of the closest allowed aspect
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


class Augment:
    """uint8 image -> uint8 (C, size, size). Training: a random resized crop and a horizontal flip,
    drawn from a generator seeded per image; evaluation: the shorter side resized, a centre crop."""

    def __init__(self, image_size: int, resize_size: int, scale, ratio, hflip: bool):
        self.image_size, self.resize_size, self.scale, self.ratio, self.hflip = (
            image_size,
            resize_size,
            tuple(scale),
            tuple(ratio),
            hflip,
        )

    def train(self, img: torch.Tensor, seed: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        g = torch.Generator().manual_seed(seed)
        top, left, h, w = crop_box(img.shape[-2], img.shape[-1], self.scale, self.ratio, g)
        size = [self.image_size, self.image_size]
        img = TF.resized_crop(img, top, left, h, w, size, antialias=True)
        if self.hflip and float(torch.rand(1, generator=g)) < 0.5:
            img = img.flip(-1)
        return img

    def eval(self, img: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        img = TF.resize(img, [self.resize_size], antialias=True)
        return TF.center_crop(img, [self.image_size, self.image_size])


class EncodedImages(Dataset):
    """Map-style over one split's encoded images (a subclass says where their bytes are: `encoded`).
    Item (index, seed) -> (uint8 image, label), decoded and transformed here, in a worker process
    (seed None: the evaluation transform). With `gpu_decode`: -> (payload, seed, label, name), where the
    payload of a JPEG is its bytes as they are, for `decode_batch` on the GPU, and anything else
    (PNG, a JPEG with an EXIF rotation, which nvJPEG does not apply) is decoded here."""

    def __init__(self, augment: Augment, gray: bool, gpu_decode: bool = False):
        self.augment, self.gray, self.gpu_decode = augment, gray, gpu_decode

    def encoded(self, index: int) -> tuple[bytes, int, str]:
        """(the image's file bytes, its label, its name for messages)"""
        raise NotImplementedError

    def __getitem__(self, item: tuple[int, int | None]) -> tuple:
        index, seed = item
        data, label, name = self.encoded(index)
        if self.gpu_decode and plain_jpeg(data):
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), seed, label, name
        img = decode_bytes(data, self.gray, name)
        if self.gpu_decode:
            return img, seed, label, name
        return (self.augment.eval(img) if seed is None else self.augment.train(img, seed)), label


class FolderDataset(EncodedImages):
    """The files of one split folder, listed by `scan`."""

    def __init__(self, split_dir: Path, paths: np.ndarray, labels: np.ndarray, augment: Augment, gray: bool, **kw):
        super().__init__(augment, gray, **kw)
        self.split_dir, self.paths, self.labels = str(split_dir), paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def path(self, index: int) -> str:
        return os.path.join(self.split_dir, self.paths[index].decode())

    def encoded(self, index: int) -> tuple[bytes, int, str]:
        path = self.path(index)
        with open(path, "rb") as f:
            return f.read(), int(self.labels[index]), path


# -- data.gpu_decode: the workers read, the GPU decodes ------------------------------------------
def plain_jpeg(data: bytes) -> bool:
    """A JPEG that nvJPEG decodes as it should be shown: no EXIF orientation other than 1."""
    return data[:2] == b"\xff\xd8" and exif_orientation(data) == 1


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation tag (0x0112) of a JPEG, read from its APP1 segment; 1 (as stored) if none."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker, size = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xE1 and data[i + 4 : i + 10] == b"Exif\0\0":
            tiff = data[i + 10 : i + 2 + size]
            order: Literal["little", "big"] = "little" if tiff[:2] == b"II" else "big"
            ifd = int.from_bytes(tiff[4:8], order)
            for k in range(int.from_bytes(tiff[ifd : ifd + 2], order)):
                entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
                if int.from_bytes(entry[:2], order) == 0x0112:
                    return int.from_bytes(entry[8:10], order)
            return 1
        if marker in (0xDA, 0xD9):  # the image data starts: no EXIF before it
            return 1
        i += 2 + size
    return 1


def collate_encoded(items: list[tuple]) -> tuple[list[torch.Tensor], list[int | None], torch.Tensor, list[str]]:
    """A gpu_decode batch as the workers send it: (payloads, augmentation seeds, labels, names)."""
    payloads, seeds, labels, names = zip(*items, strict=True)
    return list(payloads), list(seeds), torch.tensor(labels, dtype=torch.long), list(names)


def decode_jpegs(jpegs: list[torch.Tensor], names: list[str], device: torch.device, gray: bool) -> list[torch.Tensor]:
    """The JPEGs decoded in one batched call; if that fails (a damaged file that still starts like a
    JPEG, a kind nvJPEG does not take), one at a time, each failure decoded on the CPU as the workers
    do (torchvision, then PIL) or named in decode_bytes' one-line error."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if gray else ImageReadMode.RGB
    try:
        return list(decode_jpeg(jpegs, mode=mode, device=device))
    except RuntimeError:
        out = []
        for jpeg, name in zip(jpegs, names, strict=True):
            try:
                out.append(decode_jpeg(jpeg, mode=mode, device=device))
            except RuntimeError:
                out.append(decode_bytes(jpeg.numpy().tobytes(), gray, name).to(device))
        return out


def decode_batch(
    payloads: list[torch.Tensor],
    seeds: list[int | None],
    device: torch.device,
    augment: Augment,
    gray: bool,
    names: list[str] | None = None,
) -> torch.Tensor:
    """uint8 (N, C, size, size) on `device`: the JPEGs decoded in one batched `decode_jpeg` call
    (nvJPEG on a CUDA device), then each image given data=folder's transform there (the crop and
    flip of its seed: the same boxes as the workers' path), the workers' decoded images alike."""
    names = names or [f"image {k} of the batch" for k in range(len(payloads))]
    jpegs = [(p, n) for p, n in zip(payloads, names, strict=True) if p.ndim == 1]
    decoded = iter(decode_jpegs([p for p, _ in jpegs], [n for _, n in jpegs], device, gray) if jpegs else [])
    images = [next(decoded) if p.ndim == 1 else p.to(device, non_blocking=True) for p in payloads]
    out = [
        augment.eval(img) if seed is None else augment.train(img, seed) for img, seed in zip(images, seeds, strict=True)
    ]
    return torch.stack(out)


# -- the order: seeded per pass, split over ranks, resumable --------------------------------------
def shuffled_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """One pass's order over n images: a permutation seeded by (seed, pass)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def rank_batches(order: np.ndarray, batch_size: int, drop_last: bool) -> list[np.ndarray]:
    """This rank's batches of one pass's `order`. Rank r takes every world-th image; each rank gets
    the same number of batches (DDP steps together), sized within one image of each other under DDP,
    so no image is repeated or left out (drop_last: the images past the last full batch of the
    smallest rank are left out)."""
    rank, size = world()
    n, mine = len(order), order[rank::size]
    if drop_last:
        count = (n // size) // batch_size
        return [mine[b * batch_size : (b + 1) * batch_size] for b in range(count)]
    count = math.ceil(math.ceil(n / size) / batch_size)
    if size == 1:
        return [mine[b * batch_size : (b + 1) * batch_size] for b in range(count)]
    return [b for b in np.array_split(mine, count) if len(b)]


class PassSampler:
    """The DataLoader's batch sampler for one pass: this rank's batches from `start` on, each a list
    of (image index, augmentation seed or None), made as the loader asks for them (nothing per image
    is held for the whole pass)."""

    def __init__(self, batches: list[np.ndarray], seed: int | None, epoch: int):
        self.batches, self.seed, self.epoch = batches, seed, epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for b in self.batches:
            if self.seed is None:
                yield [(int(i), None) for i in b]
            else:
                yield [(int(i), mixed_seed(self.seed, self.epoch, int(i))) for i in b]


class FolderBatches:
    """Lightning's loader for one split: a DataLoader over this pass's batches (decoding in
    `num_workers` processes), each batch moved to `device` and passed through `transform` (scaling,
    channels, normalisation). Stateful for training: `state_dict()` says which pass and how many
    batches of it were handed out; a loader loaded with it resumes that pass at the next batch."""

    def __init__(
        self,
        dataset: Any,  # FolderDataset or ShardDataset: (index, seed) -> (image, label)
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        loader_args: dict,
        device: torch.device | None,
        transform: Callable[[torch.Tensor], torch.Tensor],
        limit: int | None = None,
    ):
        self.dataset, self.batch_size, self.shuffle, self.seed, self.drop_last = (
            dataset,
            batch_size,
            shuffle,
            seed,
            drop_last,
        )
        self.loader_args, self.device, self.transform, self.limit = loader_args, device, transform, limit
        self.order: Callable[[int, int], np.ndarray] = partial(shuffled_order, self._images())  # (seed, pass)
        self.progress = EpochProgress()

    def _images(self) -> int:
        return len(self.dataset) if self.limit is None else min(self.limit, len(self.dataset))

    def batches(self, epoch: int) -> list[np.ndarray]:
        order = self.order(self.seed, epoch) if self.shuffle else np.arange(self._images())
        return rank_batches(order, self.batch_size, self.drop_last)

    def __len__(self) -> int:
        return len(self.batches(0))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, start = self.progress.begin(len(self))
        items = PassSampler(self.batches(epoch)[start:], self.seed if self.shuffle else None, epoch)
        if not len(items):
            return
        args = dict(self.loader_args)
        if args.get("num_workers", 0) == 0:
            args.pop("prefetch_factor", None)
            args.pop("persistent_workers", None)
        on_device = getattr(self.dataset, "gpu_decode", False)  # the workers send encoded JPEGs
        if on_device:  # decode_jpeg reads its input on the host: pinning every small byte tensor only costs
            args["pin_memory"] = False
        loader = DataLoader(
            self.dataset, batch_sampler=items, collate_fn=collate_encoded if on_device else None, **args
        )
        for b, batch in enumerate(loader, start=start + 1):
            self.progress.batches = b
            if on_device:
                payloads, seeds, y, names = batch
                device = self.device or torch.device("cpu")
                x = decode_batch(payloads, seeds, device, self.dataset.augment, self.dataset.gray, names)
                y = y.to(device, non_blocking=True)
            else:
                x, y = batch
                if self.device is not None:
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            yield self.transform(x), y

    def state_dict(self) -> dict:
        return self.progress.state(images=self._images(), world=world()[1], batch_size=self.batch_size)

    def load_state_dict(self, state: dict) -> None:
        self.progress.load(state, images=self._images(), world=world()[1], batch_size=self.batch_size)


def weights_transforms(arch: str | None, weights: str | None) -> dict:
    """crop, resize, mean, std of a torchvision model's weights (e.g. resnet152 + IMAGENET1K_V2:
    224, 232, ImageNet's statistics); {} when there are none."""
    if not arch or not weights:
        return {}
    try:
        from torchvision.models import get_model_weights

        t = get_model_weights(arch)[weights].transforms()
    except (KeyError, ValueError, AttributeError):
        return {}
    crop = t.crop_size[0] if isinstance(t.crop_size, list | tuple) else t.crop_size
    resize = t.resize_size[0] if isinstance(t.resize_size, list | tuple) else t.resize_size
    return {"image_size": int(crop), "resize_size": int(resize), "mean": list(t.mean), "std": list(t.std)}


class FolderDataModule(pl.LightningDataModule):
    """`data=folder`: root/train/<class>/*, root/val/<class>/*, optional root/test/<class>/*,
    streamed (see the module docstring). The class names are the train folder's subfolders."""

    name = "folder"
    labelled = True

    def __init__(
        self,
        *,
        root: str | None,
        image_size: int | None,
        resize_size: int | None,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        channels: int | None,
        arch: str | None,
        weights: str | None,
        batch_size: int,
        eval_batch_size: int | None,
        num_workers: int | None,
        prefetch_factor: int,
        pin_memory: bool,
        crop_scale: Sequence[float],
        crop_ratio: Sequence[float],
        hflip: bool,
        seed: int,
        drop_last: bool,
        cache_features: bool,
        val_size: int | float | None,
        gpu_decode: bool,
    ):
        super().__init__()  # val_size: unused, val/ is the validation split (a task may set it for other data)
        check_keys(root, batch_size, eval_batch_size, channels, num_workers, crop_scale, crop_ratio)
        preset = weights_transforms(arch, weights)  # what the model's weights were trained with
        image_size = image_size or preset.get("image_size", 224)
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"data.image_size must be a positive integer, got {image_size!r}")
        if mean is None and std is None and preset:
            mean, std = preset["mean"], preset["std"]
        if resize_size is None:  # the weights' ratio of resize to crop (232/224 for IMAGENET1K_V2), else 256/224
            ratio = preset["resize_size"] / preset["image_size"] if preset else 256 / 224
            resize_size = int(round(image_size * ratio))
        if not isinstance(resize_size, int) or resize_size < image_size:
            raise ValueError(f"data.resize_size must be an integer >= data.image_size={image_size}, got {resize_size}")
        self.root = Path(str(root)).expanduser()
        self.image_size, self.resize_size, self.channels = image_size, resize_size, channels or 3
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.seed, self.drop_last, self.cache, self.gpu_decode = seed, drop_last, cache_features, gpu_decode
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.loader_args = {
            "num_workers": self.num_workers,
            "prefetch_factor": prefetch_factor,
            "pin_memory": bool(pin_memory) and torch.cuda.is_available(),
            "persistent_workers": False,
        }
        self.augment = Augment(image_size, resize_size, crop_scale, crop_ratio, hflip)
        self.transform = BatchTransform(None, self.channels, mean, std)  # batched, on the device
        self.classes: tuple[str, ...] = ()
        self.datasets: dict[str, Any] = {}  # FolderDataset (data=shards: ShardDataset)
        self.features: dict = {}
        self._train: FolderBatches | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        check_gpu_decode(self.gpu_decode, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        self.classes, self.datasets = self.find_splits()
        if "test" not in self.datasets:
            log.warning("data.root=%s has no test split: the test pass and the analyses use val/", self.root)
            self.datasets["test"] = self.datasets["val"]
        log.info(
            "data=%s: %d classes, %s images streamed from %s (%d workers%s)",
            self.name,
            len(self.classes),
            "/".join(str(len(self.datasets[s])) for s in SPLITS),
            self.root,
            self.num_workers,
            ", JPEGs decoded on the GPU" if self.gpu_decode else "",
        )

    def find_splits(self) -> tuple[tuple[str, ...], dict[str, Any]]:
        """(class names, {split: dataset}) of data.root: train/ and val/ at least (data=shards: its chunks)."""
        if not (self.root / "train").is_dir() or not (self.root / "val").is_dir():
            raise FileNotFoundError(f"data.root={self.root} must hold train/<class>/ and val/<class>/ folders")
        classes = tuple(class_folders(self.root / "train"))
        if len(classes) < 2:
            raise ValueError(f"data.root={self.root}/train must hold one folder per class (at least 2)")
        datasets: dict[str, Any] = {}
        for split in SPLITS:
            if not (self.root / split).is_dir():
                continue
            paths, labels = scan(self.root / split, classes)
            if not len(paths):
                raise FileNotFoundError(f"data.root={self.root}/{split} holds no image files")
            datasets[split] = FolderDataset(
                self.root / split, paths, labels, self.augment, self.channels == 1, gpu_decode=self.gpu_decode
            )
        return classes, datasets

    def _compute_device(self) -> torch.device:
        return compute_device(self)

    def _batches(self, name: str, shuffle: bool, device: torch.device | None = None, limit: int | None = None):
        self.setup()
        if name in self.features and limit is None:  # data.cache_features=true, while fitting
            from .base import TensorBatches

            bs = self.batch_size if shuffle else self.eval_batch_size
            device = device or self._compute_device()
            return TensorBatches(self.features[name], bs, shuffle, self.drop_last and shuffle, self.seed, device)
        check_gpu_decode(self.gpu_decode, device or self._compute_device())
        return FolderBatches(
            self.datasets[name],
            self.batch_size if shuffle else self.eval_batch_size,
            shuffle,
            self.seed,
            self.drop_last and shuffle,
            self.loader_args,
            device or self._compute_device(),
            partial(self.transform, train=False),  # augmentation happened in the workers
            limit=limit,
        )

    def train_dataloader(self):
        if self._train is None:
            self._train = self._batches("train", shuffle=True)
        return self._train  # kept: each epoch draws a new order, and its state is the checkpoint's

    def val_dataloader(self):
        return self._batches("val", shuffle=False)

    def test_dataloader(self):
        return self._batches("test", shuffle=False)

    def predict_dataloader(self):
        return self.test_dataloader()

    # -- what analyses read (contracts.EvaluationData) --------------------------------------------
    def has_split(self, name: str) -> bool:
        self.setup()
        return name in self.datasets and len(self.datasets[name]) > 0

    def eval_batches(self, name: str, device: torch.device, max_images: int | None = None):
        """(model-ready images, labels) on `device`, in order, unaugmented; only the first
        `max_images` files are decoded. Under DDP, this rank's share."""
        yield from self._batches(name, shuffle=False, device=torch.device(device), limit=max_images)

    # -- contracts.CachesFeatures: a streamed folder keeps no features unless asked ----------------
    def cache_features(
        self, fn, splits: Sequence[str] = ("train", "val"), max_images: Mapping[str, int | None] | None = None
    ) -> bool:
        """data.cache_features=false (the default): nothing is cached, the backbone sees the augmented
        images every epoch (memory stays bounded). True: features of `splits` are computed once,
        unaugmented, and held in memory (N x D floats), as the in-memory data sets do. `max_images`:
        at most this many of a split's first images (a run limited to a few batches)."""
        if not self.cache:
            return False
        from .base import FeatureSplit

        for name in splits:
            batches = self.eval_batches(name, self._compute_device(), (max_images or {}).get(name))
            z, y = zip(*((fn(x), labels) for x, labels in batches), strict=True)
            self.features[name] = FeatureSplit(torch.cat(z), torch.cat(y))
        self._train = None
        return True

    def clear_feature_cache(self) -> None:
        self.features.clear()
        self._train = None


def check_keys(root, batch_size, eval_batch_size, channels, num_workers, crop_scale, crop_ratio) -> None:
    """data=folder's keys, each mistake one line naming its key."""
    if not root:
        raise FileNotFoundError("data=folder needs data.root=DIR holding train/<class>/ and val/<class>/")
    for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"data.{key} must be a positive integer, got {value!r}")
    if channels not in (None, 1, 3):
        raise ValueError(f"data.channels must be 1, 3 or null, got {channels!r}")
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
        raise ValueError(f"data.num_workers must be an integer >= 0 or null, got {num_workers!r}")
    if not (len(crop_scale) == 2 and 0 < crop_scale[0] <= crop_scale[1] <= 1):
        raise ValueError(f"data.crop_scale must be [low, high] with 0 < low <= high <= 1, got {list(crop_scale)}")
    if not (len(crop_ratio) == 2 and 0 < crop_ratio[0] <= crop_ratio[1]):
        raise ValueError(f"data.crop_ratio must be [low, high] with 0 < low <= high, got {list(crop_ratio)}")


def check_gpu_decode(gpu_decode: bool, device: torch.device) -> None:
    """data.gpu_decode=true decodes on a CUDA device: anywhere else, one line naming the key."""
    if gpu_decode and device.type != "cuda":
        raise ValueError(
            f"data.gpu_decode=true decodes JPEGs on a CUDA GPU (nvJPEG) and this run's device is {device.type}: "
            "set data.gpu_decode=false to decode in the CPU worker processes"
        )


def default_workers() -> int:
    """Decoding processes per rank: the cores this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))
