from recircuit.circuits import Graph
from recircuit.models import tiny_model


def test_gqa_graph_has_kv_group_readers():
    g = Graph(n_layers=30, n_heads=9, n_kv_heads=3)  # SmolLM2-135M's shape
    assert g.n_forward == 1 + 30 * 10
    assert g.n_backward == 30 * (9 + 3 + 3 + 1) + 1
    assert g.head_readers(4, 5) == [g.backward_index["a4.h5<q>"], g.backward_index["a4.g1<k>"], g.backward_index["a4.g1<v>"]]


def test_edges_go_only_downstream():
    g = Graph.from_model(tiny_model(0))
    m = g.edge_mask
    fi, bi = g.forward_index, g.backward_index
    assert m[fi["input"], bi["a0.h0<q>"]] and m[fi["a0.h3"], bi["m0"]] and m[fi["m0"], bi["a1.g1<k>"]]
    assert not m[fi["m0"], bi["a0.h0<q>"]] and not m[fi["a1.h0"], bi["a1.h1<q>"]] and not m[fi["m1"], bi["m1"]]
    assert m[:, bi["logits"]].all()
    # per layer l: attention readers see 1 + l*(H+1) writers, the MLP sees H more
    assert int(m[:, bi["a1.h2<q>"]].sum()) == 1 + 5 and int(m[:, bi["m1"]].sum()) == 1 + 5 + 4


def test_parallel_attention_and_mlp_drops_same_layer_head_edges():
    seq, par = Graph(2, 4, 4), Graph(2, 4, 4, parallel_attn_mlp=True)
    fi, bi = par.forward_index, par.backward_index
    assert seq.edge_mask[fi["a1.h0"], bi["m1"]] and not par.edge_mask[fi["a1.h0"], bi["m1"]]
    assert par.edge_mask[fi["m0"], bi["m1"]] and par.edge_mask[fi["a0.h3"], bi["m1"]]
    assert seq.n_edges - par.n_edges == 2 * 4
    assert (seq.edge_mask | ~par.edge_mask).all()             # only removals
    assert Graph(**par.to_dict()).parallel_attn_mlp and seq.to_dict() == {"n_layers": 2, "n_heads": 4, "n_kv_heads": 4}
