import numpy as np
import pytest
from scipy.stats import ortho_group

from analysis import clip as C


def rng(seed=0):
    return np.random.default_rng(seed)


def test_ensemble_matches_a_direct_computation():
    t = rng().normal(size=(4, 3, 8))
    direct = np.stack([sum(t[c, k] / np.linalg.norm(t[c, k]) for k in range(3)) / 3 for c in range(4)])
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(C.ensemble(t), direct)


def test_gap_of_two_shifted_clouds_is_the_known_offset():
    # points on the unit sphere around +e0 and -e0, symmetric noise: means at +-m e0
    d, n = 16, 4000
    noise = rng().normal(scale=0.05, size=(n, d))
    noise[:, 0] = 0
    a = C.normalize(np.eye(d)[0] + noise)
    b = C.normalize(-np.eye(d)[0] + noise)
    m = a.mean(axis=0)[0]
    assert C.modality_gap(a, b) == pytest.approx(2 * m, rel=1e-3)
    assert C.modality_gap(a, a) == 0
    assert C.pair_cosine(a, b) == pytest.approx(-(a[:, 0] ** 2).mean() + (a[:, 1:] ** 2).sum(1).mean(), rel=1e-6)
    assert C.modality_separability(a, b) == 1.0


def test_shifting_along_the_gap_closes_it():
    x = C.normalize(rng(1).normal(size=(500, 8)) + 3 * np.eye(8)[0])
    y = C.normalize(rng(2).normal(size=(500, 8)) - 3 * np.eye(8)[0])
    gaps = [C.modality_gap(*C.shift_along_gap(x, y, lam)) for lam in (0.0, 0.5, 1.0)]
    assert gaps[0] == pytest.approx(C.modality_gap(x, y)) and gaps[0] > gaps[1] > gaps[2]


def test_procrustes_recovers_a_known_rotation_and_keeps_norms():
    r = ortho_group.rvs(12, random_state=3)
    s = C.normalize(rng(3).normal(size=(300, 12)))
    fit = C.fit_procrustes(s, s @ r)
    np.testing.assert_allclose(fit["rotation"], r, atol=1e-8)
    mapped = (s - fit["mu_source"]) @ fit["rotation"]
    np.testing.assert_allclose(np.linalg.norm(mapped, axis=1), 1.0)
    np.testing.assert_allclose(C.apply_procrustes(s, fit), s @ r, atol=1e-8)
    centred = C.fit_procrustes(s, s @ r, center=True)
    np.testing.assert_allclose(centred["rotation"] @ centred["rotation"].T, np.eye(12), atol=1e-10)


def test_a_rotation_of_both_modalities_leaves_zero_shot_predictions_unchanged():
    img, cls = rng(4).normal(size=(50, 10)), rng(5).normal(size=(6, 10))
    r = ortho_group.rvs(10, random_state=6)
    np.testing.assert_allclose(C.zero_shot_scores(img @ r, cls @ r), C.zero_shot_scores(img, cls), atol=1e-12)


def test_classification_metrics_known_case():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 2, 2])
    m = C.classification_metrics(scores, labels)
    assert m["top1"] == 0.75 and m["top5"] == 1.0
    assert m["balanced_acc"] == pytest.approx((1 + 1 + 0.5) / 3)
    np.testing.assert_allclose(C.per_class_accuracy(scores.argmax(1), labels, 3), [1, 1, 0.5])


def test_mcnemar_counts_discordant_pairs():
    a = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1], bool)
    b = np.array([1, 0, 0, 0, 0, 1, 1, 0, 0, 0], bool)
    out = C.mcnemar(a, b)
    assert (out["only_a_right"], out["only_b_right"]) == (6, 1)
    assert out["p_value"] == pytest.approx(0.125)  # 2 * P(X <= 1), X ~ Bin(7, 1/2) = 2 * 8/128
    assert C.mcnemar(a, a)["p_value"] == 1.0


def test_retrieval_top1_matches_a_loop_and_known_cases():
    a = rng(3).normal(size=(40, 6))
    b = a + rng(4).normal(scale=1.0, size=(40, 6))
    hits = 0
    for i in range(40):  # independently: the cosine of row i to every row of b, own pair strictly best
        cos = [float(a[i] @ b[j] / np.linalg.norm(a[i]) / np.linalg.norm(b[j])) for j in range(40)]
        hits += all(cos[i] > c for j, c in enumerate(cos) if j != i)
    assert C.retrieval_top1(a, b) == pytest.approx(hits / 40)
    assert C.retrieval_top1(a, a) == 1.0  # each row finds itself
    assert C.retrieval_top1(a, np.roll(a, 1, axis=0)) == 0.0  # each row's partner is another row
