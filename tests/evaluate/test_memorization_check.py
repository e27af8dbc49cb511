"""memorization_gap's two checks of issue 13 (MIA gap with a paired interval, forget/test JSD ratio),
on hand-built model outputs passed through the cache (no model needed)."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recircuit.errors import InputError
from recircuit.evaluate.metrics import memorization_gap


def _outs(loss_forget, loss_heldout, p_forget, p_test=()):
    return {"loss_forget": np.asarray(loss_forget, float), "loss_heldout": np.asarray(loss_heldout, float),
            "p_forget": np.asarray(p_forget, float), "p_test": np.asarray(p_test, float)}


def _jsd(p, q):
    m = (p + q) / 2
    kl = lambda a, b: a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))  # noqa: E731
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def _gap(orig, retr, nf, nh, nt=None, **kw):
    test = None if nt is None else [None] * nt
    return memorization_gap(None, None, [None] * nf, [None] * nh, test, cache={"original": orig, "retrained": retr}, **kw)


def _request(n=30, seed=0):
    """Original fits its forget samples (low loss, P(Yes) 0.9 against Retrain's 0.6 on all of them);
    both models agree on the test set up to a small shift (P(Yes) 0.5 against 0.55)."""
    rng = np.random.default_rng(seed)
    held = rng.uniform(0.8, 1.2, n)
    orig = _outs(rng.uniform(0.1, 0.5, n), held, np.full(n, 0.9), np.full(n, 0.5))
    retr = _outs(rng.uniform(0.8, 1.2, n), held + rng.normal(0, 0.01, n), np.full(n, 0.6), np.full(n, 0.55))
    return orig, retr


def test_both_checks_pass_on_a_memorized_request():
    orig, retr = _request()
    g = _gap(orig, retr, 30, 30, 30)
    y = np.r_[np.ones(30), np.zeros(30)]
    auc_o = roc_auc_score(y, -np.r_[orig["loss_forget"], orig["loss_heldout"]])
    auc_r = roc_auc_score(y, -np.r_[retr["loss_forget"], retr["loss_heldout"]])
    assert auc_o == 1.0 and g["mia_gap"] == pytest.approx(auc_o - auc_r) and g["mia_gap"] > 0.3
    lo, hi = g["mia_gap_ci95"]
    assert 0 < lo <= g["mia_gap"] <= hi
    assert g["forget_jsd"] == pytest.approx(_jsd(0.9, 0.6)) and g["test_jsd"] == pytest.approx(_jsd(0.5, 0.55))
    assert g["jsd_ratio"] == pytest.approx(_jsd(0.9, 0.6) / _jsd(0.5, 0.55))
    assert g["check_mia"] and g["check_jsd"] and g["measurable"]
    assert g["verdict"].startswith("measurable: Original's MIA AUC exceeds Retrain's by")
    for old in ("loss_gap", "mia_std_original", "mia_std_retrain", "forget_loss_original", "forget_loss_retrain"):
        assert old in g
    assert g["loss_gap"] == pytest.approx(retr["loss_forget"].mean() - orig["loss_forget"].mean())


def test_interval_is_deterministic_for_a_seed():
    orig, retr = _request(12, seed=3)
    a = _gap(orig, retr, 12, 12, 12)
    assert _gap(orig, retr, 12, 12, 12)["mia_gap_ci95"] == a["mia_gap_ci95"]
    assert _gap(orig, retr, 12, 12, 12, seed=1)["mia_gap_ci95"] != a["mia_gap_ci95"]
    assert _gap(orig, retr, 12, 12, 12, n_boot=50)["mia_gap_ci95"] != a["mia_gap_ci95"]


def test_mia_check_fails_when_the_gap_is_small():
    orig, retr = _request()
    # Retrain fits the forget users almost as well as Original: a small positive gap
    retr = dict(retr, loss_forget=orig["loss_forget"] + 0.5)
    g = _gap(orig, retr, 30, 30, 30)
    assert 0 < g["mia_gap"] < 0.2 and not g["check_mia"] and g["check_jsd"] and not g["measurable"]
    lo, hi = g["mia_gap_ci95"]
    assert g["verdict"] == (
        f"not measurable: Original's MIA AUC exceeds Retrain's by {g['mia_gap']:.2f} (95% CI {lo:.2f}..{hi:.2f}), "
        "below 0.2, so this request cannot show forgetting (train Original longer or on more samples per "
        "forgotten user).")
    assert _gap(orig, retr, 30, 30, 30, min_mia_gap=0.5 * g["mia_gap"])["check_mia"] == (lo > 0)


def test_mia_check_fails_when_the_interval_reaches_zero():
    # Original separates its 2 forget samples from the 3 held-out ones perfectly (AUC 1); Retrain
    # separates one of them (AUC 0.5). The gap 0.5 is large, but a resample that draws the one
    # Retrain also separates twice (probability 1/4) has gap 0, so the 2.5% quantile is 0.
    orig = _outs([0.1, 0.2], [1.0, 1.1, 1.2], [0.9, 0.9], [0.5] * 4)
    retr = _outs([0.5, 2.0], [1.0, 1.1, 1.2], [0.5, 0.5], [0.51] * 4)
    g = _gap(orig, retr, 2, 3, 4)
    assert g["mia_auc_original"] == 1.0 and g["mia_auc_retrain"] == 0.5 and g["mia_gap"] == 0.5
    assert g["mia_gap_ci95"][0] == 0.0 and not g["check_mia"]
    assert "an interval that reaches 0" in g["verdict"] and g["verdict"].startswith("not measurable")


def test_jsd_check_fails_when_the_models_disagree_as_much_on_test():
    orig, retr = _request()
    retr = dict(retr, p_test=np.full(30, 0.75))  # JSD(0.5, 0.75) is about 1.2x JSD(0.9, 0.6)
    g = _gap(orig, retr, 30, 30, 30)
    assert g["jsd_ratio"] == pytest.approx(_jsd(0.9, 0.6) / _jsd(0.5, 0.75)) and 1 < g["jsd_ratio"] < 2
    assert g["check_mia"] and not g["check_jsd"] and not g["measurable"]
    assert (f"the forget-set JSD to Retrain is {g['jsd_ratio']:.2f}x the test-set JSD "
            f"({g['forget_jsd']:.4f} vs {g['test_jsd']:.4f}), below 2x") in g["verdict"]
    assert _gap(orig, retr, 30, 30, 30, min_jsd_ratio=1.0)["measurable"]


def test_jsd_check_fails_with_a_reason_without_test_outputs():
    orig, retr = _request()
    g = _gap(orig, retr, 30, 30)
    assert g["check_mia"] and g["check_jsd"] is False and g["jsd_ratio"] is None and "test_jsd" not in g
    assert not g["measurable"] and "the JSD check needs test-set outputs and there are none" in g["verdict"]


def test_cache_of_another_request_is_refused():
    orig, retr = _request()
    with pytest.raises(InputError, match="'cache'.*loss_forget has 30 values for 29"):
        _gap(orig, retr, 29, 30, 30)
    with pytest.raises(InputError, match="'cache'.*p_test has 30 values for 31"):
        _gap(orig, retr, 30, 30, 31)
    with pytest.raises(InputError, match="'n_boot'"):
        _gap(orig, retr, 30, 30, 30, n_boot=0)
