"""A training loader's state (what Lightning puts in the checkpoint) resumes its pass exactly: the
batches not yet handed out, in the same order, with the same augmentation for data=folder; and a
pass's order splits over DDP ranks without overlap or loss. The same through a real kill and
resume=: tests/e2e/test_data_resume.py (slow)."""

from __future__ import annotations

import logging

import pytest
import torch
from configured import configured
from sample_ids import NumberedImages, numbered_folder

from datamodules import folder


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
