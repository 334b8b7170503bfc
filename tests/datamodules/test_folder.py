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
