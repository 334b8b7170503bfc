"""The vit analyses on a stub model whose answer is known: it sees only the top-left patch."""

from types import SimpleNamespace

import pytest
import torch
from configured import configured

from analysis import attention as A
from analysis.contracts import AttentionStep

SIDE, PATCH = 4, 8  # a 4x4 grid of 8-pixel patches: 32 px images, 16 patches


class TopLeftModel:
    """Predicts class 0 while the top-left patch is bright, class 1 once it is masked (zero fill).
    Its CLS token attends to the top-left patch most, then less and less along the grid."""

    patch_size, grid_side, device = PATCH, SIDE, torch.device("cpu")

    def logits(self, x):
        bright = x[:, :, :PATCH, :PATCH].mean(dim=(1, 2, 3))
        return torch.stack([10 * bright, torch.full_like(bright, 0.5)], dim=1)

    def dataset_scores(self, logits):
        return logits.softmax(-1)

    @staticmethod
    def attentions(batch: int, layers: int = 2, heads: int = 3) -> torch.Tensor:
        t = SIDE * SIDE + 1
        a = torch.full((layers, batch, heads, t, t), 1.0)
        a[..., 0, 1:] = torch.linspace(50, 1, t - 1)  # CLS -> patch 0 strongest, then falling
        return a / a.sum(-1, keepdim=True)


def trainer_stub(tmp_path):
    return SimpleNamespace(
        default_root_dir=str(tmp_path),
        is_global_zero=True,
        loggers=[],
        global_step=0,
        callback_metrics={},
        datamodule=SimpleNamespace(classes=["bright", "dark"]),
    )


def outputs(model, n, labelled) -> AttentionStep:
    """A test batch's outputs as the ViT's test_step returns them (analysis.contracts.AttentionStep)."""
    x = torch.ones(n, 3, SIDE * PATCH, SIDE * PATCH)
    logits = model.logits(x)
    return {
        "pixels": x,
        "logits": logits,
        "attentions": model.attentions(n),
        "cls": torch.zeros(n, 8),
        "patch_mean": torch.zeros(n, 8),
        "labels": torch.zeros(n, dtype=torch.long) if labelled else torch.full((n,), -1),
        "dataset_scores": model.dataset_scores(logits) if labelled else None,
        "rollouts": {},
    }


@pytest.mark.parametrize("labelled", [False, True])
def test_masking_curves_have_the_known_answers(tmp_path, labelled):
    model, trainer = TopLeftModel(), trainer_stub(tmp_path)
    fractions = [0.0, 0.25, 0.5, 1.0]
    cb = configured(
        "task=vit", "callbacks.patch_masking", fractions=fractions, trials=200, fill="zero", discard_ratio=0.0,
        max_images=6, seed=0,
    )  # fmt: skip
    cb.on_test_epoch_start(trainer, model)
    for b in range(2):  # two batches of 4, of which 6 images are taken
        cb.on_test_batch_end(trainer, model, outputs(model, 4, labelled), None, b)
    cb.on_test_epoch_end(trainer, model)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["masking/images"] == 6
    for measure in ["agreement"] + (["accuracy"] if labelled else []):
        # most attended first masks the top-left patch from the first masked patch on
        assert [m[f"masking/random/{measure}@{f:g}"] for f in (0.0, 1.0)] == [1.0, 0.0]
        assert m[f"masking/most_attended_first/{measure}_auc"] == pytest.approx(1.0 * 0.25 / 2)  # 1 at f=0, 0 after
        assert m[f"masking/least_attended_first/{measure}_auc"] == pytest.approx(
            0.25 + 0.25 + 0.5 / 2
        )  # 1 until f=1, trapezoid to 0 at f=1
        # random: the top-left patch survives with probability 1 - f (exact over 16 patches), 200 draws each
        assert m[f"masking/random/{measure}@0.25"] == pytest.approx(0.75, abs=0.06)
        assert m[f"masking/random/{measure}@0.5"] == pytest.approx(0.5, abs=0.06)
        expected = {"centre": 1.0, "border": 0.0, "stripes": 0.0, "checkerboard": 0.0}
        assert {k: m[f"masking/structured/{k}/{measure}"] for k in expected} == expected
    assert ("masking/random/accuracy_auc" in m) == labelled
    assert (tmp_path / "figures" / "masking_deletion_curves.png").is_file() and (
        tmp_path / "figures" / "masking_examples.png"
    ).is_file()
    rows = (tmp_path / "tables" / "masking_curves.csv").read_text().splitlines()
    assert rows[0] == "measure,curve,fraction_masked,trial,value"


def test_masking_refuses_bad_settings():
    with pytest.raises(ValueError, match="callbacks.patch_masking.fractions"):
        configured("task=vit", "callbacks.patch_masking", fractions=[0.1, 1.5])
    with pytest.raises(ValueError, match="callbacks.patch_masking.fill"):
        configured("task=vit", "callbacks.patch_masking", fill="blur")
    with pytest.raises(ValueError, match="callbacks.patch_masking.structured"):
        configured("task=vit", "callbacks.patch_masking", structured=["diagonal"])
    with pytest.raises(ValueError, match="patch_masking.head_fusion"):
        configured("task=vit", "callbacks.patch_masking", head_fusion="median")  # the saliency masks' rollout


@pytest.mark.parametrize("key", ["callbacks.attention_maps", "callbacks.attention_rollout"])
def test_overlays_refuse_a_bad_colormap_or_opacity(key):
    """Both heat-map overlays check their colour map and opacity when built, not when the first figure is
    drawn after the test pass (the rollout's used to fail there, minutes into a run)."""
    with pytest.raises(ValueError, match=rf"{key}.colormap='rainbowz' is not a matplotlib colormap"):
        configured("task=vit", key, colormap="rainbowz")
    for alpha in (1.5, -0.1, "half"):
        with pytest.raises(ValueError, match=rf"{key}.alpha must lie in \[0, 1\], got"):
            configured("task=vit", key, alpha=alpha)
    assert configured("task=vit", key, colormap="viridis", alpha=1.0).alpha == 1.0


def test_attention_statistics_over_images(tmp_path):
    """Uniform CLS rows: entropy log(16) in every head; heads with the same map correlate 1."""
    model, trainer = TopLeftModel(), trainer_stub(tmp_path)
    t = SIDE * SIDE + 1
    uniform = {
        "pixels": torch.rand(3, 3, 32, 32),
        "labels": torch.full((3,), -1),
        "attentions": torch.full((2, 3, 4, t, t), 1.0 / t),
    }
    cb = configured("task=vit", "callbacks.attention_maps", num_images=1, max_images=None)
    cb.on_test_epoch_start(trainer, model)
    cb.on_test_batch_end(trainer, model, uniform, None, 0)
    cb.on_test_epoch_end(trainer, model)
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert m["attention/layer_1/entropy"] == pytest.approx(torch.log(torch.tensor(16.0)).item(), abs=1e-5)
    assert m["attention/layer_2/head_correlation"] == 0.0  # constant maps: no correlation defined, reported 0
    ramp = A.cls_attention(TopLeftModel.attentions(3, heads=4))
    assert A.head_correlation(ramp[0]).allclose(torch.ones(4, 4))
    names = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert names == {
        "attention_heads_0.png",
        "attention_fused_0.png",
        "attention_head_entropy.png",
        "attention_head_correlation.png",
    }
