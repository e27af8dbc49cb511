"""Node-name grammar: one parser, round trips, refusals."""

import pytest

from recircuit.circuits.graph import Graph
from recircuit.nodes import (
    Node,
    head_name,
    is_module,
    kv_name,
    mlp_name,
    parse_node,
    reader_name,
)


def test_parse_kinds():
    assert parse_node("a12.h3") == Node("head", 12, 3, None)
    assert parse_node("a12.h3").head == 3
    assert parse_node("m7") == Node("mlp", 7, -1, None)
    assert parse_node("m7").head == -1
    assert parse_node("a2.g1<k>") == Node("kv", 2, 1, "k")
    assert parse_node("a0.h4<q>").module == "a0.h4"
    assert parse_node("input").kind == "input" and parse_node("logits").layer == -1


@pytest.mark.parametrize("bad", ["blocks.3", "a1", "a1.h", "h1", "m", "m1<x>", "a1.h2<q", "a-1.h0", " m1", "a1.x2"])
def test_refuses(bad):
    with pytest.raises(ValueError, match="Unknown node name"):
        parse_node(bad)


def test_builders_round_trip_every_graph_name():
    g = Graph(3, 4, 2)
    for name in [*g.forward_names, *g.backward_names]:
        assert parse_node(name).name == name
    assert head_name(1, 2) == "a1.h2" and mlp_name(4) == "m4" and kv_name(0, 1) == "a0.g1"
    assert reader_name("a1.h2", "q") == "a1.h2<q>"
    assert [n for n in g.forward_names if is_module(n)] == g.modules()
    assert not is_module("a1.h2<q>") and not is_module("input") and not is_module("nonsense")


def test_top_heads_when_the_top_modules_are_all_mlps():
    from recircuit.nodes import top_heads

    importance = {"m0": 9.0, "m12": 8.0, "m18": 7.0, "m3": 6.0, "a5.h2": 0.5, "a1.h0": 0.9, "a7.h3": 0.1}
    top4 = sorted(importance, key=lambda n: -importance[n])[:4]
    assert all(n.startswith("m") for n in top4)           # picking heads from these would find none
    assert top_heads(importance, 2) == [(1, 0), (5, 2)]
    assert top_heads(importance, 10) == [(1, 0), (5, 2), (7, 3)]
    assert top_heads({"m0": 1.0, "logits": 0.5}, 4) == []
