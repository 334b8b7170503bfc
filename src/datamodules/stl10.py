"""STL-10 (Coates et al. 2011): 5,000 labelled train + 8,000 test colour 96x96 images, 10 classes."""

from __future__ import annotations

import torch
import torchvision

from .base import Split
from .readers import TorchvisionDataModule


class STL10DataModule(TorchvisionDataModule):
    name = "stl10"
    classes = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
    shape = (3, 96, 96)
    dataset, folder, title = torchvision.datasets.STL10, "stl10_binary", "STL-10"

    def load(self, train: bool) -> Split:
        ds = self.read(split="train" if train else "test")
        labels = torch.from_numpy(ds.labels.astype("int64"))
        return Split(torch.from_numpy(ds.data).contiguous(), labels)
