"""CURE minus its control on one request: a paired bootstrap over the request's samples."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from recircuit.errors import InputError
from recircuit.evaluate.metrics import jsd_binary, paired_outputs_difference


def _outputs(rng, p_forget, n_test=40, n_heldout=30, shift=0.0):
    return {"p_forget": np.asarray(p_forget, dtype=float),
            "p_test": np.clip(rng.uniform(0, 1, n_test) + shift, 0, 1),
            "loss_forget": rng.uniform(0.1, 1.0, len(p_forget)), "loss_heldout": rng.uniform(0.5, 1.5, n_heldout)}


def test_identical_models_differ_by_exactly_zero():
    rng = np.random.default_rng(0)
    ref = _outputs(rng, rng.uniform(0, 1, 20))
    a = _outputs(rng, rng.uniform(0, 1, 20))
    labels = (rng.uniform(size=40) > 0.5).astype(int)
    d = paired_outputs_difference(a, a, ref, labels, n_boot=200)
    for v in d.values():
        assert v["diff"] == 0.0 and v["ci_low"] == 0.0 and v["ci_high"] == 0.0


def test_a_model_that_matches_retrain_on_the_forget_set_is_better_with_an_interval_below_zero():
    rng = np.random.default_rng(1)
    ref = _outputs(rng, rng.uniform(0.2, 0.8, 24))
    labels = (rng.uniform(size=40) > 0.5).astype(int)
    a = dict(_outputs(rng, ref["p_forget"]), p_test=ref["p_test"])             # A answers like Retrain
    b = dict(_outputs(rng, np.clip(ref["p_forget"] + 0.3, 0, 1)), p_test=ref["p_test"])
    d = paired_outputs_difference(a, b, ref, labels, n_boot=300, seed=3)
    want = jsd_binary(a["p_forget"], ref["p_forget"]) - jsd_binary(b["p_forget"], ref["p_forget"])
    assert d["forget_jsd"]["diff"] == pytest.approx(want)
    assert d["forget_jsd"]["ci_high"] < 0 < -d["forget_jsd"]["diff"]
    assert d["test_auc"]["diff"] == 0.0          # the same test answers
    again = paired_outputs_difference(a, b, ref, labels, n_boot=300, seed=3)
    assert again == d                            # deterministic for a seed


def _three(rng, nf=12, nt=16, nh=10):
    ref = _outputs(rng, rng.uniform(0, 1, nf), n_test=nt, n_heldout=nh)
    a = _outputs(rng, rng.uniform(0, 1, nf), n_test=nt, n_heldout=nh)
    b = _outputs(rng, rng.uniform(0, 1, nf), n_test=nt, n_heldout=nh)
    return a, b, ref


@pytest.mark.parametrize(("who", "key", "size", "field", "says"), [
    ("b", "p_forget", 11, "b['p_forget']", "has 11 values but a['p_forget'] has 12"),
    ("retrained", "loss_forget", 13, "retrained['loss_forget']", "has 13 values but a['p_forget'] has 12"),
    ("a", "p_test", 15, "a['p_test']", "has 15 values but test_labels has 16"),     # was silently truncated
    ("b", "p_test", 17, "b['p_test']", "has 17 values but test_labels has 16"),     # was an IndexError
    ("retrained", "loss_heldout", 9, "retrained['loss_heldout']", "has 9 values but a['loss_heldout'] has 10"),
    ("a", "loss_heldout", 0, "a['loss_heldout']", "non-empty"),
])
def test_arrays_of_different_lengths_are_refused_naming_the_array(who, key, size, field, says):
    rng = np.random.default_rng(4)
    a, b, ref = _three(rng)
    labels = np.array([0, 1] * 8)
    {"a": a, "b": b, "retrained": ref}[who][key] = rng.uniform(0, 1, size)
    with pytest.raises(InputError, match=re.escape(says)) as err:
        paired_outputs_difference(a, b, ref, labels, n_boot=5)
    assert err.value.field == field


def test_missing_arrays_and_bad_n_boot_are_refused():
    rng = np.random.default_rng(4)
    a, b, ref = _three(rng)
    labels = np.array([0, 1] * 8)
    with pytest.raises(InputError) as err:
        paired_outputs_difference(a, b, ref, labels, n_boot=0)
    assert err.value.field == "n_boot"
    with pytest.raises(InputError) as err:
        paired_outputs_difference(a, b, ref, labels[:0], n_boot=5)
    assert err.value.field == "test_labels"
    del b["loss_heldout"]
    with pytest.raises(InputError, match="is missing") as err:
        paired_outputs_difference(a, b, ref, labels, n_boot=5)
    assert err.value.field == "b['loss_heldout']"
    del ref["p_test"]                      # Retrain's test answers are not read, so not required
    b["loss_heldout"] = a["loss_heldout"]
    assert set(paired_outputs_difference(a, b, ref, labels, n_boot=3)) == {"forget_jsd", "mia_gap_to_retrain", "test_auc"}


def test_one_class_test_set_gives_no_test_auc_and_strict_json():
    rng = np.random.default_rng(5)
    a, b, ref = _three(rng)
    d = paired_outputs_difference(a, b, ref, np.ones(16, dtype=int), n_boot=30, seed=2)
    assert d["test_auc"] == {"diff": None, "ci_low": None, "ci_high": None, "note": "the test labels are all one class"}
    json.dumps(d, allow_nan=False)                     # no NaN reaches the JSON
    # the forget-side entries do not depend on the test labels: the same draws give the same numbers
    mixed = paired_outputs_difference(a, b, ref, np.array([0, 1] * 8), n_boot=30, seed=2)
    assert d["forget_jsd"] == mixed["forget_jsd"] and d["mia_gap_to_retrain"] == mixed["mia_gap_to_retrain"]
    assert np.isfinite(mixed["test_auc"]["ci_low"]) and mixed["test_auc"]["dropped_replicates"] == 0


def _replay(nf, nt, nh, n_boot, seed):
    """The forget, test and held-out indices paired_outputs_difference draws, replicate by replicate."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(nf, size=nf), rng.integers(nt, size=nt), rng.integers(nh, size=nh)) for _ in range(n_boot)]


