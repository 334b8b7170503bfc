"""data=images: whatever a user's folder holds is read, converted, or skipped by name."""

import logging

import pytest
import torch
from configured import configured
from formats import write_image_folder


def test_a_folder_of_good_and_bad_files(tmp_path, caplog):
    write_image_folder(tmp_path / "imgs")
    dm = configured("data=images", "data", root=str(tmp_path / "imgs"), image_size=32)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    split = dm.split("test")
    assert sorted(dm.names) == sorted(
        ["red.png", "grey.jpg", "transparent.png", "cmyk.jpg", "sixteen_bit.png", "palette.gif", "whole.jpg"]
    )
    assert sorted(p.rsplit("/", 1)[1] for p, _ in dm.skipped) == ["fake.jpg", "notes.txt", "truncated.jpg"]
    for name in ("fake.jpg", "notes.txt", "truncated.jpg"):
        assert name in caplog.text
    assert split.images.shape == (7, 3, 32, 32) and split.images.dtype.is_floating_point is False
    assert (split.labels == -1).all()
    img = {n: split.images[i].float() for i, n in enumerate(dm.names)}
    assert img["red.png"][0].mean() == pytest.approx(200, abs=1) and img["red.png"][1:].max() == 0
    assert img["grey.jpg"].std(0).max() < 2 and img["grey.jpg"].mean() == pytest.approx(
        90, abs=2
    )  # grey to 3 equal channels
    assert img["transparent.png"].min() == 255  # composited over white, not black or blue
    assert img["cmyk.jpg"][0].mean() > 200 and img["cmyk.jpg"][1:].mean() < 40
    assert img["sixteen_bit.png"].mean() == pytest.approx(128, abs=1)  # scaled, not clipped to 255


def test_paths_and_an_empty_set(tmp_path):
    write_image_folder(tmp_path)
    dm = configured(
        "data=images",
        "data",
        paths=[str(tmp_path / "red.png"), str(tmp_path / "notes.txt"), str(tmp_path / "nope.png")],
        image_size=16,
    )
    dm.setup()
    assert dm.names == ["red.png"] and len(dm.skipped) == 2
    with pytest.raises(FileNotFoundError, match="no readable image"):
        configured("data=images", "data", paths=[str(tmp_path / "notes.txt")]).setup()
    with pytest.raises(FileNotFoundError, match="data.paths"):
        configured(
            "data=images",
            "data",
        ).setup()
    with pytest.raises(FileNotFoundError, match="data.root"):
        configured("data=images", "data", root=str(tmp_path / "missing")).setup()


def test_synthetic_images_and_batches():
    dm = configured(
        "data=images", "data", synthetic=True, synthetic_size=5, image_size=24, eval_batch_size=2, on_device=False
    )
    batches = list(dm.test_dataloader())
    assert [len(y) for _, y in batches] == [2, 2, 1]
    assert batches[0][0].shape == (2, 3, 24, 24) and batches[0][0].dtype == torch.float32  # scaled to [0, 1]
    assert 0 <= float(batches[0][0].min()) and float(batches[0][0].max()) <= 1


def write_class_folders(root, per_class=10, side=20):
    """root/<class>/*.png: red squares, blue squares, green squares (and one broken file)."""
    from PIL import Image

    colours = {"blue": (0, 0, 220), "green": (0, 200, 0), "red": (210, 0, 0)}
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (side + i, side), colour).save(root / name / f"{name}_{i}.png")
    (root / "red" / "broken.jpg").write_bytes(b"not a jpeg")
    return list(colours)


def test_class_folders_are_labelled_by_folder_and_split(tmp_path, caplog):
    classes = write_class_folders(tmp_path / "photos")
    dm = configured(
        "data=images",
        "data",
        root=str(tmp_path / "photos"),
        class_folders=True,
        image_size=16,
        val_size=3,
        test_size=0.2,
    )
    dm.setup()
    assert dm.classes == tuple(classes) and dm.labelled and "broken.jpg" in caplog.text
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"test": 6, "val": 3, "train": 21}  # 30 readable images
    for split in dm.splits.values():  # each image's label is its folder's colour: the channel that is lit
        lit = split.images.float().mean((2, 3)).argmax(1)
        assert (lit == torch.tensor([2, 1, 0])[split.labels]).all()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == (3, 16, 16) and y.dtype == torch.long
    assert len(dm.names) == 6  # the test split's files, in its order


def test_class_folders_need_a_root_with_class_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        configured("data=images", "data", class_folders=True)
    (tmp_path / "only").mkdir()
    with pytest.raises(ValueError, match="one folder per class"):
        configured("data=images", "data", root=str(tmp_path), class_folders=True)
