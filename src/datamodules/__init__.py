"""LightningDataModules. Each small data set lives in memory as uint8 and is transformed per batch
on the device (see base.py); a folder of images too big for memory, or shards converted from one,
streams (folder.py, shards.py)."""

from .base import BatchTransform, FeatureSplit, InMemoryDataModule, Split, TensorBatches
from .cifar10 import CIFAR10DataModule
from .fashion_mnist import FashionMNISTDataModule
from .folder import FolderDataModule
from .images import ImagesDataModule
from .stl10 import STL10DataModule

__all__ = [
    "BatchTransform",
    "InMemoryDataModule",
    "FeatureSplit",
    "Split",
    "TensorBatches",
    "CIFAR10DataModule",
    "FashionMNISTDataModule",
    "FolderDataModule",
    "ImagesDataModule",
    "STL10DataModule",
]
