"""Shards for clusters: a `data=folder` tree converted once into litdata's chunked format, then
streamed from a local disk or a shared file system (`data=shards`).

    python -m datamodules.shards <image folder> <shard folder> [--chunk-size 256MB] [--workers N]

Each image is stored as its file's bytes (no re-encoding, no loss), with its label and its index in
the folder's sorted file list; <shard folder>/classes.json keeps the class names and
<shard folder>/<split>/ litdata's chunks and index.json (litdata's own StreamingDataset reads them
too). Reading is by position, straight from the chunk files (ChunkReader: litdata's own random
access is two orders of magnitude slower), in our order, chunk by chunk (each pass visits the
chunks in a seeded order and the images of each chunk in a seeded order, so reads stay within
few chunks at a time), split over DDP ranks and resumed mid-epoch exactly as for data=folder
(folder.py). Why litdata, and what was
measured against webdataset and mosaicml-streaming: README, "Data at scale".
"""

from __future__ import annotations

import argparse
import json
import logging
import mmap
import multiprocessing
import os
import struct
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .folder import SPLITS, Augment, EncodedImages, FolderDataModule, class_folders, scan

log = logging.getLogger(__name__)


# -- writing -------------------------------------------------------------------------------------
def _record(item: tuple[str, int, int]) -> dict:
    path, label, index = item
    return {"image": Path(path).read_bytes(), "label": label, "index": index}


def convert(folder: str | Path, out: str | Path, chunk_size: str = "256MB", workers: int = 1) -> dict[str, int]:
    """Write every split of `folder` as litdata chunks under `out`; images per split."""
    folder, out = Path(folder).expanduser(), Path(out).expanduser()
    if not (folder / "train").is_dir():
        raise FileNotFoundError(f"{folder} must hold train/<class>/ (and val/<class>/) folders")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: convert into a new folder")
    classes = class_folders(folder / "train")
    counts = {}
    start_method = multiprocessing.get_start_method(allow_none=True)
    try:
        for split in SPLITS:
            counts.update(_convert_split(folder, out, split, classes, chunk_size, workers))
    finally:  # litdata.optimize forces the process-wide start method to spawn: put back what DataLoaders had
        multiprocessing.set_start_method(start_method, force=True)
    (out / "classes.json").write_text(json.dumps(classes))
    return counts


def _convert_split(folder: Path, out: Path, split: str, classes, chunk_size: str, workers: int) -> dict[str, int]:
    import litdata

    if not (folder / split).is_dir():
        return {}
    paths, labels = scan(folder / split, classes)
    items = [(str(folder / split / p.decode()), int(y), i) for i, (p, y) in enumerate(zip(paths, labels, strict=True))]
    if workers <= 1:  # in this process: litdata's writer, no worker processes to start
        from litdata.streaming.writer import BinaryWriter

        (out / split).mkdir(parents=True, exist_ok=True)
        writer = BinaryWriter(str(out / split), chunk_bytes=chunk_size)
        for item in items:
            writer.add_item(item[2], _record(item))
        writer.done()
        writer.merge(num_workers=1)
    else:
        litdata.optimize(
            fn=_record,
            inputs=items,
            output_dir=str(out / split),
            chunk_bytes=chunk_size,
            num_workers=min(workers, len(items)),
            mode="overwrite",
        )
    return {split: len(items)}


def chunk_sizes(split_dir: Path) -> list[int]:
    """Images per chunk, in the order of litdata's global index."""
    index = json.loads((split_dir / "index.json").read_text())
    return [int(c["chunk_size"]) for c in index["chunks"]]


