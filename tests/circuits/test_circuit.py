import json

import pytest
import torch

from recircuit.circuits import (
    AttributionConfig,
    Circuit,
    Graph,
    attribute,
    faithfulness_curve,
    prune,
)
from recircuit.models import tiny_model


@pytest.fixture(scope="module")
def scored(pairs):
    m = tiny_model(0)
    clean, corr = pairs
    return m, attribute(m, clean, corr, AttributionConfig(method="eap-ig-inputs", steps=3, progress=False))


def test_faithfulness_full_is_one_and_empty_is_zero(scored, pairs):
    m, res = scored
    # a random model: label_flip barely moves the metric, so the curve is drawn only when allowed (flagged);
    # its endpoints are exact all the same
    curve = faithfulness_curve(m, res, *pairs, progress=False, allow_unreliable=True)
    assert curve.sizes[0] == 0 and curve.sizes[-1] == 1.0
    assert curve.faithfulness[0] == pytest.approx(0.0, abs=1e-3)
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-5)
    d = curve.to_dict()
    assert d["cpr"] == pytest.approx(torch.trapezoid(torch.tensor(d["faithfulness"]), torch.tensor(d["sizes"])).item(), rel=1e-5)
    assert d["cmd"] >= 0


def test_top_n_selects_largest_connected_edges(scored):
    _, res = scored
    c = Circuit.from_attribution(res, top_n=25)
    assert 0 < c.n_edges <= 25
    kept = res.scores[c.edges].abs()
    # every kept edge is among the top 25 by |score|
    thresh = res.scores[res.graph.edge_mask].abs().topk(25).values.min()
    assert (kept >= thresh - 1e-12).all()
    assert "logits" in c.nodes and "input" in c.nodes


def test_prune_removes_dangling_edges():
    g = Graph(2, 2, 1)
    keep = torch.zeros_like(g.edge_mask)
    fi, bi = g.forward_index, g.backward_index
    keep[fi["input"], bi["a0.h0<q>"]] = True        # a0.h0 is reached ...
    keep[fi["a0.h0"], bi["logits"]] = True          # ... and reaches logits: kept
    keep[fi["input"], bi["a1.h1<q>"]] = True        # a1.h1 is reached but writes nowhere: dropped
    keep[fi["m0"], bi["logits"]] = True             # m0 is never reached: dropped
    out = prune(keep, g)
    assert out[fi["input"], bi["a0.h0<q>"]] and out[fi["a0.h0"], bi["logits"]]
    assert int(out.sum()) == 2


def test_greedy_growth_stays_connected_to_logits(scored):
    _, res = scored
    c = Circuit.from_attribution(res, top_n=15, greedy=True)
    assert c.n_edges > 0
    assert c.edges[:, res.graph.backward_index["logits"]].any()


def test_save_load_roundtrip_without_pickles(scored, tmp_path):
    _, res = scored
    c = Circuit.from_attribution(res, top_n=30, metadata={"model": "tiny", "corruption": "label_flip"})
    js, st = c.save(tmp_path / "circ")
    assert json.loads(js.read_text())["metadata"]["corruption"] == "label_flip"
    back = Circuit.load(st)
    assert torch.equal(back.edges, c.edges) and torch.equal(back.scores, c.scores)
    assert back.module_importance() == c.module_importance()
    assert list(back.to_dataframe().columns) == ["source", "target", "score", "in_circuit"]
    js.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a recircuit circuit"):
        Circuit.load(js)


def test_module_importance_splits_kv_edges_over_the_group():
    g = Graph(1, 4, 2)
    scores = torch.zeros(g.n_forward, g.n_backward)
    scores[0, g.backward_index["a0.g1<k>"]] = 2.0   # input -> key of group 1 (heads 2, 3)
    scores[g.forward_index["a0.h2"], g.backward_index["logits"]] = -3.0
    imp = Circuit(g, scores, g.edge_mask.clone()).module_importance()
    assert imp["a0.h2"] == pytest.approx(3.0 + 1.0) and imp["a0.h3"] == pytest.approx(1.0)
    assert imp["a0.h0"] == 0 and set(imp) == {"a0.h0", "a0.h1", "a0.h2", "a0.h3", "m0"}
