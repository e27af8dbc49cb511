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
