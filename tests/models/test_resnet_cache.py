"""Head-only training on cached backbone features equals training through the whole network."""

from functools import partial

import lightning.pytorch as pl
import pytest
import torch
from configured import configured


def fit_head(cache: bool) -> tuple[torch.Tensor, float]:
    pl.seed_everything(0)
    dm = configured(
        "data=cifar10",
        "data",
        synthetic=True,
        synthetic_size=96,
        batch_size=16,
        eval_batch_size=32,
        hflip=False,
        crop_padding=0,
        mean=[0.5] * 3,
        std=[0.25] * 3,
    )
    torch.manual_seed(1)
    model = configured(
        "task=resnet",
        "model",
        arch="resnet18",
        weights=None,
        finetune="head",
        cache_features=cache,
        optimizer=partial(torch.optim.Adam, lr=1e-3),
    )
    stats = model.net.layer2[0].bn1.running_mean.clone()
    trainer = pl.Trainer(
        callbacks=[configured("task=resnet", "callbacks.feature_cache")],
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert model.caches_features() == cache and not dm.features  # the cache is dropped after fitting
    assert torch.equal(model.net.layer2[0].bn1.running_mean, stats)  # frozen BN did not drift
    return model.net.fc.weight.detach().clone(), float(trainer.callback_metrics["val/loss"])


def test_cached_and_uncached_head_training_agree():
    w_cached, val_cached = fit_head(cache=True)
    w_full, val_full = fit_head(cache=False)
    assert not torch.equal(
        w_cached, configured("task=resnet", "model", arch="resnet18", weights=None).net.fc.weight
    )  # it trained
    torch.testing.assert_close(w_cached, w_full, rtol=1e-4, atol=1e-5)
    assert abs(val_cached - val_full) < 1e-4


def test_features_replace_images_only_for_the_asked_splits():
    dm = configured("data=cifar10", "data", synthetic=True, synthetic_size=40, batch_size=8)
    dm.cache_features(lambda x: x.mean(dim=(2, 3)), splits=("train",))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3) and x.dtype == torch.float32  # features, untransformed
    assert next(iter(dm.val_dataloader()))[0].shape[1:] == (3, 32, 32)  # val: still images
    dm.clear_feature_cache()
    assert next(iter(dm.train_dataloader()))[0].shape[1:] == (3, 32, 32)


def test_the_head_only_path_is_chosen_by_type_not_by_shape():
    """Features computed by the backbone are BackboneFeatures: the forward runs only the head on
    them. A plain (B, D) tensor is not taken for features (it used to be, by its rank)."""
    from models.finetuning import BackboneFeatures

    model = configured("task=resnet", "model", arch="resnet18", weights=None, num_classes=10).eval()
    images = torch.rand(2, 3, 32, 32)
    features = model.features(images)
    assert isinstance(features, BackboneFeatures) and features.shape == (2, 512)
    assert isinstance(torch.cat([features, features])[1:3].to("cpu"), BackboneFeatures)  # as a data module serves it
    torch.testing.assert_close(model(features), model(images))
    with pytest.raises(RuntimeError):  # a plain 2-D tensor goes through the whole network, which refuses it
        model(torch.zeros(2, 512))
