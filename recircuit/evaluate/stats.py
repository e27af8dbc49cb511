"""Intervals for the benchmark: one statistic, paired differences, paired AUC differences.

Usage::

    from recircuit.evaluate.stats import auc_difference_ci, bootstrap_ci, paired_difference
    lo, hi = bootstrap_ci(forget_jsd_per_request)                   # 95% percentile interval of the mean
    d = paired_difference(cure_jsd, random_groups_jsd)              # per request, same order
    d["mean"], d["ci_low"], d["ci_high"], d["excludes_zero"], d["p_value"], d["method"]
    a = auc_difference_ci(-loss_f_orig, -loss_h_orig, -loss_f_retr, -loss_h_retr)
    a["diff"], a["ci_low"], a["ci_high"]                            # AUC(orig) - AUC(retrain)

The intervals are **percentile bootstrap** intervals, except :func:`paired_difference` with
fewer than ``SMALL_N`` (30) pairs, which uses the Student-t interval (a bootstrap of 3 pairs spans
about their min..max and excludes 0 about 26% of the time under no difference; of 10 to 20 pairs,
8-10% of the time) and reports a
sign-flip permutation p-value with every interval. A bootstrap interval uses ``n_boot``
resamples drawn with replacement by ``numpy.random.default_rng(seed)``, one replicate after the
other, and the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (``numpy.quantile``, linear
interpolation) of the replicated statistic. The same seed gives the same interval.

**Paired** means both quantities are computed on the *same* resample in every replicate: for
:func:`paired_difference` the per-request differences ``a - b`` are resampled; for
:func:`auc_difference_ci` the positive (member) and negative (non-member) indices are drawn once
per replicate and used for both models, so the interval reflects the uncertainty of the
*difference* (which is much smaller than that of either AUC when both models score the same
samples similarly).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np
from jaxtyping import Float
from scipy.stats import t as student_t

from recircuit.errors import InputError


def _check_boot(n_boot: int, level: float) -> None:
    if not (isinstance(n_boot, numbers.Integral) and not isinstance(n_boot, bool) and n_boot >= 1):
        raise InputError(f"must be an integer >= 1, got {n_boot!r}", field="n_boot", fix="pass e.g. 1000")
    if not (isinstance(level, numbers.Real) and 0.0 < float(level) < 1.0):
        raise InputError(f"must be in (0, 1), got {level!r}", field="level", fix="pass e.g. 0.95")


def _vector(values, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise InputError(f"must be a non-empty 1-D sequence of numbers, got shape {v.shape}", field=name,
                         fix="pass one number per sample or request")
    if not np.isfinite(v).all():
        raise InputError(f"holds {int((~np.isfinite(v)).sum())} NaN or infinite value(s)", field=name,
                         fix="drop or fix the non-finite entries before bootstrapping")
    return v


def _percentiles(reps: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(reps, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def bootstrap_ci(values: Float[np.ndarray, "n"], statistic: Callable[[np.ndarray], float] = np.mean,
                 n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(values)``.

    Replicate ``b`` applies ``statistic`` to ``values[rng.integers(0, n, n)]``, with
    ``rng = numpy.random.default_rng(seed)`` drawn replicate after replicate.

    Args:
        values: the sample (finite numbers, at least one).
        statistic: a function of a 1-D array returning a number (default: the mean).
        n_boot: number of bootstrap replicates.
        seed: seed of the resampling.
        level: coverage of the interval (0.95: the 2.5% and 97.5% quantiles).

    Returns:
        ``(low, high)``; a constant sample gives the zero-width interval at that constant.

    Raises:
        InputError: empty or non-finite ``values``, ``n_boot < 1``, ``level`` outside (0, 1).
    """
    v = _vector(values, "values")
    _check_boot(n_boot, level)
    rng = np.random.default_rng(seed)
    n = len(v)
    reps = np.array([float(statistic(v[rng.integers(0, n, n)])) for _ in range(int(n_boot))])
    return _percentiles(reps, float(level))


#: Below this many pairs :func:`paired_difference` uses the Student-t interval, not the bootstrap.
SMALL_N = 30

#: Up to this many pairs the sign-flip p-value enumerates all ``2**n`` sign patterns exactly.
EXACT_FLIPS_MAX_N = 16


