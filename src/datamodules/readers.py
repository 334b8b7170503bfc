"""Readers for on-disk formats that torchvision's dataset classes do not read as they lie."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import InMemoryDataModule

# idx type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
_IDX_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an idx file (MNIST's format), plain or gzipped, e.g. Debian's FashionMNIST files."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number)")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4).tolist()
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    payload = data[4 + 4 * ndim :]
    if len(payload) != expected:
        raise ValueError(f"{path} is truncated or corrupt: {len(payload)} bytes of data, header says {expected}")
    return torch.from_numpy(np.frombuffer(payload, dtype=dtype).reshape(dims).copy())


def torchvision_reader(dataset: Any, verify_checksums: bool) -> Any:
    """torchvision's dataset class as it is, or, without checksums, a subclass that trusts every
    file that exists (md5 None makes torchvision's check_integrity test existence only): for files
    that are not the published ones, such as the tiny files the tests write."""
    if verify_checksums:
        return dataset
    unchecked = lambda files: [[name, None] for name, _ in files]  # noqa: E731
    attrs: dict[str, Any] = {"train_list": unchecked(dataset.train_list), "test_list": unchecked(dataset.test_list)}
    if hasattr(dataset, "meta"):
        attrs["meta"] = {**dataset.meta, "md5": None}
    return type(f"Unchecked{dataset.__name__}", (dataset,), attrs)


class TorchvisionDataModule(InMemoryDataModule):
    """An in-memory data set that one of torchvision's dataset classes (`dataset`) reads from
    data.root/`folder`, checksums checked unless verify_checksums=false (tests' tiny files); a file
    that cannot be read is one line naming data.root, data.download and data.synthetic."""

    dataset: Any  # torchvision's class
    folder: str  # the folder it expects under data.root
    title: str  # the data set's name in messages

    def __init__(self, *args, verify_checksums: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.verify_checksums = verify_checksums

    def read(self, **split: Any) -> Any:
        """torchvision's data set of one split (`train=...` or `split=...`)."""
        reader = torchvision_reader(self.dataset, self.verify_checksums)
        try:
            return reader(self.root, download=self.download, **split)
        except Exception as e:  # noqa: BLE001
            raise FileNotFoundError(
                f"{self.title} could not be read from {self.root}/{self.folder} ({type(e).__name__}: {e}). "
                f"Set data.root=DIR holding {self.folder}, allow data.download=true, or use data.synthetic=true"
            ) from e
