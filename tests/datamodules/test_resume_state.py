"""A training loader's state (what Lightning puts in the checkpoint) resumes its pass exactly: the
batches not yet handed out, in the same order, with the same augmentation (data=folder's crops in
the workers, the in-memory data's flips and crops on the device); and a
pass's order splits over DDP ranks without overlap or loss. The same through a real kill and
resume=: tests/e2e/test_data_resume.py (slow)."""

from __future__ import annotations

import logging

import pytest
import torch
from configured import configured
from sample_ids import NumberedImages, numbered_folder

from datamodules import folder
from datamodules.base import TensorBatches


def passes(loader, count: int, tensors: bool = False) -> list[list]:
    return [[(x.clone() if tensors else None, y.tolist()) for x, y in loader] for _ in range(count)]


def resumed(make, stop: int, tensors: bool = False) -> tuple[list, list]:
    """(an uninterrupted loader's 3 passes, a loader stopped after `stop` batches of pass 1 and
    another one loaded with its state, continuing pass 1 then pass 2)."""
    reference = passes(make(), 3, tensors)
    first = make()
    list(first)  # pass 0
    it = iter(first)
    for _ in range(stop):
        next(it)
    state = first.state_dict()
    second = make()
    second.load_state_dict(state)
    return reference, passes(second, 2, tensors)


@pytest.mark.parametrize("stop", [0, 3, 7])
def test_in_memory_loader_resumes_its_pass_at_the_next_batch(stop):
    dm = NumberedImages(images=24, val_size=4, batch_size=3)
    make = lambda: NumberedImages(images=24, val_size=4, batch_size=3).train_dataloader()  # noqa: E731
    reference, after = resumed(make, stop)
    assert len(reference[1]) == 7 and [y for _, y in reference[1]] != [y for _, y in reference[0]]
    if stop == 7:  # the pass had ended: the resumed loader starts the next one
        assert after[0] == reference[2]
    else:
        assert after[0] == reference[1][stop:] and after[1] == reference[2]
    ids = sorted(i for _, y in reference[1] for i in y)
    assert ids == sorted(dm.split("train").labels.tolist())


AUGMENTED = {"images": 24, "val_size": 4, "batch_size": 3, "hflip": True, "crop_padding": 2}


@pytest.mark.parametrize("stop", [0, 3, 6])
def test_in_memory_loader_resumes_with_the_same_flips_and_crops(stop):
    """The on-device augmentation's generator is part of the state: the resumed batches are the
    uninterrupted ones, pixel for pixel, not only the same images."""
    torch.manual_seed(7)  # the run's seed: what seeds the augmentation
    make = lambda: NumberedImages(**AUGMENTED).train_dataloader()  # noqa: E731
    reference, after = resumed(make, stop, tensors=True)
    expected, got = reference[1][stop:] + reference[2], after[0] + after[1]
    assert [y for _, y in got] == [y for _, y in expected]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(got, expected, strict=True))
    unaugmented = NumberedImages(**{**AUGMENTED, "hflip": False, "crop_padding": 0}).train_dataloader()
    plain = [x for x, _ in passes(unaugmented, 2, tensors=True)[1]]
    assert not all(torch.equal(a, b) for (a, _), b in zip(reference[1], plain, strict=True))  # it does augment
    torch.manual_seed(8)
    other = passes(make(), 1, tensors=True)[0]
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(other, reference[0], strict=True))  # seed= matters


def test_every_rank_resumes_its_augmentation_from_rank_0s_state(monkeypatch):
    """Lightning's checkpoint holds rank 0's loader state: rank 1 loaded with it continues its own
    batches with its own flips and crops (they differ from rank 0's)."""
    torch.manual_seed(7)
    loaders = {}
    for rank in (0, 1):
        monkeypatch.setattr(TensorBatches, "_world", staticmethod(lambda rank=rank: (rank, 2)))
        make = lambda: NumberedImages(**AUGMENTED).train_dataloader()  # noqa: E731
        loaders[rank] = (make, passes(make(), 2, tensors=True))
    monkeypatch.setattr(TensorBatches, "_world", staticmethod(lambda: (0, 2)))
    first = loaders[0][0]()
    list(first)
    it = iter(first)
    next(it), next(it)
    state = first.state_dict()  # what rank 0 writes into the checkpoint
    monkeypatch.setattr(TensorBatches, "_world", staticmethod(lambda: (1, 2)))
    second = loaders[1][0]()
    second.load_state_dict(state)
    got, want = [(x, y.tolist()) for x, y in second], loaders[1][1][1][2:]
    assert [y for _, y in got] == [y for _, y in want] and len(got) == 2
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(got, want, strict=True))
    rank0 = loaders[0][1][1][2:]
    assert not any(torch.equal(a, b) for (a, _), (b, _) in zip(got, rank0, strict=True))


