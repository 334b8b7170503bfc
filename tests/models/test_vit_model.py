"""transformers ViT loading through the real code path, with a tiny random model saved to disk."""

import time

import numpy as np
import pytest
import torch
from tiny_models import MEAN, STD, save_tiny_vit

from models import ViTClassifier
from models.vit_module import resolve_labels


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-vit")
    original = save_tiny_vit(folder)
    return folder, original, ViTClassifier(str(folder))


def test_the_saved_model_loads_back_with_eager_attention_and_its_processor_settings(tiny):
    folder, original, module = tiny
    for (k, a), (_, b) in zip(module.model.state_dict().items(), original.state_dict().items(), strict=False):
        assert torch.equal(a, b), k
    assert module.model.config._attn_implementation == "eager"
    assert module.image_size == 32 and module.grid_side == 4 and (module.num_layers, module.num_heads) == (2, 4)
    torch.testing.assert_close(module.mean.flatten(), torch.tensor(MEAN))
    torch.testing.assert_close(module.std.flatten(), torch.tensor(STD))
    out = module.infer(module.pixels(torch.rand(3, 3, 32, 32)))
    assert out["attentions"].shape == (2, 3, 4, 17, 17)
    torch.testing.assert_close(out["attentions"].sum(-1), torch.ones(2, 3, 4, 17))
    assert out["cls"].shape == out["patch_mean"].shape == (3, 32)


def test_our_pixels_are_what_the_models_own_processor_makes(tiny):
    """At the processor's size there is nothing to resize: rescale and normalise must agree."""
    from PIL import Image
    from transformers import AutoImageProcessor

    folder, _, module = tiny
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    theirs = AutoImageProcessor.from_pretrained(folder)(images=Image.fromarray(image), return_tensors="pt")[
        "pixel_values"
    ]
    ours = (module.pixels(torch.from_numpy(image).permute(2, 0, 1)[None]) - module.mean) / module.std
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(
            module.logits(module.pixels(torch.from_numpy(image).permute(2, 0, 1)[None])),
            module.model(pixel_values=theirs).logits,
        )


def test_grey_and_other_sizes_are_brought_to_the_models_input(tiny):
    _, _, module = tiny
    assert module.pixels(torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)).shape == (2, 3, 32, 32)


def test_sdpa_attention_is_refused_rather_than_silently_empty(tmp_path):
    save_tiny_vit(tmp_path)
    module = ViTClassifier(str(tmp_path))
    module.model.set_attn_implementation("sdpa")
    with pytest.raises(RuntimeError, match="eager"):
        module.infer(torch.rand(1, 3, 32, 32))


def test_attention_gradients_of_a_batch_equal_those_of_each_image_alone(tiny):
    _, _, module = tiny
    x = torch.rand(3, 3, 32, 32)
    target = torch.tensor([1, 4, 7])
    attentions, grads = module.attention_gradients(x, target)
    assert grads.abs().sum() > 0
    for i in range(3):
        a_i, g_i = module.attention_gradients(x[i : i + 1], target[i : i + 1])
        torch.testing.assert_close(attentions[:, i : i + 1], a_i)
        torch.testing.assert_close(grads[:, i : i + 1], g_i, atol=1e-6, rtol=1e-4)


def test_a_missing_processor_falls_back_to_vit_defaults(tmp_path):
    save_tiny_vit(tmp_path, processor=False)
    module = ViTClassifier(str(tmp_path))
    assert module.image_size == 32 and module.mean.flatten().tolist() == [0.5, 0.5, 0.5]


def test_hub_id_offline_fails_in_seconds_naming_the_key_and_the_local_option(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")  # nothing cached
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE)
    start = time.time()
    with pytest.raises(RuntimeError) as err:
        ViTClassifier("google/vit-base-patch16-224")
    assert time.time() - start < 15
    assert "model.name=google/vit-base-patch16-224" in str(err.value) and "save_pretrained" in str(err.value)


def test_bad_local_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        ViTClassifier(str(tmp_path))
    save_tiny_vit(tmp_path / "broken")
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"not a weights file")
    with pytest.raises(RuntimeError) as err:  # the folder's own error, not a hub story
        ViTClassifier(str(tmp_path / "broken"))
    assert "hub is unreachable" not in str(err.value) and "model.name=" in str(err.value)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        ViTClassifier(str(tmp_path / "missing"))


def test_labels_resolve_by_name_synonym_or_index_and_ambiguity_is_an_error():
    id2label = {0: "tabby, tabby cat", 1: "crane", 2: "crane", 3: "Egyptian cat"}
    assert resolve_labels(["tabby cat", "egyptian cat", 2], id2label, "k") == [0, 3, 2]
    with pytest.raises(ValueError, match="several model labels"):
        resolve_labels(["crane"], id2label, "model.class_map.bird")
    with pytest.raises(ValueError, match="no model label"):
        resolve_labels(["zebra"], id2label, "model.class_map.horse")
    with pytest.raises(ValueError, match="out of range"):
        resolve_labels([7], id2label, "k")


class FakeData:
    classes = ("a", "b", "c")


def test_class_map_scores_sum_their_labels_probabilities(tmp_path):
    save_tiny_vit(tmp_path)
    module = ViTClassifier(str(tmp_path), class_map={"a": [0, 1], "b": ["LABEL_2"], "c": [3, 4, 5]})
    module.check_setup(model=module, datamodule=FakeData())
    logits = torch.randn(4, 10)
    p = logits.softmax(-1)
    torch.testing.assert_close(
        module.dataset_scores(logits), torch.stack([p[:, :2].sum(1), p[:, 2], p[:, 3:6].sum(1)], dim=1)
    )
    with pytest.raises(ValueError, match="missing \\['c'\\]"):
        bad = ViTClassifier(str(tmp_path), class_map={"a": [0], "b": [1], "z": [2]})
        bad.check_setup(model=bad, datamodule=FakeData())
    with pytest.raises(ValueError, match="identity"):
        ident = ViTClassifier(str(tmp_path), class_map="identity")
        ident.check_setup(model=ident, datamodule=FakeData())
    assert ViTClassifier(str(tmp_path)).dataset_scores(logits) is None


def test_the_cifar10_preset_names_imagenet_classes_that_exist(compose_cfg, tmp_path):
    """Against torchvision's ImageNet category list standing in for the hub model's id2label."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    cfg = compose_cfg("experiment=vit_cifar10")
    id2label = dict(enumerate(_IMAGENET_CATEGORIES))
    resolved = {c: resolve_labels(v, id2label, c) for c, v in cfg.model.class_map.items()}
    assert list(resolved) == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    every = [i for v in resolved.values() for i in v]
    assert len(every) == len(set(every))  # no ImageNet class counts for two CIFAR classes
    assert _IMAGENET_CATEGORIES[resolved["cat"][0]] == "tabby" and len(resolved["dog"]) == 118
