"""Every paper figure from a saved results directory, without a model (``make figures``).

Usage::

    from recircuit.viz.figures import build_figures, make_figures
    figs = build_figures("runs/demo")                # name -> plotly figure / offline HTML
    make_figures("runs/demo", "figures")             # .html always; .svg/.pdf/.png when possible

    recircuit figures --results runs/demo --out figures

The results directory is what :func:`recircuit.demo.run_demo` writes: ``report.json``
(methods x seeds), ``grouping.json`` (CURE's module groups), ``circuit.{json,safetensors}``,
``faithfulness.json``, ``updates.json`` (per-module update norms per method) and
``attention.{json,safetensors}``. A figure whose input file is missing is skipped with a log
line, so partial results still give the figures they can. When the circuit step judged the
corruption too weak for a faithfulness curve (``faithfulness_note`` in ``circuit_summary.json``,
or a curve saved with ``flag``), the ``faithfulness`` figure states that note in words instead of
plotting f.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)


def _read(path: Path) -> Any | None:
    if not path.exists():
        logger.info("no %s: its figure is skipped", path.name)
        return None
    return json.loads(path.read_text())


def pareto_table(report: dict) -> pd.DataFrame:
    """``method, jsd_mean, jsd_std, auc_mean, auc_std`` rows from a report JSON's summary."""
    rows = []
    for method, m in report["summary"].items():
        if "forget_jsd" not in m or "test_auc" not in m:
            continue
        rows.append({"method": method, "jsd_mean": m["forget_jsd"][0], "jsd_std": m["forget_jsd"][1],
                     "auc_mean": m["test_auc"][0], "auc_std": m["test_auc"][1]})
    return pd.DataFrame(rows)


def note_figure(title: str, notes: list[str], width: int = 60) -> Any:
    """A figure with no axes that states ``notes`` in words (where a plot would mislead)."""
    import textwrap

    import plotly.graph_objects as go

    from recircuit.viz.style import apply_paper_style

    text = "<br><br>".join("<br>".join(textwrap.wrap(n, width)) for n in notes)
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, align="left")
    fig.update_layout(title={"text": title}, meta={"notes": list(notes)})
    apply_paper_style(fig, "single")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def faithfulness_notes(results_dir: str | Path) -> list[str]:
    """Why ``results_dir``'s faithfulness curve must not be plotted (empty when it may be).

    Reads ``circuit_summary.json``'s ``faithfulness_note`` and the ``note`` of every curve in
    ``faithfulness.json`` saved with a ``flag``.
    """
    d = Path(results_dir)
    notes = []
    summary = _read(d / "circuit_summary.json") or {}
    if summary.get("faithfulness_note"):
        notes.append(str(summary["faithfulness_note"]))
    for label, curve in (_read(d / "faithfulness.json") or {}).items():
        if isinstance(curve, dict) and curve.get("flag") and curve.get("note") not in notes:
            notes.append(f"{label}: {curve.get('note') or curve['flag']}")
    return notes


def build_figures(results_dir: str | Path, top_n: int = 50) -> dict[str, Any]:
    """Draw every figure the files in ``results_dir`` allow.

    Returns:
        ``{name: figure}``: plotly figures for ``importance_heatmap``, ``group_scatter``,
        ``circuit``, ``circuit_groups``, ``faithfulness``, ``pareto``, ``weight_change_<method>``,
        ``attention_heatmaps`` (plotly, readable without JavaScript), and circuitsvis HTML for
        ``attention``.
    """
    from recircuit import viz

    d = Path(results_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"No results directory {d}: run `recircuit demo --out {d}` first.")
    figs: dict[str, Any] = {}
    grouping = _read(d / "grouping.json")
    if grouping:
        figs["importance_heatmap"] = viz.importance_heatmap(
            grouping["forget_scores"], grouping["retain_scores"],
            title="Which heads and MLPs the forget and the retain data rely on")
        df = pd.DataFrame([{"module": m, "group": g, "forget": grouping["forget_scores"][m],
                            "retain": grouping["retain_scores"][m], "forget_norm": grouping["forget_norm"][m],
                            "retain_norm": grouping["retain_norm"][m], "reason": grouping["reasons"][m]}
                           for m, g in grouping["groups"].items()])
        figs["group_scatter"] = viz.group_scatter(df, grouping.get("thresholds"))
    if (d / "circuit.json").exists():
        from recircuit.circuits import Circuit

        circuit = Circuit.load(d / "circuit")
        figs["circuit"] = viz.circuit_diagram(circuit, top_n=top_n)
        if grouping:
            figs["circuit_groups"] = viz.circuit_diagram(
                circuit, top_n=top_n, groups=grouping["groups"],
                title=f"The recommendation circuit's {top_n} strongest edges, nodes coloured by CURE group")
    notes = faithfulness_notes(d)
    curves = _read(d / "faithfulness.json")
    if notes:
        figs["faithfulness"] = note_figure("No faithfulness curve: the corruption does not move the metric", notes)
    elif curves:
        figs["faithfulness"] = viz.faithfulness_curves(curves)
    report = _read(d / "report.json")
    if report:
        table = pareto_table(report)
        if len(table):
            ref = report["summary"].get("original", {}).get("test_auc", [None])[0]
            figs["pareto"] = viz.pareto_plot(table, reference_auc=ref)
    updates = _read(d / "updates.json") or {}
    for method, norms in updates.items():
        figs[f"weight_change_{method}"] = viz.weight_change_map(
            norms, title=f"How much {method} changed each head and MLP (Frobenius norm of the update)")
    att = _read(d / "attention.json")
    if att and (d / "attention.safetensors").exists():
        from safetensors.numpy import load_file

        pats = load_file(str(d / "attention.safetensors"))["patterns"]
        figs["attention"] = viz.attention_patterns_from_arrays(
            att["tokens"], pats, att["heads"], title="Attention patterns of the circuit's top heads")
        figs["attention_heatmaps"] = viz.attention_figure(
            att["tokens"], pats, att["heads"], title="Attention of the circuit's top heads (last positions)")
    return figs


def make_figures(results_dir: str | Path, out_dir: str | Path, static: bool = True,
                 formats: tuple[str, ...] = ("svg", "pdf", "png"), top_n: int = 50) -> list[Path]:
    """Write every figure of ``results_dir`` to ``out_dir`` as HTML, and as static files when possible.

    Static export needs kaleido and a Chromium (see :mod:`recircuit.viz.export`); without them
    only HTML is written and a log line says what to install.

    Returns:
        The paths written.
    """
    from recircuit import viz

    figs = build_figures(results_dir, top_n)
    out = Path(out_dir)
    written = [viz.save_figure(f, out / f"{name}.html") for name, f in figs.items()]
    if static and formats:
        ok, why = viz.static_export_available()
        if not ok:
            logger.warning("static figures skipped (HTML was written): %s", why)
            return written
        with viz.static_export_session():
            for name, f in figs.items():
                if name == "attention":
                    continue
                written += [viz.save_figure(f, out / f"{name}.{fmt}") for fmt in formats]
    return written
