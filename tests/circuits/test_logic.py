"""The Boolean view of forget and retain circuits: the gate rule, the SAT/MaxSAT reading against
brute force on random circuits, and a minimal core when forgetting and retaining clash."""

import itertools
import random

import pytest
import torch

from recircuit.circuits.logic import BooleanCircuit, LogicConfig, localize
from recircuit.circuits.neurons import NodeScores
from recircuit.errors import InputError


def _n(i: int) -> tuple[str, int, int]:
    return ("neuron", 0, i)


def _scores(noising, denoising, clean=2.0, corrupted=0.0) -> NodeScores:
    def t(xs):
        return torch.tensor([xs], dtype=torch.float32)       # one layer
    heads = {"noising": torch.zeros(1, 1), "denoising": torch.zeros(1, 1)}
    return NodeScores({"noising": t(noising), "denoising": t(denoising)}, heads, clean, corrupted, 4, {})


def test_the_gate_rule_necessary_is_and_sufficient_is_or():
    # gap 2: neuron 0 loses 60% when broken (AND), neuron 1 restores 50% alone (OR),
    # neuron 2 is below the 2% threshold, neuron 3 is both but more sufficient (OR)
    s = _scores(noising=[-1.2, -0.02, -0.01, -0.4], denoising=[0.1, 1.0, 0.02, 0.6])
    c = BooleanCircuit.from_scores("forget", s, LogicConfig(threshold=0.02))
    assert c.and_nodes == [_n(0)] and set(c.or_nodes) == {_n(1), _n(3)}
    assert c.necessity[_n(0)] == pytest.approx(0.6) and c.sufficiency[_n(1)] == pytest.approx(0.5)
    top = BooleanCircuit.from_scores("forget", s, LogicConfig(threshold=0.02, max_nodes=2))
    assert set(top.nodes) == {_n(0), _n(1)}                        # the two largest max(n, s)
    assert c.evaluate({_n(0), _n(3)}) and not c.evaluate({_n(1), _n(3)}) and not c.evaluate({_n(0)})


def test_forget_conflict_and_untouched_on_a_hand_worked_case():
    a, b, c, d, e = (_n(i) for i in range(5))
    forget = BooleanCircuit("forget", [a, b], [c, d], {a: .5, b: .4, c: .1, d: .1}, {a: .1, b: .1, c: .3, d: .3})
    retain = BooleanCircuit("retain", [b], [d, e], {b: .5}, {d: .3, e: .3})
    loc = localize(forget, [retain])
    assert loc.satisfiable and loc.core == []
    assert loc.conflict_nodes == [b]                              # retain needs b: it cannot be switched off
    assert set(loc.forget_nodes) == {a, c, d}                     # d may go: e keeps retain's OR true
    works = {v: v not in loc.forget_nodes for v in (a, b, c, d, e)}
    assert not forget.evaluate(works) and retain.evaluate(works)


def test_a_clash_returns_a_minimal_core_instead_of_raising():
    b, x = _n(1), _n(7)
    forget = BooleanCircuit("forget", [b], [], {b: 1.0}, {b: 0.0})
    retain = BooleanCircuit("retain", [b, x], [], {b: 1.0, x: 1.0}, {b: 0.0, x: 0.0})
    loc = localize(forget, [retain])
    assert not loc.satisfiable and loc.forget_nodes == [] and loc.conflict_nodes == [b]
    # minimal: the forget output and the one retain input it clashes with (not x, not the whole retain output)
    assert len(loc.core) == 2 and "forget output False" in loc.core and "retain needs neuron L0.7" not in loc.core
    assert any(name.startswith("retain needs neuron L0.1") for name in loc.core) or "retain output True" in loc.core


