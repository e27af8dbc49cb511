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
from recircuit.data.requests import check_request
from recircuit.metrics import classification_metrics
from recircuit.models.scoring import iter_batches


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


@torch.no_grad()
def score_and_loss(model, samples: Sequence[Sample], batch_size: int = 8
                   ) -> tuple[Float[np.ndarray, "n"], Float[np.ndarray, "n"]]:
    """P("Yes") and the answer cross-entropy of each sample from **one** forward pass.

    The pass reads ``prompt + answer`` (as :func:`~recircuit.train.losses.answer_loss` does):
    causal attention makes the logits at the last prompt position exactly those that
    :func:`~recircuit.models.score` reads from the prompt alone, and the answer positions give
    the loss. Evaluation needs both for every model, so this halves its forward passes. The
    pass is :func:`~recircuit.train.losses.answer_forward`, the one the unlearning objectives use.

    Returns:
        ``(p_yes, loss)``, float64 arrays of length ``len(samples)``.
    """
    from recircuit.models.loading import plain_forward
    from recircuit.models.scoring import p_yes_from_logits
    from recircuit.train.losses import answer_forward

    samples = list(samples)
    if not samples:
        return np.zeros(0), np.zeros(0)
    p_out, l_out = [], []
    was_training = model.training
    model.eval()
    try:
        with plain_forward(model):
            for chunk in iter_batches(samples, batch_size):
                ce, yes_no = answer_forward(model, chunk)
                p_out.append(p_yes_from_logits(yes_no).double().cpu().numpy())
                l_out.append(ce.double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(p_out), np.concatenate(l_out)


def model_outputs(model, forget: Sequence[Sample], test: Sequence[Sample], heldout: Sequence[Sample],
                  batch_size: int = 8) -> dict[str, np.ndarray]:
    """Everything the protocol reads from one model, one forward pass per sample.

    Returns:
        ``p_test``, ``p_forget`` (P(Yes)) and ``loss_forget``, ``loss_heldout`` (answer CE).
    """
    p_test, _ = score_and_loss(model, test, batch_size)
    p_forget, loss_forget = score_and_loss(model, forget, batch_size)
    _, loss_heldout = score_and_loss(model, heldout, batch_size)
    return {"p_test": p_test, "p_forget": p_forget, "loss_forget": loss_forget, "loss_heldout": loss_heldout}


def mia_auc(model, members: Sequence[Sample], nonmembers: Sequence[Sample], batch_size: int = 8) -> float:
    """Loss-based membership-inference AUC (members = label 1)."""
    if not members or not nonmembers:
        raise ValueError("MIA needs both member (forget) and non-member (held-out) samples.")
    lm, ln = per_sample_loss(model, members, batch_size), per_sample_loss(model, nonmembers, batch_size)
    y = np.r_[np.ones(len(lm)), np.zeros(len(ln))]
    return float(roc_auc_score(y, -np.r_[lm, ln]))


def check_protocol(forget: Sequence[Sample], test: Sequence[Sample], heldout: Sequence[Sample] | None = None,
                   retain: Sequence[Sample] | None = None, train: Sequence[Sample] | None = None,
                   train_size: int | None = None) -> None:
    """Refuse an evaluation whose sets break the protocol, with the reason and the fix.

    The package's one request validator, :func:`recircuit.data.requests.check_request`, with the
    test set required. Raises :class:`~recircuit.data.requests.RequestError` for an empty forget
    or test set, a forget set larger than the training set or not inside it, forget (or retain)
    samples in the test set, and held-out (MIA non-member) samples that were trained on.
    """
    check_request(forget, retain, test=test, heldout=heldout, train=train, train_size=train_size)


def evaluate_unlearning(model, retrained, forget: Sequence[Sample], test: Sequence[Sample],
                        heldout: Sequence[Sample], batch_size: int = 8, retrained_cache: dict | None = None, *,
                        original=None, retain: Sequence[Sample] | None = None, train: Sequence[Sample] | None = None,
                        seconds: float | None = None, retrain_seconds: float | None = None) -> dict:
    """The protocol's metrics for one unlearned model.

    Args:
        model: the unlearned model (or Original / Retrain themselves, for their rows).
        retrained: the Retrain model (trained on retain only, same config and seed).
        forget, test: the forgotten training samples and the test split.
        heldout: samples never trained on (the MIA non-members; e.g. the valid split).
        retrained_cache: a dict that keeps Retrain's (and Original's) outputs between calls, so each
            method pays only for its own forward passes; pass the same dict to
            :func:`memorization_gap` and it costs no forward pass at all.
        original: the model before unlearning; adds ``forget_jsd_to_original``.
        retain, train: checked against the other sets (disjoint, forget inside train).
        seconds, retrain_seconds: wall times; adds ``seconds`` and ``time_vs_retrain``.

    Returns:
        ``test_{auc,acc,logloss}`` and ``forget_{auc,acc,logloss}`` (utility), ``forget_loss``
        (mean answer CE), ``forget_jsd`` / ``test_jsd`` to Retrain, ``mia_auc``,
        ``retrain_mia_auc`` and ``mia_gap_to_retrain`` (absolute difference), and the optional
        entries above.

    Raises:
        RequestError: empty forget or test set, forget overlapping test, forget larger than (or
            outside) train, held-out samples that were trained on.
    """
    check_protocol(forget, test, heldout, retain, train)
    cache = retrained_cache if retrained_cache is not None else {}
    if model is retrained and "retrained" in cache:
        mine = cache["retrained"]
    elif model is original and "original" in cache:
        mine = cache["original"]
    else:
        mine = model_outputs(model, forget, test, heldout, batch_size)
    if "retrained" not in cache:
        cache["retrained"] = mine if model is retrained else model_outputs(retrained, forget, test, heldout, batch_size)
    ref = cache["retrained"]
    ref_mia = _auc_members(ref["loss_forget"], ref["loss_heldout"])
    t = classification_metrics([s.label for s in test], mine["p_test"])
    f = classification_metrics([s.label for s in forget], mine["p_forget"])
    mia = _auc_members(mine["loss_forget"], mine["loss_heldout"])
    out = {
        "test_auc": t["auc"], "test_acc": t["acc"], "test_logloss": t["logloss"],
        "forget_auc": f["auc"], "forget_acc": f["acc"], "forget_logloss": f["logloss"],
        "forget_loss": float(mine["loss_forget"].mean()),
        "forget_jsd": jsd_binary(mine["p_forget"], ref["p_forget"]),
        "test_jsd": jsd_binary(mine["p_test"], ref["p_test"]),
        "mia_auc": mia, "mia_gap_to_retrain": abs(mia - ref_mia), "retrain_mia_auc": ref_mia,
    }
    if original is not None:
        if "original" not in cache:
            cache["original"] = mine if model is original else model_outputs(original, forget, test, heldout, batch_size)
        out["forget_jsd_to_original"] = jsd_binary(mine["p_forget"], cache["original"]["p_forget"])
    if seconds is not None:
        out["seconds"] = float(seconds)
        if retrain_seconds:
            out["time_vs_retrain"] = float(seconds) / float(retrain_seconds)
    return out


def _auc_members(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> float:
    y = np.r_[np.ones(len(member_loss)), np.zeros(len(nonmember_loss))]
    return float(roc_auc_score(y, -np.r_[member_loss, nonmember_loss]))


def bootstrap_std(member_loss: np.ndarray, nonmember_loss: np.ndarray, n: int = 200, seed: int = 0) -> float:
    """Bootstrap standard deviation of the loss-attack AUC (resampling both sets)."""
    rng = np.random.default_rng(seed)
    vals = [_auc_members(rng.choice(member_loss, len(member_loss)), rng.choice(nonmember_loss, len(nonmember_loss)))
            for _ in range(n)]
    return float(np.std(vals))


def memorization_gap(original, retrained, forget: Sequence[Sample], heldout: Sequence[Sample],
                     test: Sequence[Sample] | None = None, batch_size: int = 8, cache: dict | None = None) -> dict:
    """Is there something to forget? Original versus Retrain on the forget set.

    Returns the mean forget-set answer loss of both and their gap (Retrain minus Original: how
    much better Original fits the data it saw), the forget-set JSD between their answers (and on
    ``test`` if given: a forget JSD well above the test JSD means the forget samples are
    memorized, not just that two training runs differ), both MIA AUCs, their gap and the
    bootstrap std of each AUC. ``measurable`` is true when the loss gap is positive and the MIA
    gap exceeds twice the combined bootstrap std; when false, the benchmark proves nothing:
    train the original longer or on more samples per forgotten user.

    ``cache`` is the ``retrained_cache`` dict of :func:`evaluate_unlearning` (keys ``original`` and
    ``retrained``): the outputs already computed there are reused, so the check is free.
    """
    if not forget or not heldout:
        raise ValueError("memorization_gap needs forget samples and never-trained held-out samples.")
    cache = cache if cache is not None else {}
    outs = {}
    for name, m in (("original", original), ("retrained", retrained)):
        if name not in cache:
            cache[name] = model_outputs(m, forget, test or [], heldout, batch_size)
        outs[name] = cache[name]
    o, r = outs["original"], outs["retrained"]
    lo_f, lo_h, lr_f, lr_h = o["loss_forget"], o["loss_heldout"], r["loss_forget"], r["loss_heldout"]
    mia_o, mia_r = _auc_members(lo_f, lo_h), _auc_members(lr_f, lr_h)
    sd_o, sd_r = bootstrap_std(lo_f, lo_h), bootstrap_std(lr_f, lr_h)
    out = {"forget_loss_original": float(lo_f.mean()), "forget_loss_retrain": float(lr_f.mean()),
           "loss_gap": float(lr_f.mean() - lo_f.mean()), "forget_jsd": jsd_binary(o["p_forget"], r["p_forget"]),
           "mia_auc_original": mia_o, "mia_auc_retrain": mia_r, "mia_gap": mia_o - mia_r,
           "mia_std_original": sd_o, "mia_std_retrain": sd_r}
    if test and len(o["p_test"]) and len(r["p_test"]):
        out["test_jsd"] = jsd_binary(o["p_test"], r["p_test"])
    out["measurable"] = bool(out["loss_gap"] > 0 and out["mia_gap"] > 2 * float(np.hypot(sd_o, sd_r)))
    return out
