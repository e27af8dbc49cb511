import math

import numpy as np
import pytest

from recircuit.metrics import classification_metrics


def test_metrics_against_hand_computed_values():
    m = classification_metrics([0, 0, 1, 1], np.array([0.1, 0.6, 0.4, 0.9]))
    assert m["auc"] == pytest.approx(0.75)
    assert m["acc"] == pytest.approx(0.5)
    expected = -np.mean(np.log([0.9, 0.4, 0.4, 0.9]))
    assert m["logloss"] == pytest.approx(expected)


def test_single_class_auc_is_nan_and_bad_shapes_raise():
    assert math.isnan(classification_metrics([1, 1], np.array([0.2, 0.3]))["auc"])
    with pytest.raises(ValueError):
        classification_metrics([1, 0], np.array([0.5]))


def test_auc_interval_brackets_the_auc_and_narrows_with_more_samples():
    from recircuit.metrics import auc, auc_interval

    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 2000):
        y = rng.integers(0, 2, n)
        p = np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.25, n), 0, 1)
        low, high = auc_interval(y, p, n_boot=300)
        assert low < auc(y, p) < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2          # about 1/sqrt(20) as wide
    with pytest.raises(ValueError, match="both classes"):
        auc_interval([1, 1, 1], np.array([0.2, 0.5, 0.9]))
