"""Forgetting, utility and leakage metrics (E2URec / CURE protocol).

Usage::

    from recircuit.evaluate.metrics import evaluate_unlearning
    m = evaluate_unlearning(unlearned, retrained, forget, test, heldout)
    m["forget_jsd"]      # JSD to Retrain's Yes/No answers on the forget set (lower is better)
    m["mia_auc"]         # loss-based membership attack, forget vs never-trained held-out samples

    gap = memorization_gap(original, retrained, forget, heldout, test)
    gap["measurable"], gap["verdict"]   # did Original measurably memorize this request's forget users?

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
from recircuit.errors import InputError
from recircuit.evaluate.stats import _check_boot, auc_difference_ci
from recircuit.metrics import classification_metrics
from recircuit.models.scoring import iter_batches
from recircuit.train.losses import score_and_loss  # noqa: F401  (re-exported: evaluation reads it from here)


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
                        seconds: float | None = None, retrain_seconds: float | None = None,
                        outputs: dict | None = None) -> dict:
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
        outputs: a dict that receives this model's per-sample outputs (:func:`model_outputs`'s
            keys), for sample-level intervals such as :func:`paired_outputs_difference`.

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
    if outputs is not None:
        outputs.update(mine)
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
                     test: Sequence[Sample] | None = None, batch_size: int = 8, cache: dict | None = None, *,
                     min_mia_gap: float = 0.2, min_jsd_ratio: float = 2.0, n_boot: int = 1000,
                     seed: int = 0) -> dict:
    """Is there something to forget on this deletion request? Original versus Retrain.

    Forgetting is measurable on a request only when Original measurably memorized its forget
    samples; otherwise every method "matches Retrain" trivially and the benchmark proves
    nothing. Two checks (issue 13), both required:

    **(a) MIA**: the loss attack (members = ``forget``, non-members = never-trained ``heldout``)
    must separate Original's members better than Retrain's: ``AUC(Original) - AUC(Retrain) >=
    min_mia_gap``, and the lower bound of the 95% paired bootstrap interval of that difference
    must be above 0. Paired: each of ``n_boot`` replicates resamples the forget and the held-out
    indices once and scores both models on them (:func:`recircuit.evaluate.stats.auc_difference_ci`,
    seeded by ``seed``, so the interval is deterministic).

    **(b) JSD**: the forget-set JSD between Original's and Retrain's answers must be at least
    ``min_jsd_ratio`` times their test-set JSD: the two models must disagree on the forgotten
    samples more than two training runs disagree anyway. Without ``test`` outputs it fails.

    ``cache`` is the ``retrained_cache`` dict of :func:`evaluate_unlearning` (keys ``original`` and
    ``retrained``, each a :func:`model_outputs` dict): the outputs there are reused, so the check
    costs no forward pass; with both entries present the models are not used (pass None).

    Returns:
        ``forget_loss_original``, ``forget_loss_retrain``, ``loss_gap`` (Retrain minus Original
        mean forget answer loss), ``forget_jsd``, ``test_jsd`` (when test outputs exist),
        ``mia_auc_original``, ``mia_auc_retrain``, ``mia_gap`` (Original minus Retrain),
        ``mia_std_original``, ``mia_std_retrain`` (bootstrap std of each AUC), ``mia_gap_ci95``
        (``[low, high]``), ``check_mia``, ``jsd_ratio`` (forget over test JSD; None when
        undefined), ``check_jsd``, ``measurable`` (both checks pass) and ``verdict`` (one
        sentence: measurable or not, and which check failed, with its numbers).

    Raises:
        ValueError: no forget or held-out samples.
        InputError: cached outputs whose lengths do not match the sets, bad thresholds.
    """
    if not forget or not heldout:
        raise ValueError("memorization_gap needs forget samples and never-trained held-out samples.")
    for name, v in (("min_mia_gap", min_mia_gap), ("min_jsd_ratio", min_jsd_ratio)):
        if not (isinstance(v, (int, float)) and np.isfinite(v)):
            raise InputError(f"must be a finite number, got {v!r}", field=name, fix="pass e.g. the default")
    cache = cache if cache is not None else {}
    outs = {}
    for name, m in (("original", original), ("retrained", retrained)):
        if name not in cache:
            cache[name] = model_outputs(m, forget, test or [], heldout, batch_size)
        outs[name] = cache[name]
        for key, n in (("loss_forget", len(forget)), ("p_forget", len(forget)), ("loss_heldout", len(heldout))):
            if len(outs[name][key]) != n:
                raise InputError(f"{name}.{key} has {len(outs[name][key])} values for {n} samples", field="cache",
                                 fix="pass the cache built on this request's forget, test and held-out sets")
    o, r = outs["original"], outs["retrained"]
    lo_f, lo_h, lr_f, lr_h = o["loss_forget"], o["loss_heldout"], r["loss_forget"], r["loss_heldout"]
    mia = auc_difference_ci(-np.asarray(lo_f), -np.asarray(lo_h), -np.asarray(lr_f), -np.asarray(lr_h),
                            n_boot=n_boot, seed=seed, level=0.95)
    out = {"forget_loss_original": float(lo_f.mean()), "forget_loss_retrain": float(lr_f.mean()),
           "loss_gap": float(lr_f.mean() - lo_f.mean()), "forget_jsd": jsd_binary(o["p_forget"], r["p_forget"]),
           "mia_auc_original": mia["auc_a"], "mia_auc_retrain": mia["auc_b"], "mia_gap": mia["diff"],
           "mia_std_original": mia["std_a"], "mia_std_retrain": mia["std_b"],
           "mia_gap_ci95": [mia["ci_low"], mia["ci_high"]]}
    out["check_mia"] = bool(out["mia_gap"] >= min_mia_gap and mia["ci_low"] > 0)
    has_test = bool(test) and len(o.get("p_test", [])) and len(r.get("p_test", []))
    if has_test:
        for name in ("original", "retrained"):
            if len(outs[name]["p_test"]) != len(test):
                raise InputError(f"{name}.p_test has {len(outs[name]['p_test'])} values for {len(test)} test samples",
                                 field="cache", fix="pass the cache built on this request's test set")
        out["test_jsd"] = jsd_binary(o["p_test"], r["p_test"])
        t = out["test_jsd"]
        out["jsd_ratio"] = out["forget_jsd"] / t if t > 0 else None
        out["check_jsd"] = bool(out["forget_jsd"] >= min_jsd_ratio * t and out["forget_jsd"] > 0)
    else:
        out["jsd_ratio"], out["check_jsd"] = None, False
    out["measurable"] = bool(out["check_mia"] and out["check_jsd"])
    out["verdict"] = _verdict(out, min_mia_gap, min_jsd_ratio, bool(has_test))
    return out


def _verdict(g: dict, min_mia_gap: float, min_jsd_ratio: float, has_test: bool) -> str:
    """One sentence on :func:`memorization_gap`'s checks, with the numbers of those that failed."""
    gap, (lo, hi) = g["mia_gap"], g["mia_gap_ci95"]
    how = f"exceeds Retrain's by {gap:.2f}" if gap >= 0 else f"is below Retrain's by {-gap:.2f}"
    mia = f"Original's MIA AUC {how} (95% CI {lo:.2f}..{hi:.2f})"
    if not has_test:
        jsd = "the JSD check needs test-set outputs and there are none"
    else:
        if g["jsd_ratio"] is None:
            jsd = f"the forget-set JSD to Retrain is {g['forget_jsd']:.4f} and the test-set JSD is 0"
        else:
            jsd = (f"the forget-set JSD to Retrain is {g['jsd_ratio']:.2f}x the test-set JSD "
                   f"({g['forget_jsd']:.4f} vs {g['test_jsd']:.4f})")
    if g["measurable"]:
        return (f"measurable: {mia}, at least {min_mia_gap:g} with the interval above 0, and {jsd}, "
                f"at least {min_jsd_ratio:g}x.")
    failed = []
    if not g["check_mia"]:
        why = f"below {min_mia_gap:g}" if gap < min_mia_gap else "an interval that reaches 0"
        failed.append(f"{mia}, {why}")
    if not g["check_jsd"]:
        failed.append(jsd if not has_test else f"{jsd}, below {min_jsd_ratio:g}x")
    return ("not measurable: " + "; and ".join(failed)
            + ", so this request cannot show forgetting (train Original longer or on more samples per forgotten user).")


