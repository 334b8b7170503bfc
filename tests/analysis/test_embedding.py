import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.stats import norm

from analysis.embedding import knn_accuracy, linear_probe, project_2d, silhouette
from analysis.latent import latent_grid, sample_prior
from analysis.lesion import random_block_subsets


def blobs(separation: float, n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n)
    centres = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]]) * separation
    return centres[labels] + rng.normal(size=(3 * n, 3)), labels


def silhouette_by_hand(z, labels):
    d = cdist(z, z)
    s = []
    for i in range(len(z)):
        same = labels == labels[i]
        a = d[i, same].sum() / (same.sum() - 1)
        b = min(d[i, labels == c].mean() for c in set(labels) if c != labels[i])
        s.append((b - a) / max(a, b))
    return float(np.mean(s))


def test_silhouette_matches_its_definition():
    z, labels = blobs(3.0, n=15)
    assert silhouette(z, labels) == pytest.approx(silhouette_by_hand(z, labels), rel=1e-9)


def test_knn_accuracy_separated_vs_random_labels():
    z, labels = blobs(20.0)
    assert knn_accuracy(z, labels) == 1.0
    shuffled = np.random.default_rng(1).permutation(labels)
    assert knn_accuracy(z, shuffled) < 0.55  # chance is 1/3


def test_knn_accuracy_needs_two_per_class():
    with pytest.raises(ValueError):
        knn_accuracy(np.zeros((3, 2)), np.array([0, 1, 2]))


def test_projection_keeps_2d_and_reduces_higher_dims():
    z, _ = blobs(5.0)
    np.testing.assert_array_equal(project_2d(z[:, :2]), z[:, :2])
    pca = project_2d(z, "pca")
    assert pca.shape == (len(z), 2)
    centred = z - z.mean(0)  # PCA keeps the two largest variances
    top2 = np.sort(np.linalg.eigvalsh(np.cov(centred.T)))[::-1][:2]
    np.testing.assert_allclose(np.sort(pca.var(0, ddof=1))[::-1], top2, rtol=1e-6)
    assert project_2d(z, "tsne").shape == (len(z), 2)
    with pytest.raises(ValueError, match="pca, tsne, umap"):
        project_2d(z, "lda")


def test_latent_grid_is_evenly_spaced_in_probability():
    grid = latent_grid(5, quantile=0.1)
    assert grid.shape == (25, 2)
    ticks = norm.ppf(np.linspace(0.1, 0.9, 5))
    np.testing.assert_allclose(grid[:5, 0], ticks)  # first row: z1 left to right
    np.testing.assert_allclose(grid[::5, 1], ticks[::-1])  # first column: z2 top (high) to bottom
    np.testing.assert_allclose(grid[12], [0, 0], atol=1e-12)


def test_prior_samples_have_the_right_moments():
    g = torch.Generator().manual_seed(0)
    gauss, lap = sample_prior("gaussian", (200000,), g), sample_prior("laplace", (200000,), g)
    assert abs(gauss.var().item() - 1) < 0.02
    assert abs(lap.mean().item()) < 0.02 and abs(lap.var().item() - 2) < 0.05  # Laplace(0, 1): variance 2
    assert abs(lap.abs().mean().item() - 1) < 0.02  # E|X| = b = 1
    again = sample_prior("laplace", (5,), torch.Generator().manual_seed(3))
    assert torch.equal(again, sample_prior("laplace", (5,), torch.Generator().manual_seed(3)))


def test_random_block_subsets_are_seeded_distinct_and_sized():

    sets = random_block_subsets(50, 7, trials=4, seed=1)
    assert len(sets) == 4 and all(len(s) == len(set(s)) == 7 and all(0 <= b < 50 for b in s) for s in sets)
    assert sets == random_block_subsets(50, 7, trials=4, seed=1)
    assert random_block_subsets(8, 8, trials=1) == [list(range(8))] and random_block_subsets(8, 0, trials=1) == [[]]
    with pytest.raises(ValueError):
        random_block_subsets(8, 9, trials=1)


@pytest.mark.parametrize("scale", ["l2", "standard"])
def test_linear_probe_separates_separable_classes(scale):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(size=(50, 5)) + 5 * np.eye(5)[0], rng.normal(size=(50, 5)) - 5 * np.eye(5)[0]])
    y = np.repeat([0, 1], 50)
    out = linear_probe(x[::2], y[::2], x[1::2], y[1::2], scale=scale)
    assert out["train_acc"] == 1.0 and out["test_acc"] == 1.0


def test_standard_scaling_finds_a_small_informative_feature_beside_a_loud_one():
    """Class in feature 0 (spread 0.01 around +-0.05), noise of scale 100 in feature 1: unit rows
    are ruled by the noise; z-scores let the classifier see the signal."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    x = np.stack([np.where(y == 0, -0.05, 0.05) + rng.normal(0, 0.01, 200), rng.normal(0, 100, 200)], axis=1)
    assert linear_probe(x[::2], y[::2], x[1::2], y[1::2], scale="standard")["test_acc"] == 1.0
    assert linear_probe(x[::2], y[::2], x[1::2], y[1::2], scale="l2")["test_acc"] < 0.8
    with pytest.raises(ValueError, match="scale"):
        linear_probe(x, y, x, y, scale="minmax")
