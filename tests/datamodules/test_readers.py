import os
from pathlib import Path

import numpy as np
import pytest
import torch
from configured import configured
from formats import fashion_mnist_arrays, write_cifar10, write_fashion_mnist, write_idx, write_stl10

from datamodules.readers import read_idx

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.random.default_rng(0).integers(0, 256, (3, 5, 4), dtype=np.uint8)
    path = write_idx(tmp_path / "x-idx3-ubyte", array, compress)
    np.testing.assert_array_equal(read_idx(path).numpy(), array)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    path = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((4, 28, 28), np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "junk")


def test_fashion_mnist_from_debian_style_gz_folder(tmp_path):
    arrays = fashion_mnist_arrays(50, 20)
    write_fashion_mnist(tmp_path / "flat", arrays, compress=True)
    dm = configured(
        "data=fashion_mnist",
        "data",
        root=str(tmp_path / "empty"),
        fallback_roots=[str(tmp_path / "flat")],
        download=False,
        val_size=10,
    )
    dm.setup()
    assert (len(dm.splits["train"]), len(dm.splits["val"]), len(dm.splits["test"])) == (40, 10, 20)
    np.testing.assert_array_equal(dm.splits["test"].images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(dm.splits["test"].labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    # train + val together are exactly the training file, split without overlap
    both = torch.cat([dm.splits["train"].images, dm.splits["val"].images])[:, 0].numpy()
    assert sorted(map(bytes, both)) == sorted(map(bytes, arrays["train-images-idx3-ubyte"]))


def test_fashion_mnist_from_torchvision_layout(tmp_path):
    arrays = fashion_mnist_arrays(30, 10, seed=3)
    write_fashion_mnist(tmp_path / "FashionMNIST" / "raw", arrays, compress=False)
    dm = configured("data=fashion_mnist", "data", root=str(tmp_path), download=False, fallback_roots=(), val_size=5)
    test = dm.split("test")
    np.testing.assert_array_equal(test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert test.images.dtype == torch.uint8 and test.images.shape == (10, 1, 28, 28)


def test_val_split_is_seeded(tmp_path):
    write_fashion_mnist(tmp_path, fashion_mnist_arrays(60, 10), compress=True)

    def val(seed):
        return (
            configured(
                "data=fashion_mnist",
                "data",
                root=str(tmp_path),
                download=False,
                fallback_roots=(),
                val_size=12,
                split_seed=seed,
            )
            .split("val")
            .images
        )

    assert torch.equal(val(1), val(1))
    assert not torch.equal(val(1), val(2))


def test_cifar10_pickles_through_torchvision_reader(tmp_path):
    ref = write_cifar10(tmp_path)
    dm = configured("data=cifar10", "data", root=str(tmp_path), download=False, verify_checksums=False, val_size=0)
    train, test = dm.split("train"), dm.split("test")
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    order = dm.splits["train"].labels  # val_size=0 still shuffles: compare as sets of (image, label)
    got = sorted((bytes(i.numpy()), int(lab)) for i, lab in zip(train.images, order, strict=False))
    want = sorted((bytes(i), int(lab)) for i, lab in zip(ref["train_images"], ref["train_labels"], strict=False))
    assert got == want
    np.testing.assert_array_equal(test.images.numpy(), ref["test_images"])  # NCHW, channel order kept
    np.testing.assert_array_equal(test.labels.numpy(), ref["test_labels"])


def test_cifar10_checksums_on_by_default_reject_foreign_files(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="data.root"):
        configured("data=cifar10", "data", root=str(tmp_path), download=False).setup()


def test_stl10_binaries_through_torchvision_reader(tmp_path):
    ref = write_stl10(tmp_path)
    dm = configured("data=stl10", "data", root=str(tmp_path), download=False, verify_checksums=False, val_size=2)
    test = dm.split("test")
    np.testing.assert_array_equal(test.images.numpy(), ref["test_images"])
    np.testing.assert_array_equal(test.labels.numpy(), ref["test_labels"])
    assert len(dm.split("train")) + len(dm.split("val")) == 10


@pytest.mark.parametrize("data", ["fashion_mnist", "cifar10", "stl10"])
def test_missing_data_fails_fast_naming_the_keys(tmp_path, data, no_waiting):
    with pytest.raises(FileNotFoundError) as err:
        nowhere = {"fallback_roots": ()} if data == "fashion_mnist" else {}  # not Debian's copy either
        configured(f"data={data}", "data", root=str(tmp_path / "nothing"), download=False, **nowhere).setup()
    assert no_waiting == []  # no download tried, no retry waited for
    assert "data.root" in str(err.value) and "data.synthetic" in str(err.value)


def test_corrupt_fashion_mnist_names_data_root(tmp_path):
    write_fashion_mnist(tmp_path, fashion_mnist_arrays(20, 10), compress=True)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(FileNotFoundError, match="data.root"):
        configured("data=fashion_mnist", "data", root=str(tmp_path), download=False, fallback_roots=()).setup()


@pytest.mark.parametrize("data", ["fashion_mnist", "cifar10", "stl10"])
def test_synthetic_data_has_the_real_shape_dtype_and_classes(data):
    dm = configured(f"data={data}", "data", synthetic=True, synthetic_size=50)
    module = type(dm)
    train, test = dm.split("train"), dm.split("test")
    assert train.images.dtype == torch.uint8 and tuple(train.images.shape[1:]) == module.shape
    assert len(train) + len(dm.split("val")) == 50 and len(test) == 50
    assert set(test.labels.tolist()) == set(range(10)) and len(module.classes) == 10


@pytest.mark.parametrize("bad", [0, -4, 2.5])
def test_bad_batch_size_names_the_key(bad):
    with pytest.raises(ValueError, match="data.batch_size"):
        configured("data=fashion_mnist", "data", batch_size=bad, synthetic=True)


def test_real_debian_fashion_mnist():
    """The real FashionMNIST files of Debian's dataset-fashion-mnist (CI installs the package)."""
    if not DEBIAN_FASHION_MNIST.is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must install dataset-fashion-mnist (see .ci/run)")
        pytest.skip("Debian's dataset-fashion-mnist is not installed here")
    dm = configured(
        "data=fashion_mnist",
        "data",
        root="/nonexistent",
        fallback_roots=[str(DEBIAN_FASHION_MNIST)],
        download=False,
        val_size=5000,
    )
    dm.setup()
    assert (len(dm.splits["train"]), len(dm.splits["val"]), len(dm.splits["test"])) == (55000, 5000, 10000)
    assert torch.bincount(dm.splits["test"].labels).tolist() == [1000] * 10  # balanced test set
    assert torch.bincount(torch.cat([dm.splits["train"].labels, dm.splits["val"].labels])).tolist() == [6000] * 10
    mean = dm.splits["test"].images.float().mean().item() / 255
    assert 0.27 < mean < 0.30  # FashionMNIST's well-known mean intensity, ~0.286
