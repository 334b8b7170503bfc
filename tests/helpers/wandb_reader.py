"""Reads an offline W&B run's `.wandb` file back (tests only).

wandb 0.31 has no public reader for offline runs. The file is a 7-byte header (":W&B", magic,
version) followed by a LevelDB-style log of 32 KiB blocks whose records (7-byte header: crc32,
length, type FULL/FIRST/MIDDLE/LAST) each carry one serialized `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a .wandb file"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left_in_block
            continue
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            pending = payload
        elif kind == FIRST:
            pending = payload
            continue
        elif kind == MIDDLE:
            pending += payload
            continue
        elif kind == LAST:
            pending += payload
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(pending)
        yield rec


def read_run(path: str | Path) -> dict:
    """{'group': ..., 'config': {...}, 'history': [{key: value}, ...], 'summary': {...}}."""
    out = {"group": None, "config": {}, "history": [], "summary": {}}
    for rec in records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["group"] = rec.run.run_group
            for item in rec.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            row = {}
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            out["history"].append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                key = item.key or "/".join(item.nested_key)
                out["summary"][key] = json.loads(item.value_json)
    return out
