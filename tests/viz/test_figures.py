"""Every paper figure rebuilt from a saved results directory (``make figures``), without a model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from recircuit.cli import main
from recircuit.viz.figures import build_figures, make_figures, pareto_table
from recircuit.viz.style import GROUP_COLORS


def test_build_figures_carries_the_saved_results(demo_run):
    out, cfg = demo_run["out"], demo_run["config"]
    figs = build_figures(out)
    expected = {"importance_heatmap", "group_scatter", "circuit", "circuit_groups", "faithfulness", "pareto",
                "attention", "attention_heatmaps"} | {f"weight_change_{m}" for m in cfg.methods}
    assert set(figs) == expected
    # the tiny model's corruption does not move the metric: the faithfulness figure states why, no curve
    summary = json.loads((out / "circuit_summary.json").read_text())
    assert figs["faithfulness"].layout.meta["notes"] == [summary["faithfulness_note"]]
    assert not any(t.type == "scatter" for t in figs["faithfulness"].data)
    report = json.loads((out / "report.json").read_text())
    pareto = {t.name: t for t in figs["pareto"].data if t.mode and "markers" in t.mode and t.name}
    for method in ("retrain", *cfg.methods):
        assert pareto[method].y[0] == pytest.approx(report["summary"][method]["test_auc"][0])
        assert pareto[method].x[0] == pytest.approx(report["summary"][method]["forget_jsd"][0])
    grouping = json.loads((out / "grouping.json").read_text())
    scatter = {t.meta: t for t in figs["group_scatter"].data if t.meta in GROUP_COLORS}
    assert scatter and {t.meta for t in figs["group_scatter"].data} >= {"threshold_forget", "threshold_retain"}
    for group, trace in scatter.items():
        assert trace.marker.color == GROUP_COLORS[group]
        assert len(trace.x) == sum(g == group for g in grouping["groups"].values())
    assert "a" in figs["attention"] and "<script" in figs["attention"]
    att = json.loads((out / "attention.json").read_text())
    heat = figs["attention_heatmaps"]
    assert [t.name for t in heat.data] == att["heads"]         # one heatmap per saved head, same order
    from safetensors.numpy import load_file

    pats = load_file(str(out / "attention.safetensors"))["patterns"]
    k = min(64, pats.shape[-1])                                  # the figure's last positions
    for i, trace in enumerate(heat.data):
        assert np.allclose(np.asarray(trace.z, dtype=np.float32), pats[i, -k:, -k:])


def test_make_figures_writes_html_and_skips_missing_inputs(demo_run, tmp_path):
    partial = tmp_path / "results"
    shutil.copytree(demo_run["out"], partial)
    (partial / "grouping.json").unlink()
    paths = make_figures(partial, tmp_path / "figs", static=False)
    names = {p.name for p in paths}
    assert "pareto.html" in names and "circuit.html" in names
    assert "group_scatter.html" not in names and "circuit_groups.html" not in names
    assert all(p.stat().st_size > 1000 for p in paths)


def test_pareto_table_from_report_summary():
    report = {"summary": {"cure": {"forget_jsd": [0.1, 0.01, 3], "test_auc": [0.7, 0.02, 3]},
                          "bad": {"seconds": [1.0, 0.0, 1]}}}
    t = pareto_table(report)
    assert t.to_dict("records") == [{"method": "cure", "jsd_mean": 0.1, "jsd_std": 0.01, "auc_mean": 0.7,
                                     "auc_std": 0.02}]


def test_figures_cli_and_missing_directory(demo_run, tmp_path, capsys):
    assert main(["figures", "--results", str(demo_run["out"]), "--out", str(tmp_path), "--html-only", "--json"]) == 0
    files = [r["figure"] for r in json.loads(capsys.readouterr().out)]
    assert any(f.endswith("pareto.html") for f in files)
    assert main(["figures", "--results", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "run `recircuit demo" in capsys.readouterr().err


def test_faithfulness_figure_plots_a_sound_curve_and_states_a_flagged_one(tmp_path):
    curve = {"sizes": [0.0, 0.5, 1.0], "n_edges": [0, 5, 10], "faithfulness": [0.0, 0.7, 1.0],
             "clean": 2.0, "corrupted": 0.5, "cpr": 0.6, "cmd": 0.4}
    (tmp_path / "faithfulness.json").write_text(json.dumps({"target_swap": curve}))
    fig = build_figures(tmp_path)["faithfulness"]
    assert [list(t.y) for t in fig.data if t.mode == "lines+markers"] == [[0.7, 1.0]]   # % kept > 0 on a log axis
    flagged = {**curve, "flag": "unreliable", "note": "the label_flip corruption moves the metric by only 0.004"}
    (tmp_path / "faithfulness.json").write_text(json.dumps({"label_flip": flagged}))
    fig = build_figures(tmp_path)["faithfulness"]
    assert fig.layout.meta["notes"] == ["label_flip: " + flagged["note"]] and not fig.data
    assert fig.layout.annotations[0].text.replace("<br>", " ") == "label_flip: " + flagged["note"]
