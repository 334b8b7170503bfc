"""The user's own image files, unlabelled: the per-image PIL path.

Each file is decoded once with PIL, turned into 8-bit RGB whatever it was (grey, palette, RGBA
over white, CMYK, 16-bit, EXIF-rotated), resized to `image_size` the way transformers'
ViTImageProcessor does it (bilinear, to a square), and kept as one uint8 tensor. A file that
cannot be read (not an image, truncated, missing) is skipped with a warning naming it; no
readable file at all is an error before the run starts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .base import UNLABELLED, InMemoryDataModule, Split

log = logging.getLogger(__name__)


def to_rgb(img):
    """A PIL image of any mode -> 8-bit RGB. 16-bit and float images are scaled, not clipped;
    transparency is composited over white."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            top = 65535.0
        elif img.mode == "F" and arr.max() <= 1.0:
            top = 1.0
        else:
            top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img.convert("RGB")


def read_image(path: Path, image_size: int) -> np.ndarray:
    """(3, image_size, image_size) uint8. Raises OSError/ValueError for what is not an image."""
    from PIL import Image, ImageOps

    with Image.open(path) as opened:
        opened.load()  # decodes now: a truncated file fails here, not later
        img = ImageOps.exif_transpose(opened)
        rgb = to_rgb(img).resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()


def list_files(paths: Sequence[str] | None, root: str | None) -> list[Path]:
    files = [Path(p).expanduser() for p in (paths or [])]
    if root:
        base = Path(root).expanduser()
        if not base.is_dir():
            raise FileNotFoundError(f"data.root={root} is not a directory")
        files += sorted(
            p
            for p in base.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
        )
    return files


def folder_classes(root: str) -> list[str]:
    """The class names of a folder of class folders (root/<class>/...): its visible subfolders, sorted."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"data.root={root} is not a directory")
    names = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2:
        raise ValueError(
            f"data.class_folders=true needs data.root={root} to hold one folder per class (at least 2), "
            f"found {len(names)}"
        )
    return names


class ImagesDataModule(InMemoryDataModule):
    """The user's image files. Unlabelled (labels -1) in a test split only: `data.paths=[a.jpg,b.png]`
    and/or `data.root=DIR` (every file below it). With `class_folders=true`, `data.root` holds one
    folder per class (root/<class>/*.jpg): the images are labelled by their folder, the folder
    names are the classes, and a seeded split gives train, val and test (`test_size`, `val_size`,
    fractions or counts). `names` holds each image's file name, `skipped` the files that could not
    be read and why."""

    name = "images"

    def __init__(
        self,
        *,
        paths: Sequence[str] | None,
        root: str | None,
        image_size: int,
        eval_batch_size: int,
        synthetic: bool,
        synthetic_size: int,
        on_device: bool,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        class_folders: bool,
        batch_size: int,
        val_size: int | float,
        test_size: int | float,
        split_seed: int,
        hflip: bool,
        channels: int | None,
    ):
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"data.image_size must be a positive integer, got {image_size!r}")
        if class_folders and not root and not synthetic:
            raise FileNotFoundError("data.class_folders=true needs data.root=DIR holding one folder per class")
        if class_folders and paths:
            raise ValueError(
                "data.class_folders=true labels the files below data.root by folder: leave data.paths empty"
            )
        for key, value in (("val_size", val_size), ("test_size", test_size)):
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"data.{key} must be a count or a fraction >= 0, got {value!r}")
        super().__init__(
            root=root or "",
            download=False,
            synthetic=synthetic,
            synthetic_size=synthetic_size,
            val_size=val_size if class_folders else 0,
            split_seed=split_seed,
            batch_size=batch_size if class_folders else eval_batch_size,
            eval_batch_size=eval_batch_size,
            on_device=on_device,
            mean=mean,
            std=std,
            hflip=hflip,
            channels=channels,
            image_size=None,  # read at `image_size` already: no resize on the device
            crop_padding=0,
            drop_last=False,
        )
        self.paths, self.shape = list(paths or []), (3, image_size, image_size)
        self.class_folders, self.test_size = class_folders, test_size
        self.labelled = class_folders
        self.classes = tuple(folder_classes(root) if root and class_folders and not synthetic else ())
        if class_folders and synthetic:
            self.classes = ("class_a", "class_b")
        self.names: list[str] = []
        self.skipped: list[tuple[str, str]] = []

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.class_folders:
            self._setup_class_folders()
            return
        if self.synthetic:
            split = self.synthetic_split(self.synthetic_size, seed=self.split_seed)  # no classes: unlabelled
            self.names = [f"synthetic_{i}" for i in range(len(split))]
        else:
            if not self.paths and not self.root:
                raise FileNotFoundError("data=images needs data.paths=[a.jpg,b.png] or data.root=DIR")
            arrays = self._read(list_files(self.paths, self.root))
            if not arrays:
                raise FileNotFoundError(
                    f"no readable image in data.paths={self.paths} / "
                    f"data.root={self.root or None} ({len(self.skipped)} files skipped)"
                )
            split = Split(torch.from_numpy(np.stack(arrays)), torch.full((len(arrays),), UNLABELLED, dtype=torch.long))
        self.splits = {"test": split}

    def _read(self, files: list[Path]) -> list[np.ndarray]:
        """The readable files as (3, side, side) uint8 arrays; names and skipped files noted."""
        arrays = []
        for path in files:
            try:
                arrays.append(read_image(path, self.shape[1]))
                self.names.append(path.name)
            except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for bad files
                reason = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'unreadable'}"
                self.skipped.append((str(path), reason))
                log.warning("skipped %s (%s)", path, reason)
        return arrays

    def _setup_class_folders(self) -> None:
        """root/<class>/** labelled by folder, split (seeded) into train, val and test."""
        if self.synthetic:
            split = self.synthetic_split(self.synthetic_size, seed=self.split_seed)
            self.names = [f"synthetic_{i}" for i in range(len(split))]
        else:
            images, labels = [], []
            for label, name in enumerate(self.classes):
                arrays = self._read(list_files(None, str(Path(self.root).expanduser() / name)))
                images += arrays
                labels += [label] * len(arrays)
            if not images:
                raise FileNotFoundError(f"no readable image in the class folders of data.root={self.root}")
            split = Split(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long))
        n = len(split)
        sizes = [
            int(round(s * n)) if isinstance(s, float) and s < 1 else int(s) for s in (self.test_size, self.val_size)
        ]
        if sizes[0] < 1 or sum(sizes) >= n:
            raise ValueError(
                f"data.test_size={self.test_size} and data.val_size={self.val_size} leave no test or no training "
                f"images out of {n}"
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        test, val, train = order[: sizes[0]], order[sizes[0] : sum(sizes)], order[sum(sizes) :]
        self.names = [self.names[i] for i in test.tolist()] if self.names else []  # the test split's, in its order
        self.splits = {"train": split.subset(train), "val": split.subset(val), "test": split.subset(test)}

    def train_dataloader(self):
        if self.class_folders:
            return super().train_dataloader()
        raise RuntimeError("data=images has no training split without data.class_folders=true")
