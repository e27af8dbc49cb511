"""CLUE's figures: the bars count each layer's forget and conflict nodes; the scatter puts each gate on its side."""

import pytest

from recircuit.circuits.logic import BooleanCircuit, Localization
from recircuit.errors import InputError
from recircuit.viz.logic import gate_scatter, localization_figure


def test_localization_bars_count_nodes_per_layer_and_kind():
    loc = Localization([("neuron", 0, 1), ("neuron", 0, 5), ("head", 2, 0)], [("neuron", 2, 3)], True, [], 0, 0)
    for given in (loc, loc.to_dict()):
        fig = localization_figure(given, n_layers=3)
        bars = {(t.meta["group"], t.meta["kind"]): list(t.y) for t in fig.data}
        assert bars[("forget", "neuron")] == [2, 0, 0] and bars[("conflict", "neuron")] == [0, 0, 1]
        assert bars[("forget", "head")] == [0, 0, 1] and bars[("conflict", "head")] == [0, 0, 0]
    unsat = Localization([], [("head", 0, 0)], False, ["forget output False"], 0, 0)
    assert "unsatisfiable" in localization_figure(unsat, 1).layout.title.text
    with pytest.raises(InputError, match="outside"):
        localization_figure(loc, n_layers=2)


def test_gate_scatter_puts_and_inputs_above_the_diagonal():
    a, b = ("neuron", 0, 0), ("head", 1, 2)
    c = BooleanCircuit("forget", [a], [b], {a: 0.4, b: 0.1}, {a: 0.2, b: 0.3}, 1.0)
    fig = gate_scatter(c)
    pts = {t.meta["gate"]: (list(t.x), list(t.y)) for t in fig.data if t.meta}
    assert pts["AND"] == ([0.2], [0.4]) and pts["OR"] == ([0.3], [0.1])
    with pytest.raises(InputError, match="no node"):
        gate_scatter(BooleanCircuit("forget", [], []))


def test_heatmap_counts_and_circuits_side_by_side_by_category():
    from recircuit.viz.logic import circuits_figure, localization_heatmap

    a, b, c = ("neuron", 0, 1), ("neuron", 1, 2), ("head", 1, 0)
    loc = Localization([a], [b], True, [], 0, 0)
    z = localization_heatmap(loc, 2).data[0].z
    assert [list(r) for r in z] == [[1, 0], [0, 1], [0, 0], [0, 0]]      # forget/conflict neurons, then heads
    forget = BooleanCircuit("forget", [a, b], [], {a: .5, b: .3}, {a: .1, b: .1}, 1.0)
    retain = BooleanCircuit("retain", [b], [c], {b: .4, c: .0}, {b: .1, c: .6}, 1.0)
    fig = circuits_figure(forget, retain, loc)
    got = {(t.meta["circuit"], t.meta["group"], t.meta["gate"]): list(t.x) for t in fig.data}
    assert got == {("forget", "forget", "AND"): [0], ("forget", "conflict", "AND"): [1],
                   ("retain", "conflict", "AND"): [1], ("retain", "untouched", "OR"): [1]}
