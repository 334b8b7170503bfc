"""In-memory data modules: each split is one uint8 tensor, batches are transformed on the device.

The notebooks decoded, resized and normalised every image with PIL in DataLoader workers (~2,600
img/s with 8 workers on the steering H200). The data sets here are small enough to live in memory
as uint8 (CIFAR-10 is 180 MB), so a batch is one index into a tensor and every per-image transform
runs batched on the device the model uses (see `BatchTransform`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

UNLABELLED = -1  # the label of an image without one (a user's own files)


@dataclass
class Split:
    """One split of an image data set: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    kind = "images"  # what the rows are, for messages

    def __post_init__(self) -> None:
        self.check_rows(self.images)
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels {tuple(self.labels.shape)} do not match {self.images.shape[0]} {self.kind}")
        self.labels = self.labels.long()

    @staticmethod
    def check_rows(images: torch.Tensor) -> None:
        if not (images.dtype == torch.uint8 and images.ndim == 4):
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor) -> Split:
        return type(self)(self.images[index], self.labels[index])

    def to(self, device: torch.device | str) -> Split:
        return type(self)(self.images.to(device), self.labels.to(device))


@dataclass
class FeatureSplit(Split):
    """A split whose images were replaced by features computed once, float (N, D): what a frozen
    backbone made of them (see `InMemoryDataModule.cache_features`). Batches need no transform."""

    kind = "features"

    @staticmethod
    def check_rows(images: torch.Tensor) -> None:
        if not (images.is_floating_point() and images.ndim == 2):
            raise ValueError(f"features must be float (N, D), got {images.dtype} {tuple(images.shape)}")