def test_two_forget_nodes_that_are_a_retain_or_group_leave_one_as_a_conflict():
    a, d, e = _n(0), _n(3), _n(4)
    forget = BooleanCircuit("forget", [a], [d, e], {a: .5, d: .1, e: .1}, {a: .1, d: .6, e: .3})
    retain = BooleanCircuit("retain", [], [d, e], {}, {d: .5, e: .5})
    loc = localize(forget, [retain])
    # d and e can each be switched off alone, not both: the heavier (d) goes, e stays on as a conflict
    assert loc.forget_nodes == [a, d] and loc.conflict_nodes == [e]


def _brute(forget, retains, nodes):
    sols = []
    for bits in itertools.product([False, True], repeat=len(nodes)):
        works = dict(zip(nodes, bits))
        if not forget.evaluate(works) and all(r.evaluate(works) for r in retains):
            sols.append(works)
    return sols


@pytest.mark.parametrize("seed", range(12))
def test_sat_reading_matches_brute_force_on_random_circuits(seed):
    rng = random.Random(seed)
    nodes = [_n(i) for i in range(7)]

    def circuit(name):
        chosen = rng.sample(nodes, rng.randint(1, 4))
        cut = rng.randint(0, len(chosen))
        imp = {v: rng.random() for v in chosen}
        return BooleanCircuit(name, chosen[:cut], chosen[cut:], imp, {v: 0.0 for v in chosen})

    forget, retains = circuit("forget"), [circuit("retain"), circuit("retain2")]
    loc = localize(forget, retains)
    sols = _brute(forget, retains, nodes)
    assert loc.satisfiable == bool(sols)
    if not sols:
        return
    can_off = {v for v in forget.nodes if any(not s[v] for s in sols)}
    assert set(loc.conflict_nodes) == set(forget.nodes) - set(loc.forget_nodes)    # the optimum keeps them on
    assert set(forget.nodes) - can_off <= set(loc.conflict_nodes)    # every node no solution switches off
    def weight(off):
        return sum(max(1, round(1000 * forget.importance(v))) for v in off)
    best = max(weight([v for v in forget.nodes if not s[v]]) for s in sols)
    works = {v: v not in loc.forget_nodes for v in nodes}
    assert not forget.evaluate(works) and all(r.evaluate(works) for r in retains)
    assert weight(loc.forget_nodes) == best                      # the MaxSAT optimum


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(InputError, match="both directions"):
        BooleanCircuit.from_scores("forget", NodeScores({"noising": torch.zeros(1, 2)}, {"noising": torch.zeros(1, 1)},
                                                        1.0, 0.0, 1, {}))
    with pytest.raises(InputError, match="moves the metric"):
        BooleanCircuit.from_scores("forget", _scores([0.0], [0.0], clean=0.5, corrupted=0.5 + 1e-8))
    with pytest.raises(InputError, match="nothing to switch off"):
        localize(BooleanCircuit("forget", [], []), [])
    with pytest.raises(InputError, match="threshold"):
        LogicConfig(threshold=1.5)
    with pytest.raises(InputError, match="twice"):
        BooleanCircuit("forget", [_n(0)], [_n(0)])
    f = BooleanCircuit("forget", [_n(0)], [])
    with pytest.raises(InputError, match="names must differ"):
        localize(f, [BooleanCircuit("retain", [_n(1)], []), BooleanCircuit("retain", [_n(2)], [])])


def test_a_forget_circuit_identical_to_the_retain_circuit_is_a_reported_clash():
    a, b, c = _n(0), _n(1), _n(2)
    forget = BooleanCircuit("forget", [a, b], [c], {a: .5, b: .4, c: 0.}, {a: .1, b: .1, c: .5})
    retain = BooleanCircuit("retain", [a, b], [c], {a: .5, b: .4, c: 0.}, {a: .1, b: .1, c: .5})
    loc = localize(forget, [retain])                   # nothing can be off for one and on for the other
    assert not loc.satisfiable and set(loc.conflict_nodes) == {a, b, c} and loc.forget_nodes == []
    assert "forget output False" in loc.core and len(loc.core) == 2      # and one retain constraint: minimal
    assert loc.core[1].startswith("retain")
