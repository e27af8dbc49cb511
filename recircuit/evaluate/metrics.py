"""Forgetting, utility and leakage metrics (E2URec / CURE protocol).

Usage::

    from recircuit.evaluate.metrics import evaluate_unlearning
    m = evaluate_unlearning(unlearned, retrained, forget, test, heldout)
    m["forget_jsd"]      # JSD to Retrain's Yes/No answers on the forget set (lower is better)
    m["mia_auc"]         # loss-based membership attack, forget vs never-trained held-out samples

**JSD** is the Jensen-Shannon divergence (natural log, so at most ln 2) between the two models'
Bernoulli answer distributions (P(Yes), P(No)), averaged over samples.
**MIA** scores each sample by its negative answer loss (lower loss = more likely a member); the
AUC separates forget samples (label 1) from held-out samples never trained on (label 0). Retrain
sits near 0.5; report its distance to Retrain's value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from sklearn.metrics import roc_auc_score

from recircuit.data.prompts import Sample
from recircuit.metrics import classification_metrics
from recircuit.models.scoring import iter_batches, score


def jsd_binary(p: Float[np.ndarray, "n"], q: Float[np.ndarray, "n"]) -> float:
    """Mean Jensen-Shannon divergence between Bernoulli(p) and Bernoulli(q)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    q = np.clip(np.asarray(q, dtype=np.float64), 1e-12, 1 - 1e-12)
    m = (p + q) / 2

    def kl(a, b):
        return a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))

    return float(np.mean(0.5 * kl(p, m) + 0.5 * kl(q, m)))


@torch.no_grad()
def per_sample_loss(model, samples: Sequence[Sample], batch_size: int = 8) -> Float[np.ndarray, "n"]:
    """Answer cross-entropy per sample (no gradients)."""
    from recircuit.models.loading import plain_forward
    from recircuit.train.losses import answer_loss

    out = []
    with plain_forward(model):
        for chunk in iter_batches(list(samples), batch_size):
            out.append(answer_loss(model, chunk).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def mia_auc(model, members: Sequence[Sample], nonmembers: Sequence[Sample], batch_size: int = 8) -> float:
    """Loss-based membership-inference AUC (members = label 1)."""
    if not members or not nonmembers:
        raise ValueError("MIA needs both member (forget) and non-member (held-out) samples.")
    lm, ln = per_sample_loss(model, members, batch_size), per_sample_loss(model, nonmembers, batch_size)
    y = np.r_[np.ones(len(lm)), np.zeros(len(ln))]
    return float(roc_auc_score(y, -np.r_[lm, ln]))


def evaluate_unlearning(model, retrained, forget: Sequence[Sample], test: Sequence[Sample],
                        heldout: Sequence[Sample], batch_size: int = 8, retrained_cache: dict | None = None) -> dict:
    """Utility on test and forget, JSD to Retrain on forget and test, MIA AUC and its gap to Retrain.

    ``retrained_cache`` (a dict) keeps Retrain's scores between calls, so each method pays only
    for its own forward passes.
    """
    cache = retrained_cache if retrained_cache is not None else {}
    p_test, p_forget = score(model, test, batch_size, progress=False), score(model, forget, batch_size, progress=False)
    if "p_test" not in cache:
        cache["p_test"] = score(retrained, test, batch_size, progress=False)
        cache["p_forget"] = score(retrained, forget, batch_size, progress=False)
        cache["mia"] = mia_auc(retrained, forget, heldout, batch_size)
    t = classification_metrics([s.label for s in test], p_test)
    f = classification_metrics([s.label for s in forget], p_forget)
    mia = mia_auc(model, forget, heldout, batch_size)
    return {
        "test_auc": t["auc"], "test_acc": t["acc"], "test_logloss": t["logloss"],
        "forget_auc": f["auc"], "forget_acc": f["acc"], "forget_logloss": f["logloss"],
        "forget_jsd": jsd_binary(p_forget, cache["p_forget"]), "test_jsd": jsd_binary(p_test, cache["p_test"]),
        "mia_auc": mia, "mia_gap_to_retrain": abs(mia - cache["mia"]), "retrain_mia_auc": cache["mia"],
    }
