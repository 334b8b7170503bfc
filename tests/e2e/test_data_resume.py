"""A run killed in the middle of an epoch resumes with exactly the images that epoch had not yet
seen, in the same order (in memory: with the same on-device flips and crops, checked pixel for
pixel): checked by the ids of the images trained on (every training image is its
own class, so a batch's labels are its images' ids), for an in-memory data set and for data=folder,
through the real run loop, a real signal and resume=."""

from __future__ import annotations

import hydra
import pytest
import torch
from configured import configured
from omegaconf import OmegaConf
from sample_ids import numbered_folder, pixels, recorded

from experiments.lifecycle import resume_overrides

COMMON = (  # resnet18 from scratch on 16 px images, 3 epochs of 7 batches (20 images, batches of 3)
    "task=resnet", "model.arch=resnet18", "model.weights=null", "finetune=scratch", "data.image_size=16",
    "data.batch_size=3", "data.eval_batch_size=8", "trainer.max_epochs=3", "test=false", "logger=csv",
)  # fmt: skip
KILL_AT = 9  # after the 9th step: epoch 1, its 2nd of 7 batches


def kill_and_resume(run_experiment, tmp_path, *overrides):
    """(the labels of each training batch across the kill and the resume, per epoch; the run folder;
    the fingerprint of every training batch's model-ready images, step by step)"""
    ids = tmp_path / "ids.jsonl"
    record = ("+callbacks.ids._target_=sample_ids.RecordLabels", f"+callbacks.ids.path={ids}")
    kill = (
        "+callbacks.kill._target_=signals.SendSignal",
        f"+callbacks.kill.at_step={KILL_AT}",
        "+callbacks.kill.signum=15",
    )
    code, run = run_experiment(*COMMON, *overrides, *record, *kill)
    assert code == 143 and (run / "checkpoints" / "last.ckpt").is_file()
    killed = recorded(ids)
    assert len(killed) == KILL_AT  # it stopped after the step it was killed at
    code, again = run_experiment(*resume_overrides([f"resume={run}"]))
    assert code == 0 and again == run
    seen = recorded(ids)
    assert [r["step"] for r in seen] == list(range(21))  # no step repeated or skipped
    epochs = [[r["labels"] for r in seen if r["epoch"] == e] for e in range(3)]
    return epochs, run, [r["pixels"] for r in seen]


def expected(loader, epochs: int = 3) -> list[list[list[int]]]:
    """The batches an uninterrupted run draws: the training loader iterated pass after pass."""
    return [[y.tolist() for _, y in loader] for _ in range(epochs)]


@pytest.mark.slow  # two runs (~30 s on a busy 2-core machine); the state alone: test_resume_state.py
def test_in_memory_data_resumes_mid_epoch_with_the_unseen_images_in_order(run_experiment, tmp_path):
    data = ("data=fashion_mnist", "data._target_=sample_ids.NumberedImages", "+data.images=24", "data.val_size=4")
    augment = ("data.hflip=true", "data.crop_padding=2")  # on the device, from the loader's generator
    epochs, run, fingerprints = kill_and_resume(run_experiment, tmp_path, *data, *augment)
    dm = hydra.utils.instantiate(OmegaConf.load(run / "config.yaml").data)  # the run's data module, as resolved
    torch.manual_seed(42)  # what seed=42 (the run's) seeds the augmentation with
    loader = dm.train_dataloader()
    uninterrupted = [[(y.tolist(), pixels(x)) for x, y in loader] for _ in range(3)]
    want = [[y for y, _ in batches] for batches in uninterrupted]
    assert epochs == want
    assert fingerprints == [p for batches in uninterrupted for _, p in batches]  # the same flips and crops
    for batches in epochs:  # each epoch: every training image once
        ids = [i for b in batches for i in b]
        assert sorted(ids) == sorted(dm.split("train").labels.tolist()) and len(ids) == 20
    assert epochs[0] != epochs[1]  # a new order each epoch (the resumed one is epoch 1's, not epoch 0's again)


@pytest.mark.slow  # two runs with a decoding worker (~60 s on a busy 2-core machine)
def test_folder_data_resumes_mid_epoch_with_the_unseen_images_in_order(run_experiment, tmp_path):

    root = numbered_folder(tmp_path / "images", images=20)
    epochs, run, _ = kill_and_resume(run_experiment, tmp_path, "data=folder", f"data.root={root}", "data.num_workers=1")
    dm = configured("data=folder", "data", root=str(root), image_size=16, batch_size=3, num_workers=0)
    dm.setup()
    want = [
        [[int(dm.classes[i][len("image_") :]) for i in b] for b in batches]
        for batches in expected(dm.train_dataloader())
    ]
    assert epochs == want
    for batches in epochs:
        assert sorted(i for b in batches for i in b) == list(range(20))
    assert epochs[0] != epochs[1]
    assert (run / "metrics.json").is_file()
