"""Circuit diagrams: a layered DAG from the embeddings (input) to the logits.

Usage::

    from recircuit.viz import circuit_diagram, circuit_comparison
    fig = circuit_diagram(circuit, top_n=60)                      # a Circuit (duck-typed)
    fig = circuit_diagram(edges_df, top_n=60, groups=grouping)    # colour nodes by CURE group
    fig = circuit_comparison(forget_circuit, retain_circuit, top_n=60)

Columns run left to right: ``input``, then for every layer its attention heads (spread
vertically by head index) and its MLP, then ``logits``. Edges are drawn from the writer to the
reader node; an edge into a head's query input ends at the head, an edge into a key/value input
ends at the KV-group node (a small diamond left of the heads that share it; with one head per
group, at the head itself). Edge width grows with |score|; edge colour shows the signed score
(red positive, blue negative). Edges arc upward so long skips do not run through other nodes.
Hover over an edge's midpoint for its score, over a node for its name and group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from recircuit.nodes import head_name
from recircuit.viz._data import as_edges_frame, as_groups, parse_module, split_reader
from recircuit.viz.style import (
    DIVERGING,
    GREY,
    GROUP_COLORS,
    GROUP_LABELS,
    GROUP_ORDER,
    GROUP_SYMBOLS,
    OKABE_ITO,
    Column,
    apply_paper_style,
    legend_below,
)

_CHANNEL = {"q": "query input", "k": "key input", "v": "value input", None: "input"}
_KIND_STYLE = {
    "head": ("attention head", OKABE_ITO["blue"], "circle"),
    "mlp": ("MLP", OKABE_ITO["orange"], "square"),
    "kv": ("key/value input of a head group", GREY, "diamond"),
    "input": ("embeddings / logits", OKABE_ITO["black"], "circle"),
    "logits": ("embeddings / logits", OKABE_ITO["black"], "circle"),
}


def _graph_shape(obj: Any) -> dict[str, int]:
    g = getattr(obj, "graph", None)
    out = {}
    for key in ("n_layers", "n_heads", "group_size"):
        if g is not None and hasattr(g, key):
            out[key] = int(getattr(g, key))
    return out


def node_edges(edges: Any, top_n: int | None = None, group_size: int | None = None) -> pd.DataFrame:
    """Edges at node level: ``source``, ``target`` (node), ``channel`` (q/k/v/None), ``score``.

    Keeps the ``top_n`` edges by |score| (all when ``None``), sorted by |score| descending.
    KV-group readers ``a{L}.g{G}<k>`` become the node ``a{L}.g{G}``, or ``a{L}.h{G}`` when
    ``group_size == 1`` (no grouped-query attention).
    """
    df = as_edges_frame(edges)
    df = df.loc[df["score"].abs().sort_values(ascending=False, kind="stable").index]
    if top_n is not None:
        df = df.head(top_n)
    rows = []
    for src, tgt, s in zip(df["source"].astype(str), df["target"].astype(str), df["score"].astype(float)):
        node, chan = split_reader(tgt)
        kind, layer, idx = parse_module(node)
        if kind == "kv" and group_size == 1:
            node = head_name(layer, idx)
        parse_module(src)
        rows.append((src, node, chan, s, tgt))
    return pd.DataFrame(rows, columns=["source", "target", "channel", "score", "reader"])


def _positions(nodes: Iterable[str], n_layers: int, n_heads: int, group_size: int | None,
               n_kv_seen: int) -> dict[str, tuple[float, float]]:
    centre = (n_heads - 1) / 2
    pad = _pad(n_layers)
    gs = group_size or max(1.0, n_heads / max(1, n_kv_seen))
    pos = {}
    for n in nodes:
        kind, layer, idx = parse_module(n)
        if kind == "input":
            pos[n] = (-pad, 0.0)
        elif kind == "logits":
            pos[n] = (2.0 * n_layers + 1 + pad, 0.0)
        elif kind == "head":
            pos[n] = (2.0 * layer + 1, idx - centre)
        elif kind == "kv":
            pos[n] = (2.0 * layer + 1 - 0.4, idx * gs + (gs - 1) / 2 - centre)
        else:
            pos[n] = (2.0 * layer + 2, 0.0)
    return pos


def _pad(n_layers: int) -> float:
    """Gap between the input/logits columns and the first/last layer (wider for deep models)."""
    return max(1.0, n_layers / 8)


def _arc(p0: tuple[float, float], p1: tuple[float, float], cap: float, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Quadratic Bezier from p0 to p1, bent upward in proportion to the horizontal span."""
    (x0, y0), (x1, y1) = p0, p1
    bend = min(cap, 0.25 * abs(x1 - x0))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + bend
    t = np.linspace(0, 1, n)
    x = (1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1
    y = (1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1
    return x, y


def _circuit_traces(ne: pd.DataFrame, n_layers: int, n_heads: int, group_size: int | None,
                    groups: dict[str, str], smax: float, show_labels: bool | None,
                    showlegend: bool, panel: str) -> list[go.Scatter]:
    nodes = list(dict.fromkeys(["input", *ne["source"], *ne["target"], "logits"]))
    n_kv = 1 + max([parse_module(n)[2] for n in nodes if parse_module(n)[0] == "kv"], default=0)
    pos = _positions(nodes, n_layers, n_heads, group_size, n_kv)
    cap = n_heads / 2 + 1.0
    traces: list[go.Scatter] = []
    wmin, wmax = 0.5, 5.0
    mids_x, mids_y, mids_text = [], [], []
    for src, tgt, chan, s, reader in reversed(list(ne[["source", "target", "channel", "score", "reader"]].itertuples(index=False))):
        chan = chan if isinstance(chan, str) else None  # pandas may store None as NaN
        x, y = _arc(pos[src], pos[tgt], cap)
        frac = abs(s) / smax if smax > 0 else 0.0
        colour = sample_colorscale(DIVERGING, [(s / smax + 1) / 2 if smax > 0 else 0.5])[0]
        traces.append(go.Scatter(
            x=x, y=y, mode="lines", hoverinfo="skip", showlegend=False,
            line={"width": wmin + (wmax - wmin) * frac, "color": colour},
            meta={"kind": "edge", "panel": panel, "source": src, "target": tgt, "reader": reader,
                  "channel": chan, "score": float(s)},
        ))
        mids_x.append(x[len(x) // 2])
        mids_y.append(y[len(y) // 2])
        mids_text.append(f"{src} → {tgt} ({_CHANNEL[chan]})<br>score: {s:.4g}")
    traces.append(go.Scatter(
        x=mids_x, y=mids_y, mode="markers", hovertext=mids_text, hoverinfo="text", showlegend=False,
        marker={"size": 6, "opacity": 0.0}, name="edge scores", meta={"kind": "edge_hover", "panel": panel},
    ))
    # nodes, one trace per legend category
    cats: dict[tuple[str, str, str], list[str]] = {}
    for n in nodes:
        kind = parse_module(n)[0]
        if groups and kind in ("head", "mlp"):
            g = groups.get(n, "frozen")
            key = (GROUP_LABELS.get(g, g), GROUP_COLORS.get(g, GREY), GROUP_SYMBOLS.get(g, "circle"))
        else:
            key = _KIND_STYLE[kind]
        cats.setdefault(key, []).append(n)
    labels = show_labels if show_labels is not None else len(nodes) <= 40
    order = [GROUP_LABELS[g] for g in GROUP_ORDER]
    for (label, colour, symbol), names in sorted(cats.items(), key=lambda kv: order.index(kv[0][0]) if kv[0][0] in order else 99):
        hover = [f"<b>{n}</b>" + (f"<br>group: {GROUP_LABELS.get(groups[n], groups[n])}" if n in groups else "")
                 for n in names]
        traces.append(go.Scatter(
            x=[pos[n][0] for n in names], y=[pos[n][1] for n in names],
            mode="markers+text" if labels else "markers", text=names if labels else None,
            textposition="bottom center", textfont={"size": 8}, hovertext=hover, hoverinfo="text",
            name=label, legendgroup=label, showlegend=showlegend, customdata=names,
            marker={"color": colour, "symbol": symbol, "size": 9 if parse_module(names[0])[0] != "kv" else 6,
                    "line": {"width": 0.8, "color": "white"}},
            meta={"kind": "nodes", "panel": panel, "category": label},
        ))
    return traces


def _colorbar_trace(smax: float) -> go.Scatter:
    return go.Scatter(
        x=[None], y=[None], mode="markers", showlegend=False, hoverinfo="skip",
        marker={"colorscale": DIVERGING, "cmin": -smax, "cmax": smax, "color": [0.0], "showscale": True,
                "colorbar": {"title": {"text": "edge score", "side": "right"}, "thickness": 10, "len": 0.6, "x": 1.02}},
        meta={"kind": "colorbar"},
    )


def _ticks(n_layers: int) -> tuple[list[float], list[str]]:
    step = 1 if n_layers <= 12 else (2 if n_layers <= 24 else 5)
    vals = [-_pad(n_layers)] + [2.0 * layer + 1.5 for layer in range(0, n_layers, step)] + [2.0 * n_layers + 1 + _pad(n_layers)]
    text = ["input"] + [f"L{layer}" for layer in range(0, n_layers, step)] + ["logits"]
    return vals, text


def _resolve(circuit: Any, top_n: int | None, n_layers: int | None, n_heads: int | None,
             group_size: int | None) -> tuple[pd.DataFrame, int, int, int | None]:
    shape = _graph_shape(circuit)
    group_size = group_size if group_size is not None else shape.get("group_size")
    ne = node_edges(circuit, top_n, group_size)
    if ne.empty:
        raise ValueError("The circuit has no edges to draw; select a circuit with at least one edge (top_n > 0).")
    nl = n_layers or shape.get("n_layers") or 1 + max(
        [parse_module(n)[1] for n in [*ne["source"], *ne["target"]] if parse_module(n)[1] >= 0], default=0)
    nh = n_heads or shape.get("n_heads") or 1 + max(
        [parse_module(n)[2] for n in [*ne["source"], *ne["target"]] if parse_module(n)[0] == "head"], default=0)
    return ne, nl, nh, group_size


def circuit_diagram(circuit: Any, top_n: int | None = 50, groups: Any = None, n_layers: int | None = None,
                    n_heads: int | None = None, group_size: int | None = None, show_labels: bool | None = None,
                    column: Column = "double", title: str | None = None) -> go.Figure:
    """Draw the ``top_n`` strongest edges of a circuit as a layered DAG.

    Args:
        circuit: a DataFrame with ``source`` (``input``, ``a{L}.h{H}``, ``m{L}``), ``target``
            (``a{L}.h{H}<q>``, ``a{L}.g{G}<k>``, ``a{L}.g{G}<v>``, ``m{L}``, ``logits``) and
            ``score`` columns (rows with a false ``in_circuit`` are skipped), or an object with
            ``.to_dataframe()`` such as :class:`~recircuit.circuits.Circuit` (its graph gives the
            model shape and the GQA group size).
        top_n: how many edges to draw, strongest |score| first (``None``: all).
        groups: optional module -> group (dict, grouping table or ``Grouping``); nodes are then
            coloured by CURE group instead of by kind.
        n_layers, n_heads: model shape (from the circuit's graph, else inferred from the names).
        group_size: query heads per KV head; 1 draws key/value edges into the heads themselves.
        show_labels: write node names (default: when at most 40 nodes are drawn).
        column: paper width.
        title: figure title.
    """
    ne, nl, nh, gs = _resolve(circuit, top_n, n_layers, n_heads, group_size)
    smax = float(ne["score"].abs().max())
    fig = go.Figure(_circuit_traces(ne, nl, nh, gs, as_groups(groups), smax, show_labels, True, "main"))
    fig.add_trace(_colorbar_trace(smax))
    vals, text = _ticks(nl)
    apply_paper_style(fig, column, height_in=3.3)
    fig.update_layout(title={"text": title or f"Circuit: the {len(ne)} strongest edges from input to logits"},
                      hovermode="closest")
    legend_below(fig, n_rows=2 if column == "double" else 4, columns=None if column == "double" else 2)
    fig.update_xaxes(tickvals=vals, ticktext=text, showgrid=False, tickangle=0,
                     title_text="Layer (each: attention heads, then MLP)")
    fig.update_yaxes(visible=False)
    return fig


def circuit_comparison(c_forget: Any, c_retain: Any, top_n: int | None = 50, groups: Any = None,
                       n_layers: int | None = None, n_heads: int | None = None, group_size: int | None = None,
                       titles: tuple[str, str] = ("Forget-set circuit", "Retain-set circuit"),
                       show_labels: bool | None = None, title: str | None = None) -> go.Figure:
    """Two circuits side by side (forget against retain), on one shared edge-score scale.

    Arguments are those of :func:`circuit_diagram`, for both circuits. Edge widths and colours
    use the larger of the two maximum |scores|, so the panels are comparable.
    """
    a = _resolve(c_forget, top_n, n_layers, n_heads, group_size)
    b = _resolve(c_retain, top_n, n_layers, n_heads, group_size)
    nl, nh = max(a[1], b[1]), max(a[2], b[2])
    gs = a[3] if a[3] is not None else b[3]
    smax = float(max(a[0]["score"].abs().max(), b[0]["score"].abs().max()))
    grp = as_groups(groups)
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles, horizontal_spacing=0.04, shared_yaxes=True)
    for col, (ne, panel) in enumerate([(a[0], "forget"), (b[0], "retain")], start=1):
        for tr in _circuit_traces(ne, nl, nh, gs, grp, smax, show_labels, col == 1, panel):
            fig.add_trace(tr, row=1, col=col)
    fig.add_trace(_colorbar_trace(smax), row=1, col=2)
    vals, text = _ticks(nl)
    apply_paper_style(fig, "double", height_in=3.3)
    fig.update_layout(title={"text": title or "Forget and retain circuits side by side"},
                      hovermode="closest", margin={"t": 60})
    legend_below(fig, n_rows=2, axis_title=False)
    fig.update_xaxes(tickvals=vals, ticktext=text, showgrid=False, tickangle=0)
    fig.update_yaxes(visible=False)
    return fig
