"""Shards: a folder converted once (python -m datamodules.shards) holds every image's bytes, label
and id; data=shards trains from them, and under DDP on 2 CPU processes each epoch gives every
image to exactly one rank."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli import cli_env, run_cli
from configured import configured
from sample_ids import numbered_folder, recorded

from datamodules.shards import ChunkReader, chunk_sizes, chunked_order, convert, main


def test_converted_shards_hold_the_folder_image_for_image(tmp_path):
    root = numbered_folder(tmp_path / "images", images=12)
    counts = convert(root, tmp_path / "shards", chunk_size="2KB", workers=1)
    assert counts == {"train": 12, "val": 4, "test": 4}
    assert len(chunk_sizes(tmp_path / "shards" / "train")) > 1  # several chunks: the chunked order is exercised
    assert json.loads((tmp_path / "shards" / "classes.json").read_text()) == [f"image_{k:03d}" for k in range(12)]
    args = dict(image_size=8, batch_size=4, eval_batch_size=5, num_workers=0)
    folder, shards = (
        configured("data=folder", "data", root=str(root), **args),
        configured("data=shards", "data", root=str(tmp_path / "shards"), **args),
    )
    for split in ("train", "val", "test"):  # unaugmented, the same pixels and labels as the folder gives
        (a, ya), (b, yb) = (
            [torch.cat(t) for t in zip(*dm.eval_batches(split, "cpu"), strict=True)] for dm in (folder, shards)
        )
        assert torch.equal(ya, yb) and torch.equal(a, b)
    ids = [i for _, y in shards.train_dataloader() for i in y.tolist()]
    assert sorted(ids) == list(range(12))


def test_our_chunk_reader_reads_what_litdata_reads(tmp_path):
    import litdata

    root = numbered_folder(tmp_path / "images", images=12)
    convert(root, tmp_path / "shards", chunk_size="3KB", workers=1)
    ours, theirs = (
        ChunkReader(tmp_path / "shards" / "train"),
        litdata.StreamingDataset(str(tmp_path / "shards" / "train")),
    )
    assert len(theirs) == 12
    for i in range(12):
        data, label, index = ours[i]
        record = theirs[i]
        assert (bytes(data), label, index) == (bytes(record["image"]), record["label"], record["index"])
    files = sorted((root / "train").rglob("*.png"))  # the folder's sorted list: index k is image_k's file
    assert bytes(ours[0][0]) == files[theirs[0]["index"]].read_bytes()


def test_a_chunked_order_visits_every_image_once_chunk_by_chunk():
    sizes = [5, 3, 4]
    order = chunked_order(sizes, seed=0, epoch=1)
    assert sorted(order.tolist()) == list(range(12))
    chunk = [0] * 5 + [1] * 3 + [2] * 4
    runs = [chunk[i] for i in order]
    assert sum(a != b for a, b in zip(runs, runs[1:], strict=False)) == 2  # one chunk after another
    assert not (order == chunked_order(sizes, seed=0, epoch=2)).all()


def test_convert_refuses_a_folder_without_train_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path), str(tmp_path / "out")]) == 2  # python -m datamodules.shards <folder> <out>
    assert capsys.readouterr().err == f"error: {tmp_path} must hold train/<class>/ (and val/<class>/) folders\n"


@pytest.mark.slow  # a 2-process DDP run through the CLI (~1-2 min on a busy 2-core machine)
def test_ddp_on_two_cpu_processes_sees_every_image_once_per_epoch(tmp_path):
    root = numbered_folder(tmp_path / "images", images=21, val=4)
    convert(root, tmp_path / "shards", chunk_size="4KB", workers=1)
    ids = tmp_path / "ids.jsonl"
    result = run_cli(
        tmp_path, "task=resnet", "data=shards", f"data.root={tmp_path / 'shards'}", "data.num_workers=1",
        "model.arch=resnet18", "model.weights=null", "finetune=scratch", "data.image_size=16", "data.batch_size=4",
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
        "trainer.sync_batchnorm=false", "trainer.max_epochs=2", "logger=csv", "test=false",
        "+callbacks.ids._target_=sample_ids.RecordLabels", f"+callbacks.ids.path={ids}",
        timeout=600, env=cli_env(tmp_path, PYTHONPATH=str(Path(__file__).parents[1] / "helpers")),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [recorded(ids), recorded(ids.with_name(ids.name + ".rank1"))]
    for epoch in range(2):
        mine = [[i for r in rank if r["epoch"] == epoch for i in r["labels"]] for rank in ranks]
        assert len([r for r in ranks[0] if r["epoch"] == epoch]) == len([r for r in ranks[1] if r["epoch"] == epoch])
        assert not set(mine[0]) & set(mine[1])  # no image on both ranks
        assert sorted(mine[0] + mine[1]) == list(range(21))  # and none left out: 21 = 11 + 10
