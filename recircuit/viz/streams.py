"""Drift over a stream of deletion requests: utility and forgetting after each request, per method.

Usage::

    from recircuit.streams import run_stream
    from recircuit.viz.streams import stream_figure
    res = run_stream(config, stream, "runs/stream")
    stream_figure(res.table.reset_index()).show()     # test AUC and forget JSD to Retrain per request
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from recircuit.errors import InputError
from recircuit.viz.pareto import method_colors
from recircuit.viz.style import apply_paper_style, legend_below

#: Panels drawn by default: (column, axis title).
STREAM_PANELS = (("test_auc", "test AUC"), ("forget_jsd", "forget JSD to Retrain"))


def stream_figure(rows: pd.DataFrame, panels: Sequence[tuple[str, str]] = STREAM_PANELS,
                  reference: str = "retrain", title: str | None = None) -> go.Figure:
    """One panel per metric, the request index on x and one line per method (the reference dashed).

    Args:
        rows: long table with ``method``, ``request`` and the panels' columns
            (:attr:`recircuit.streams.StreamResult.table` after ``reset_index()``).
        panels: ``(column, axis title)`` per panel.
        reference: the method drawn dashed (Retrain after every request).
        title: figure title.

    Raises:
        InputError: a missing column, or no rows.
    """
    need = {"method", "request", *(c for c, _ in panels)}
    missing = sorted(need - set(rows.columns))
    if missing or rows.empty:
        raise InputError(f"stream rows lack {missing}" if missing else "no stream rows", field="rows",
                         fix="pass StreamResult.table.reset_index()")
    methods = list(dict.fromkeys(rows["method"]))
    colours = method_colors(methods)
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.14)
    for j, (col, label) in enumerate(panels, start=1):
        for m in methods:
            d = rows[rows["method"] == m].sort_values("request")
            is_ref = m == reference
            fig.add_trace(go.Scatter(
                x=d["request"] + 1, y=d[col], mode="lines+markers", name=f"{m} (reference)" if is_ref else m,
                legendgroup=m, showlegend=j == 1, line={"color": colours[m], "width": 1.5, "dash": "dash" if is_ref else "solid"},
                marker={"size": 4}, meta={"method": m, "metric": col},
                hovertemplate=f"<b>{m}</b><br>after request %{{x}}<br>{label} %{{y:.4f}}<extra></extra>"), row=1, col=j)
        fig.update_xaxes(title_text="requests applied", dtick=1, row=1, col=j)
        fig.update_yaxes(title_text=label, row=1, col=j)
    apply_paper_style(fig, "double", height_in=2.6)
    fig.update_layout(title={"text": title or "A stream of deletion requests (Retrain dashed)"})
    legend_below(fig, n_rows=math.ceil(len(methods) / 5), columns=5)
    return fig
