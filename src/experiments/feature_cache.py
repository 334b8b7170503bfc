"""Head-only fine-tuning on features computed once: the one place that joins a model's frozen
backbone to a data module's splits.

With finetune=head and frozen BatchNorm the backbone is a fixed function, so running it every
epoch over the same images is wasted work (and the seed did it at 224 px). Before fitting, this
callback asks the model for its features of the train and val splits (unaugmented, batched, on
the model's device) and hands them to the data module, whose loaders then serve them instead of
images; after fitting the cache is dropped so test and analyses see images again. The model does
not touch the data module, the data module does not know the model (contracts.FeatureHead,
contracts.CachesFeatures).
"""

from __future__ import annotations

import logging
import time

import torch
from lightning.pytorch.callbacks import Callback

from analysis.contracts import CachesFeatures, FeatureHead

log = logging.getLogger(__name__)


class FeatureCache(Callback):
    module_needs = (FeatureHead,)
    data_needs = (CachesFeatures,)

    def __init__(self, *, splits: tuple[str, ...]):
        self.splits = tuple(splits)

    def on_fit_start(self, trainer, pl_module):
        if not pl_module.caches_features():
            return
        dm = trainer.datamodule
        # a run limited to a few batches (debug=smoke, limit_*_batches) needs only their images' features
        limits = {"train": trainer.limit_train_batches, "val": trainer.limit_val_batches}
        sizes = {"train": getattr(dm, "batch_size", None), "val": getattr(dm, "eval_batch_size", None)}
        most = {s: _images(limits.get(s), sizes.get(s)) for s in self.splits}
        log.info(
            "head-only fine-tuning: computing the backbone's features of %s once (unaugmented)",
            ", ".join(s if most[s] is None else f"{s} (first {most[s]} images)" for s in self.splits),
        )
        was_training = pl_module.training
        pl_module.eval()
        chunk = getattr(
            dm, "eval_batch_size", None
        )  # the train split comes in training batches: run it in eval-sized ones
        dm.cache_features(_progress(pl_module.features, chunk=chunk), splits=self.splits, max_images=most)
        pl_module.train(was_training)
        log.info("head-only fine-tuning on backbone features computed once (%s, unaugmented)", ", ".join(self.splits))

    def on_fit_end(self, trainer, pl_module):
        trainer.datamodule.clear_feature_cache()


def _images(limit, batch_size) -> int | None:
    """Images a split needs under a trainer's `limit_*_batches` given as a count (a fraction: all)."""
    if isinstance(limit, int) and not isinstance(limit, bool) and batch_size:
        return limit * batch_size
    return None


def _progress(fn, every_s: float = 10.0, chunk: int | None = None):
    """fn, run on at most `chunk` images at a time, saying every `every_s` seconds how many images it has
    gone through (a big backbone at 224 px on a CPU takes minutes, 32 images at once tens of seconds)."""
    state = {"images": 0, "start": time.monotonic(), "last": time.monotonic(), "previous": time.monotonic()}

    def one(x):
        out = fn(x)
        state["images"] += len(x)
        now = time.monotonic()
        # a line now if the next batch, as long as this one took, would end past every_s without one
        took, state["previous"] = now - state["previous"], now
        if now - state["last"] + took >= every_s:
            state["last"] = now
            log.info("backbone features: %d images (%.0f s)", state["images"], now - state["start"])
        return out

    def counted(x):
        if not chunk or len(x) <= chunk:
            return one(x)
        return torch.cat([one(part) for part in x.split(chunk)])

    return counted
