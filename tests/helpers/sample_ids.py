"""What a run trains on, image by image: a data set whose every training image is its own class
(the label is the image's id), and a callback that writes each training batch's labels down."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from datamodules.base import InMemoryDataModule, Split


def shared_keys() -> dict:
    """The keys conf/data_in_memory.yaml gives every in-memory data set, for one built by hand (its
    `root` aside: these images are made, not read)."""
    from omegaconf import OmegaConf

    import experiments

    node = OmegaConf.load(Path(experiments.config_dir()) / "data_in_memory.yaml")
    node.root = ""
    return OmegaConf.to_container(node)  # type: ignore[return-value]


class NumberedImages(InMemoryDataModule):
    """In memory: `images` random images, image k labelled k (its own class), for train and test."""

    name = "numbered"
    shape = (3, 8, 8)

    def __init__(self, images: int = 24, fallback_roots=None, **kwargs):
        self.classes = tuple(f"image_{k}" for k in range(images))
        super().__init__(**{**shared_keys(), **kwargs})  # a run gives every key; a test its own few

    def load(self, train: bool) -> Split:
        n = len(self.classes)
        g = torch.Generator().manual_seed(0 if train else 1)
        return Split(torch.randint(0, 256, (n, *self.shape), generator=g, dtype=torch.uint8), torch.arange(n))


def numbered_folder(root: Path, images: int = 24, val: int = 4) -> Path:
    """A data=folder tree whose train/ holds one PNG per class (the label is the image's id), and
    a val/ and test/ of `val` of those classes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("val", val), ("test", val)):
        for k in range(count):
            folder = root / split / f"image_{k:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            size = (12 + k % 5, 10 + k % 3)  # sizes differ: the crops make them one
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    return root


class RecordLabels(Callback):
    """Appends {"epoch", "step", "labels", "pixels"} of every training batch, as it starts, to `path` (JSON
    lines; rank r > 0 of a DDP run to `path`.rank<r>)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        line = {"epoch": trainer.current_epoch, "step": trainer.global_step, "labels": batch[1].tolist()}
        line["pixels"] = pixels(batch[0])
        path = self.path if trainer.global_rank == 0 else f"{self.path}.rank{trainer.global_rank}"
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")


def pixels(images: torch.Tensor) -> str:
    """A fingerprint of a batch's model-ready images, augmentation included: equal only if every value is."""
    import hashlib

    return hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def recorded(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
