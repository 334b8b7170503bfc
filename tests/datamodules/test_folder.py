"""data=folder's pieces: sizes and statistics from the model's weights, class names from the
folders, the mistakes named by key, any image format decoded to RGB, the standard transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from configured import configured
from PIL import Image

from datamodules.folder import Augment, decode


def tree(root, classes=("cat", "dog"), splits=("train", "val")):
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 16), (10, 20, 30)).save(root / split / c / "a.png")
    return root


def test_sizes_and_statistics_come_from_the_models_torchvision_weights(tmp_path):
    dm = configured("data=folder", "data", root=str(tree(tmp_path)), arch="resnet152", weights="IMAGENET1K_V2")
    assert (dm.image_size, dm.resize_size) == (224, 232)  # what IMAGENET1K_V2 was evaluated with
    assert dm.transform.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    mine = configured(
        "data=folder", "data", root=str(tmp_path), arch="resnet152", weights="IMAGENET1K_V2", image_size=160
    )
    assert (mine.image_size, mine.resize_size) == (160, 166)  # a size set by a task keeps the weights' ratio
    plain = configured("data=folder", "data", root=str(tmp_path), image_size=32)
    assert (plain.resize_size, plain.transform.mean) == (37, None)  # no weights: 256/224, no normalisation


def test_classes_are_the_train_folders_and_a_val_class_must_be_one_of_them(tmp_path):
    dm = configured("data=folder", "data", root=str(tree(tmp_path, ("zebra", "ant", "bee"))))
    dm.setup()
    assert (
        dm.classes == ("ant", "bee", "zebra") and dm.num_classes == 3 and dm.datasets["test"] is dm.datasets["val"]
    )  # no test/: val/
    tree(tmp_path / "bad", ("ant", "bee")) and (tmp_path / "bad" / "val" / "wasp").mkdir()
    with pytest.raises(ValueError, match="wasp is a class that train/ does not have"):
        configured("data=folder", "data", root=str(tmp_path / "bad")).setup()
    with pytest.raises(FileNotFoundError, match="data=folder needs data.root"):
        configured("data=folder", "data", root=None)


@pytest.mark.parametrize("mode, ext", [("L", "png"), ("RGBA", "png"), ("I;16", "png"), ("RGB", "bmp"), ("P", "gif")])
def test_any_image_decodes_to_rgb_uint8(tmp_path, mode, ext):
    arr = (np.arange(12 * 10) % 200).reshape(12, 10)
    img = Image.fromarray(arr.astype(np.uint16 if mode == "I;16" else np.uint8))
    img = img.convert(mode) if mode not in ("L", "I;16") else img
    path = tmp_path / f"x.{ext}"
    img.save(path)
    x = decode(str(path))
    assert x.dtype == torch.uint8 and x.shape == (3, 12, 10)


def test_training_crops_are_random_resized_and_evaluation_is_a_centre_crop():
    img = torch.arange(3 * 40 * 60, dtype=torch.int64).remainder(256).to(torch.uint8).view(3, 40, 60)
    aug = Augment(image_size=16, resize_size=20, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=True)
    crops = [aug.train(img, seed) for seed in range(8)]
    assert all(c.shape == (3, 16, 16) for c in crops) and len({c.sum().item() for c in crops}) > 1
    assert torch.equal(aug.train(img, 3), crops[3])  # a seed is a crop
    ev = aug.eval(img)  # shorter side 40 -> 20 (60 -> 30), then the central 16 x 16
    assert ev.shape == (3, 16, 16) and torch.equal(ev, aug.eval(img))


# -- data.gpu_decode: what does not need a GPU, run on the CPU ------------------------------------
def jpeg_tree(root, count: int = 6):
    """train/ and val/ of smooth JPEGs of several sizes, a PNG among them (decoded in the workers)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for k in range(count):
            folder = root / split / f"class_{k % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((40 + 4 * k, 30 + 2 * k), Image.BICUBIC)
            img.save(folder / (f"{k}.png" if k == 3 else f"{k}.jpg"), quality=90)
    return root


def gpu_path_on_cpu(monkeypatch):
    """data.gpu_decode's loader with its 'GPU' on the CPU: the batched decode_jpeg and the transforms
    run where they would on a GPU, on CPU tensors (the device check let through)."""
    from datamodules import folder

    monkeypatch.setattr(folder, "check_gpu_decode", lambda gpu_decode, device: None)


def test_gpu_decode_workers_send_jpeg_bytes_and_decode_anything_else(tmp_path):
    from datamodules.folder import FolderDataset, collate_encoded, exif_orientation, scan

    root = jpeg_tree(tmp_path)
    rotated = root / "train" / "class_0" / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (30, 20), (200, 10, 10)).save(rotated, exif=exif)
    paths, labels = scan(root / "train", ["class_0", "class_1"])
    aug = Augment(16, 18, (0.08, 1.0), (3 / 4, 4 / 3), True)
    ds = FolderDataset(root / "train", paths, labels, aug, gray=False, gpu_decode=True)
    items = [ds[(i, 100 + i)] for i in range(len(ds))]
    for i, (payload, seed, label, name_sent) in enumerate(items):
        name = paths[i].decode()
        assert name_sent == str(root / "train" / name)
        assert seed == 100 + i and label == labels[i]
        if name.endswith("rotated.jpg"):  # nvJPEG would not rotate it: decoded (and rotated) in the worker
            assert exif_orientation(rotated.read_bytes()) == 6 and payload.shape == (3, 30, 20)
        elif name.endswith(".jpg"):
            assert payload.dtype == torch.uint8 and payload.ndim == 1
            assert payload.numpy().tobytes() == (root / "train" / name).read_bytes()  # the file, as it is
        else:
            assert payload.ndim == 3  # the PNG
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=[[(0, 1), (1, None), (2, 3)]], num_workers=1, collate_fn=collate_encoded
    )
    (payloads, seeds, y, _), *_ = list(loader)
    assert len(payloads) == 3 and seeds == [1, None, 3] and y.tolist() == labels[:3].tolist()
    assert (
        exif_orientation(b"\xff\xd8\xff\xd9") == 1
        and exif_orientation((root / "train/class_0/0.jpg").read_bytes()) == 1
    )


