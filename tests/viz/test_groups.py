"""The CURE scatter: group colours, thresholds and hover text."""

from __future__ import annotations

import math

import pytest

from recircuit.viz import GROUP_COLORS, group_scatter


def _group_traces(fig):
    return {t.meta: t for t in fig.data if t.meta in GROUP_COLORS}


def test_colours_points_and_hover(grouping_df):
    fig = group_scatter(grouping_df, {"forget": 0.1, "retain": 0.15}, log_axes=False)
    traces = _group_traces(fig)
    assert set(traces) == {"forget_specific", "retain_specific", "task_shared", "frozen"}
    for g, t in traces.items():
        assert t.marker.color == GROUP_COLORS[g]
    fs = traces["forget_specific"]
    assert list(fs.customdata) == ["a1.h2"]
    assert list(fs.x) == [0.5] and list(fs.y) == [0.05]      # normalized scores are plotted
    assert list(traces["frozen"].customdata) == ["a0.h2", "m1"]
    hover = fs.hovertext[0]
    assert "a1.h2" in hover and "0.5" in hover and "0.05" in hover and "forget share high" in hover
    assert "raw forget / retain: 10 / 1" in hover
    assert fs.name == "forget-specific"


def test_threshold_lines(grouping_df):
    fig = group_scatter(grouping_df, {"forget": 0.1, "retain": 0.15}, log_axes=False)
    by_meta = {t.meta: t for t in fig.data}
    tf, tr = by_meta["threshold_forget"], by_meta["threshold_retain"]
    assert set(tf.x) == {0.1} and tf.line.dash == "dash"      # vertical line at the forget threshold
    assert set(tr.y) == {0.15}                                 # horizontal line at the retain threshold
    assert "0.1" in tf.hovertext and "0.15" in tr.hovertext
    assert "threshold_ratio_forget" not in by_meta


def test_ratio_mode_draws_margin_lines(grouping_df):
    fig = group_scatter(grouping_df, {"mode": "ratio", "margin": 0.5}, log_axes=False)
    by_meta = {t.meta: t for t in fig.data}
    lo = by_meta["threshold_ratio_forget"]
    assert lo.y[-1] == pytest.approx(lo.x[-1] * math.exp(-0.5))
    hi = by_meta["threshold_ratio_retain"]
    assert hi.y[-1] == pytest.approx(hi.x[-1] * math.exp(0.5))


def test_duck_typed_grouping_and_auto_log(grouping_df):
    class FakeGrouping:
        thresholds = {"forget": 0.1, "retain": 0.15, "margin": 0.5, "k": 2}

        class config:  # noqa: N801 - mimics an attribute
            mode = "topk"

        def to_dataframe(self):
            return grouping_df

    fig = group_scatter(FakeGrouping())
    metas = {t.meta for t in fig.data}
    assert {"threshold_forget", "threshold_retain"} <= metas
    assert "threshold_ratio_forget" not in metas                # top-k mode: no margin lines
    assert fig.layout.xaxis.type == "linear"                    # scores span < 100x
    wide = grouping_df.assign(forget_norm=[0.5, 1e-5, 0.2, 0.05, 0.02])
    assert group_scatter(wide).layout.xaxis.type == "log"


def test_real_grouping_object():
    grouping = pytest.importorskip("recircuit.unlearn.grouping")
    f = {"a0.h0": 5.0, "a0.h1": 1.0, "a1.h0": 0.5, "a1.h1": 0.2, "m0": 3.0, "m1": 0.1}
    r = {"a0.h0": 0.2, "a0.h1": 5.0, "a1.h0": 0.4, "a1.h1": 0.3, "m0": 3.0, "m1": 0.1}
    g = grouping.group_modules(f, r, grouping.GroupingConfig(top_k=0.34))
    fig = group_scatter(g)
    traces = _group_traces(fig)
    for name, grp in g.groups.items():
        assert name in list(traces[grp].customdata)
    tf = next(t for t in fig.data if t.meta == "threshold_forget")
    assert tf.x[0] == pytest.approx(g.thresholds["forget"])


def test_missing_columns_error():
    import pandas as pd

    with pytest.raises(ValueError, match="group"):
        group_scatter(pd.DataFrame({"module": ["a0.h0"], "forget": [1.0], "retain": [1.0]}))
