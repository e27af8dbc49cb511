"""CLUE's figures: where the forget and conflict nodes sit, and why each node is an AND or an OR input.

Usage::

    from recircuit.viz.logic import localization_figure, gate_scatter
    localization_figure(res.extra["localization"], n_layers=30).show()   # forget / conflict nodes per layer
    gate_scatter(forget_circuit).show()      # necessity against sufficiency, AND above the diagonal
"""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from recircuit.errors import InputError
from recircuit.viz.style import GROUP_COLORS, apply_paper_style, legend_below

#: Colours of CLUE's two trained groups (CURE's forget-specific and task-shared colours: the same roles).
CLUE_COLORS = {"forget": GROUP_COLORS["forget_specific"], "conflict": GROUP_COLORS["task_shared"]}


def _nodes(loc, key: str) -> list[tuple[str, int, int]]:
    raw = loc[key] if isinstance(loc, Mapping) else getattr(loc, key)
    return [tuple(v) for v in raw]


def localization_figure(loc, n_layers: int, title: str | None = None) -> go.Figure:
    """Forget and conflict nodes per layer, neurons and heads in two panels (stacked bars).

    Args:
        loc: a :class:`recircuit.circuits.logic.Localization` or its ``to_dict()`` (as in
            ``res.extra["localization"]``).
        n_layers: the model's layers (the x axis).
        title: figure title (default: says whether the formula was satisfiable).

    Raises:
        InputError: a node outside ``n_layers``.
    """
    groups = {"forget": _nodes(loc, "forget_nodes"), "conflict": _nodes(loc, "conflict_nodes")}
    bad = [v for vs in groups.values() for v in vs if not 0 <= v[1] < n_layers]
    if bad:
        raise InputError(f"node {bad[0]} lies outside the model's {n_layers} layers", field="n_layers",
                         fix="pass the model's cfg.n_layers")
    sat = loc["satisfiable"] if isinstance(loc, Mapping) else loc.satisfiable
    fig = make_subplots(rows=1, cols=2, subplot_titles=("MLP neurons", "attention heads"), horizontal_spacing=0.1)
    layers = list(range(n_layers))
    for col, kind in ((1, "neuron"), (2, "head")):
        for g, nodes in groups.items():
            counts = [sum(1 for v in nodes if v[0] == kind and v[1] == layer) for layer in layers]
            fig.add_trace(go.Bar(x=layers, y=counts, name=f"{g} nodes", legendgroup=g, showlegend=col == 1,
                                 marker_color=CLUE_COLORS[g], meta={"group": g, "kind": kind},
                                 hovertemplate=f"layer %{{x}}: %{{y}} {g} {kind}s<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="layer", row=1, col=col)
        fig.update_yaxes(title_text="nodes", row=1, col=col)
    fig.update_layout(barmode="stack", title=title or ("CLUE localization" if sat else
                                                       "CLUE localization (unsatisfiable: all forget nodes conflict)"))
    apply_paper_style(fig)
    legend_below(fig)
    return fig


def gate_scatter(circuit, title: str | None = None) -> go.Figure:
    """Each node of a :class:`~recircuit.circuits.logic.BooleanCircuit`: necessity against sufficiency,
    AND inputs (on or above the diagonal) and OR inputs (below it) in two colours.

    Raises:
        InputError: an empty circuit.
    """
    if not circuit.nodes:
        raise InputError(f"the {circuit.name} circuit has no node", field="circuit",
                         fix="lower LogicConfig.threshold")
    fig = go.Figure()
    for gate, nodes, colour in (("AND", circuit.and_nodes, GROUP_COLORS["forget_specific"]),
                                ("OR", circuit.or_nodes, GROUP_COLORS["retain_specific"])):
        fig.add_trace(go.Scatter(
            x=[circuit.sufficiency[v] for v in nodes], y=[circuit.necessity[v] for v in nodes], mode="markers",
            name=f"{gate} inputs ({len(nodes)})", marker={"color": colour, "size": 6},
            text=[f"{k} L{layer}.{i}" for k, layer, i in nodes], meta={"gate": gate},
            hovertemplate="%{text}<br>sufficiency %{x:.3f}<br>necessity %{y:.3f}<extra></extra>"))
    top = max(max(circuit.necessity.values()), max(circuit.sufficiency.values()), 1e-9)
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", line={"dash": "dot", "color": "grey"},
                             showlegend=False, hoverinfo="skip"))
    fig.update_layout(title=title or f"{circuit.name} circuit: gate of each node",
                      xaxis_title="sufficiency (share of the gap restored alone)",
                      yaxis_title="necessity (share of the gap lost alone)")
    apply_paper_style(fig)
    legend_below(fig)
    return fig


