"""Bootstrap intervals (recircuit.evaluate.stats) against hand-computed cases and direct numpy references."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recircuit.errors import InputError
from recircuit.evaluate.stats import (
    SMALL_N,
    auc_difference_ci,
    auc_from_counts,
    bootstrap_ci,
    paired_difference,
    sign_flip_p_value,
)


def test_constant_sample_gives_a_zero_width_interval_at_the_value():
    assert bootstrap_ci(np.full(7, 0.3)) == (pytest.approx(0.3), pytest.approx(0.3))
    d = paired_difference(np.array([1.5, 2.0, 0.7]), np.array([1.2, 1.7, 0.4]))
    assert d["mean"] == pytest.approx(0.3) and d["ci_low"] == pytest.approx(0.3) and d["ci_high"] == pytest.approx(0.3)
    assert d["n"] == 3 and d["excludes_zero"] is True


def test_two_point_sample_by_hand():
    # resampling [0, 1] twice gives means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4:
    # the 2.5% and 97.5% quantiles of many replicates are exactly 0 and 1, the 25%..75% ones 0.5
    assert bootstrap_ci([0.0, 1.0], n_boot=2000) == (0.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], n_boot=2000, level=0.4) == (0.5, 0.5)


def test_percentile_interval_equals_a_direct_numpy_computation():
    x = np.random.default_rng(5).normal(size=23)
    rng = np.random.default_rng(11)
    reps = [np.median(x[rng.integers(0, 23, 23)]) for _ in range(300)]
    ref = np.quantile(reps, [0.05, 0.95])
    lo, hi = bootstrap_ci(x, np.median, n_boot=300, seed=11, level=0.9)
    assert (lo, hi) == (pytest.approx(ref[0], abs=1e-15), pytest.approx(ref[1], abs=1e-15))
    assert bootstrap_ci(x, np.median, n_boot=300, seed=11, level=0.9) == (lo, hi)  # deterministic
    assert bootstrap_ci(x, np.median, n_boot=300, seed=12, level=0.9) != (lo, hi)


def test_interval_of_the_mean_matches_the_normal_approximation():
    x = np.random.default_rng(0).normal(2.0, 1.0, size=400)
    lo, hi = bootstrap_ci(x, n_boot=2000)
    half = 1.96 * x.std() / np.sqrt(len(x))
    assert lo == pytest.approx(x.mean() - half, abs=0.2 * half) and hi == pytest.approx(x.mean() + half, abs=0.2 * half)


def test_pairing_removes_the_between_request_spread():
    rng = np.random.default_rng(1)
    b = rng.normal(0, 5, size=30)             # requests differ a lot
    a = b + 0.2 + rng.normal(0, 0.05, size=30)  # a is a little but consistently above b
    d = paired_difference(a, b)
    assert d["excludes_zero"] and 0.15 < d["ci_low"] < 0.2 < d["ci_high"] < 0.25
    assert d["mean"] == pytest.approx(float(np.mean(a - b)))
    lo, hi = bootstrap_ci(a)[0] - bootstrap_ci(b)[1], bootstrap_ci(a)[1] - bootstrap_ci(b)[0]
    assert lo < 0 < hi  # unpaired intervals could not tell them apart
    z = paired_difference(rng.normal(0, 1, 40), rng.normal(0, 1, 40))
    assert z["ci_low"] < 0 < z["ci_high"] and not z["excludes_zero"]


def test_bad_inputs_name_the_field():
    with pytest.raises(InputError, match="'values'"):
        bootstrap_ci([])
    with pytest.raises(InputError, match="'values'.*NaN"):
        bootstrap_ci([1.0, np.nan])
    with pytest.raises(InputError, match="'n_boot'"):
        bootstrap_ci([1.0], n_boot=0)
    with pytest.raises(InputError, match="'level'"):
        bootstrap_ci([1.0], level=1.0)
    with pytest.raises(InputError, match="'b'"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(InputError, match="'a'.*two pairs"):
        paired_difference([1.0], [0.0])
    with pytest.raises(InputError, match="'pos_b'"):
        auc_difference_ci([1.0, 2.0], [0.0], [1.0], [0.0])


def test_auc_from_counts_is_the_auc_of_the_resample_with_ties():
    pos = np.array([0.9, 0.5, 0.5, 0.2])
    neg = np.array([0.5, 0.1, 0.7])
    assert auc_from_counts(pos, neg) == pytest.approx(roc_auc_score([1] * 4 + [0] * 3, np.r_[pos, neg]))
    # by hand: 0.9 beats 3; 0.5 beats 0.1, ties 0.5 (x2 samples); 0.2 beats 0.1 -> (3 + 2*1.5 + 1) / 12
    assert auc_from_counts(pos, neg) == pytest.approx(7 / 12)
    cp, cn = np.array([0, 2, 1, 3]), np.array([2, 0, 1])
    rep_pos, rep_neg = np.repeat(pos, cp), np.repeat(neg, cn)
    ref = roc_auc_score([1] * len(rep_pos) + [0] * len(rep_neg), np.r_[rep_pos, rep_neg])
    assert auc_from_counts(pos, neg, cp, cn) == pytest.approx(ref)


def test_auc_difference_ci_equals_a_direct_paired_bootstrap():
    rng = np.random.default_rng(2)
    pa, na = rng.normal(1, 1, 9), rng.normal(0, 1, 7)
    pb, nb = pa + rng.normal(0, 0.5, 9), na + rng.normal(0, 0.5, 7)
    r = np.random.default_rng(4)
    diffs, aucs_a = [], []
    y = [1] * 9 + [0] * 7
    for _ in range(200):
        ip, iq = r.integers(0, 9, 9), r.integers(0, 7, 7)  # the same indices for both scorers
        aa = roc_auc_score(y, np.r_[pa[ip], na[iq]])
        diffs.append(aa - roc_auc_score(y, np.r_[pb[ip], nb[iq]]))
        aucs_a.append(aa)
    out = auc_difference_ci(pa, na, pb, nb, n_boot=200, seed=4)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    assert out["ci_low"] == pytest.approx(lo) and out["ci_high"] == pytest.approx(hi)
    assert out["std_a"] == pytest.approx(np.std(aucs_a))
    assert out["diff"] == pytest.approx(roc_auc_score(y, np.r_[pa, na]) - roc_auc_score(y, np.r_[pb, nb]))
    assert out["n_pos"] == 9 and out["n_neg"] == 7


def test_few_pairs_keep_the_nominal_false_positive_rate():
    # 2000 null draws of 3 normal pairs (no true difference): the t interval excludes 0 in 4.95% of
    # them with this seed (nominal 5%; binomial sd 0.5%); the percentile bootstrap of the same
    # differences (first 300 draws, 200 replicates) in 30% of them
    rng = np.random.default_rng(2024)
    draws = [(rng.normal(size=3), rng.normal(size=3)) for _ in range(2000)]
    res = [paired_difference(a, b) for a, b in draws]
    assert {r["method"] for r in res} == {"t"}
    rate = np.mean([r["excludes_zero"] for r in res])
    assert 0.02 <= rate <= 0.08, rate
    # the exact sign-flip p-value of 3 pairs is 0.25 when all three differences share a sign
    # (probability exactly 2/8 under a symmetric null), else 0.5, 0.75 or 1: never below 5%
    p = np.array([r["p_value"] for r in res])
    assert set(np.round(p, 12)) <= {0.25, 0.5, 0.75, 1.0} and 0.22 <= np.mean(p == 0.25) <= 0.28
    boot = [bootstrap_ci(a - b, n_boot=200, seed=i) for i, (a, b) in enumerate(draws[:300])]
    assert np.mean([lo > 0 or hi < 0 for lo, hi in boot]) > 0.15   # why few pairs do not bootstrap


def test_t_interval_by_hand():
    # d = 1, 2, 3: mean 2, sd 1; with 2 degrees of freedom the t CDF is 1/2 + t / (2 sqrt(2 + t^2)),
    # so its 97.5% quantile solves t / sqrt(2 + t^2) = 0.95: t = 0.95 sqrt(2 / (1 - 0.95^2))
    d = paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    half = 0.95 * np.sqrt(2 / (1 - 0.95**2)) / np.sqrt(3)
    assert d["method"] == "t" and d["n"] == 3 and d["mean"] == pytest.approx(2.0)
    assert d["ci_low"] == pytest.approx(2 - half, rel=1e-12) and d["ci_high"] == pytest.approx(2 + half, rel=1e-12)
    assert d["ci_low"] < 0 and not d["excludes_zero"] and d["p_value"] == 0.25
    # level 0.5: t / sqrt(2 + t^2) = 0.5 gives t = sqrt(2/3)
    d = paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], level=0.5)
    assert d["ci_high"] - 2 == pytest.approx(np.sqrt(2 / 3) / np.sqrt(3), rel=1e-12) and d["excludes_zero"]
    assert d["level"] == 0.5


def test_sign_flip_p_value_by_hand():
    # all 8 sign patterns of (1, 2, 4): sums +-7, +-1, +-3, +-5, all distinct in size
    assert sign_flip_p_value(np.array([1.0, 2.0, 4.0])) == 0.25        # only +7 and -7 reach |7|
    assert sign_flip_p_value(np.array([1.0, -2.0, 4.0])) == 0.75       # |3|: 7, 7, 5, 5, 3, 3 of 8
    assert sign_flip_p_value(np.array([1.0, 2.0, -3.0])) == 1.0        # observed sum 0
    assert sign_flip_p_value(np.zeros(4)) == 1.0
    # +-1 +-2 +-4 +-8 gives each odd number -15..15 once; |1 + 2 - 4 + 8| = 7 is reached by 10 of 16
    assert sign_flip_p_value(np.array([1.0, 2.0, -4.0, 8.0])) == 10 / 16
    assert sign_flip_p_value(np.array([0.1, 0.2, -0.3])) == 1.0         # 0.1 + 0.2 - 0.3 rounds to ~5e-17
    assert sign_flip_p_value(np.arange(1.0, 11.0)) == 2 / 1024       # exact up to 16 pairs
    # above 16 pairs: random patterns from the seed, the observed one counted
    d = np.random.default_rng(3).normal(0.1, 1.0, 20)
    signs = np.random.default_rng(7).choice(np.array([-1.0, 1.0]), size=(500, 20))
    want = (1 + np.sum(np.abs(signs @ d) >= abs(d.sum()) * (1 - 1e-12))) / 501
    assert sign_flip_p_value(d, n_flips=500, seed=7) == pytest.approx(want)


def test_thirty_pairs_or_more_keep_the_bootstrap():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=SMALL_N), rng.normal(size=SMALL_N)
    d = paired_difference(a, b, n_boot=400, seed=5, level=0.9)
    assert d["method"] == "bootstrap" and d["n"] == SMALL_N == 30
    assert (d["ci_low"], d["ci_high"]) == bootstrap_ci(a - b, np.mean, 400, 5, 0.9)
    assert d["p_value"] == sign_flip_p_value(a - b, n_flips=400, seed=5)   # Monte Carlo above 16 pairs
    assert paired_difference(a[:29], b[:29])["method"] == "t"
