"""The corruption check (gap against the spread over samples) and the faithfulness curve's refusal."""

import json

import numpy as np
import pytest
import torch

from recircuit.circuits import (
    AttributionConfig,
    FaithfulnessCurve,
    UnreliableFaithfulness,
    attribute,
    check_corruption,
    corruption_effect,
    faithfulness_curve,
)
from recircuit.circuits.faithfulness import GAP_SIGMAS
from recircuit.circuits.metrics import logit_diff
from recircuit.errors import InputError
from recircuit.models import tiny_model


def test_a_corruption_that_lowers_the_metric_enough_is_fine():
    assert corruption_effect(2.0, 0.5, "label_flip") is None
    assert corruption_effect(0.35, 0.20, min_gap=0.1) is None


def test_a_corruption_that_moves_the_metric_the_wrong_way_is_named():
    note = corruption_effect(0.497, 0.551, "label_flip")        # the zero-shot SmolLM2 case
    assert note is not None and "wrong way" in note and "label_flip" in note


def test_a_corruption_that_barely_moves_the_metric_is_named():
    note = corruption_effect(0.52, 0.50, "target_swap")
    assert note is not None and "only 0.02" in note and "not meaningful" in note


def test_curve_round_trips_through_json():
    c = FaithfulnessCurve([0.1, 0.5, 1.0], [7, 35, 70], [0.2, 0.7, 1.0], 1.5, 0.25)
    back = FaithfulnessCurve.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c and back.cpr == c.cpr


# --- the relative check: the gap against the spread of the per-sample differences --------------

def _check(clean, corrupted, **kw):
    clean, corrupted = np.asarray(clean, float), np.asarray(corrupted, float)
    return check_corruption(clean.mean(), corrupted.mean(), "label_flip", clean, corrupted, **kw)


def test_a_gap_above_the_floor_but_inside_two_standard_errors_is_flagged():
    # the mean difference is 0.5 (far above MIN_METRIC_GAP), but the per-sample differences swing +-3
    d = np.array([3.5, -2.5, 3.5, -2.5, 3.5, -2.5])
    se = d.std(ddof=1) / np.sqrt(d.size)
    c = _check(d, np.zeros_like(d))
    assert c.gap == pytest.approx(0.5) and c.stderr == pytest.approx(se)
    assert c.threshold == pytest.approx(GAP_SIGMAS * se) and not c.ok
    assert "standard error" in c.note and "6 samples" in c.note and "--corruption target_swap" in c.note
    # the same mean with a tight spread passes
    assert _check([0.5, 0.6, 0.4, 0.5, 0.55, 0.45], [0.0] * 6).ok


def test_the_rule_boundary_is_two_standard_errors():
    d = np.array([1.0, 3.0])                      # mean 2, sd sqrt(2), se 1
    assert _check(d, [0.0, 0.0]).threshold == pytest.approx(2.0)
    assert _check(d + 1e-9, [0.0, 0.0]).ok and not _check(d - 1e-9, [0.0, 0.0]).ok


def test_wrong_way_and_zero_gap_are_flagged_with_or_without_spread():
    assert "wrong way" in _check([0.3, 0.2, 0.4], [0.5, 0.6, 0.7]).note
    c = _check([0.3, 0.2, 0.4], [0.3, 0.2, 0.4])           # identity corruption: corrupted = clean
    assert not c.ok and c.gap == 0 and c.stderr == 0
    one = _check([2.0], [0.0])                              # one sample: spread unknown, floor only
    assert one.ok and one.stderr is None
    assert not _check([float("nan"), 1.0], [0.0, 0.0]).ok


def test_corruption_effect_accepts_per_sample_values_and_stays_compatible():
    assert corruption_effect(2.0, 0.5) is None                        # two floats, as the notebooks call it
    note = corruption_effect(0.5, 0.0, "label_flip", clean_per_sample=[3.5, -2.5, 3.5, -2.5],
                             corrupted_per_sample=[0.0] * 4)
    assert note is not None and "standard error" in note
    with pytest.raises(InputError, match="per-sample"):
        corruption_effect(0.5, 0.0, clean_per_sample=[1.0, 2.0], corrupted_per_sample=[1.0])