def test_replicates_that_draw_one_label_are_counted_and_left_out():
    rng = np.random.default_rng(6)
    a, b, ref = _three(rng, nt=4)
    labels = np.array([1, 0, 0, 0])       # a resample of 4 misses the one positive with probability (3/4)^4
    d = paired_outputs_difference(a, b, ref, labels, n_boot=60, seed=1)
    want = []
    for _, ti, _ in _replay(12, 4, 10, 60, 1):
        y = labels[ti]
        if 0 < y.sum() < len(y):
            want.append(roc_auc_score(y, a["p_test"][ti]) - roc_auc_score(y, b["p_test"][ti]))
    assert d["test_auc"]["dropped_replicates"] == 60 - len(want) > 0
    lo, hi = np.quantile(want, [0.025, 0.975])
    assert d["test_auc"]["ci_low"] == pytest.approx(lo) and d["test_auc"]["ci_high"] == pytest.approx(hi)
    assert d["test_auc"]["diff"] == pytest.approx(roc_auc_score(labels, a["p_test"]) - roc_auc_score(labels, b["p_test"]))
    # a seed whose every replicate draws one class: no interval, said so
    labels2 = np.array([1, 0])
    a2, b2, ref2 = _three(rng, nt=2)
    seed = next(s for s in range(100) if all(len(set(labels2[ti])) == 1 for _, ti, _ in _replay(12, 2, 10, 2, s)))
    d2 = paired_outputs_difference(a2, b2, ref2, labels2, n_boot=2, seed=seed)["test_auc"]
    assert d2["ci_low"] is None and d2["ci_high"] is None and d2["dropped_replicates"] == 2 and "every" in d2["note"]
