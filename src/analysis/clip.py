"""Zero-shot classification, the modality gap and Procrustes alignment on CLIP embeddings.

Arrays in, arrays out. Embeddings are rows; "normalised" means unit L2 norm per row.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import orthogonal_procrustes as scipy_procrustes
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import cross_val_score


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ensemble(text_embeddings: np.ndarray) -> np.ndarray:
    """(classes, templates, D) -> (classes, D): mean of the normalised template embeddings of each
    class, renormalised (Radford et al.; LAION's CLIP_benchmark)."""
    return normalize(normalize(text_embeddings).mean(axis=1))


def zero_shot_scores(image: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Cosine similarity of every image to every class embedding: (N, C)."""
    return normalize(image) @ normalize(classes).T


def classification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """top-1, top-5 and balanced accuracy of score rows against integer labels."""
    labels = np.asarray(labels)
    top5 = np.argsort(-scores, axis=1)[:, : min(5, scores.shape[1])]
    preds = top5[:, 0]
    return {
        "top1": float((preds == labels).mean()),
        "top5": float((top5 == labels[:, None]).any(axis=1).mean()),
        "balanced_acc": float(balanced_accuracy_score(labels, preds)),
    }


def per_class_accuracy(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.array([(preds[labels == c] == c).mean() if (labels == c).any() else np.nan for c in range(num_classes)])


def modality_gap(image: np.ndarray, text: np.ndarray) -> float:
    """Liang et al. 2022: || mean(normalised image) - mean(normalised text) ||."""
    return float(np.linalg.norm(gap_vector(image, text)))


def gap_vector(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    return normalize(image).mean(axis=0) - normalize(text).mean(axis=0)


def pair_cosine(image: np.ndarray, text: np.ndarray) -> float:
    """Mean cosine similarity of matched (image, text) rows."""
    return float((normalize(image) * normalize(text)).sum(axis=1).mean())


def retrieval_top1(source: np.ndarray, target: np.ndarray) -> float:
    """How often row i of `source` has row i of `target` as its most cosine-similar row: matched
    pairs found among all of them (ties count against)."""
    sims = normalize(source) @ normalize(target).T
    own = np.diag(sims)
    return float((np.sum(sims >= own[:, None], axis=1) == 1).mean())


def modality_separability(image: np.ndarray, text: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a linear classifier telling image from text embeddings
    (0.5: inseparable; 1.0: two separate cones)."""
    x = np.concatenate([normalize(image), normalize(text)])
    y = np.concatenate([np.zeros(len(image)), np.ones(len(text))])
    clf = LogisticRegression(max_iter=2000)
    return float(cross_val_score(clf, x, y, cv=folds).mean())


def shift_along_gap(
    image: np.ndarray, text: np.ndarray, lam: float, direction: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Liang et al.'s gap-shift: move images by -lam/2 and texts by +lam/2 times the gap vector,
    then renormalise. lam = 0 leaves both; lam = 1 moves them about onto each other's centre."""
    g = gap_vector(image, text) if direction is None else direction
    return normalize(normalize(image) - lam / 2 * g), normalize(normalize(text) + lam / 2 * g)


def fit_procrustes(source: np.ndarray, target: np.ndarray, center: bool = False) -> dict[str, np.ndarray]:
    """The orthogonal map R minimising ||(S - mu_s) R - (T - mu_t)|| (scipy), with the means when
    `center`. Apply with `apply_procrustes`."""
    s, t = normalize(source), normalize(target)
    mu_s = s.mean(axis=0) if center else np.zeros(s.shape[1])
    mu_t = t.mean(axis=0) if center else np.zeros(t.shape[1])
    rotation, _ = scipy_procrustes(s - mu_s, t - mu_t)
    return {"rotation": rotation, "mu_source": mu_s, "mu_target": mu_t}


def apply_procrustes(x: np.ndarray, fit: dict[str, np.ndarray]) -> np.ndarray:
    """Map rows of x into the target space (renormalised)."""
    return normalize((normalize(x) - fit["mu_source"]) @ fit["rotation"] + fit["mu_target"])


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test on paired predictions: b = A right and B wrong, c = A wrong and B right;
    p-value of a two-sided binomial test of b against b + c at 1/2."""
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"only_a_right": b, "only_b_right": c, "p_value": p}
