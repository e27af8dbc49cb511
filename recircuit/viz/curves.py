"""Faithfulness curves of circuits, and the forget-utility Pareto plot of unlearning methods.

Usage::

    from recircuit.viz import faithfulness_curves, pareto_plot
    fig = faithfulness_curves({"EAP-IG, label flip": curve,                  # FaithfulnessCurve-like
                               "EAP, target swap": ([0.1, 1, 10, 100], [0.2, 0.5, 0.9, 1.0])})
    fig = pareto_plot(report_df)   # columns: method, jsd_mean, jsd_std, auc_mean, auc_std

**Faithfulness.** f = (circuit - corrupted) / (clean - corrupted) against the share of edges kept,
on a log axis in percent. CPR (area under f, higher is better) and CMD (area under |1 - f|, lower
is better) are given in the legend; they are taken from the curve object when it has them, else
computed by the trapezoid rule over the fraction of edges kept, as
:class:`recircuit.circuits.FaithfulnessCurve` does (a size of 0, the empty circuit, counts in the
areas but cannot be drawn on a log axis).

**Pareto plot.** Each method is a point at (JSD to Retrain on the forget set, test AUC) with
error bars of one standard deviation over seeds. Better is left (closer to Retrain) and up
(more utility); the dashed line joins the methods that no other method beats on both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from jaxtyping import Float

from recircuit.viz.style import GREY, PALETTE, Column, apply_paper_style, method_color


def _as_curve(label: str, val: Any, sizes_unit: str) -> tuple[np.ndarray, np.ndarray, float | None, float | None]:
    """(fraction of edges, f, cpr, cmd) from a curve object, a dict or a (sizes, f) pair."""
    cpr = cmd = None
    if hasattr(val, "to_dict") and not isinstance(val, Mapping):
        val = val.to_dict()
    if isinstance(val, Mapping):
        if "sizes" not in val or not ({"faithfulness", "f"} & set(val)):
            raise ValueError(f"Curve {label!r}: a dict needs 'sizes' and 'faithfulness' (or 'f'), got {sorted(val)}.")
        sizes, f = val["sizes"], val.get("faithfulness", val.get("f"))
        cpr, cmd = val.get("cpr"), val.get("cmd")
    elif isinstance(val, Sequence | tuple) and len(val) == 2:
        sizes, f = val
    else:
        raise TypeError(f"Curve {label!r}: expected (sizes, f_values), a dict or a FaithfulnessCurve, got {type(val).__name__}.")
    sizes = np.asarray(sizes, dtype=float)
    f = np.asarray(f, dtype=float)
    if sizes.shape != f.shape or sizes.ndim != 1:
        raise ValueError(f"Curve {label!r}: sizes {sizes.shape} and f values {f.shape} must be 1-D of equal length.")
    unit = sizes_unit
    if unit == "auto":
        unit = "fraction" if sizes.max(initial=0.0) <= 1.0 else "percent"
    if unit not in ("fraction", "percent"):
        raise ValueError(f"sizes_unit must be 'auto', 'fraction' or 'percent', got {sizes_unit!r}")
    frac = sizes / 100.0 if unit == "percent" else sizes
    order = np.argsort(frac, kind="stable")
    return frac[order], f[order], cpr, cmd


def area_scores(frac: Float[np.ndarray, " n"], f: Float[np.ndarray, " n"]) -> tuple[float, float]:
    """(CPR, CMD): trapezoid areas under f and under |1 - f| over the fraction of edges kept."""
    return float(np.trapezoid(f, frac)), float(np.trapezoid(np.abs(1.0 - f), frac))


def faithfulness_curves(curves: Mapping[str, Any], sizes_unit: str = "auto", level: float | None = 0.8,
                        column: Column = "single", title: str | None = None) -> go.Figure:
    """Faithfulness against circuit size for several methods or corruptions.

    Args:
        curves: label -> ``(sizes, f_values)``, a dict with ``sizes``/``faithfulness`` (and
            optionally ``cpr``/``cmd``), or an object with ``.to_dict()`` such as
            :class:`~recircuit.circuits.FaithfulnessCurve`.
        sizes_unit: ``"fraction"`` (0-1), ``"percent"`` (0-100) or ``"auto"`` (fraction when all
            sizes are at most 1).
        level: draw a dotted reference line at this faithfulness (``None``: none).
        column: paper width.
        title: figure title.

    Returns:
        One line per curve, named ``"<label> (CPR 0.81, CMD 0.12)"``, with ``meta`` holding
        ``{"label", "cpr", "cmd"}``; x is the percentage of edges kept, log-scaled.
    """
    if not curves:
        raise ValueError("faithfulness_curves needs at least one curve.")
    fig = go.Figure()
    xmin, xmax = np.inf, 0.0
    for i, (label, val) in enumerate(curves.items()):
        frac, f, cpr, cmd = _as_curve(label, val, sizes_unit)
        if cpr is None or cmd is None:
            c2, d2 = area_scores(frac, f)
            cpr = c2 if cpr is None else cpr
            cmd = d2 if cmd is None else cmd
        keep = frac > 0
        pct = frac[keep] * 100.0
        if pct.size:
            xmin, xmax = min(xmin, pct.min()), max(xmax, pct.max())
        colour = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(
            x=pct, y=f[keep], mode="lines+markers", name=f"{label} (CPR {cpr:.2f}, CMD {cmd:.2f})",
            meta={"label": label, "cpr": float(cpr), "cmd": float(cmd)},
            line={"color": colour, "width": 1.5}, marker={"size": 5, "color": colour},
            hovertemplate=f"{label}<br>%{{x:.3g}}% of edges<br>faithfulness %{{y:.3f}}<extra></extra>",
        ))
    if not np.isfinite(xmin):
        xmin, xmax = 0.1, 100.0
    for yref, name, dash in ((1.0, "full model (f = 1)", "dash"), (0.0, "corrupted run (f = 0)", "dash")):
        fig.add_trace(go.Scatter(x=[xmin, xmax], y=[yref, yref], mode="lines", name=name, showlegend=False,
                                 hoverinfo="name", line={"color": GREY, "dash": dash, "width": 1},
                                 meta={"label": name, "reference": yref}))
    if level is not None:
        fig.add_trace(go.Scatter(x=[xmin, xmax], y=[level, level], mode="lines", name=f"f = {level:g}",
                                 hoverinfo="name", line={"color": GREY, "dash": "dot", "width": 1},
                                 meta={"label": f"f = {level:g}", "reference": level}))
    apply_paper_style(fig, column, height_in=2.8)
    fig.update_layout(title={"text": title or "Circuit faithfulness by size"},
                      legend={"x": 0.99, "y": 0.02, "xanchor": "right", "yanchor": "bottom",
                              "bgcolor": "rgba(255,255,255,0.8)", "font": {"size": 10}})
    fig.update_xaxes(type="log", title_text="Edges kept (% of all edges, log scale)")
    fig.update_yaxes(title_text="Faithfulness f (1 = full model)")
    return fig


def _pm(std: float) -> str:
    return "" if pd.isna(std) else f" ± {float(std):.4f}"


_PARETO_COLS = ("method", "jsd_mean", "jsd_std", "auc_mean", "auc_std")


def pareto_front(jsd: Float[np.ndarray, " n"], auc: Float[np.ndarray, " n"]) -> list[int]:
    """Indices of the points no other point beats on both (lower JSD and higher AUC), by JSD."""
    idx = []
    for i in range(len(jsd)):
        dominated = any((jsd[j] <= jsd[i] and auc[j] >= auc[i]) and (jsd[j] < jsd[i] or auc[j] > auc[i])
                        for j in range(len(jsd)))
        if not dominated:
            idx.append(i)
    return sorted(idx, key=lambda i: (jsd[i], -auc[i]))


def label_positions(x: Float[np.ndarray, " n"], y: Float[np.ndarray, " n"], xmax: float,
                    texts: list[str] | None = None) -> list[str]:
    """A text position per point, so that labels do not print over each other or other points.

    Each label's box is estimated in axis units (about 1.2% of the x range per character wide,
    8% of the y range high; each range at least 5% of the axis's largest value, as a plot pads
    it) for the four places above or below, right or left of its point; the place whose box
    covers the fewest other points and earlier labels wins, and a box past ``xmax`` counts as a
    collision. Ties keep the usual place: above, to the right (to the left in the right 30% of
    the range).
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    fin = np.isfinite(xs) & np.isfinite(ys)

    def span(v: np.ndarray) -> float:     # an axis spans at least 5% of its largest value
        v = v[fin]
        return max(float(np.ptp(v)), 0.05 * float(np.abs(v).max())) if v.size else 0.0

    xspan, yspan = span(xs) or 1.0, span(ys) or 1.0
    texts = texts or ["x" * 6] * len(xs)
    if not (len(texts) == len(xs) == len(ys)):
        raise ValueError(f"label_positions needs one x, y and text per point; got {len(xs)}, {len(ys)} and {len(texts)}")
    boxes: list[tuple[float, float, float, float]] = []
    out = []
    for i, (xi, yi) in enumerate(zip(xs, ys)):
        side = "left" if xi > 0.7 * xmax else "right"
        other = "right" if side == "left" else "left"
        w, h = 0.012 * xspan * max(1, len(texts[i])), 0.08 * yspan
        best, best_cost = f"top {side}", None
        for pos in (f"top {side}", f"bottom {side}", f"top {other}", f"bottom {other}"):
            x0 = xi if pos.endswith("right") else xi - w
            y0 = yi if pos.startswith("top") else yi - h
            box = (x0, x0 + w, y0, y0 + h)
            cost = sum(1 for j in range(len(xs)) if j != i and fin[j]
                       and box[0] <= xs[j] <= box[1] and box[2] <= ys[j] <= box[3])
            cost += sum(1 for b in boxes if b[0] < box[1] and box[0] < b[1] and b[2] < box[3] and box[2] < b[3])
            cost += 1 if box[1] > xmax * 1.02 else 0
            if best_cost is None or cost < best_cost:
                best, best_cost = pos, cost
        x0 = xi if best.endswith("right") else xi - w
        y0 = yi if best.startswith("top") else yi - h
        boxes.append((x0, x0 + w, y0, y0 + h))
        out.append(best)
    return out


