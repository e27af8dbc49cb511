"""The picture that explains CURE: every module's forget score against its retain score.

Usage::

    from recircuit.viz import group_scatter
    fig = group_scatter(grouping)                          # a Grouping (duck-typed), or:
    fig = group_scatter(df, {"forget": 0.02, "retain": 0.03})
    # df columns: module, group, forget_norm, retain_norm (or forget, retain), optional reason

Each point is a head or MLP, coloured (and shaped) by its group: forget-specific modules sit right
of the forget threshold and below the retain threshold, retain-specific ones above and left,
task-shared ones beyond both; the rest are frozen. The dashed lines are the thresholds that made
the grouping (the k-th largest normalized score of each set in top-k mode); in ratio mode the
dotted lines ``I_r = I_f * exp(-/+ margin)`` bound the task-shared wedge.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go

from recircuit.viz._data import as_grouping_frame
from recircuit.viz.style import (
    GREY,
    GROUP_COLORS,
    GROUP_LABELS,
    GROUP_ORDER,
    GROUP_SYMBOLS,
    Column,
    apply_paper_style,
    legend_below,
)


def _score_columns(df) -> tuple[str, str]:
    if {"forget_norm", "retain_norm"} <= set(df.columns):
        return "forget_norm", "retain_norm"
    if {"forget", "retain"} <= set(df.columns):
        return "forget", "retain"
    raise ValueError("The grouping table needs score columns 'forget_norm'/'retain_norm' (normalized, as the "
                     f"thresholds are) or 'forget'/'retain'; got {list(df.columns)}.")


def group_scatter(grouping: Any, thresholds: dict[str, float] | None = None, label_top: int = 3,
                  log_axes: bool | None = None, column: Column = "single", title: str | None = None) -> go.Figure:
    """Scatter of forget importance against retain importance for every module, by group.

    Args:
        grouping: a DataFrame with ``module``, ``group`` and score columns (``forget_norm`` and
            ``retain_norm`` preferred, else ``forget`` and ``retain``; optional raw scores and
            ``reason`` go into the hover text), or an object with ``.to_dataframe()`` and
            ``.thresholds`` such as :class:`~recircuit.unlearn.grouping.Grouping`.
        thresholds: ``{"forget": t_f, "retain": t_r}`` on the same scale as the plotted scores,
            optionally ``"margin"`` and ``"mode": "ratio"`` for the ratio rule. Overrides the
            object's own thresholds.
        label_top: write the names of this many most important modules next to their points.
        log_axes: log-scaled axes. ``None`` (default) chooses log when every score is positive
            and they span more than two orders of magnitude (importances are heavy-tailed);
            points with a zero score cannot be drawn on log axes.
        column: paper width.
        title: figure title.

    Returns:
        One marker trace per group (named by its plain-words label, ``meta`` = the group key) and
        one line trace per threshold.
    """
    df, own = as_grouping_frame(grouping)
    thr = {**own, **(thresholds or {})}
    xcol, ycol = _score_columns(df)
    df = df.copy()
    x = df[xcol].astype(float).to_numpy()
    y = df[ycol].astype(float).to_numpy()
    if log_axes is None:
        vals = np.concatenate([x, y])
        vals = vals[np.isfinite(vals)]
        log_axes = bool(vals.size and (vals > 0).all() and vals.max() / vals.min() > 100)
    top = set(df.assign(_m=np.maximum(x, y)).nlargest(max(0, label_top), "_m")["module"]) if label_top else set()
    fig = go.Figure()
    present = list(dict.fromkeys(df["group"].astype(str)))
    order = [g for g in GROUP_ORDER if g in present] + [g for g in present if g not in GROUP_ORDER]
    has_raw = {"forget", "retain"} <= set(df.columns) and xcol != "forget"
    for g in order:
        sub = df[df["group"].astype(str) == g]
        hover = []
        for _, row in sub.iterrows():
            lines = [f"<b>{row['module']}</b>", f"group: {GROUP_LABELS.get(g, g)}",
                     f"forget score: {row[xcol]:.4g}", f"retain score: {row[ycol]:.4g}"]
            if has_raw:
                lines.append(f"raw forget / retain: {row['forget']:.4g} / {row['retain']:.4g}")
            if "reason" in sub.columns and isinstance(row["reason"], str):
                lines.append(row["reason"])
            hover.append("<br>".join(lines))
        fig.add_trace(go.Scatter(
            x=sub[xcol].astype(float), y=sub[ycol].astype(float), mode="markers+text",
            name=GROUP_LABELS.get(g, g), meta=g, customdata=sub["module"].astype(str).tolist(),
            text=[m if m in top else "" for m in sub["module"]], textposition="top center",
            textfont={"size": 9, "color": GROUP_COLORS.get(g, GREY)},
            hovertext=hover, hoverinfo="text",
            marker={"color": GROUP_COLORS.get(g, GREY), "symbol": GROUP_SYMBOLS.get(g, "circle"), "size": 7,
                    "line": {"width": 0.5, "color": "white"} if g != "frozen" else {"width": 1}},
        ))
    finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)], [0.0]])
    hi = float(finite.max()) * 1.08 or 1.0
    lo = 0.0 if not log_axes else float(np.min(np.concatenate([x[x > 0], y[y > 0], [hi]]))) / 1.5
    if "forget" in thr and thr["forget"] is not None:
        t = float(thr["forget"])
        fig.add_trace(go.Scatter(x=[t, t], y=[lo, hi], mode="lines", name="forget threshold",
                                 meta="threshold_forget", hoverinfo="text",
                                 hovertext=f"forget-circuit threshold: {t:.4g}",
                                 line={"color": GROUP_COLORS["forget_specific"], "dash": "dash", "width": 1}))
    if "retain" in thr and thr["retain"] is not None:
        t = float(thr["retain"])
        fig.add_trace(go.Scatter(x=[lo, hi], y=[t, t], mode="lines", name="retain threshold",
                                 meta="threshold_retain", hoverinfo="text",
                                 hovertext=f"retain-circuit threshold: {t:.4g}",
                                 line={"color": GROUP_COLORS["retain_specific"], "dash": "dash", "width": 1}))
    if thr.get("mode") == "ratio" and thr.get("margin") is not None:
        mg = float(thr["margin"])
        xs = np.linspace(max(lo, 1e-12) if log_axes else lo, hi, 50)
        for sign, key in ((-1, "threshold_ratio_forget"), (1, "threshold_ratio_retain")):
            fig.add_trace(go.Scatter(
                x=xs, y=xs * math.exp(sign * mg), mode="lines", meta=key, hoverinfo="name",
                name=f"log(I_f / I_r) = {-sign * mg:+.2g}", showlegend=(sign == -1),
                legendgroup="ratio", line={"color": GROUP_COLORS["task_shared"], "dash": "dot", "width": 1}))
    apply_paper_style(fig, column, height_in=3.8 if column == "single" else 3.5)
    kind = "share" if xcol.endswith("_norm") else "score"
    fig.update_layout(title={"text": title or "Modules grouped by forget and retain importance"},
                      margin={"l": 55, "r": 10})
    n_entries = sum(1 for t in fig.data if t.showlegend is not False)
    legend_below(fig, n_rows=(n_entries + 1) // 2, columns=2)
    axis_type = "log" if log_axes else "linear"
    fig.update_xaxes(exponentformat="power")
    fig.update_yaxes(exponentformat="power")
    fig.update_xaxes(title_text=f"Forget-set importance ({kind})", type=axis_type,
                     range=None if log_axes else [lo, hi])
    fig.update_yaxes(title_text=f"Retain-set importance ({kind})", type=axis_type,
                     range=None if log_axes else [lo, hi])
    return fig
