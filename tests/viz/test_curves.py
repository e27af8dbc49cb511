"""Faithfulness curves (CPR/CMD in the legend) and the Pareto plot (error bars, front)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recircuit.viz import faithfulness_curves, pareto_front, pareto_plot
from recircuit.viz.style import METHOD_COLORS

SIZES = [0.0, 0.001, 0.01, 0.1, 1.0]
F = [0.0, 0.2, 0.6, 0.9, 1.0]


def test_faithfulness_values_and_scores():
    fig = faithfulness_curves({"EAP-IG": (SIZES, F), "EAP": {"sizes": [0.1, 1, 10, 100], "faithfulness": [0.1, 0.3, 0.7, 1.0],
                                                            "cpr": 0.5, "cmd": 0.4}}, sizes_unit="auto")
    a, b = fig.data[0], fig.data[1]
    assert list(a.x) == pytest.approx([0.1, 1.0, 10.0, 100.0])      # fractions -> %, the 0 point dropped
    assert list(a.y) == pytest.approx([0.2, 0.6, 0.9, 1.0])
    cpr = np.trapezoid(F, SIZES)
    cmd = np.trapezoid(np.abs(1 - np.array(F)), SIZES)
    assert a.meta["cpr"] == pytest.approx(cpr) and a.meta["cmd"] == pytest.approx(cmd)
    assert a.name == f"EAP-IG (CPR {cpr:.2f}, CMD {cmd:.2f})"
    assert b.meta == {"label": "EAP", "cpr": 0.5, "cmd": 0.4}        # given scores are kept
    assert list(b.x) == pytest.approx([0.1, 1, 10, 100])             # percent detected
    assert fig.layout.xaxis.type == "log"
    refs = {t.meta.get("reference") for t in fig.data[2:]}
    assert refs == {1.0, 0.0, 0.8}
    assert a.line.color != b.line.color


def test_faithfulness_curve_object():
    class Curve:
        def to_dict(self):
            return {"sizes": SIZES, "faithfulness": F, "cpr": 0.77, "cmd": 0.11, "n_edges": [0, 1, 2, 3, 4]}

    fig = faithfulness_curves({"label flip": Curve()})
    assert "CPR 0.77, CMD 0.11" in fig.data[0].name


def test_faithfulness_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        faithfulness_curves({"x": ([1, 2], [0.5])})
    with pytest.raises(ValueError, match="at least one"):
        faithfulness_curves({})


@pytest.fixture()
def results():
    return pd.DataFrame({
        "method": ["CURE", "GA", "NPO", "Retrain", "Original"],
        "jsd_mean": [0.01, 0.05, 0.03, 0.0, 0.06],
        "jsd_std": [0.002, 0.01, np.nan, 0.0, 0.004],
        "auc_mean": [0.70, 0.60, 0.69, 0.71, 0.712],
        "auc_std": [0.01, 0.02, 0.01, 0.005, 0.003],
    })


def test_pareto_points_and_error_bars(results):
    fig = pareto_plot(results, reference_auc=0.712)
    pts = {t.name: t for t in fig.data if isinstance(t.meta, dict) and "method" in t.meta}
    assert set(pts) == set(results["method"])
    cure = pts["CURE"]
    assert list(cure.x) == [0.01] and list(cure.y) == [0.70]
    assert list(cure.error_x.array) == [0.002] and list(cure.error_y.array) == [0.01]
    assert cure.marker.color == METHOD_COLORS["cure"] and cure.marker.symbol == "star"
    assert pts["NPO"].error_x.visible is False                      # NaN std: no bar
    assert "± 0.0020" in cure.hovertemplate
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert front.meta["pareto_front"] == ["CURE", "Original"]        # Retrain is the reference, not a contender
    ref = next(t for t in fig.data if isinstance(t.meta, dict) and "reference_auc" in t.meta)
    assert set(ref.y) == {0.712}
    assert "JSD" in fig.layout.xaxis.title.text and "AUC" in fig.layout.yaxis.title.text


def test_pareto_front_helper():
    assert pareto_front(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.7, 0.6])) == [0, 1]


def test_pareto_missing_columns():
    with pytest.raises(ValueError, match="auc_mean"):
        pareto_plot(pd.DataFrame({"method": ["a"], "jsd_mean": [0.1]}))


def test_labels_of_nearby_points_do_not_print_over_each_other():
    from recircuit.viz.curves import label_positions

    # the demo's case: CURE and its control 0.0006 apart, NPO and GA elsewhere
    df = pd.DataFrame({"method": ["cure", "cure-random", "npo", "ga"], "jsd_mean": [0.0923, 0.0929, 0.0757, 0.1852],
                       "auc_mean": [0.6478, 0.6483, 0.6513, 0.6481]})
    fig = pareto_plot(df, show_front=False)
    pos = {t.name: t.textposition for t in fig.data}
    assert pos["cure"] != pos["cure-random"]
    assert pos["ga"].endswith("left") and pos["npo"] == "top right"      # far apart: the usual places
    assert label_positions(np.array([0.1, 0.5]), np.array([0.6, 0.6]), 1.0) == ["top right", "top right"]
    assert len(set(label_positions(np.array([0.1] * 4), np.array([0.6] * 4), 1.0))) == 4   # one point, four places
