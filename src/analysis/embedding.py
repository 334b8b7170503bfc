"""How well embeddings separate classes, and 2-D views of them. Arrays in, arrays out."""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

PROJECTIONS = ("pca", "tsne", "umap")


def check_projection(method: str, key: str) -> str:
    """`method` if it is one of PROJECTIONS, else a ValueError naming the config key."""
    if method not in PROJECTIONS:
        raise ValueError(f"{key} must be one of {', '.join(PROJECTIONS)}, got {method!r}")
    return method


def project_2d(x: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(N, D) -> (N, 2): `pca`, `tsne` or `umap`. D <= 2 is returned as it is (padded to 2)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[1] <= 2:
        return np.pad(x, ((0, 0), (0, 2 - x.shape[1])))
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        if x.shape[1] > 50:  # the usual PCA to 50 dims first: faster and less noisy
            x = PCA(n_components=50, random_state=seed).fit_transform(x)
        # One OpenMP thread: with a pool per core, t-SNE of 2,000 points ran 2.2x slower on a 2-core
        # machine shared with other work, 2.5x with two more busy processes (benchmarks/tsne_threads.py)
        with threadpool_limits(limits=1):
            return TSNE(
                n_components=2, init="pca", perplexity=min(30.0, (len(x) - 1) / 3), random_state=seed
            ).fit_transform(x)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {method!r}")


def knn_accuracy(z: np.ndarray, labels: np.ndarray, k: int = 5, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a k-nearest-neighbour classifier on the embeddings."""
    labels = np.asarray(labels)
    folds = min(folds, int(np.bincount(labels).min()) if labels.size else 0)
    if folds < 2:
        raise ValueError("knn_accuracy needs at least 2 samples of every class")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    clf = KNeighborsClassifier(n_neighbors=k)
    return float(cross_val_score(clf, np.asarray(z), labels, cv=cv, scoring="accuracy").mean())


def silhouette(z: np.ndarray, labels: np.ndarray, max_samples: int = 5000, seed: int = 0) -> float:
    """Mean silhouette coefficient of the classes in embedding space (Euclidean), in [-1, 1]."""
    z, labels = np.asarray(z), np.asarray(labels)
    size = min(max_samples, len(z)) if len(z) > max_samples else None
    return float(silhouette_score(z, labels, sample_size=size, random_state=seed))


def linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, c: float = 1.0, scale: str = "l2"
) -> dict[str, float]:
    """Logistic regression fitted on train features, train and test accuracy. `scale`: l2 (unit
    rows, for embeddings compared by cosine) | standard (per-feature z-scores, fitted on train)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    if scale not in ("l2", "standard"):
        raise ValueError(f"scale must be l2 or standard, got {scale!r}")
    clf = make_pipeline(Normalizer() if scale == "l2" else StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    clf.fit(train_x, train_y)
    return {"train_acc": float(clf.score(train_x, train_y)), "test_acc": float(clf.score(test_x, test_y))}