def test_lightning_checkpoint_resumes_the_in_memory_augmentation(tmp_path):
    """Through Lightning's own checkpoint (the fit loop keeps the loader's state): a fit stopped
    after step 9 of 14 and resumed from the checkpoint written there trains on the same augmented
    tensors as an uninterrupted fit."""
    reference = fit_recording(tmp_path / "a")
    stopped = fit_recording(tmp_path / "b", stop_at=9)
    resumed_fit = fit_recording(tmp_path / "c", ckpt_path=tmp_path / "b" / "stop.ckpt")
    assert len(reference) == 14 and len(stopped) == 9 and len(resumed_fit) == 5
    for (x, y), (a, b) in zip(stopped + resumed_fit, reference, strict=True):
        assert torch.equal(y, b) and torch.equal(x, a)


def fit_recording(folder, stop_at: int | None = None, ckpt_path=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (images, labels) of every training batch a 2-epoch fit of a linear model trains on."""
    import lightning.pytorch as pl

    class Linear(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3 * 8 * 8, 24)
            self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

        def training_step(self, batch, batch_idx):
            self.seen.append((batch[0].clone(), batch[1].clone()))
            return torch.nn.functional.cross_entropy(self.net(batch[0].flatten(1)), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Stop(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == stop_at:
                trainer.save_checkpoint(folder / "stop.ckpt")
                trainer.should_stop = True

    torch.manual_seed(0)
    model = Linear()
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, default_root_dir=folder, callbacks=[Stop()],
    )  # fmt: skip
    trainer.fit(model, datamodule=NumberedImages(**AUGMENTED), ckpt_path=ckpt_path)
    return model.seen


@pytest.mark.parametrize("stop", [2, 5])
def test_folder_loader_resumes_with_the_same_images_and_crops(tmp_path, stop):
    root = numbered_folder(tmp_path, images=20)

    def make():
        dm = configured("data=folder", "data", root=str(root), image_size=8, batch_size=3, num_workers=0)
        return dm.train_dataloader()

    reference, after = resumed(make, stop, tensors=True)
    expected = reference[1][stop:] + reference[2]
    got = after[0] + after[1]
    assert [y for _, y in got] == [y for _, y in expected]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(got, expected, strict=True))  # the same crops and flips
    assert sorted(i for _, y in reference[1] for i in y) == list(range(20))


def test_folder_augmentation_does_not_depend_on_the_worker_count(tmp_path):
    root = numbered_folder(tmp_path, images=8)
    batches = [
        [
            x
            for x, _ in configured(
                "data=folder", "data", root=str(root), image_size=8, batch_size=4, num_workers=w
            ).train_dataloader()
        ]
        for w in (0, 2)
    ]
    assert all(torch.equal(a, b) for a, b in zip(*batches, strict=True))


def test_a_state_of_another_batch_size_restarts_the_pass_and_says_so(caplog):
    old = NumberedImages(images=24, val_size=4, batch_size=3).train_dataloader()
    it = iter(old)
    next(it)
    new = NumberedImages(images=24, val_size=4, batch_size=4).train_dataloader()
    reference = [y.tolist() for _, y in NumberedImages(images=24, val_size=4, batch_size=4).train_dataloader()]
    with caplog.at_level(logging.WARNING):
        new.load_state_dict(old.state_dict())
    assert "the interrupted epoch starts again" in caplog.text
    assert [y.tolist() for _, y in new] == reference  # pass 0 again, whole


@pytest.mark.parametrize("world", [2, 3])
def test_folder_order_splits_over_ranks_without_overlap_or_loss(monkeypatch, world):
    """Each rank of a pass takes its own images, together all of them once, in as many batches."""
    for n in (20, 21, 23):
        per_rank = []
        for rank in range(world):
            monkeypatch.setattr(folder, "world", lambda rank=rank: (rank, world))
            per_rank.append(folder.rank_batches(folder.shuffled_order(n, seed=1, epoch=2), 4, drop_last=False))
        assert len({len(b) for b in per_rank}) == 1  # DDP steps together
        ids = [int(i) for batches in per_rank for b in batches for i in b]
        assert sorted(ids) == list(range(n))
        assert all(len(b) >= 1 for batches in per_rank for b in batches)
