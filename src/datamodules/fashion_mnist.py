"""FashionMNIST (Xiao et al. 2017): 60,000 + 10,000 grey 28x28 images of 10 clothing classes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torchvision

from .base import InMemoryDataModule, Split
from .readers import read_idx

log = logging.getLogger(__name__)

_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class FashionMNISTDataModule(InMemoryDataModule):
    name = "fashion_mnist"
    classes = torchvision.datasets.FashionMNIST.classes
    shape = (1, 28, 28)

    def __init__(self, *args, fallback_roots: Sequence[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fallback_roots = [str(r) for r in fallback_roots]

    def _flat_dir(self) -> Path | None:
        """A folder holding the four idx files directly (plain or .gz), like Debian's package."""
        for folder in [self.root, *self.fallback_roots]:
            if all(
                any((Path(folder) / (f + ext)).is_file() for ext in ("", ".gz"))
                for pair in _FILES.values()
                for f in pair
            ):
                return Path(folder)
        return None

    def load(self, train: bool) -> Split:
        tv_dir = Path(self.root) / "FashionMNIST" / "raw"
        try:
            if (tv_dir / _FILES[train][0]).is_file() or not (flat := self._flat_dir()):
                # torchvision's own layout and reader: root/FashionMNIST/raw/, downloaded if allowed
                ds = torchvision.datasets.FashionMNIST(self.root, train=train, download=self.download)
                return Split(ds.data.unsqueeze(1).contiguous(), ds.targets)
            if train and str(flat) != self.root:  # say where the data came from when it is not data.root
                log.warning(  # on the terminal, not only in the log: the data came from elsewhere
                    "FashionMNIST: nothing under data.root=%s; read the idx files in %s (data.fallback_roots)",
                    self.root,
                    flat,
                )
            images_file, labels_file = (_existing(flat / f) for f in _FILES[train])
            images, labels = read_idx(images_file), read_idx(labels_file)
            if images.ndim != 3 or labels.shape != images.shape[:1]:
                raise ValueError(f"{images_file} and {labels_file} do not hold matching images and labels")
            return Split(images.unsqueeze(1).contiguous(), labels)
        except Exception as e:  # noqa: BLE001 - any failure to read is the same problem for the user
            tried = ", ".join([str(tv_dir), self.root, *self.fallback_roots])
            raise FileNotFoundError(
                f"FashionMNIST could not be read ({type(e).__name__}: {e}); looked in {tried}. "
                f"Set data.root=DIR (torchvision layout or the four idx[.gz] files), allow data.download=true, "
                f"install Debian's dataset-fashion-mnist, or use data.synthetic=true"
            ) from e


def _existing(path: Path) -> Path:
    return path if path.is_file() else path.with_name(path.name + ".gz")
