import numpy as np
import pytest
import torch

from analysis import attention as A


def reference_rollout(att, discard_ratio=0.0):
    """A straightforward per-image, per-layer loop (mean head fusion), written independently."""
    layers, b, h, t, _ = att.shape
    out = []
    for i in range(b):
        result = np.eye(t)
        for layer in range(layers):
            a = att[layer, i].mean(0).numpy().astype(np.float64)
            if discard_ratio > 0:
                k = int(round(t * t * discard_ratio))
                values = [(a[r, c], r, c) for r in range(t) for c in range(1, t)]
                for _, r, c in sorted(values)[:k]:
                    a[r, c] = 0
            a = a + np.eye(t)
            a = a / a.sum(1, keepdims=True)
            result = a @ result
        out.append(result)
    return np.stack(out)


def random_attention(layers=3, b=2, h=4, t=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(layers, b, h, t, t, generator=g, dtype=torch.float64).softmax(-1)


def test_rollout_matches_a_reference_loop():
    att = random_attention()
    np.testing.assert_allclose(A.attention_rollout(att).numpy(), reference_rollout(att), rtol=1e-10)
    np.testing.assert_allclose(
        A.attention_rollout(att, discard_ratio=0.3).numpy(), reference_rollout(att, 0.3), rtol=1e-10
    )


def test_identity_attention_rolls_out_to_the_identity():
    t = 7
    att = torch.eye(t, dtype=torch.float64).expand(4, 2, 3, t, t)
    torch.testing.assert_close(A.attention_rollout(att), torch.eye(t, dtype=torch.float64).expand(2, t, t))


def test_uniform_attention_rolls_out_to_uniform_rows_after_enough_layers():
    t = 5
    att = torch.full((30, 1, 2, t, t), 1 / t, dtype=torch.float64)
    out = A.attention_rollout(att)
    torch.testing.assert_close(out, torch.full_like(out, 1 / t), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.sum(-1), torch.ones(1, t, dtype=torch.float64))  # rows stay distributions


def test_discard_ratio_zeroes_the_right_count_and_spares_cls():
    a = torch.rand(2, 10, 10)
    out = A.discard_lowest(a, 0.25)
    assert ((out == 0).sum(dim=(1, 2)) == 25).all()
    assert torch.equal(out[:, :, 0], a[:, :, 0])


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_head_fusion(fusion):
    att = random_attention()
    ref = {"mean": att.mean(2), "max": att.max(2).values, "min": att.min(2).values}[fusion]
    torch.testing.assert_close(A.fuse_heads(att, fusion), ref)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_random_masks_mask_exactly_round_f_of_196(fraction):
    mask = A.random_patch_mask(fraction, 196, torch.Generator().manual_seed(1), batch=3)
    assert (mask.sum(1) == round(fraction * 196)).all()


def test_masking_touches_only_the_masked_patches():
    images = torch.rand(2, 3, 224, 224)
    mask = A.random_patch_mask(0.3, 196, torch.Generator().manual_seed(2), batch=2)
    out = A.apply_patch_mask(images, mask, 16, fill="zero")
    patches = lambda x: x.unfold(2, 16, 16).unfold(3, 16, 16).permute(0, 2, 3, 1, 4, 5).reshape(2, 196, -1)  # noqa: E731
    changed = (patches(out) != patches(images)).any(-1)
    assert torch.equal(changed, mask)
    assert (patches(out)[mask] == 0).all()
    mean_fill = A.apply_patch_mask(images, mask, 16, fill="mean")
    torch.testing.assert_close(patches(mean_fill)[0][mask[0]][:, 0], images[0, 0].mean().expand(int(mask[0].sum())))


def test_saliency_ordering_masks_the_top_k_first():
    saliency = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.2, 0.3]])
    assert A.saliency_patch_mask(saliency, 0.5).nonzero()[:, 1].tolist() == [1, 2, 3]
    assert A.saliency_patch_mask(saliency, 0.5, most_salient_first=False).nonzero()[:, 1].tolist() == [0, 4, 5]


def test_structured_masks_and_auc():
    assert A.structured_patch_mask("checkerboard").sum() == 98
    assert (
        A.structured_patch_mask("centre").reshape(14, 14)[7, 7]
        and not A.structured_patch_mask("centre").reshape(14, 14)[0, 0]
    )
    assert A.deletion_auc([0, 0.5, 1], [1, 0.5, 0]) == pytest.approx(0.5)


def test_gradient_rollout_keeps_only_positive_evidence():
    att = random_attention(layers=2, b=1, h=2, t=6)
    grads = -torch.ones_like(att)
    torch.testing.assert_close(A.gradient_rollout(att, grads), torch.eye(6, dtype=torch.float64).expand(1, 6, 6))


def test_entropy_and_head_correlation_match_scipy_and_numpy():
    import numpy as np
    from scipy.stats import entropy

    g = torch.Generator().manual_seed(3)
    maps = torch.rand(5, 4, 196, generator=g)  # (images, heads, patches)
    ours = A.attention_entropy(maps)
    torch.testing.assert_close(ours, torch.from_numpy(entropy(maps.numpy(), axis=-1)).float())
    by_hand = np.mean([np.corrcoef(m) for m in maps.numpy()], axis=0)
    torch.testing.assert_close(A.head_correlation(maps), torch.from_numpy(by_hand).float(), atol=1e-5, rtol=1e-5)
    att = torch.rand(2, 5, 4, 197, 197, generator=g)
    assert torch.equal(A.cls_attention(att), att[:, :, :, 0, 1:])


def test_structured_masks_scale_with_the_grid():
    assert A.structured_patch_mask("border", 14).sum() == 196 - 100  # two patches wide
    assert A.structured_patch_mask("border", 4).sum() == 16 - 4  # one patch wide on a small grid
    assert A.structured_patch_mask("centre", 14).sum() == 64
