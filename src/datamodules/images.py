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

    with Image.open(path) as img:
        img.load()  # decodes now: a truncated file fails here, not later
        img = ImageOps.exif_transpose(img)
        rgb = to_rgb(img).resize((image_size, image_size), Image.BILINEAR)
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


class ImagesDataModule(InMemoryDataModule):
    """Unlabelled images (labels -1) in a test split only: `data.paths=[a.jpg,b.png]` and/or
    `data.root=DIR` (every file below it). `names` holds each image's file name, `skipped` the
    files that could not be read and why."""

    name = "images"
    labelled = False

    def __init__(
        self,
        paths: Sequence[str] | None = None,
        root: str | None = None,
        image_size: int = 224,
        eval_batch_size: int = 32,
        synthetic: bool = False,
        synthetic_size: int = 16,
        on_device: bool = True,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"data.image_size must be a positive integer, got {image_size!r}")
        super().__init__(
            root=root or "",
            download=False,
            synthetic=synthetic,
            synthetic_size=synthetic_size,
            val_size=0,
            batch_size=eval_batch_size,
            eval_batch_size=eval_batch_size,
            on_device=on_device,
            mean=mean,
            std=std,
        )
        self.paths, self.shape = list(paths or []), (3, image_size, image_size)
        self.names: list[str] = []
        self.skipped: list[tuple[str, str]] = []

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.synthetic:
            split = self.synthetic_split(self.synthetic_size, seed=self.split_seed)  # no classes: unlabelled
            self.names = [f"synthetic_{i}" for i in range(len(split))]
        else:
            if not self.paths and not self.root:
                raise FileNotFoundError("data=images needs data.paths=[a.jpg,b.png] or data.root=DIR")
            arrays = []
            for path in list_files(self.paths, self.root):
                try:
                    arrays.append(read_image(path, self.shape[1]))
                    self.names.append(path.name)
                except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three for bad files
                    reason = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'unreadable'}"
                    self.skipped.append((str(path), reason))
                    log.warning("skipped %s (%s)", path, reason)
            if not arrays:
                raise FileNotFoundError(
                    f"no readable image in data.paths={self.paths} / "
                    f"data.root={self.root or None} ({len(self.skipped)} files skipped)"
                )
            split = Split(torch.from_numpy(np.stack(arrays)), torch.full((len(arrays),), UNLABELLED, dtype=torch.long))
        self.splits = {"test": split}

    def train_dataloader(self):
        raise RuntimeError("data=images has no training split: the vit task only evaluates")
