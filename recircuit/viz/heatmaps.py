"""Layer x head heatmaps: module importance for forget and retain, and the weight-change map.

Usage::

    from recircuit.viz import importance_heatmap, weight_change_map, save_figure
    fig = importance_heatmap(forget_circuit, retain_circuit, n_layers=30, n_heads=9)
    save_figure(fig, "figures/importance.pdf")
    fig = weight_change_map({"a3.h5": 0.12, "m7": 0.40, ...}, n_layers=30, n_heads=9)

Rows are layers (layer 0 at the bottom), columns the attention heads, and one extra column,
"MLP", holds the layer's MLP. Hovering over a cell gives the module name and its value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from recircuit.viz._data import as_importance, infer_shape, module_grid, normalize
from recircuit.viz.style import DIVERGING, SEQUENTIAL, Column, apply_paper_style


def _labels(n_heads: int) -> list[str]:
    return [str(h) for h in range(n_heads)] + ["MLP"]


def _heatmap(grid: np.ndarray, names: list[list[str]], n_heads: int, value_label: str,
             name: str = "", **style) -> go.Heatmap:
    n_layers = grid.shape[0]
    return go.Heatmap(
        z=grid, x=_labels(n_heads), y=[f"L{layer}" for layer in range(n_layers)],
        customdata=np.array(names, dtype=object), hoverongaps=False, name=name, xgap=0.5, ygap=0.5,
        hovertemplate=f"%{{customdata}}<br>{value_label}: %{{z:.4g}}<extra>{name}</extra>", **style,
    )


def importance_heatmap(importance_forget: Any, importance_retain: Any, n_layers: int | None = None,
                       n_heads: int | None = None, normalize_by: str | None = "share",
                       column: Column = "double", title: str | None = None) -> go.Figure:
    """Forget importance, retain importance and their difference on layer x head grids.

    Args:
        importance_forget: module -> score (``{"a3.h5": 0.2, "m7": 1.3}``), or an object with
            ``.module_importance()`` such as a forget :class:`~recircuit.circuits.Circuit`.
        importance_retain: the same for the retain set.
        n_layers, n_heads: the model's shape (inferred from the names when omitted).
        normalize_by: ``"share"`` (each module's share of the total, the default, which makes the
            two sets comparable), ``"max"`` (divide by the largest) or ``None`` (raw scores).
        column: paper width, ``"single"`` or ``"double"``.
        title: figure title (a plain-words default is used when omitted).

    Returns:
        A figure with three heatmaps; the third is forget minus retain on a diverging scale
        centred on zero (red: more important for forgetting, blue: for retaining).
    """
    f = normalize(as_importance(importance_forget, "importance_forget"), normalize_by)
    r = normalize(as_importance(importance_retain, "importance_retain"), normalize_by)
    il, ih = infer_shape(f, r)
    n_layers = n_layers or il
    n_heads = n_heads if n_heads is not None else ih
    gf, names = module_grid(f, n_layers, n_heads)
    gr, _ = module_grid(r, n_layers, n_heads)
    diff = gf - gr
    unit = {"share": "share of total", "max": "relative importance", None: "importance"}[normalize_by]
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=0.08,
                        subplot_titles=("Forget set", "Retain set", "Forget minus retain"))
    vmax = float(np.nanmax([np.nanmax(np.abs(gf)) if np.isfinite(gf).any() else 0.0,
                            np.nanmax(np.abs(gr)) if np.isfinite(gr).any() else 0.0]))
    for col, (grid, label) in enumerate([(gf, "forget"), (gr, "retain")], start=1):
        fig.add_trace(_heatmap(grid, names, n_heads, unit, name=label, coloraxis="coloraxis"), row=1, col=col)
    dmax = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 0.0
    fig.add_trace(_heatmap(diff, names, n_heads, "forget - retain", name="difference", coloraxis="coloraxis2"),
                  row=1, col=3)
    bar = {"thickness": 8, "len": 0.45, "x": 1.01, "title": {"side": "right"}}
    fig.update_layout(
        coloraxis={"colorscale": SEQUENTIAL, "cmin": 0.0, "cmax": vmax or 1.0,
                   "colorbar": {**bar, "y": 0.76, "title": {"text": unit, "side": "right"}}},
        coloraxis2={"colorscale": DIVERGING, "cmid": 0.0, "cmin": -(dmax or 1.0), "cmax": dmax or 1.0,
                    "colorbar": {**bar, "y": 0.24, "title": {"text": "forget - retain", "side": "right"}}},
    )
    fig.update_xaxes(title_text="Attention head (last column: the layer's MLP)", row=1, col=2)
    fig.update_yaxes(title_text="Layer", row=1, col=1)
    apply_paper_style(fig, column, height_in=max(2.0, 0.12 * n_layers + 1.0))
    fig.update_xaxes(tickfont={"size": 9})
    fig.update_layout(title={"text": title or "Which heads and MLPs matter for the forget and retain sets"},
                      margin={"t": 60})
    fig.update_xaxes(showgrid=False, tickangle=0)
    fig.update_yaxes(showgrid=False)
    return fig


def weight_change_map(deltas: Any, n_layers: int | None = None, n_heads: int | None = None,
                      log_scale: bool = False, column: Column = "single", title: str | None = None,
                      value_label: str = "update norm") -> go.Figure:
    """Per-module norm of the weight update after unlearning, on a layer x head grid.

    Args:
        deltas: module -> norm of the update (``{"a3.h5": 0.12, "m7": 0.4}``), e.g.
            ``||W_after - W_before||_F`` of each head's slices and each MLP.
        n_layers, n_heads: the model's shape (inferred from the names when omitted).
        log_scale: colour by log10(norm) (frozen modules with norm 0 stay blank).
        column: paper width.
        title: figure title.
        value_label: what the colour means, shown on the colour bar and on hover.
    """
    d = as_importance(deltas, "deltas")
    il, ih = infer_shape(d)
    n_layers = n_layers or il
    n_heads = n_heads if n_heads is not None else ih
    grid, names = module_grid(d, n_layers, n_heads)
    label = value_label
    if log_scale:
        with np.errstate(divide="ignore", invalid="ignore"):
            grid = np.where(grid > 0, np.log10(grid), np.nan)
        label = f"log10 {value_label}"
    fig = go.Figure(_heatmap(grid, names, n_heads, label, name="update", colorscale=SEQUENTIAL,
                             colorbar={"title": {"text": label, "side": "right"}, "thickness": 10}))
    apply_paper_style(fig, column, height_in=max(2.0, 0.1 * n_layers + 1.0))
    fig.update_layout(title={"text": title or "How much unlearning changed each head and MLP"})
    fig.update_xaxes(title_text="Attention head (last column: MLP)", showgrid=False)
    fig.update_yaxes(title_text="Layer", showgrid=False)
    return fig