# -- reading -------------------------------------------------------------------------------------
class ChunkReader:
    """Random access to what `convert` wrote, by position: litdata's chunk format read directly
    (a chunk file: uint32 item count, uint32 offsets[count + 1], the items; an item: one uint32 size
    per field, then the fields: the image bytes, the label and the index as int64), memory-mapped,
    the last few chunks kept open. litdata's own StreamingDataset[i] gave 51 records/s here against
    5,998 records/s for its sequential iteration (README, "Data at scale"); this gives the images in
    our order at the speed of the files."""

    FIELDS = ["bytes", "int", "int"]  # image, label, index: what convert() writes

    def __init__(self, split_dir: Path, keep: int = 4):
        index = json.loads((Path(split_dir) / "index.json").read_text())
        if index["config"].get("data_format") != self.FIELDS or index["config"].get("compression"):
            raise ValueError(f"{split_dir}: not shards written by python -m datamodules.shards")
        self.split_dir = Path(split_dir)
        self.files = [c["filename"] for c in index["chunks"]]
        self.starts = np.cumsum([0] + [int(c["chunk_size"]) for c in index["chunks"]])
        self.keep = keep
        self._open: dict[int, mmap.mmap] = {}

    def _chunk(self, c: int) -> mmap.mmap:
        if c not in self._open:
            if len(self._open) >= self.keep:
                self._open.pop(next(iter(self._open))).close()
            with open(self.split_dir / self.files[c], "rb") as f:
                self._open[c] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._open[c]

    def __getitem__(self, position: int) -> tuple[bytes, int, int]:
        """(image bytes, label, index in the folder's file list)"""
        c = int(np.searchsorted(self.starts, position, side="right")) - 1
        mm = self._chunk(c)
        local = position - int(self.starts[c])
        begin, end = struct.unpack_from("<II", mm, 4 * (1 + local))
        size = struct.unpack_from("<I", mm, begin)[0]
        data = begin + 12
        label, index = struct.unpack_from("<qq", mm, data + size)
        return mm[data : data + size], label, index


class ShardDataset(EncodedImages):
    """One split's chunks, by position (data=folder's decoding and transforms: EncodedImages). Each
    process opens its own reader."""

    def __init__(self, split_dir: Path, augment: Augment, gray: bool, **kw):
        super().__init__(augment, gray, **kw)
        self.split_dir = str(split_dir)
        self.sizes = chunk_sizes(Path(split_dir))
        self._reader: ChunkReader | None = None
        ChunkReader(Path(split_dir))  # the format is checked now, not in a worker

    def __len__(self) -> int:
        return sum(self.sizes)

    def __getstate__(self):
        return {**self.__dict__, "_reader": None}  # each worker opens its own

    def record(self, position: int) -> tuple[bytes, int, int]:
        if self._reader is None:
            self._reader = ChunkReader(Path(self.split_dir))
        return self._reader[position]

    def encoded(self, index: int) -> tuple[bytes, int, str]:
        data, label, _ = self.record(index)
        return data, int(label), f"{self.split_dir}[{index}]"


def chunked_order(sizes: list[int], seed: int, epoch: int) -> np.ndarray:
    """One pass's order: the chunks in a seeded order, the images of each chunk in a seeded order."""
    rng = np.random.default_rng([seed, epoch])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return np.concatenate([starts[c] + rng.permutation(sizes[c]) for c in rng.permutation(len(sizes))])


class ShardsDataModule(FolderDataModule):
    """`data=shards`: what `python -m datamodules.shards` wrote (root/classes.json, root/train/,
    root/val/, root/test/), streamed with the same transforms, rank split and resume as data=folder."""

    name = "shards"

    def find_splits(self) -> tuple[tuple[str, ...], dict[str, Any]]:
        if not (self.root / "classes.json").is_file():
            raise FileNotFoundError(
                f"data.root={self.root} holds no shards (classes.json): convert a folder first with "
                "python -m datamodules.shards <image folder> <shard folder>"
            )
        classes = tuple(json.loads((self.root / "classes.json").read_text()))
        datasets: dict[str, Any] = {
            split: ShardDataset(self.root / split, self.augment, self.channels == 1, gpu_decode=self.gpu_decode)
            for split in SPLITS
            if (self.root / split / "index.json").is_file()
        }
        if "train" not in datasets or "val" not in datasets:
            raise FileNotFoundError(f"data.root={self.root} must hold train/ and val/ shards")
        return classes, datasets

    def _batches(self, name: str, shuffle: bool, device=None, limit=None):
        loader = super()._batches(name, shuffle, device, limit)
        if shuffle and hasattr(loader, "order"):
            loader.order = partial(chunked_order, self.datasets[name].sizes)
        return loader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.shards",
        description="Convert an image folder (train/<class>/*, val/<class>/*, test/<class>/*) into litdata "
        "shards for data=shards (each image's bytes as they are, its label and its index).",
    )
    parser.add_argument("folder", help="the image folder (what data=folder reads)")
    parser.add_argument("out", help="a new folder for the shards (data.root of data=shards)")
    parser.add_argument("--chunk-size", default="256MB", help="bytes per chunk file, e.g. 256MB (the default), 64KB")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="writing processes")
    args = parser.parse_args(argv)
    try:
        counts = convert(args.folder, args.out, args.chunk_size, args.workers)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(f'{s}: {n} images' for s, n in counts.items())} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
