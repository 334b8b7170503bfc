"""open_clip loading through the real code path, with a tiny random model saved to disk."""

import json
import time

import pytest
import torch

from models import ClipZeroShot
from models.clip_module import load_clip

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
    module = ClipZeroShot(name="tiny-clip-test", pretrained=str(ckpt), model_config=str(config))
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


def test_pretrained_tag_offline_fails_fast_naming_the_keys(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine with no network: no 46 s of retries
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE
    )  # restored after
    start = time.time()
    with pytest.raises(RuntimeError) as err:
        load_clip("ViT-B-32", "openai")
    assert time.time() - start < 15
    assert "model.pretrained" in str(err.value)


def test_bad_names_name_their_keys():
    with pytest.raises(ValueError, match="model.name"):
        load_clip("ViT-Z-99", None)
    with pytest.raises(ValueError, match="model.pretrained"):
        load_clip("ViT-B-32", "no-such-tag")
