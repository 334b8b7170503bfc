"""Records/s read out of litdata chunks written by `python -m datamodules.shards`, no decoding:
litdata's StreamingDataset by index (random access), litdata's own shuffled iteration, and our
ChunkReader by index in data=shards' chunked order. Why data=shards has its own reader.

    python scripts/fashion_mnist_folder.py /tmp/fm && python benchmarks/shard_reads.py /tmp/fm --records 3000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path, help="a data=folder tree (train/<class>/*)")
    p.add_argument("--records", type=int, default=3000, help="records read per contender")
    args = p.parse_args()
    import litdata

    from datamodules.shards import ChunkReader, chunk_sizes, chunked_order, convert

    with tempfile.TemporaryDirectory() as tmp:
        convert(args.folder, Path(tmp) / "shards", chunk_size="64MB", workers=1)
        split = Path(tmp) / "shards" / "train"
        order = chunked_order(chunk_sizes(split), 42, 0)[: args.records]
        rates = {}
        ds = litdata.StreamingDataset(str(split))
        start = time.perf_counter()
        for i in order:
            bytes(ds[int(i)]["image"])
        rates["litdata StreamingDataset[i]"] = len(order) / (time.perf_counter() - start)
        it = iter(litdata.StreamingDataset(str(split), shuffle=True, seed=42))
        start = time.perf_counter()
        for _ in range(len(order)):
            bytes(next(it)["image"])
        rates["litdata iteration (its order)"] = len(order) / (time.perf_counter() - start)
        reader = ChunkReader(split)
        start = time.perf_counter()
        for i in order:
            bytes(reader[int(i)][0])
        rates["ChunkReader[i] (data=shards)"] = len(order) / (time.perf_counter() - start)
    for name, r in rates.items():
        print(f"{name:32s} {r:10.0f} records/s")


if __name__ == "__main__":
    main()
