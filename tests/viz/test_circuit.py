"""Circuit diagrams: which edges are drawn, how wide and in which colour, where nodes sit."""

from __future__ import annotations

import pytest
from plotly.colors import sample_colorscale

from recircuit.viz import GROUP_COLORS, circuit_comparison, circuit_diagram, node_edges
from recircuit.viz.style import DIVERGING


def _edges(fig, panel=None):
    return [t for t in fig.data if isinstance(t.meta, dict) and t.meta.get("kind") == "edge"
            and (panel is None or t.meta["panel"] == panel)]


def _nodes(fig):
    out = {}
    for t in fig.data:
        if isinstance(t.meta, dict) and t.meta.get("kind") == "nodes":
            for n, x, y in zip(t.customdata, t.x, t.y):
                out[n] = (x, y, t)
    return out


def test_node_edges_top_n_and_gqa(edges_df):
    ne = node_edges(edges_df, top_n=3)
    assert list(ne["score"]) == [3.0, -2.0, 1.0]                  # strongest |score| first
    ne = node_edges(edges_df)
    assert len(ne) == 6                                           # the in_circuit=False row is dropped
    row = ne[ne["reader"] == "a0.g0<k>"].iloc[0]
    assert row["target"] == "a0.g0" and row["channel"] == "k"
    ne1 = node_edges(edges_df, group_size=1)
    assert "a0.h0" in set(ne1["target"])                          # no GQA: k/v land on the head


def test_top_edges_width_and_colour(edges_df):
    fig = circuit_diagram(edges_df, top_n=4, n_layers=2, n_heads=3, group_size=3)
    edges = _edges(fig)
    assert len(edges) == 4
    by_pair = {(e.meta["source"], e.meta["target"]): e for e in edges}
    assert set(by_pair) == {("a1.h2", "logits"), ("a0.h1", "m0"), ("m0", "a1.h2"), ("input", "a0.h1")}
    widths = {k: e.line.width for k, e in by_pair.items()}
    assert widths[("a1.h2", "logits")] == pytest.approx(5.0)      # the strongest edge is the widest
    assert widths[("a1.h2", "logits")] > widths[("a0.h1", "m0")] > widths[("m0", "a1.h2")] > widths[("input", "a0.h1")]
    assert by_pair[("a1.h2", "logits")].line.color == sample_colorscale(DIVERGING, [1.0])[0]   # +max: red end
    assert by_pair[("a0.h1", "m0")].line.color == sample_colorscale(DIVERGING, [(-2 / 3 + 1) / 2])[0]
    cbar = next(t for t in fig.data if isinstance(t.meta, dict) and t.meta.get("kind") == "colorbar")
    assert cbar.marker.cmin == -3.0 and cbar.marker.cmax == 3.0
    hover = next(t for t in fig.data if isinstance(t.meta, dict) and t.meta.get("kind") == "edge_hover")
    assert any("a1.h2 → logits" in h and "3" in h for h in hover.hovertext)


def test_layered_positions(edges_df):
    fig = circuit_diagram(edges_df, top_n=None, n_layers=2, n_heads=3, group_size=3)
    pos = _nodes(fig)
    x = {n: p[0] for n, p in pos.items()}
    assert x["input"] < x["a0.h1"] < x["m0"] < x["a1.h2"] < x["logits"]
    assert x["a0.g0"] < x["a0.h0"]                                 # KV node left of its heads
    assert pos["a0.h0"][1] < pos["a0.h1"][1]                       # heads spread by index
    assert pos["a0.g0"][1] == pytest.approx(pos["a0.h1"][1])       # group 0 centred on heads 0-2
    for e in _edges(fig):                                          # every edge starts and ends on its nodes
        s, t = pos[e.meta["source"]], pos[e.meta["target"]]
        assert (e.x[0], e.y[0]) == pytest.approx(s[:2]) and (e.x[-1], e.y[-1]) == pytest.approx(t[:2])


def test_group_overlay(edges_df):
    groups = {"a1.h2": "forget_specific", "a0.h1": "retain_specific", "m0": "task_shared"}
    fig = circuit_diagram(edges_df, groups=groups, n_layers=2, n_heads=3, group_size=3)
    pos = _nodes(fig)
    for node, grp in groups.items():
        assert pos[node][2].marker.color == GROUP_COLORS[grp]
    assert pos["a0.h0"][2].marker.color == GROUP_COLORS["frozen"]   # a module not in the mapping
    assert "retain-specific" in pos["a0.h1"][2].hovertext[list(pos["a0.h1"][2].customdata).index("a0.h1")]


def test_comparison_shares_scale(edges_df):
    weaker = edges_df.assign(score=edges_df["score"] / 3)
    fig = circuit_comparison(edges_df, weaker, top_n=3, n_layers=2, n_heads=3, group_size=3)
    left, right = _edges(fig, "forget"), _edges(fig, "retain")
    assert len(left) == len(right) == 3
    assert max(e.line.width for e in left) == pytest.approx(5.0)
    assert max(e.line.width for e in right) < 5.0                  # same scale: weaker circuit draws thinner
    assert {a.text for a in fig.layout.annotations} >= {"Forget-set circuit", "Retain-set circuit"}
    assert all(e.xaxis == "x" for e in left) and all(e.xaxis == "x2" for e in right)


def test_real_circuit_object():
    torch = pytest.importorskip("torch")
    circuit_mod = pytest.importorskip("recircuit.circuits.circuit")
    from recircuit.circuits.graph import Graph

    g = Graph(n_layers=2, n_heads=4, n_kv_heads=2)
    torch.manual_seed(0)
    scores = torch.randn(g.n_forward, g.n_backward) * g.edge_mask
    c = circuit_mod.Circuit(g, scores, circuit_mod.select_edges(scores, g, top_n=60))
    fig = circuit_diagram(c, top_n=12)
    edges = _edges(fig)
    assert len(edges) == min(12, c.n_edges)
    top = c.to_dataframe().iloc[0]
    assert max(abs(e.meta["score"]) for e in edges) == pytest.approx(abs(top["score"]))
    kv = [n for n in _nodes(fig) if ".g" in n]
    assert all(n.startswith("a") for n in kv)                      # GQA groups kept as group nodes


def test_empty_circuit_errors(edges_df):
    with pytest.raises(ValueError, match="no edges"):
        circuit_diagram(edges_df.iloc[:0])
