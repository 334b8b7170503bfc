"""transformers ViT loading through the real code path, with a tiny random model saved to disk."""

import contextlib

import numpy as np
import pytest
import torch
from configured import configured
from tiny_models import MEAN, STD, save_tiny_vit

from models import ViTClassifier
from models.vit import resolve_labels, scratch_config


def vit(**settings) -> ViTClassifier:
    """A ViTClassifier with conf/model/vit.yaml's keys and these settings (finetune is the run's)."""
    return configured("task=vit", "model", **settings)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-vit")
    original = save_tiny_vit(folder)
    return folder, original, vit(name=str(folder))


def test_the_saved_model_loads_back_with_its_processor_settings_and_attention_maps_on_demand(tiny):
    folder, original, module = tiny
    for (k, a), (_, b) in zip(module.model.state_dict().items(), original.state_dict().items(), strict=False):
        assert torch.equal(a, b), k
    assert module.model.config._attn_implementation == "sdpa"  # fast by default; eager only inside infer
    assert module.image_size == 32 and module.grid_side == 4 and (module.num_layers, module.num_heads) == (2, 4)
    torch.testing.assert_close(module.mean.flatten(), torch.tensor(MEAN))
    torch.testing.assert_close(module.std.flatten(), torch.tensor(STD))
    out = module.infer(module.pixels(torch.rand(3, 3, 32, 32)))
    assert out["attentions"].shape == (2, 3, 4, 17, 17)
    torch.testing.assert_close(out["attentions"].sum(-1), torch.ones(2, 3, 4, 17))
    assert out["cls"].shape == out["patch_mean"].shape == (3, 32)
    assert module.model.config._attn_implementation == "sdpa"  # back after the pass


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


def test_a_pass_without_attention_maps_is_refused_rather_than_silently_empty(tmp_path, monkeypatch):
    save_tiny_vit(tmp_path)
    module = vit(name=str(tmp_path))
    monkeypatch.setattr(type(module.model), "eager_attention", lambda self: contextlib.nullcontext())  # SDPA stays on
    with pytest.raises(RuntimeError, match="eager"):
        module.infer(torch.rand(1, 3, 32, 32))


SMALL = dict(image_size=16, patch_size=4, hidden_size=16, layers=2, heads=2, mlp_size=32)


class Labelled:
    classes = tuple("abcdefgh")  # 8 classes
    labelled = True