def _jsd_each(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    q = np.clip(np.asarray(q, dtype=np.float64), 1e-12, 1 - 1e-12)
    m = (p + q) / 2

    def kl(a, b):
        return a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


#: Which :func:`model_outputs` arrays :func:`paired_outputs_difference` reads, by sample set.
_PAIRED_ARRAYS = {"forget": ("p_forget", "loss_forget"), "test": ("p_test",), "heldout": ("loss_heldout",)}


def _paired_arrays(a: dict, b: dict, retrained: dict, labels: np.ndarray) -> dict[str, int]:
    """Check that every array :func:`paired_outputs_difference` reads covers the same samples.

    Forget arrays agree across ``a``, ``b`` and ``retrained``; test arrays have one entry per test
    label (``retrained["p_test"]`` is not read and not required); held-out arrays agree. Returns
    the sizes ``{"forget": nf, "test": nt, "heldout": nh}``.
    """
    if labels.ndim != 1 or labels.size == 0:
        raise InputError(f"must be a non-empty sequence of 0/1 labels, got shape {labels.shape}", field="test_labels",
                         fix="pass the test samples' labels, one per test sample, in the order they were scored")
    sizes: dict[str, int] = {"test": len(labels)}
    first: dict[str, str] = {"test": "test_labels"}
    for who, m in (("a", a), ("b", b), ("retrained", retrained)):
        for kind, keys in _PAIRED_ARRAYS.items():
            for key in keys:
                field = f"{who}[{key!r}]"
                if key not in m:
                    if who == "retrained" and kind == "test":
                        continue
                    raise InputError("is missing", field=field,
                                     fix="pass model_outputs() dicts (p_forget, loss_forget, p_test, loss_heldout)")
                shape = np.shape(m[key])
                if len(shape) != 1 or shape[0] == 0:
                    raise InputError(f"must be a non-empty 1-D array, got shape {shape}", field=field,
                                     fix=f"pass one value per {kind} sample")
                if kind not in sizes:
                    sizes[kind], first[kind] = shape[0], field
                elif shape[0] != sizes[kind]:
                    raise InputError(f"has {shape[0]} values but {first[kind]} has {sizes[kind]}", field=field,
                                     fix=f"compute every model's outputs on the same {kind} samples, in the same order")
    return sizes


def paired_outputs_difference(a: dict, b: dict, retrained: dict, test_labels: Sequence[int], n_boot: int = 1000,
                              seed: int = 0, level: float = 0.95) -> dict:
    """Model A minus model B on one request, with a bootstrap interval over its samples.

    ``a``, ``b`` and ``retrained`` are :func:`model_outputs` dicts on the same forget, test and
    held-out samples. Each replicate resamples the forget, test and held-out indices once and
    uses them for both models (paired), so the interval is the sample-level uncertainty of the
    difference on this request (not the spread over requests or seeds).

    A replicate whose test resample holds one label only has no test AUC; it is left out of the
    ``test_auc`` interval and counted in ``test_auc["dropped_replicates"]``. A test set whose
    labels are all one class has no test AUC at all: ``test_auc`` is then
    ``{"diff": None, "ci_low": None, "ci_high": None, "note": "the test labels are all one class"}``
    (likewise, with another note, if every replicate drew one class).

    Returns:
        ``{metric: {"diff", "ci_low", "ci_high"}}`` for ``forget_jsd`` (to Retrain),
        ``mia_gap_to_retrain`` and ``test_auc`` (which adds ``dropped_replicates``, or ``note``
        with ``None`` values as above).

    Raises:
        InputError: a missing or empty array, arrays of one sample set with different lengths
            (forget arrays across the three dicts, test arrays against ``test_labels``, held-out
            arrays across the three dicts), empty ``test_labels``, bad ``n_boot`` or ``level``.
    """
    labels = np.asarray(list(test_labels))
    sizes = _paired_arrays(a, b, retrained, labels)
    _check_boot(n_boot, level)
    nf, nt, nh = sizes["forget"], sizes["test"], sizes["heldout"]
    ja, jb = _jsd_each(a["p_forget"], retrained["p_forget"]), _jsd_each(b["p_forget"], retrained["p_forget"])
    pa_test, pb_test = np.asarray(a["p_test"], dtype=np.float64), np.asarray(b["p_test"], dtype=np.float64)
    two_classes = 0 < int((labels == labels[0]).sum()) < nt

    def stats(fi, ti, hi) -> np.ndarray:
        ref = _auc_members(retrained["loss_forget"][fi], retrained["loss_heldout"][hi])
        y = labels[ti]
        both = two_classes and bool((y != y[0]).any())
        auc_diff = roc_auc_score(y, pa_test[ti]) - roc_auc_score(y, pb_test[ti]) if both else np.nan
        gaps = [abs(_auc_members(m["loss_forget"][fi], m["loss_heldout"][hi]) - ref) for m in (a, b)]
        return np.array([ja[fi].mean() - jb[fi].mean(), gaps[0] - gaps[1], auc_diff])

    point = stats(np.arange(nf), np.arange(nt), np.arange(nh))
    rng = np.random.default_rng(seed)
    reps = np.array([stats(rng.integers(nf, size=nf), rng.integers(nt, size=nt), rng.integers(nh, size=nh))
                     for _ in range(int(n_boot))])
    q = [(1 - level) / 2, (1 + level) / 2]
    out = {}
    for k, name in enumerate(("forget_jsd", "mia_gap_to_retrain")):
        lo, hi = np.quantile(reps[:, k], q)
        out[name] = {"diff": float(point[k]), "ci_low": float(lo), "ci_high": float(hi)}
    kept = reps[:, 2][np.isfinite(reps[:, 2])]
    if not two_classes:
        out["test_auc"] = {"diff": None, "ci_low": None, "ci_high": None, "note": "the test labels are all one class"}
    elif kept.size == 0:
        out["test_auc"] = {"diff": float(point[2]), "ci_low": None, "ci_high": None, "dropped_replicates": int(n_boot),
                           "note": "every bootstrap replicate drew test labels of one class"}
    else:
        lo, hi = np.quantile(kept, q)
        out["test_auc"] = {"diff": float(point[2]), "ci_low": float(lo), "ci_high": float(hi),
                           "dropped_replicates": int(n_boot) - int(kept.size)}
    return out