def test_flagged_curve_round_trips_its_flag_and_note():
    c = FaithfulnessCurve([0.0, 1.0], [0, 70], [0.0, 1.0], 0.2, 0.19, "unreliable", "why")
    d = json.loads(json.dumps(c.to_dict()))
    assert d["flag"] == "unreliable" and d["note"] == "why"
    assert FaithfulnessCurve.from_dict(d) == c
    assert "flag" not in FaithfulnessCurve([0.0, 1.0], [0, 70], [0.0, 1.0], 1.0, 0.0).to_dict()


@pytest.fixture(scope="module")
def tiny_pairs(pairs):
    clean, flipped = pairs
    return tiny_model(0), clean[:4], flipped[:4]


def test_attribute_keeps_the_per_sample_metrics_of_its_forward_passes(tiny_pairs):
    m, clean, flipped = tiny_pairs
    res = attribute(m, clean, flipped, AttributionConfig(method="eap", batch_size=3, progress=False))
    assert len(res.clean_per_sample) == len(res.corrupted_per_sample) == 4
    assert np.mean(res.clean_per_sample) == pytest.approx(res.clean_metric, abs=1e-6)
    assert np.mean(res.corrupted_per_sample) == pytest.approx(res.corrupted_metric, abs=1e-6)
    one = attribute(m, clean[3:], flipped[3:], AttributionConfig(method="eap", progress=False))
    assert one.clean_per_sample[0] == pytest.approx(res.clean_per_sample[3], abs=1e-5)   # sample order kept


def test_a_corruption_that_does_not_move_the_metric_is_refused(tiny_pairs):
    m, clean, _ = tiny_pairs
    res = attribute(m, clean, clean, AttributionConfig(method="eap", progress=False))   # identity corruption
    with pytest.raises(UnreliableFaithfulness, match="moves the metric by only 0") as err:
        faithfulness_curve(m, res, clean, clean, sizes=(0.5, 1.0), progress=False, corruption="identity")
    assert "allow_unreliable=True" in str(err.value) and err.value.check.gap == 0
    with pytest.raises(UnreliableFaithfulness, match="undefined"):          # allowed, but f = 0/0
        faithfulness_curve(m, res, clean, clean, sizes=(0.5, 1.0), progress=False, allow_unreliable=True)


def test_an_unreliable_curve_is_drawn_only_when_allowed_and_then_flagged(tiny_pairs):
    m, clean, flipped = tiny_pairs          # a random model: label_flip moves the metric by ~1e-3
    res = attribute(m, clean, flipped, AttributionConfig(method="eap", progress=False))
    with pytest.raises(UnreliableFaithfulness):
        faithfulness_curve(m, res, clean, flipped, sizes=(0.5, 1.0), progress=False)
    curve = faithfulness_curve(m, res, clean, flipped, sizes=(0.5, 1.0), progress=False, allow_unreliable=True,
                               corruption="label_flip")
    assert curve.flag == "unreliable" and "label_flip" in curve.note
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-4)


def test_a_corruption_that_moves_the_metric_gives_an_unflagged_curve(tiny_pairs):
    m, clean, flipped = tiny_pairs
    # one prompt four times: every pair moves the metric by the same amount (zero spread); the metric
    # is logit_diff scaled so that the amount is far above the floor, in the clean direction
    clean, flipped = [clean[0]] * 4, [flipped[0]] * 4
    probe = attribute(m, clean[:1], flipped[:1], AttributionConfig(method="eap", progress=False))
    sign = 1.0 if probe.clean_metric > probe.corrupted_metric else -1.0

    def scaled(logits, labels, answers):
        return sign * 1e4 * logit_diff(logits, labels, answers)

    res = attribute(m, clean, flipped, AttributionConfig(method="eap", metric=scaled, progress=False))
    assert res.clean_metric - res.corrupted_metric > 1.0
    curve = faithfulness_curve(m, res, clean, flipped, sizes=(0.5, 1.0), progress=False)
    assert curve.flag is None and curve.note is None
    assert curve.faithfulness[0] == pytest.approx(0.0, abs=1e-3) and curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-3)
    assert torch.isfinite(torch.tensor(curve.faithfulness)).all()
