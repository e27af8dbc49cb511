"""Pareto fronts per deletion rate (hand-built fronts, numpy error bars), relearning curves, Jaccard tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recircuit.errors import InputError
from recircuit.viz import curves, save_figure, static_export_available
from recircuit.viz.pareto import (
    jaccard_figure,
    jaccard_table,
    pareto_figure,
    pareto_front,
    pareto_summary,
    relearn_figure,
)
from recircuit.viz.style import METHOD_COLORS

STATIC_OK, STATIC_REASON = static_export_available()

# --- pareto_front ----------------------------------------------------------------------------


@pytest.mark.parametrize(("points", "minimize", "expected"), [
    ([[0.1, 0.5], [0.2, 0.7], [0.3, 0.6]], (True, False), [0, 1]),          # (0.3, 0.6) is beaten by (0.2, 0.7)
    ([[0.3, 0.9], [0.0, 0.5], [0.1, 0.6]], (True, False), [1, 2, 0]),       # ordered along the front
    ([[0.1, 0.5], [0.1, 0.7]], (True, False), [1]),                         # tie in x: higher y wins
    ([[0.1, 0.7], [0.2, 0.7]], (True, False), [0]),                         # tie in y: lower x wins
    ([[0.1, 0.7], [0.1, 0.7], [0.3, 0.2]], (True, False), [0, 1]),          # duplicates do not dominate each other
    ([[0.1, 0.7], [0.1, 0.7], [0.0, 0.8]], (True, False), [2]),             # ... but both fall to a better point
    ([[np.nan, 1.0], [0.5, 0.5], [0.4, np.inf]], (True, False), [1]),       # non-finite rows: never on the front
    ([[1, 1], [2, 0], [2, 2]], (True, True), [0, 1]),                       # both minimized
    ([[1, 1], [2, 0], [0, 3]], (False, False), [1, 0, 2]),                  # both maximized: x descending
    ([[0.5, 0.5]], (True, False), [0]),
])
def test_pareto_front_hand_cases(points, minimize, expected):
    assert pareto_front(np.array(points, dtype=float), minimize) == expected


def test_pareto_front_matches_the_loop_reference_and_refuses_bad_shapes():
    rng = np.random.default_rng(0)
    pts = np.round(rng.random((40, 2)), 1)                   # coarse grid: many ties and duplicates
    assert pareto_front(pts) == curves.pareto_front(pts[:, 0], pts[:, 1])
    assert pareto_front(np.zeros((0, 2))) == []
    with pytest.raises(InputError, match="points"):
        pareto_front(np.zeros((3, 3)))
    with pytest.raises(InputError, match="minimize"):
        pareto_front(np.zeros((3, 2)), (True,))


# --- pareto_figure ---------------------------------------------------------------------------

BASES = {  # rate -> method -> (mean x, mean y); fronts worked out by hand below
    0.05: {"cure": (0.02, 0.71), "ga": (0.06, 0.62), "npo": (0.04, 0.73)},
    0.10: {"cure": (0.03, 0.70), "ga": (0.01, 0.60), "npo": (0.05, 0.69)},
    0.20: {"cure": (0.02, 0.70), "ga": (0.02, 0.65), "npo": (0.08, 0.75)},
}
FRONTS = {0.05: ["cure", "npo"], 0.10: ["ga", "cure"], 0.20: ["cure", "npo"]}
DX, DY = (-0.003, 0.001, 0.002), (0.01, -0.004, -0.006)      # per-seed offsets, mean 0


@pytest.fixture()
def rows() -> pd.DataFrame:
    out = []
    for rate, methods in BASES.items():
        for seed in range(3):
            out.append({"method": "retrain", "rate": rate, "seed": seed, "forget_jsd": 0.0,
                        "test_auc": 0.72 + DY[seed], "mia_gap_to_retrain": 0.0})
            for m, (x, y) in methods.items():
                out.append({"method": m, "rate": rate, "seed": seed, "forget_jsd": x + DX[seed], "test_auc": y + DY[seed],
                            "mia_gap_to_retrain": 2 * x + DX[seed]})
    return pd.DataFrame(out)


def _markers(fig):
    return [t for t in fig.data if t.meta["role"] in ("method", "reference")]


def test_pareto_figure_panels_fronts_and_error_bars(rows):
    fig = pareto_figure(rows)
    assert len(fig.data) == 3 * (4 + 1)                      # per rate: 3 methods + Retrain, and the front
    assert [a.text for a in fig.layout.annotations if a.text.startswith("deletion rate")] == [
        "deletion rate 5%", "deletion rate 10%", "deletion rate 20%"]
    fronts = [t for t in fig.data if t.meta["role"] == "front"]
    assert {t.meta["rate"]: t.meta["pareto_front"] for t in fronts} == FRONTS
    assert all(t.line.dash == "dash" for t in fronts)
    for t in fronts:                                          # the line joins the front's means, in order
        assert list(t.x) == pytest.approx([BASES[t.meta["rate"]][m][0] for m in t.meta["pareto_front"]])
    for t in _markers(fig):
        sub = rows[(rows["method"] == t.meta["method"]) & (rows["rate"] == t.meta["rate"])]
        assert t.x[0] == pytest.approx(np.mean(sub["forget_jsd"])) and t.y[0] == pytest.approx(np.mean(sub["test_auc"]))
        assert t.error_y.array[0] == pytest.approx(np.std(sub["test_auc"].to_numpy()))
        assert t.meta["n_seeds"] == 3
        if t.meta["role"] == "method":
            assert t.error_x.array[0] == pytest.approx(np.std(sub["forget_jsd"].to_numpy()))
            assert t.error_x.visible and t.error_y.visible
    cure = [t for t in fig.data if t.meta.get("method") == "cure"]
    assert cure[0].error_x.array[0] == pytest.approx(np.std(DX)) and cure[0].error_y.array[0] == pytest.approx(np.std(DY))
    # colours fixed per method across panels, one legend entry each; Retrain distinct, at x = 0
    by_method: dict[str, set] = {}
    for t in _markers(fig):
        by_method.setdefault(t.meta["method"], set()).add(t.marker.color)
    assert all(len(c) == 1 for c in by_method.values()) and len({c.pop() for c in by_method.values()}) == 4
    assert [t.meta["method"] for t in _markers(fig) if t.showlegend] == ["retrain", "cure", "ga", "npo"]
    ref = [t for t in fig.data if t.meta["role"] == "reference"]
    assert len(ref) == 3 and all(t.x[0] == 0.0 and t.marker.symbol == "diamond" for t in ref)
    assert ref[0].marker.color == METHOD_COLORS["retrain"] and "reference" in ref[0].name
    # axis titles in words, error bars said in the legend and hover, no note when every method has 3 seeds
    texts = [a.text for a in fig.layout.annotations]
    assert "forget JSD to Retrain (lower is better)" in texts
    assert fig.layout.yaxis.title.text == "test AUC (higher is better)"
    assert "std over seeds" in fig.layout.legend.title.text and "std over 3 seeds" in cure[0].hovertemplate
    assert fig.layout.meta["notes"] == [] and not [a for a in fig.layout.annotations if a.name == "few_seeds"]


def test_pareto_figure_mia_gap_and_summary(rows):
    fig = pareto_figure(rows, x="mia_gap_to_retrain")
    assert "MIA gap to Retrain (lower is better)" in [a.text for a in fig.layout.annotations]
    npo = next(t for t in fig.data if t.meta.get("method") == "npo" and t.meta["rate"] == 0.05)
    assert npo.x[0] == pytest.approx(2 * 0.04)
    assert next(t for t in fig.data if t.meta["role"] == "front").meta["pareto_front"] == ["cure", "npo"]
    s = pareto_summary(rows, x="mia_gap_to_retrain")
    assert list(s["rate"].unique()) == [0.05, 0.10, 0.20] and len(s) == 12
    assert s.loc[s["method"] == "retrain", "x_mean"].eq(0.0).all()


def test_fewer_than_three_seeds_is_noted(rows):
    rows = rows[~((rows["method"] == "ga") & (rows["rate"] == 0.20) & (rows["seed"] == 2))].copy()
    rows.loc[(rows["method"] == "npo") & (rows["rate"] == 0.05) & (rows["seed"] == 0), "test_auc"] = np.nan
    fig = pareto_figure(rows)
    notes = [a for a in fig.layout.annotations if a.name == "few_seeds"]
    assert len(notes) == 2
    assert notes[0].xref == "x domain" and "npo (2)" in notes[0].text and "fewer than 3 seeds" in notes[0].text
    assert notes[1].xref == "x3 domain" and "ga (2)" in notes[1].text
    assert fig.layout.meta["notes"] == ["deletion rate 5%: fewer than 3 seeds: npo (2)",
                                        "deletion rate 20%: fewer than 3 seeds: ga (2)"]
    ga = next(t for t in fig.data if t.meta.get("method") == "ga" and t.meta["rate"] == 0.20)
    assert ga.error_x.array[0] == pytest.approx(np.std([0.02 + DX[0], 0.02 + DX[1]]))
    npo = next(t for t in fig.data if t.meta.get("method") == "npo" and t.meta["rate"] == 0.05)
    assert npo.y[0] == pytest.approx(np.mean([0.73 + DY[1], 0.73 + DY[2]]))   # the NaN seed is left out


def test_pareto_figure_refuses_bad_input(rows):
    with pytest.raises(InputError, match="test_auc") as e:
        pareto_figure(rows.drop(columns=["test_auc"]))
    assert e.value.field == "test_auc"
    with pytest.raises(InputError, match="mia_gap_to_retrain"):
        pareto_figure(rows.drop(columns=["mia_gap_to_retrain"]), x="mia_gap_to_retrain")
    with pytest.raises(InputError, match="seed"):
        pareto_figure(rows.drop(columns=["seed"]))
    with pytest.raises(InputError, match="share a"):
        pareto_figure(pd.concat([rows, rows.iloc[:1]]))
    bad = rows.copy()
    bad.loc[bad["method"] == "retrain", "forget_jsd"] = 0.1
    with pytest.raises(InputError, match="must be 0"):
        pareto_figure(bad)
    nan_ref = rows.copy()
    nan_ref.loc[nan_ref["method"] == "retrain", "forget_jsd"] = np.nan    # unmeasured: 0 by definition
    assert next(t for t in pareto_figure(nan_ref).data if t.meta["role"] == "reference").x[0] == 0.0


# --- relearn_figure --------------------------------------------------------------------------

STEPS = [0, 10, 20]
CURVES = {"cure": {"steps": STEPS, "loss": [[2.0, 1.8, 1.7], [2.2, 1.6, 1.5]]},
          "ga": {"steps": STEPS, "loss": [[2.5, 1.0, 0.8], [2.3, 1.2, 0.6]]},
          "retrain": {"steps": STEPS, "loss": [2.1, 1.9, 1.8]}}


def test_relearn_figure_one_line_per_method():
    fig = relearn_figure(CURVES)
    means = {t.meta["method"]: t for t in fig.data if t.meta["role"] == "mean"}
    bands = {t.meta["method"]: t for t in fig.data if t.meta["role"] == "band"}
    assert list(means) == ["cure", "ga", "retrain"] and set(bands) == {"cure", "ga"}   # one seed: no band
    loss = np.array(CURVES["cure"]["loss"])
    assert list(means["cure"].y) == pytest.approx(loss.mean(0))
    assert list(bands["cure"].y) == pytest.approx(np.r_[loss.mean(0) + loss.std(0), (loss.mean(0) - loss.std(0))[::-1]])
    assert means["retrain"].line.dash == "dash" and means["cure"].line.dash == "solid"
    assert means["cure"].line.color != means["ga"].line.color
    assert "held-out forget loss" in fig.layout.yaxis.title.text and "relearning step" in fig.layout.xaxis.title.text
    long = pd.DataFrame([{"method": m, "seed": s, "step": step, "loss": row[i]}
                         for m, c in CURVES.items() for s, row in enumerate(np.atleast_2d(c["loss"]))
                         for i, step in enumerate(c["steps"])])
    fig2 = relearn_figure(long.sample(frac=1.0, random_state=0))           # row order does not matter
    means2 = {t.meta["method"]: t for t in fig2.data if t.meta["role"] == "mean"}
    for m in means:
        assert list(means2[m].y) == pytest.approx(list(means[m].y)) and list(means2[m].x) == STEPS
    with pytest.raises(InputError, match="different relearning steps"):
        relearn_figure(long.drop(index=0))
    with pytest.raises(InputError, match="loss"):
        relearn_figure(long.drop(columns=["loss"]))
    with pytest.raises(InputError, match="do not match"):
        relearn_figure({"cure": {"steps": [0, 1], "loss": [1.0, 2.0, 3.0]}})


# --- jaccard ---------------------------------------------------------------------------------

JACCARD = {"cure, rate 5%": {"task_shared": 0.9, "forget_specific": 0.8, "retain_specific": 0.7},
           "cure, rate 10%": {"forget_specific": 0.6, "frozen": 1.0}}


def test_jaccard_table_and_figure():
    t = jaccard_table(JACCARD)
    assert list(t.columns) == ["comparison", "group", "group_label", "jaccard"]
    assert list(zip(t["comparison"], t["group"], t["jaccard"])) == [
        ("cure, rate 5%", "forget_specific", 0.8), ("cure, rate 5%", "retain_specific", 0.7),
        ("cure, rate 5%", "task_shared", 0.9), ("cure, rate 10%", "forget_specific", 0.6),
        ("cure, rate 10%", "frozen", 1.0)]
    assert t["group_label"].iloc[0] == "forget-specific"
    w = jaccard_table(JACCARD, wide=True)
    assert list(w.index) == ["cure, rate 5%", "cure, rate 10%"]
    assert list(w.columns) == ["forget_specific", "retain_specific", "task_shared", "frozen"]
    assert w.loc["cure, rate 10%", "frozen"] == 1.0 and np.isnan(w.loc["cure, rate 10%", "task_shared"])
    fig = jaccard_figure(JACCARD)
    z = np.asarray(fig.data[0].z, dtype=float)
    np.testing.assert_array_equal(z, w.to_numpy(dtype=float))
    assert list(fig.data[0].x) == ["forget-specific", "retain-specific", "task-shared", "frozen"]
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        jaccard_table({"a": {"frozen": 1.5}})
    with pytest.raises(InputError, match="flatten"):
        jaccard_table({"cure": {"0.05": {"frozen": 1.0}}})


@pytest.mark.skipif(not STATIC_OK, reason=f"static export unavailable: {STATIC_REASON}")
def test_static_png_export(rows, tmp_path):
    png = save_figure(pareto_figure(rows), tmp_path / "pareto.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert abs(int.from_bytes(png[16:20], "big") - 672 * 300 / 96) <= 2        # double column at ~300 dpi


def test_one_seed_for_every_method_is_said_once_in_short(rows):
    one = rows[rows["seed"] == rows["seed"].min()]
    fig = pareto_figure(one)
    notes = [a for a in fig.layout.annotations if a.name == "few_seeds"]
    assert len(notes) == 3 and all(n.text.replace("<br>", " ") == "1 seed per method (fewer than 3)" for n in notes)
    assert "cure (1)" in fig.layout.meta["notes"][0]                 # the full list stays in the notes
