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

from lightning.pytorch.callbacks import Callback

from analysis.contracts import CachesFeatures, FeatureHead

log = logging.getLogger(__name__)


class FeatureCache(Callback):
    module_needs = (FeatureHead,)
    data_needs = (CachesFeatures,)

    def __init__(self, splits: tuple[str, ...] = ("train", "val")):
        self.splits = tuple(splits)

    def on_fit_start(self, trainer, pl_module):
        if not pl_module.caches_features():
            return
        was_training = pl_module.training
        pl_module.eval()
        trainer.datamodule.cache_features(pl_module.features, splits=self.splits)
        pl_module.train(was_training)
        log.info("head-only fine-tuning on backbone features computed once (%s, unaugmented)", ", ".join(self.splits))

    def on_fit_end(self, trainer, pl_module):
        trainer.datamodule.clear_feature_cache()
