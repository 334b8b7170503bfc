"""open_clip loading through the real code path, with a tiny random model saved to disk."""

import json

import numpy as np
import pytest
import torch
from configured import configured
from tiny_models import TINY_CLIP_SCRATCH

from models.clip import load_clip

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


@pytest.fixture
def tiny_clip(tmp_path):
    """(model config path, checkpoint path) of a tiny random open_clip model."""
    config = tmp_path / "tiny-clip-test.json"
    config.write_text(json.dumps(TINY))
    torch.manual_seed(0)
    model, _ = load_clip("tiny-clip-test", None, str(config))
    ckpt = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    return config, ckpt, model


def test_tiny_checkpoint_loads_back_and_the_tokenizer_works_offline(tiny_clip, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config, ckpt, original = tiny_clip
    module = configured("task=clip", "model", name="tiny-clip-test", pretrained=str(ckpt), model_config=str(config))
    for (k, a), (_, b) in zip(module.model.state_dict().items(), original.state_dict().items(), strict=False):
        assert torch.equal(a, b), k
    texts = module.encode_texts(["a photo of a cat.", "a photo of a dog."])
    assert texts.shape == (2, 32)
    assert abs(float((texts**2).sum(1).mean()) - 1) < 1e-5
    images = module.encode_images(torch.rand(3, 3, 32, 32))
    torch.testing.assert_close(images.norm(dim=1), torch.ones(3))
    assert module.image_size == 32


def test_vit_b_32_tokenizer_ships_with_open_clip(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import open_clip

    tokens = open_clip.get_tokenizer("ViT-B-32")(["a photo of a bird."])
    assert tokens.shape == (1, 77) and int(tokens[0, 0]) == 49406  # start-of-text


def test_pretrained_tag_offline_fails_fast_naming_the_keys(monkeypatch, no_waiting):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine with no network: no 46 s of retries
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE
    )  # restored after
    with pytest.raises(RuntimeError) as err:
        load_clip("ViT-B-32", "openai")
    assert no_waiting == []  # no connection tried, no retry waited for
    assert "model.pretrained" in str(err.value)


def test_bad_names_name_their_keys():
    with pytest.raises(ValueError, match="model.name"):
        load_clip("ViT-Z-99", None)
    with pytest.raises(ValueError, match="model.pretrained"):
        load_clip("ViT-B-32", "no-such-tag")


def small_clip(**kwargs):
    from functools import partial

    torch.manual_seed(0)
    optimizer = partial(torch.optim.AdamW, lr=1e-2)
    keys = {"finetune": "scratch", "scratch": TINY_CLIP_SCRATCH, "optimizer": optimizer, **kwargs}
    module = configured("task=clip", "model", **keys)
    data = type("Data", (), {"classes": ["cat", "dog", "bird"], "labelled": True})()
    module.check_setup(model=module, datamodule=data)
    module.adapt_to_data(data)
    module.setup("fit")
    return module


def test_scratch_config_is_an_open_clip_config_and_bad_keys_name_themselves():
    from models.clip import register_config, scratch_config

    config = scratch_config(**TINY_CLIP_SCRATCH, temperature=0.05)
    assert config["vision_cfg"] == {"image_size": 28, "patch_size": 7, "width": 32, "layers": 1, "head_width": 16}
    assert config["init_logit_scale"] == pytest.approx(np.log(20.0))
    name, path = register_config(config)
    model, tokenizer = load_clip(name, None, path)  # open_clip builds it from the registered JSON
    assert model.visual.image_size == (28, 28) and tokenizer(["a cat"]).shape == (1, 16)
    other = scratch_config(**{**TINY_CLIP_SCRATCH, "embed_dim": 8})
    assert register_config(other)[0] != name  # another config, another name
    with pytest.raises(ValueError, match="model.scratch.patch_size=5 does not divide model.scratch.image_size=28"):
        scratch_config(**{**TINY_CLIP_SCRATCH, "patch_size": 5})
    with pytest.raises(ValueError, match="model.scratch.text_heads=3 does not divide model.scratch.text_width=32"):
        scratch_config(**{**TINY_CLIP_SCRATCH, "text_heads": 3})
    with pytest.raises(ValueError, match="model.scratch.vision_layers must be a positive integer"):
        scratch_config(**{**TINY_CLIP_SCRATCH, "vision_layers": 0})


def test_each_distinct_caption_is_encoded_once_and_the_loss_is_the_same_as_encoding_every_one():
    import open_clip
    import torch.nn.functional as F

    module = small_clip(train_templates=["a {}.", "a photo of a {}.", "the {}.", "this is a {}."])
    x, y = torch.rand(12, 3, 28, 28), torch.tensor([0, 1, 2] * 4)
    image, text = module.pair_features(x, y, train=False)  # template i mod 4: 12 captions, 3 distinct
    tokens = module.caption_tokens[y, torch.arange(12) % 4]
    direct = module.model.encode_text(tokens)  # independently: every caption through the text tower
    torch.testing.assert_close(text, direct, atol=1e-5, rtol=1e-5)
    loss = module.loss(F.normalize(image, dim=-1), F.normalize(text, dim=-1), module.model.logit_scale.exp())
    reference = open_clip.ClipLoss()(
        F.normalize(module.model.encode_image(x), dim=-1), F.normalize(direct, dim=-1), module.model.logit_scale.exp()
    )
    torch.testing.assert_close(loss, reference)
    assert module.caption_tokens.shape == (3, 4, 16)


def test_a_fixed_temperature_stays_and_a_learned_one_moves_within_clip_s_clamp():
    for learn in (False, True):
        module = small_clip(temperature=0.3, learn_temperature=learn)
        assert module.model.logit_scale.requires_grad == learn
        optimizer = module.configure_optimizers()
        before = float(module.model.logit_scale.detach())
        assert before == pytest.approx(np.log(1 / 0.3))
        for _ in range(3):
            loss = module.training_step((torch.rand(6, 3, 28, 28), torch.tensor([0, 1, 2, 0, 1, 2])), 0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            module.on_train_batch_end(None, None, 0)
        after = float(module.model.logit_scale.detach())
        assert (after != before) == learn and 0 <= after <= np.log(100) + 1e-6
    no_decay = optimizer.param_groups[1]["params"]
    assert any(p is module.model.logit_scale for p in no_decay) and optimizer.param_groups[1]["weight_decay"] == 0


def test_two_views_are_independent_augmentations_of_each_image():
    from models.clip import two_views

    torch.manual_seed(0)
    x = torch.rand(64, 3, 28, 28)
    a, b = two_views(x), two_views(x)
    assert a.shape == x.shape and not torch.allclose(a, b)
    same = two_views(x, scale=(1.0, 1.0), shift=0.0)  # no zoom, no shift: the image or its mirror image
    mirrored = (same - x.flip(-1)).abs().amax((1, 2, 3)) < 1e-5
    kept = (same - x).abs().amax((1, 2, 3)) < 1e-5
    assert (mirrored | kept).all() and mirrored.any() and kept.any()


def test_the_same_modality_control_has_two_image_towers_and_no_text_tower():
    module = small_clip(partner="image")
    assert module.model.transformer is None and module.partner_tower.image_size == (28, 28)
    a, b = module.encode_pair(torch.rand(5, 3, 28, 28))
    assert a.shape == b.shape == (5, 16)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(5))
    with pytest.raises(ValueError, match="not a CLIP"):
        module.open_clip_export()