def localization_heatmap(loc, n_layers: int, title: str | None = None) -> go.Figure:
    """Forget and conflict node counts per layer as a heatmap: rows forget/conflict neurons and
    heads, columns layers (the numbers written in the cells).

    Args:
        loc: a :class:`recircuit.circuits.logic.Localization` or its ``to_dict()``.
        n_layers: the model's layers.
        title: figure title.

    Raises:
        InputError: a node outside ``n_layers``.
    """
    groups = {"forget": _nodes(loc, "forget_nodes"), "conflict": _nodes(loc, "conflict_nodes")}
    if any(not 0 <= v[1] < n_layers for vs in groups.values() for v in vs):
        raise InputError(f"a node lies outside the model's {n_layers} layers", field="n_layers",
                         fix="pass the model's cfg.n_layers")
    rows = [(g, kind) for kind in ("neuron", "head") for g in ("forget", "conflict")]
    z = [[sum(1 for v in groups[g] if v[0] == kind and v[1] == layer) for layer in range(n_layers)] for g, kind in rows]
    labels = [f"{g} {kind}s" for g, kind in rows]
    fig = go.Figure(go.Heatmap(z=z, x=list(range(n_layers)), y=labels, colorscale="Oranges", text=z,
                               texttemplate="%{text}", hovertemplate="layer %{x}, %{y}: %{z}<extra></extra>",
                               colorbar={"title": "nodes"}))
    fig.update_layout(title=title or "CLUE: forget and conflict nodes per layer", xaxis_title="layer")
    apply_paper_style(fig)
    return fig


def circuits_figure(forget, retain, loc, title: str | None = None) -> go.Figure:
    """The forget and retain circuits side by side: each node at (layer, importance), coloured by
    its CLUE category (forget, conflict, untouched), AND inputs as circles, OR inputs as diamonds.

    Args:
        forget, retain: :class:`~recircuit.circuits.logic.BooleanCircuit` objects.
        loc: their :class:`~recircuit.circuits.logic.Localization` (or its ``to_dict()``).
        title: figure title.
    """
    cat = {v: "forget" for v in _nodes(loc, "forget_nodes")} | {v: "conflict" for v in _nodes(loc, "conflict_nodes")}
    colours = {**CLUE_COLORS, "untouched": GROUP_COLORS["frozen"]}
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"{forget.name} circuit", f"{retain.name} circuit"),
                        horizontal_spacing=0.1, shared_yaxes=False)
    for col, circuit in ((1, forget), (2, retain)):
        for group in ("forget", "conflict", "untouched"):
            for gate, nodes, symbol in (("AND", circuit.and_nodes, "circle"), ("OR", circuit.or_nodes, "diamond")):
                pts = [v for v in nodes if cat.get(v, "untouched") == group]
                if not pts:
                    continue
                fig.add_trace(go.Scatter(
                    x=[v[1] for v in pts], y=[circuit.importance(v) for v in pts], mode="markers",
                    name=f"{group} ({gate})", legendgroup=f"{group}-{gate}", showlegend=col == 1,
                    marker={"color": colours[group], "symbol": symbol, "size": 7},
                    text=[f"{k} L{layer}.{i}" for k, layer, i in pts], meta={"circuit": circuit.name, "group": group,
                                                                            "gate": gate},
                    hovertemplate="%{text}<br>importance %{y:.3f}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="layer", row=1, col=col)
        fig.update_yaxes(title_text="max(necessity, sufficiency)", row=1, col=col)
    fig.update_layout(title=title or "CLUE: the forget and retain circuits, nodes by category")
    apply_paper_style(fig)
    legend_below(fig)
    return fig
