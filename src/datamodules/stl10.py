"""STL-10 (Coates et al. 2011): 5,000 labelled train + 8,000 test colour 96x96 images, 10 classes."""

from __future__ import annotations

import torch
import torchvision

from .base import InMemoryDataModule, Split
from .readers import torchvision_reader


class STL10DataModule(InMemoryDataModule):
    name = "stl10"
    classes = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
    shape = (3, 96, 96)

    def __init__(self, *args, verify_checksums: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.verify_checksums = verify_checksums

    def load(self, train: bool) -> Split:
        reader = torchvision_reader(torchvision.datasets.STL10, self.verify_checksums)
        try:
            ds = reader(self.root, split="train" if train else "test", download=self.download)
        except Exception as e:  # noqa: BLE001
            raise FileNotFoundError(
                f"STL-10 could not be read from {self.root}/stl10_binary ({type(e).__name__}: {e}). "
                f"Set data.root=DIR holding stl10_binary, allow data.download=true, or use data.synthetic=true"
            ) from e
        labels = torch.from_numpy(ds.labels.astype("int64"))
        return Split(torch.from_numpy(ds.data).contiguous(), labels)