def pareto_plot(results: pd.DataFrame, reference_auc: float | None = None, show_front: bool = True,
                exclude_from_front: tuple[str, ...] = ("retrain",), column: Column = "single",
                title: str | None = None) -> go.Figure:
    """Forget-utility trade-off: JSD to Retrain on the forget set against test AUC, per method.

    Args:
        results: one row per method with ``method``, ``jsd_mean``, ``jsd_std``, ``auc_mean`` and
            ``auc_std`` (std over seeds; NaN or missing std draws no bar).
        reference_auc: draw the original model's test AUC as a horizontal line.
        show_front: join the Pareto-optimal methods with a dashed line.
        exclude_from_front: methods left out of the front (case-insensitive); Retrain is the
            reference (its JSD to itself is 0), so it is drawn but never "wins".
        column: paper width.
        title: figure title.

    Returns:
        One marker trace per method (``name`` = method) with ``error_x``/``error_y`` set.
    """
    if not isinstance(results, pd.DataFrame):
        results = pd.DataFrame(results)
    missing = [c for c in ("method", "jsd_mean", "auc_mean") if c not in results.columns]
    if missing:
        raise ValueError(f"pareto_plot needs the columns {list(_PARETO_COLS)}; missing {missing}.")
    df = results.copy()
    for c in ("jsd_std", "auc_std"):
        if c not in df.columns:
            df[c] = np.nan
    fig = go.Figure()
    xmax = float(np.nanmax(df["jsd_mean"].astype(float) + df["jsd_std"].astype(float).fillna(0.0))) if len(df) else 1.0
    xmax = xmax or 1.0
    places = label_positions(df["jsd_mean"].astype(float).to_numpy(), df["auc_mean"].astype(float).to_numpy(), xmax,
                             [str(m) for m in df["method"]])
    for i, row in enumerate(df.itertuples(index=False)):
        m = str(row.method)
        colour = method_color(m, i)
        is_cure = m.lower() == "cure"
        fig.add_trace(go.Scatter(
            x=[row.jsd_mean], y=[row.auc_mean], mode="markers+text", name=m, text=[m],
            textposition=places[i],
            textfont={"size": 10, "color": colour}, meta={"method": m},
            error_x={"type": "data", "array": [0.0 if pd.isna(row.jsd_std) else float(row.jsd_std)],
                     "visible": not pd.isna(row.jsd_std), "thickness": 1, "width": 3, "color": colour},
            error_y={"type": "data", "array": [0.0 if pd.isna(row.auc_std) else float(row.auc_std)],
                     "visible": not pd.isna(row.auc_std), "thickness": 1, "width": 3, "color": colour},
            marker={"color": colour, "size": 11 if is_cure else 8, "symbol": "star" if is_cure else "circle",
                    "line": {"width": 0.5, "color": "white"}},
            hovertemplate=(f"<b>{m}</b><br>JSD to Retrain: %{{x:.4f}}{_pm(row.jsd_std)}"
                           f"<br>test AUC: %{{y:.4f}}{_pm(row.auc_std)}<extra></extra>"),
        ))
    jsd = df["jsd_mean"].astype(float).to_numpy()
    auc = df["auc_mean"].astype(float).to_numpy()
    if show_front and len(df) > 1:
        skip = {m.lower() for m in exclude_from_front}
        cand = [i for i, m in enumerate(df["method"].astype(str)) if m.lower() not in skip]
        front = [cand[i] for i in pareto_front(jsd[cand], auc[cand])]
        fig.add_trace(go.Scatter(x=jsd[front], y=auc[front], mode="lines", name="Pareto front",
                                 line={"color": GREY, "dash": "dash", "width": 1}, hoverinfo="skip",
                                 meta={"pareto_front": [str(df["method"].iloc[i]) for i in front]}))
    if reference_auc is not None:
        fig.add_trace(go.Scatter(x=[-0.05 * xmax, 1.15 * xmax], y=[reference_auc, reference_auc], mode="lines",
                                 name="original model's test AUC", hoverinfo="name",
                                 line={"color": GREY, "dash": "dot", "width": 1},
                                 meta={"reference_auc": float(reference_auc)}))
    apply_paper_style(fig, column, height_in=2.8)
    fig.update_layout(title={"text": title or "Forgetting vs utility (mean ± std)"}, showlegend=False)
    fig.update_xaxes(title_text="Forget-set JSD to Retrain (lower is better)", range=[-0.05 * xmax, 1.15 * xmax])
    fig.update_yaxes(title_text="Test AUC (higher is better)")
    return fig
