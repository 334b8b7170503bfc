"""Checkpoints a run can trust: written atomically, checked before they are loaded, and named
relative to the run folder, so a moved or copied folder resumes and tests its own files.

- `AtomicCheckpointIO` (a Trainer plugin): every .ckpt is written to a temporary file in the same
  folder, flushed to disk and renamed over the old one; a kill mid-write leaves the old file whole.
- `RunCheckpoint` (Lightning's ModelCheckpoint): the paths it keeps in a checkpoint are rebased onto
  the folder it is in now, so `best.ckpt` after `mv run elsewhere` is elsewhere's.
- `verify(path)`: a checkpoint is a zip whose every member passes its CRC and whose pickle holds
  Lightning's keys; anything else (a truncated file, a random file) is named in one line.
- `resume_point(out)`: the newest intact checkpoint of a run folder, last.ckpt first.
- `check_classes`: a checkpoint keeps the class names of the data it was trained on (`data_classes`,
  written by RunCheckpoint); evaluating it on a data set with other classes is refused in one line
  (a head of the same size would otherwise score one data set's labels as another's).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


DATA_CLASSES = "data_classes"  # the key of the class names a checkpoint's model was trained on


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint; the message says what is wrong with it, in one line."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into `<file>.tmp` beside the target, fsync, then os.replace: never half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)  # a write cut short (a signal, a lost rank): no half file left behind
            raise
        os.replace(tmp, path)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose remembered files (best, last, top-k) follow the run folder: on load,
    every path is rebased onto this callback's `dirpath`, wherever the checkpoint was written."""

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's own key, so that checkpoints written before this class restore into it."""
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        classes = getattr(getattr(trainer, "datamodule", None), "classes", None)
        if classes:
            checkpoint[DATA_CLASSES] = [str(c) for c in classes]
        super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        here = Path(self.dirpath) if self.dirpath else None
        if here is not None:
            state_dict = dict(state_dict, dirpath=str(here))

            def rebase(p):
                return str(here / Path(p).name) if p else p

            for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
                if key in state_dict:
                    state_dict[key] = rebase(state_dict[key])
            if "best_k_models" in state_dict:
                state_dict["best_k_models"] = {rebase(k): v for k, v in state_dict["best_k_models"].items()}
        super().load_state_dict(state_dict)


def verify(path: Path) -> dict[str, Any]:
    """The checkpoint at `path`, loaded lazily (tensors memory-mapped, not read), after checking it
    is whole. Raises CheckpointError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path} is damaged or not a checkpoint ({e}: truncated, or another kind of file)") from e
    if bad is not None:
        raise CheckpointError(f"{path} is damaged: its member {bad} fails its checksum")
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as e:  # noqa: BLE001 - whatever unpickling raises, the file is not usable
        raise CheckpointError(f"{path} cannot be loaded ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        raise CheckpointError(f"{path} is not a Lightning checkpoint of this framework (no state_dict/global_step)")
    return ckpt


def resume_point(out: Path) -> tuple[Path | None, str | None, dict[str, Any]]:
    """(checkpoint to continue from, a line to show, the checkpoint loaded lazily) for the run in
    `out`: last.ckpt when it is intact, else the intact checkpoint beside it with the most steps
    (saying which), else (None, why, {})."""
    folder = out / "checkpoints"
    if not folder.is_dir():
        return None, None, {}
    last = folder / "last.ckpt"
    if last.is_file():
        try:
            return last, None, verify(last)
        except CheckpointError as e:
            damaged = str(e)
    else:
        damaged = None
    intact = []
    for candidate in sorted(p for p in folder.glob("*.ckpt") if p != last):
        try:
            intact.append((candidate, verify(candidate)))
        except CheckpointError as e:
            damaged = damaged or str(e)
    if not intact:
        why = f"{damaged}; no intact checkpoint is left in {folder}: the run starts from the beginning"
        return None, why if damaged else None, {}
    path, ckpt = max(intact, key=lambda pc: pc[1]["global_step"])  # the furthest, whatever its file's age
    where = f"epoch {ckpt.get('epoch')}, step {ckpt['global_step']}"
    return path, f"{damaged}; continuing from {path.relative_to(out)} ({where}) instead" if damaged else None, ckpt


def trained_as(path: Path) -> str | None:
    """The `finetune` a checkpoint's model was trained with (its saved hyper-parameters; None when it
    has none or cannot be read: `verify` then says what is wrong with it, in one line)."""
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception:  # noqa: BLE001 - verify() reports the file's trouble
        return None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, Mapping) else None
    finetune = hparams.get("finetune") if isinstance(hparams, Mapping) else None
    return finetune if isinstance(finetune, str) else None


def check_classes(path: Path, ckpt: dict[str, Any], classes, key: str) -> None:
    """CheckpointError when the checkpoint was trained on classes other than `classes` (the data's)."""
    theirs = ckpt.get(DATA_CLASSES)
    ours = [str(c) for c in classes or ()]
    if not theirs or not ours or list(theirs) == ours:
        return
    shown = ", ".join(theirs[:4]) + (", ..." if len(theirs) > 4 else "")
    raise CheckpointError(
        f"{key}={path} was trained on other classes ({shown}) than this data set's ({', '.join(ours[:4])}"
        f"{', ...' if len(ours) > 4 else ''}): evaluate it on the data it was trained on (its run's data=)"
    )


def check_fits(path: Path, ckpt: dict[str, Any], model: torch.nn.Module, key: str) -> None:
    """CheckpointError unless the checkpoint's weights have the names and shapes of `model`'s: a
    checkpoint of another task or model is one line, not Lightning's load_state_dict traceback."""
    theirs = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if hasattr(v, "shape")}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    shape = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    if not (missing or unexpected or shape):
        return
    what = f"{len(missing)} of the model's weights missing" if missing else ""
    if shape:
        k = shape[0]
        what = f"{len(shape)} weights of another shape, e.g. {k}: {list(theirs[k])} here vs {list(ours[k])}"
    elif unexpected and not missing:
        what = f"{len(unexpected)} weights the model does not have, e.g. {unexpected[0]}"
    raise CheckpointError(
        f"{key}={path} is a checkpoint of another model or task: {what}; give a checkpoint of this task and model"
    )