def sign_flip_p_value(d: Float[np.ndarray, "n"], n_flips: int = 1000, seed: int = 0) -> float:
    """Two-sided sign-flip (paired permutation) p-value of ``mean(d) = 0``.

    Under the null of no difference each paired difference is as likely to be ``+d[i]`` as
    ``-d[i]``. The p-value is the fraction of sign patterns ``s`` with
    ``|sum(s * d)| >= |sum(d)|`` (up to rounding: a relative tolerance of ``1e-12``).
    With ``n <= 16`` all ``2**n`` patterns are enumerated (exact; the smallest possible value is
    ``2 / 2**n``, e.g. 0.25 for three pairs); above that, ``n_flips`` random patterns drawn by
    ``numpy.random.default_rng(seed)`` plus the observed one give ``(1 + hits) / (1 + n_flips)``.

    Args:
        d: the paired differences (finite, at least one).
        n_flips: number of random sign patterns when ``n > 16``.
        seed: seed of the random patterns.

    Returns:
        The p-value in ``(0, 1]``; all-zero differences give 1.

    Raises:
        InputError: empty or non-finite ``d``, ``n_flips < 1``.
    """
    v = _vector(d, "d")
    if not (isinstance(n_flips, numbers.Integral) and not isinstance(n_flips, bool) and n_flips >= 1):
        raise InputError(f"must be an integer >= 1, got {n_flips!r}", field="n_flips", fix="pass e.g. 1000")
    n = len(v)
    obs = abs(float(v.sum()))
    tol = 1e-12 * float(np.abs(v).sum())
    if n <= EXACT_FLIPS_MAX_N:
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1
        signs = 1.0 - 2.0 * bits                         # every pattern of +-1, the identity included
        return float(np.mean(np.abs(signs @ v) >= obs - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(int(n_flips), n))
    hits = int(np.sum(np.abs(signs @ v) >= obs - tol))
    return float((1 + hits) / (1 + int(n_flips)))


def paired_difference(a: Float[np.ndarray, "n"], b: Float[np.ndarray, "n"], n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """Mean of the paired differences ``a - b`` with an interval and a sign-flip p-value.

    ``a[i]`` and ``b[i]`` belong to the same unit (e.g. CURE and its random-groups control on
    deletion request ``i``); the differences ``d = a - b`` are the sample, which keeps the pairing.

    The interval depends on the number of pairs ``n``:

    * ``n < SMALL_N`` (30): the **Student-t** interval
      ``mean(d) +- t_{n-1, (1+level)/2} * sd(d) / sqrt(n)`` (``sd`` with ``ddof=1``;
      ``scipy.stats.t``). A percentile bootstrap of so few pairs spans about min..max of ``d``
      and excludes 0 far more often than ``1 - level`` when there is no difference (about 26%
      of the time with 3 pairs at ``level=0.95``, and still 9.9%, 8.4% and 7.6% with 10, 15 and
      20 normal pairs; 5.3% with 30); the t interval keeps the nominal rate for normal differences. Identical differences (``sd = 0``) give the zero-width interval at
      their value.
    * ``n >= SMALL_N``: the percentile bootstrap interval of the mean (:func:`bootstrap_ci`).

    Either way ``p_value`` is the two-sided sign-flip p-value (:func:`sign_flip_p_value`, exact
    for ``n <= 16``, else ``n_boot`` random patterns from ``seed``). It does not assume normal
    differences, but it cannot go below ``2 / 2**n`` (0.25 with 3 pairs): with so few pairs
    no difference is significant at 5% by this test.

    Returns:
        ``mean`` (of ``a - b``), ``ci_low``, ``ci_high``, ``level``, ``n``, ``method`` (``"t"``
        or ``"bootstrap"``), ``p_value`` and ``excludes_zero`` (the *interval* lies strictly
        above or strictly below 0).

    Raises:
        InputError: ``a`` and ``b`` of different lengths, fewer than two pairs (one pair has no
            interval), non-finite values, bad ``n_boot`` or ``level``.
    """
    av, bv = _vector(a, "a"), _vector(b, "b")
    if av.shape != bv.shape:
        raise InputError(f"has {len(bv)} values but a has {len(av)}", field="b",
                         fix="pass one value of each per paired unit, in the same order")
    if len(av) < 2:
        raise InputError("a paired interval needs at least two pairs, got 1", field="a",
                         fix="run more deletion requests (seeds) before comparing")
    _check_boot(n_boot, level)
    d = av - bv
    n = len(d)
    mean = float(d.mean())
    if n < SMALL_N:
        half = float(student_t.ppf((1.0 + float(level)) / 2.0, df=n - 1)) * float(d.std(ddof=1)) / np.sqrt(n)
        lo, hi, method = mean - half, mean + half, "t"
    else:
        (lo, hi), method = bootstrap_ci(d, np.mean, n_boot, seed, level), "bootstrap"
    return {"mean": mean, "ci_low": float(lo), "ci_high": float(hi), "level": float(level), "n": int(n),
            "method": method, "p_value": sign_flip_p_value(d, n_flips=n_boot, seed=seed),
            "excludes_zero": bool(lo > 0.0 or hi < 0.0)}


def auc_from_counts(pos: Float[np.ndarray, "p"], neg: Float[np.ndarray, "q"],
                    pos_counts: Float[np.ndarray, "p"] | None = None,
                    neg_counts: Float[np.ndarray, "q"] | None = None) -> float:
    """ROC AUC of scores (higher = positive) with a multiplicity for each sample.

    Exactly ``sklearn.metrics.roc_auc_score`` of the sample in which ``pos[i]`` appears
    ``pos_counts[i]`` times and ``neg[j]`` appears ``neg_counts[j]`` times (ties count one half,
    the Mann-Whitney statistic), in O((p + q) log q) without building the resample.

    Raises:
        ValueError: no positive or no negative sample (counting multiplicities).
    """
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    cp = np.ones(len(pos)) if pos_counts is None else np.asarray(pos_counts, dtype=np.float64)
    cn = np.ones(len(neg)) if neg_counts is None else np.asarray(neg_counts, dtype=np.float64)
    order = np.argsort(neg, kind="stable")
    sorted_neg = neg[order]
    cum = np.concatenate([[0.0], np.cumsum(cn[order])])
    below = cum[np.searchsorted(sorted_neg, pos, side="left")]
    upto = cum[np.searchsorted(sorted_neg, pos, side="right")]
    total = cp.sum() * cn.sum()
    if total <= 0:
        raise ValueError("an AUC needs at least one positive and one negative sample")
    return float(np.dot(cp, below + 0.5 * (upto - below)) / total)


def auc_difference_ci(pos_a: Float[np.ndarray, "p"], neg_a: Float[np.ndarray, "q"],
                      pos_b: Float[np.ndarray, "p"], neg_b: Float[np.ndarray, "q"],
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """``AUC(a) - AUC(b)`` of two scorers of the same samples, with a paired bootstrap interval.

    ``pos_a[i]`` and ``pos_b[i]`` are the two models' scores of positive sample ``i`` (e.g. minus
    the answer loss of forget sample ``i`` under Original and Retrain), and likewise for the
    negatives. Replicate ``b`` draws ``ip = rng.integers(0, p, p)`` then
    ``iq = rng.integers(0, q, q)`` and computes both AUCs on the samples ``ip``/``iq``.

    Returns:
        ``diff``, ``auc_a``, ``auc_b`` (on all samples), ``ci_low``, ``ci_high`` (of the
        difference), ``std_a``, ``std_b`` (bootstrap std of each AUC), ``level``, ``n_pos``,
        ``n_neg``, ``n_boot``, ``seed``.

    Raises:
        InputError: empty or non-finite scores, a/b of different lengths, bad ``n_boot``/``level``.
    """
    pa, na, pb, nb = (_vector(x, k) for x, k in ((pos_a, "pos_a"), (neg_a, "neg_a"), (pos_b, "pos_b"), (neg_b, "neg_b")))
    if pa.shape != pb.shape:
        raise InputError(f"has {len(pb)} scores but pos_a has {len(pa)}", field="pos_b",
                         fix="score the same positive samples with both models")
    if na.shape != nb.shape:
        raise InputError(f"has {len(nb)} scores but neg_a has {len(na)}", field="neg_b",
                         fix="score the same negative samples with both models")
    _check_boot(n_boot, level)
    p, q = len(pa), len(na)
    rng = np.random.default_rng(seed)
    ra, rb = np.empty(int(n_boot)), np.empty(int(n_boot))
    for k in range(int(n_boot)):
        cp = np.bincount(rng.integers(0, p, p), minlength=p)
        cq = np.bincount(rng.integers(0, q, q), minlength=q)
        ra[k], rb[k] = auc_from_counts(pa, na, cp, cq), auc_from_counts(pb, nb, cp, cq)
    auc_a, auc_b = auc_from_counts(pa, na), auc_from_counts(pb, nb)
    lo, hi = _percentiles(ra - rb, float(level))
    return {"diff": auc_a - auc_b, "auc_a": auc_a, "auc_b": auc_b, "ci_low": lo, "ci_high": hi,
            "std_a": float(np.std(ra)), "std_b": float(np.std(rb)), "level": float(level),
            "n_pos": p, "n_neg": q, "n_boot": int(n_boot), "seed": int(seed)}


__all__ = ["EXACT_FLIPS_MAX_N", "SMALL_N", "auc_difference_ci", "auc_from_counts", "bootstrap_ci", "paired_difference",
           "sign_flip_p_value"]
