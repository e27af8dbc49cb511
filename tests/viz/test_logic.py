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
