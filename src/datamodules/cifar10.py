"""CIFAR-10 (Krizhevsky 2009): 50,000 + 10,000 colour 32x32 images of 10 classes."""

from __future__ import annotations

import torch
import torchvision

from .base import InMemoryDataModule, Split
from .readers import torchvision_reader


class CIFAR10DataModule(InMemoryDataModule):
    name = "cifar10"
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    shape = (3, 32, 32)

    def __init__(self, *args, verify_checksums: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.verify_checksums = verify_checksums

    def load(self, train: bool) -> Split:
        reader = torchvision_reader(torchvision.datasets.CIFAR10, self.verify_checksums)
        try:
            ds = reader(self.root, train=train, download=self.download)
        except Exception as e:  # noqa: BLE001
            raise FileNotFoundError(
                f"CIFAR-10 could not be read from {self.root}/cifar-10-batches-py ({type(e).__name__}: {e}). "
                f"Set data.root=DIR holding cifar-10-batches-py, allow data.download=true, or use data.synthetic=true"
            ) from e
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> NCHW
        return Split(images, torch.as_tensor(ds.targets))