class TensorBatches:
    """Iterates (images, labels) batches out of a `Split` by index, one gather per batch, each
    moved to `device` and passed through `transform` (the data module's on-device transforms).

    Under DDP each rank takes every world_size-th image of the same (seeded, per-epoch) order,
    padded by wrapping around so every rank gets as many: what a DistributedSampler does for a
    DataLoader.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        seed: int = 0,
        device: torch.device | None = None,
        transform: Callable[..., torch.Tensor] | None = None,
        augment_seed: int | None = None,
    ):
        self.split, self.batch_size, self.shuffle, self.drop_last, self.seed = (
            split,
            batch_size,
            shuffle,
            drop_last,
            seed,
        )
        self.device, self.transform = device, transform  # each batch: moved to `device`, then transformed
        self.progress = EpochProgress()  # which pass and how far into it: the loader's checkpointed state
        self.augmentation = AugmentationRNG(augment_seed)  # the random draws of `transform`, its seed checkpointed too

    @staticmethod
    def _world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _per_rank(self) -> int:
        return math.ceil(len(self.split) / self._world()[1])

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.split)
        device = self.split.images.device
        epoch, start = self.progress.begin(len(self))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=g).to(device)
        else:
            order = torch.arange(n, device=device)
        rank, world = self._world()
        if world > 1:
            total = self._per_rank() * world
            order = order.repeat(math.ceil(total / n))[:total][rank::world]
        for b in range(start, len(self)):
            self.progress.batches = b + 1
            index = order[b * self.batch_size : (b + 1) * self.batch_size]
            x, y = self.split.images[index], self.split.labels[index]
            if self.device is not None:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.transform is not None:
                generator = self.augmentation.for_batch(x.device, epoch, b, rank)
                x = self.transform(x) if generator is None else self.transform(x, generator=generator)
            yield x, y

    # -- mid-epoch resume: Lightning checkpoints a training loader that has these two (its fit loop
    # keeps the state under "combined_loader" and hands it back before the resumed epoch's iter())
    def state_dict(self) -> dict:
        state = self.progress.state(images=len(self.split), world=self._world()[1], batch_size=self.batch_size)
        return {**state, **self.augmentation.state()}

    def load_state_dict(self, state: dict) -> None:
        self.progress.load(state, images=len(self.split), world=self._world()[1], batch_size=self.batch_size)
        self.augmentation.load(state)


def mixed_seed(seed: int, epoch: int, index: int) -> int:
    """One seed out of three numbers (splitmix64 of them): an image's augmentation in one pass
    (data=folder), a rank's augmentation generator in one pass (in memory). The same on any worker,
    rank or attempt, and cheap enough to draw for every image as its batch is handed out."""
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) >> 2


class AugmentationRNG:
    """What an in-memory training loader's on-device augmentation (flips, crops) draws from: one
    generator on the batches' device, seeded for each batch by (seed, rank, pass, batch), `seed` the
    run's (torch's initial seed once `seed=` has seeded it). The seed is part of the loader's
    checkpointed state beside the pass and the batch, so a pass resumed mid-way draws, on every
    rank, what the uninterrupted pass would have drawn for its remaining batches. (A generator's
    running state would not do: Lightning's checkpoint holds rank 0's loader state only, which other
    ranks could not continue from.) `seed` None: the transform draws nothing (evaluation, features)."""

    def __init__(self, seed: int | None):
        self.seed = seed
        self.generator: torch.Generator | None = None

    def for_batch(self, device: torch.device, epoch: int, batch: int, rank: int) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self.generator is None or self.generator.device.type != device.type:
            self.generator = torch.Generator(device=device)
        return self.generator.manual_seed(mixed_seed(mixed_seed(self.seed, rank, 0), epoch, batch))

    def state(self) -> dict:
        return {} if self.seed is None else {"augmentation_seed": self.seed}

    def load(self, state: dict) -> None:
        if self.seed is not None and "augmentation_seed" in state:
            self.seed = int(state["augmentation_seed"])  # the interrupted run's stream, whatever seeded this process


class EpochProgress:
    """Where a training loader is in its passes over the data: the pass (its seeded order) and the
    batches of it already handed out. A loader resumed from `state()` continues that pass with the
    batches it had not yet given, in the same order, then goes on to the next pass.

    Lightning does not prefetch from a loader with a length, so every batch handed out when a
    checkpoint is written has been trained on (the step ends before a kill's checkpoint).
    """

    def __init__(self) -> None:
        self.epoch, self.batches, self.started = 0, 0, False
        self._resume: tuple[int, int] | None = None

    def begin(self, length: int) -> tuple[int, int]:
        """A new iteration: (pass, first batch). A resumed pass that had ended moves to the next."""
        if self._resume is not None:
            epoch, start = self._resume
            self._resume = None
            if start >= length:
                epoch, start = epoch + 1, 0
        elif self.started:
            epoch, start = self.epoch + 1, 0
        else:
            epoch, start = self.epoch, 0
        self.epoch, self.batches, self.started = epoch, start, True
        return epoch, start

    def state(self, **shape: int) -> dict:
        return {"epoch": self.epoch, "batches": self.batches, "started": self.started, **shape}

    def load(self, state: dict, **shape: int) -> None:
        saved = {k: state.get(k) for k in shape}
        if saved != shape:  # another data set, batch size or number of ranks: batch counts mean other samples
            log.warning(
                "the checkpoint's data loader state is of %s, this run has %s: the interrupted epoch starts again",
                saved,
                shape,
            )
            self.epoch, self.started, self._resume = int(state.get("epoch", 0)), True, (int(state.get("epoch", 0)), 0)
            return
        self.epoch, self.batches, self.started = int(state["epoch"]), int(state["batches"]), bool(state["started"])
        self._resume = (self.epoch, self.batches) if self.started else None


class BatchTransform(nn.Module):
    """uint8 (N, C, H, W) -> float batch: [0, 1], channel repeat, resize, augmentation, normalise.

    Runs on whatever device the batch is on. Augmentation (random crop with padding, horizontal
    flip) applies only when `train=True`.
    """

    mean: torch.Tensor | None  # (1, C, 1, 1) buffers, or None: no normalisation
    std: torch.Tensor | None

    def __init__(
        self,
        image_size: int | None = None,
        channels: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        hflip: bool = False,
        crop_padding: int = 0,
    ):
        super().__init__()
        self.image_size, self.channels, self.hflip, self.crop_padding = image_size, channels, hflip, crop_padding
        if (mean is None) != (std is None):
            raise ValueError("data.mean and data.std must be set together")
        self.register_buffer(
            "mean", None if mean is None else torch.tensor(list(mean)).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", None if std is None else torch.tensor(list(std)).view(1, -1, 1, 1), persistent=False
        )

    def forward(
        self, images: torch.Tensor, train: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """`generator`: what the augmentation draws from (None: torch's global generator)."""
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if self.channels is not None and x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise ValueError(f"cannot turn {x.shape[1]} channels into data.channels={self.channels}")
            x = x.expand(-1, self.channels, -1, -1)
        if train and self.crop_padding > 0:
            x = random_crop(x, self.crop_padding, generator)
        if train and self.hflip:
            flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True, align_corners=False
            )
        if self.mean is not None and self.std is not None:
            x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x.contiguous()


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop of the original size out of a zero-padded batch (CIFAR-style)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    rows = (
        (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(-1, x.shape[1], -1, w + 2 * padding)
    )
    cropped = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(-1, x.shape[1], h, -1)
    return cropped.gather(3, cols)


def compute_device(datamodule: pl.LightningDataModule) -> torch.device:
    """Where a data module's batches are transformed and consumed: the model's device once a
    trainer runs, else the CPU."""
    trainer = getattr(datamodule, "trainer", None)
    if trainer is not None and trainer.lightning_module is not None:
        return trainer.strategy.root_device
    return torch.device("cpu")


class InMemoryDataModule(pl.LightningDataModule):
    """Base for image classification data sets that fit in memory.

    Subclasses set `name`, `classes`, `shape` (C, H, W) and implement `load(train: bool) -> Split`
    (reading the real files, raising FileNotFoundError/RuntimeError with a message that names
    `data.root`). The base does the rest: synthetic data, the seeded validation split, batching
    and the on-device transforms.
    """

    name: str = "dataset"
    classes: tuple[str, ...] = ()
    shape: tuple[int, int, int] = (1, 28, 28)

    def __init__(
        self,
        *,
        root: str,
        download: bool,
        synthetic: bool,
        synthetic_size: int,
        val_size: int | float,
        split_seed: int,
        batch_size: int,
        eval_batch_size: int | None,
        image_size: int | None,
        channels: int | None,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        hflip: bool,
        crop_padding: int,
        on_device: bool,
        drop_last: bool,
    ):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"data.batch_size must be a positive integer, got {batch_size!r}")
        if eval_batch_size is not None and (not isinstance(eval_batch_size, int) or eval_batch_size < 1):
            raise ValueError(f"data.eval_batch_size must be a positive integer or null, got {eval_batch_size!r}")
        if synthetic and (not isinstance(synthetic_size, int) or synthetic_size < 2):
            raise ValueError(f"data.synthetic_size must be an integer >= 2, got {synthetic_size!r}")
        for key, value in (("image_size", image_size), ("channels", channels)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"data.{key} must be a positive integer or null, got {value!r}")
        if isinstance(val_size, bool) or not isinstance(val_size, (int, float)) or val_size < 0:
            raise ValueError(f"data.val_size must be an image count or a fraction below 1, got {val_size!r}")
        if isinstance(val_size, float) and val_size >= 1:
            raise ValueError(
                f"data.val_size={val_size}: a fraction must be below 1 (an image count is an integer, e.g. 5000)"
            )
        self.root, self.download, self.synthetic, self.synthetic_size = str(root), download, synthetic, synthetic_size
        self.val_size, self.split_seed = val_size, split_seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.on_device, self.drop_last = on_device, drop_last
        self.transform = BatchTransform(image_size, channels, mean, std, hflip, crop_padding)
        self.splits: dict[str, Split] = {}
        self.features: dict[str, FeatureSplit] = {}  # per split, once FeatureCache asked for them
        self._loaders: dict[str, TensorBatches] = {}

    # -- what a subclass provides ------------------------------------------------------------
    def load(self, train: bool) -> Split:
        raise NotImplementedError

    # -- data ----------------------------------------------------------------------------------
    @property
    def output_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the batches the model receives, after the on-device transforms."""
        t = self.transform
        return (t.channels or self.shape[0], t.image_size or self.shape[1], t.image_size or self.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def synthetic_split(self, n: int, seed: int) -> Split:
        """Random images of the real shape and dtype, labels cycling over every class (-1, no
        label, for a data set without classes)."""
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (n, *self.shape), generator=g, dtype=torch.uint8)
        if not self.num_classes:
            return Split(images, torch.full((n,), UNLABELLED, dtype=torch.long))
        labels = torch.arange(n) % self.num_classes
        return Split(images, labels[torch.randperm(n, generator=g)])

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return  # loaded once, whatever stage asks first
        if self.synthetic:
            train = self.synthetic_split(self.synthetic_size, seed=self.split_seed)
            test = self.synthetic_split(self.synthetic_size, seed=self.split_seed + 1)
            val_size: int | float = max(
                1, round(self.synthetic_size * 0.2)
            )  # synthetic: a fifth, whatever val_size says
        else:
            train, test = self.load(train=True), self.load(train=False)
            val_size = self.val_size
        n_val = int(round(val_size * len(train))) if isinstance(val_size, float) and val_size < 1 else int(val_size)
        if n_val >= len(train):
            raise ValueError(f"data.val_size={self.val_size} leaves no training images out of {len(train)}")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed))
        self.splits = {"train": train.subset(order[n_val:]), "val": train.subset(order[:n_val]), "test": test}

    def split(self, name: str) -> Split:
        self.setup()
        return self.splits[name]

    def _compute_device(self) -> torch.device:
        return compute_device(self)

    def _batches(self, name: str, shuffle: bool, device: torch.device | None = None) -> TensorBatches:
        device = device or self._compute_device()
        split: Split
        if name in self.features:
            split, transform = self.features[name], None  # features: nothing to transform
        else:
            split = self.split(name)
            home = device if self.on_device else torch.device("cpu")
            if split.images.device != home:
                split = self.splits[name] = split.to(home)  # moved once, kept there
            transform = partial(self.transform, train=shuffle)  # the training order is augmented
        bs = self.batch_size if name == "train" else self.eval_batch_size
        return TensorBatches(
            split,
            bs,
            shuffle,
            drop_last=self.drop_last and shuffle,
            seed=self.split_seed,
            device=device,
            transform=transform,
            augment_seed=torch.initial_seed() if shuffle and transform is not None else None,  # the run's seed
        )

    @torch.no_grad()
    def cache_features(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        splits: Sequence[str] = ("train", "val"),
        max_images: Mapping[str, int | None] | None = None,
    ) -> None:
        """Replace each split's images by fn(transformed eval batch), computed once, batched, on
        the model's device; batches of those splits then carry features (N, D). No augmentation.
        `max_images`: at most this many of a split's first images (a run limited to a few batches).
        Called by experiments.feature_cache.FeatureCache (contracts.CachesFeatures)."""
        for name in splits:
            limit = (max_images or {}).get(name)
            batches = self.eval_batches(name, self._compute_device(), limit)
            z, y = zip(*((fn(x), labels) for x, labels in batches), strict=True)
            self.features[name] = FeatureSplit(torch.cat(z), torch.cat(y))
        self._loaders.clear()

    def clear_feature_cache(self) -> None:
        self.features.clear()
        self._loaders.clear()

    # -- what analyses read after the test pass (contracts.EvaluationData) --------------------
    def has_split(self, name: str) -> bool:
        self.setup()
        return name in self.splits and len(self.splits[name]) > 0

    def eval_batches(self, name: str, device: torch.device, max_images: int | None = None):
        """(transformed images, labels) on `device`, in order, unaugmented, from the start of a
        split; at most `max_images` of them."""
        seen = 0
        for x, y in self._batches(name, shuffle=False, device=torch.device(device)):
            if max_images is not None and seen >= max_images:
                return
            if max_images is not None:
                x, y = x[: max_images - seen], y[: max_images - seen]
            seen += len(y)
            yield x, y

    # -- Lightning's loaders: batches arrive transformed, on the model's device ---------------
    def train_dataloader(self):
        if "train" not in self._loaders:
            self._loaders["train"] = self._batches("train", shuffle=True)
        return self._loaders["train"]  # kept, so each epoch draws a new order

    def val_dataloader(self):
        return self._batches("val", shuffle=False)

    def test_dataloader(self):
        return self._batches("test", shuffle=False)