def train_steps(module, steps: int = 5, seed: int = 0):
    """A few AdamW steps on random images and labels, in train mode, as Lightning would run them."""
    g = torch.Generator().manual_seed(seed)
    optimizer = module.configure_optimizers()
    module.train()
    for _ in range(steps):
        x, y = torch.rand(8, 1, 16, 16, generator=g), torch.randint(0, 8, (8,), generator=g)
        loss = module.training_step((x, y), 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return module.eval()


def adamw(params):
    return torch.optim.AdamW(params, lr=1e-2)


def test_sdpa_trained_weights_give_the_same_logits_with_eager_attention(monkeypatch):
    monkeypatch.setattr(ViTClassifier, "log", lambda *a, **k: None)  # no trainer here
    torch.manual_seed(0)
    module = vit(finetune="scratch", scratch=SMALL, optimizer=adamw)
    data = Labelled()
    module.check_setup(model=module, datamodule=data)
    module.adapt_to_data(data)
    assert module.model.config._attn_implementation == "sdpa"
    before = {k: v.clone() for k, v in module.state_dict().items()}
    train_steps(module)
    assert any(not torch.equal(before[k], v) for k, v in module.state_dict().items())  # it did train
    x = torch.rand(6, 3, 16, 16)
    with torch.no_grad():
        sdpa = module(x).logits
        with module.eager_attention():
            assert module.model.config._attn_implementation == "eager"
            eager = module(x).logits
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(module.infer(x)["logits"], sdpa, atol=1e-5, rtol=1e-5)  # what the analyses read


@pytest.mark.parametrize(
    "finetune, trains",
    [
        ("head", {"classifier"}),
        ("last_stage", {"classifier", "vit.layernorm", "vit.layers.1"}),
        ("full", {"classifier", "vit.layernorm", "vit.layers.1", "vit.layers.0", "vit.embeddings"}),
    ],
)
def test_a_pretrained_folder_gets_a_new_head_and_only_its_finetuned_parts_change(
    tmp_path, monkeypatch, finetune, trains
):
    monkeypatch.setattr(ViTClassifier, "log", lambda *a, **k: None)
    original = save_tiny_vit(tmp_path, image_size=16, patch_size=4, hidden_size=16, num_labels=3)
    module = vit(name=str(tmp_path), finetune=finetune, optimizer=adamw)
    module.check_setup(model=module, datamodule=Labelled())
    assert module.model.classifier.out_features == 3  # a check changes nothing
    module.adapt_to_data(Labelled())
    assert module.model.classifier.out_features == 8 and module.class_map == "identity"
    assert module.label_name(7) == "h" and module.model.config.num_labels == 8
    train_steps(module)

    def part(key):  # vit.layers.1.attention... -> vit.layers.1
        return next((p for p in sorted(trains, key=len, reverse=True) if key.startswith(p + ".")), None)

    for key, value in original.state_dict().items():
        if key.startswith("classifier"):
            continue
        changed = not torch.equal(module.model.state_dict()[key], value)
        assert changed == (part(key) is not None), (finetune, key)
    trainable = {k for k, p in module.model.named_parameters() if p.requires_grad}
    assert {part(k) for k in trainable} == trains
    module.train()
    assert not any(m.training for m in module.frozen_modules)  # frozen parts: no dropout while training


@pytest.mark.parametrize(
    "keys, message",
    [
        (dict(image_size=28, patch_size=5), "model.scratch.patch_size=5 does not divide model.scratch.image_size=28"),
        (dict(hidden_size=30, heads=4), "model.scratch.heads=4 does not divide model.scratch.hidden_size=30"),
        (dict(layers=0), "model.scratch.layers must be a positive integer"),
        (dict(dropout=1.5), "model.scratch.dropout must lie in [0, 1)"),
    ],
)
def test_bad_scratch_keys_name_themselves(keys, message):
    with pytest.raises(ValueError) as err:
        scratch_config(**{**SMALL, **keys})
    assert message in str(err.value)


def test_training_needs_pretrained_weights_or_scratch_and_labelled_data(tmp_path):
    with pytest.raises(ValueError, match="finetune=head starts from pretrained weights: set model.name="):
        vit(name=None, finetune="head")
    with pytest.raises(ValueError, match="finetune must be one of"):
        vit(finetune="lora")
    module = vit(finetune="scratch", scratch=SMALL)

    class Folder:
        classes = ()
        labelled = False

    with pytest.raises(
        ValueError, match=r"finetune=scratch\) trains and is tested on labels: choose a labelled data set"
    ):
        module.check_setup(model=module, datamodule=Folder())
    mapped = vit(finetune="scratch", scratch=SMALL, class_map={"a": [0]})
    with pytest.raises(ValueError, match="leave model.class_map null"):
        mapped.check_setup(model=mapped, datamodule=Labelled())


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
    module = vit(name=str(tmp_path))
    assert module.image_size == 32 and module.mean.flatten().tolist() == [0.5, 0.5, 0.5]


def test_hub_id_offline_fails_in_seconds_naming_the_key_and_the_local_option(monkeypatch, no_waiting):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")  # nothing cached
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE)
    with pytest.raises(RuntimeError) as err:
        vit(name="google/vit-base-patch16-224")
    assert no_waiting == []  # no connection tried, no retry waited for
    assert "model.name=google/vit-base-patch16-224" in str(err.value) and "save_pretrained" in str(err.value)


def test_bad_local_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        vit(name=str(tmp_path))
    save_tiny_vit(tmp_path / "broken")
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"not a weights file")
    with pytest.raises(RuntimeError) as err:  # the folder's own error, not a hub story
        vit(name=str(tmp_path / "broken"))
    assert "hub is unreachable" not in str(err.value) and "model.name=" in str(err.value)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        vit(name=str(tmp_path / "missing"))


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
    module = vit(name=str(tmp_path), class_map={"a": [0, 1], "b": ["LABEL_2"], "c": [3, 4, 5]})
    data = FakeData()
    module.check_setup(model=module, datamodule=data)
    module.adapt_to_data(data)
    logits = torch.randn(4, 10)
    p = logits.softmax(-1)
    torch.testing.assert_close(
        module.dataset_scores(logits), torch.stack([p[:, :2].sum(1), p[:, 2], p[:, 3:6].sum(1)], dim=1)
    )
    with pytest.raises(ValueError, match="missing \\['c'\\]"):
        bad = vit(name=str(tmp_path), class_map={"a": [0], "b": [1], "z": [2]})
        bad.check_setup(model=bad, datamodule=FakeData())
    with pytest.raises(ValueError, match="identity"):
        ident = vit(name=str(tmp_path), class_map="identity")
        ident.check_setup(model=ident, datamodule=FakeData())
    assert vit(name=str(tmp_path)).dataset_scores(logits) is None


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
