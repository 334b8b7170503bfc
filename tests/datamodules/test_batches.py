import torch
import torch.nn.functional as F
from configured import configured

from datamodules import BatchTransform, Split, TensorBatches
from datamodules.base import random_crop


def make_split(n=23):
    return Split(
        torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(), torch.arange(n) % 10
    )


def test_batches_cover_every_image_once_per_epoch_in_a_new_order():
    batches = TensorBatches(make_split(), batch_size=5, shuffle=True, seed=0)
    assert len(batches) == 5
    epochs = [torch.cat([x[:, 0, 0, 0] for x, _ in batches]) for _ in range(2)]
    for seen in epochs:
        assert sorted(seen.tolist()) == list(range(23))
    assert not torch.equal(epochs[0], epochs[1])


def test_images_stay_with_their_labels():
    for x, y in TensorBatches(make_split(), batch_size=4, shuffle=True):
        assert torch.equal(x[:, 0, 0, 0].long() % 10, y)


def test_drop_last_and_eval_order():
    assert len(TensorBatches(make_split(), 5, shuffle=True, drop_last=True)) == 4
    xs = torch.cat([x[:, 0, 0, 0] for x, _ in TensorBatches(make_split(), 5, shuffle=False)])
    assert xs.tolist() == list(range(23))


def test_transform_scales_resizes_repeats_and_normalises():
    x = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    t = BatchTransform(image_size=32, channels=3, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.25])
    out = t(x)
    expected = F.interpolate(x.float() / 255, size=(32, 32), mode="bilinear", antialias=True).repeat(1, 3, 1, 1)
    expected = (expected - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.2, 0.25]).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(out, expected)


def test_augmentation_only_in_training():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    t = BatchTransform(hflip=True)
    torch.testing.assert_close(t(x, train=False), x.float() / 255)
    out = t(x, train=True)
    same = (out == x.float() / 255).flatten(1).all(1)
    flipped = (out == x.float().flip(-1) / 255).flatten(1).all(1)
    assert bool((same | flipped).all()) and 10 < int(flipped.sum()) < 54


def test_random_crop_is_a_window_of_the_padded_image():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    out = random_crop(x, 2)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(16):
        windows = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_datamodule_batches_arrive_transformed_and_eval_batches_are_the_same_images():
    dm = configured(
        "data=fashion_mnist", "data", synthetic=True, synthetic_size=20, batch_size=8, channels=3, image_size=32
    )
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    test = list(dm.eval_batches("test", torch.device("cpu"), max_images=5))
    assert sum(len(b[1]) for b in test) == 5
    expected = dm.transform(dm.splits["test"].images[:5])
    torch.testing.assert_close(test[0][0], expected)  # the split's first images, unaugmented
    assert dm.has_split("val") and not dm.has_split("predict")


def test_ddp_ranks_share_out_one_order_evenly(monkeypatch):
    """Each of 3 ranks gets ceil(23/3)=8 images of the same seeded order; together all 23."""
    seen = []
    for rank in range(3):
        monkeypatch.setattr(TensorBatches, "_world", staticmethod(lambda rank=rank: (rank, 3)))
        batches = TensorBatches(make_split(), batch_size=5, shuffle=True, seed=4)
        got = torch.cat([x[:, 0, 0, 0] for x, _ in batches])
        assert len(batches) == 2 and len(got) == 8
        seen.append(got)
    assert set(torch.cat(seen).tolist()) == set(range(23))
    # a split smaller than the world still gives every rank a batch
    monkeypatch.setattr(TensorBatches, "_world", staticmethod(lambda: (3, 4)))
    assert len(list(TensorBatches(make_split(2), batch_size=8, shuffle=False))) == 1
