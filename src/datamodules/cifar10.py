"""CIFAR-10 (Krizhevsky 2009): 50,000 + 10,000 colour 32x32 images of 10 classes."""

from __future__ import annotations

import torch
import torchvision

from .base import Split
from .readers import TorchvisionDataModule


class CIFAR10DataModule(TorchvisionDataModule):
    name = "cifar10"
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    shape = (3, 32, 32)
    dataset, folder, title = torchvision.datasets.CIFAR10, "cifar-10-batches-py", "CIFAR-10"

    def load(self, train: bool) -> Split:
        ds = self.read(train=train)
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> NCHW
        return Split(images, torch.as_tensor(ds.targets))
