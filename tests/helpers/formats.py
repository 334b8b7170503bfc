"""Writers of tiny data sets in each real on-disk format (what torchvision's readers expect)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """MNIST's idx format: magic (0, 0, 0x08 uint8, ndim), big-endian int32 dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if compress else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def fashion_mnist_arrays(n_train: int, n_test: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }


def write_fashion_mnist(folder: Path, arrays: dict[str, np.ndarray], compress: bool) -> None:
    for name, array in arrays.items():
        write_idx(folder / name, array, compress)


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """cifar-10-batches-py/: data_batch_1..5 and test_batch pickles ({'data': (N, 3072) uint8 in
    channel-major rows, 'labels': list}; the originals are Python 2 pickles whose str keys load
    as str under torchvision's encoding='latin1'), batches.meta with 'label_names'."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    images, labels = [], []
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        lab = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": lab}, f, protocol=2)
        images.append(data.reshape(n, 3, 32, 32))
        labels.append(np.array(lab))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_vis": 3072}, f, protocol=2)
    return {
        "train_images": np.concatenate(images[:5]),
        "train_labels": np.concatenate(labels[:5]),
        "test_images": images[5],
        "test_labels": labels[5],
    }


def write_stl10(root: Path, n_train: int = 10, n_test: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """stl10_binary/: {train,test}_X.bin (uint8, each image 3x96x96 stored column-major, i.e. the
    transpose of each channel), {train,test}_y.bin (uint8 labels 1..10), class_names.txt."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        labels = rng.integers(1, 11, n).astype(np.uint8)
        np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tofile(folder / f"{split}_X.bin")
        labels.tofile(folder / f"{split}_y.bin")
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels.astype(np.int64) - 1
    (folder / "unlabeled_X.bin").write_bytes(b"")  # torchvision requires it to exist for every split
    (folder / "class_names.txt").write_text(
        "\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"])
    )
    return out


def write_image_folder(folder):
    """One file of each kind a user's folder may hold; returns {file name: what it should become}."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(folder / "red.png")
    Image.fromarray(np.full((30, 30), 90, np.uint8), mode="L").save(folder / "grey.jpg", quality=100)
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 2] = 255  # blue, fully transparent: white over a white background
    Image.fromarray(rgba, mode="RGBA").save(folder / "transparent.png")
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=100)  # cyan-free: red
    Image.fromarray(np.full((16, 16), 32768, np.uint16)).save(folder / "sixteen_bit.png")  # half of 16-bit range
    Image.new("P", (10, 10), 3).save(folder / "palette.gif")
    (folder / "notes.txt").write_text("not an image")
    (folder / "fake.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    big = Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    big.save(folder / "whole.jpg", quality=95)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / ".hidden.png").write_bytes(b"")  # hidden files are not the user's images
