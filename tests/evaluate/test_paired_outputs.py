"""CURE minus its control on one request: a paired bootstrap over the request's samples."""

from __future__ import annotations

import numpy as np
import pytest

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
