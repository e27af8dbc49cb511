"""Classification metrics for Yes/No recommendation, via scikit-learn.

Usage::

    from recircuit.metrics import classification_metrics
    classification_metrics(labels, p_yes)   # {"auc": ..., "acc": ..., "logloss": ...}
    auc_interval(labels, p_yes)             # (low, high): 95% bootstrap interval of the AUC
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score


def auc(labels: Sequence[int], p_yes: Float[np.ndarray, "n"]) -> float:
    """ROC AUC; NaN when only one class is present."""
    y = np.asarray(labels)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, np.asarray(p_yes)))


def classification_metrics(
    labels: Sequence[int], p_yes: Float[np.ndarray, "n"], threshold: float = 0.5
) -> dict[str, float]:
    """AUC, accuracy at ``threshold`` and log-loss of P(Yes) against 0/1 labels.

    Raises:
        ValueError: lengths differ or the inputs are empty.
    """
    y = np.asarray(labels, dtype=int)
    p = np.asarray(p_yes, dtype=np.float64)
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"labels {y.shape} and p_yes {p.shape} must be non-empty and equal in length")
    return {
        "auc": auc(y, p),
        "acc": float(accuracy_score(y, (p >= threshold).astype(int))),
        "logloss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "n": int(y.size),
        "pos_rate": float(y.mean()),
    }


def auc_interval(
    labels: Sequence[int],
    p_yes: Float[np.ndarray, "n"],
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC (samples drawn with replacement).

    On a 1,000-sample test split the AUC of a ~0.7 recommender moves by about +-0.03 across
    resamples, so a bar like "AUC >= 0.72" should be read against this interval.

    Raises:
        ValueError: lengths differ, the inputs are empty, or only one class is present.
    """
    y = np.asarray(labels, dtype=int)
    p = np.asarray(p_yes, dtype=np.float64)
    if y.shape != p.shape or y.size == 0 or len(np.unique(y)) < 2:
        raise ValueError("auc_interval needs equal-length, non-empty labels with both classes present")
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, y.size, y.size)
        if y[idx].min() != y[idx].max():
            stats.append(roc_auc_score(y[idx], p[idx]))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)