def test_gpu_decode_gives_the_workers_batches_when_run_on_cpu_tensors(tmp_path, monkeypatch):
    """The batched decode and per-image transforms of data.gpu_decode, run on the CPU: the same
    uint8 crops as the workers' path (the same decoder there, the same boxes from the same seeds),
    pass after pass, for training and evaluation."""
    root = jpeg_tree(tmp_path)
    gpu_path_on_cpu(monkeypatch)

    def batches(gpu_decode: bool, shuffle: bool):
        dm = configured(
            "data=folder", "data", root=str(root), image_size=16, batch_size=4, num_workers=0, gpu_decode=gpu_decode
        )
        loader = dm.train_dataloader() if shuffle else dm.val_dataloader()
        return [(x, y) for _ in range(2) for x, y in loader]

    for shuffle in (True, False):
        workers, gpu = batches(False, shuffle), batches(True, shuffle)
        assert len(workers) == len(gpu) == 4
        for (a, ya), (b, yb) in zip(workers, gpu, strict=True):
            assert torch.equal(ya, yb) and torch.equal(a, b)


def test_gpu_decode_transforms_match_pil_within_rounding(tmp_path):
    """decode_batch on CPU tensors (torchvision's decode_jpeg, then the crops) against PIL's decode
    of the same files given the same crops: equal but for the decoders' rounding."""
    from datamodules.folder import decode_batch

    root = jpeg_tree(tmp_path)
    files = sorted((root / "train").rglob("*.jpg"))
    aug = Augment(16, 18, (0.08, 1.0), (3 / 4, 4 / 3), True)
    payloads = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    seeds = [7, None, 9, 11, None][: len(files)]
    got = decode_batch(payloads, seeds, torch.device("cpu"), aug, gray=False)
    pil = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1).copy()) for f in files]
    want = torch.stack([aug.eval(img) if s is None else aug.train(img, s) for img, s in zip(pil, seeds, strict=True)])
    assert got.shape == want.shape == (len(files), 3, 16, 16)
    diff = (got.float() - want.float()).abs()
    assert diff.mean() < 1.5 and diff.max() <= 16  # libjpeg-turbo in both, IDCT/upsampling choices apart


def test_gpu_decode_without_a_gpu_stops_in_one_line_naming_the_key(tmp_path):
    root = jpeg_tree(tmp_path)
    dm = configured("data=folder", "data", root=str(root), image_size=16, num_workers=0, gpu_decode=True)
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check is for machines without one")
    with pytest.raises(ValueError, match=r"^data.gpu_decode=true decodes JPEGs on a CUDA GPU .* data.gpu_decode=false"):
        dm.setup()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="nvJPEG needs a CUDA device (none here)")
def test_gpu_decode_on_a_gpu_matches_the_workers_within_rounding(tmp_path):
    """On a GPU machine: data.gpu_decode=true's batches (nvJPEG, the crops on the GPU) against the
    workers' batches of the same seeds, equal but for the decoders' and resizers' rounding."""
    root = jpeg_tree(tmp_path)

    def batches(gpu_decode: bool):
        dm = configured(
            "data=folder", "data", root=str(root), image_size=16, batch_size=4, num_workers=0, gpu_decode=gpu_decode
        )
        loader = dm._batches("train", shuffle=True, device=torch.device("cuda"))
        return [(x.cpu(), y.cpu()) for x, y in loader]

    for (a, ya), (b, yb) in zip(batches(False), batches(True), strict=True):
        assert torch.equal(ya, yb)
        assert (a - b).abs().mean() < 0.02  # scaled to [0, 1]: under 5 levels of 255 on average (never run here)


def test_gpu_decode_a_damaged_jpeg_in_a_batch_is_decoded_alone_or_named(tmp_path):
    """A batch whose batched decode fails (a file that starts like a JPEG but is cut short): it is decoded
    one image at a time, and the damaged one, which the workers' decoders (torchvision, PIL) cannot read
    either, is named in their one-line error instead of failing the batch without a file name."""
    from datamodules.folder import decode_batch

    root = jpeg_tree(tmp_path)
    files = sorted((root / "train").rglob("*.jpg"))[:3]
    aug = Augment(16, 18, (0.08, 1.0), (3 / 4, 4 / 3), True)
    payloads = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    names = [str(f) for f in files]
    whole = decode_batch(payloads, [None] * 3, torch.device("cpu"), aug, gray=False, names=names)
    damaged = payloads[:1] + [payloads[1][:40]] + payloads[2:]  # the header only: no image data
    with pytest.raises(OSError, match=f"data.root: cannot read {names[1]} as an image"):
        decode_batch(damaged, [None] * 3, torch.device("cpu"), aug, gray=False, names=names)
    assert whole.shape == (3, 3, 16, 16)
