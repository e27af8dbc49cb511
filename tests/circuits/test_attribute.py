"""The engine against exact activation patching, against TransformerLens, and under padding."""

import os

import pytest
import torch

from recircuit.circuits import (
    AttributionConfig,
    CorruptionLengthError,
    Graph,
    attribute,
    exact_patch_scores,
)
from recircuit.circuits.attribute import (
    AttributionMemoryError,
    collect_writer_outputs,
    make_pair_batch,
    patched_metric,
)
from recircuit.circuits.metrics import logit_diff
from recircuit.models import answer_tokens, tiny_model


def _cfg(method, **kw):
    return AttributionConfig(method=method, progress=False, **kw)


@pytest.fixture(scope="module")
def model():
    return tiny_model(0)


def test_eap_is_the_derivative_of_exact_edge_patching(model, pairs):
    """Patch each edge to clean - eps*(clean - corrupt): (m_clean - m_patched)/eps -> EAP as eps -> 0."""
    clean, corr = pairs
    eap = attribute(model, clean, corr, _cfg("eap"))
    g = eap.graph
    pair = make_pair_batch(model.tokenizer, clean, corr, "cpu")
    ca, _ = collect_writer_outputs(model, g, pair.clean, pair.mask)
    ka, _ = collect_writer_outputs(model, g, pair.corrupted, pair.mask)
    ans = answer_tokens(model.tokenizer)
    eps = 1e-2
    k_eps = ca - eps * (ca - ka)
    full = torch.ones_like(g.edge_mask)
    base = patched_metric(model, g, pair, k_eps, full, logit_diff, ans)
    edges = g.edge_mask.nonzero().tolist()
    keeps = full.repeat(len(edges), 1, 1)
    for j, (f, b) in enumerate(edges):
        keeps[j, f, b] = False
    patched = patched_metric(model, g, pair, k_eps, keeps, logit_diff, ans)  # every edge, one pass
    fd = torch.zeros_like(eap.scores)
    for j, (f, b) in enumerate(edges):
        fd[f, b] = (base - patched[j]).mean() / eps
    a, x = eap.scores[g.edge_mask], fd[g.edge_mask]
    assert torch.corrcoef(torch.stack([a, x]))[0, 1] > 0.999
    assert (a - x).abs().max() < 0.03 * a.abs().max()


def test_ig_tracks_exact_patching_better_than_eap(model, pairs):
    clean, corr = pairs
    exact = exact_patch_scores(model, clean, corr).scores
    mask = Graph.from_model(model).edge_mask
    ig = attribute(model, clean, corr, _cfg("eap-ig-inputs", steps=20)).scores
    eap = attribute(model, clean, corr, _cfg("eap")).scores

    def corr_with_exact(s):
        return float(torch.corrcoef(torch.stack([s[mask], exact[mask]]))[0, 1])

    assert corr_with_exact(ig) > 0.9
    assert corr_with_exact(ig) > corr_with_exact(eap)


def test_one_step_ig_equals_eap(model, pairs):
    clean, corr = pairs
    eap = attribute(model, clean, corr, _cfg("eap")).scores
    for method in ("eap-ig-inputs", "eap-ig-activations"):
        torch.testing.assert_close(attribute(model, clean, corr, _cfg(method, steps=1)).scores, eap, atol=1e-7, rtol=1e-4)


def test_left_padded_batches_equal_one_by_one(model, pairs):
    clean, corr = pairs
    lengths = {len(model.tokenizer(s.prompt)["input_ids"]) for s in clean}
    assert len(lengths) > 1
    batched = attribute(model, clean, corr, _cfg("eap-ig-inputs", steps=3, batch_size=8)).scores
    single = sum(attribute(model, [a], [b], _cfg("eap-ig-inputs", steps=3)).scores for a, b in zip(clean, corr)) / len(clean)
    torch.testing.assert_close(batched, single, atol=1e-7, rtol=1e-4)


def test_node_scores_are_edge_sums_and_match_exact_node_patching_sign(model, pairs):
    clean, corr = pairs
    res = attribute(model, clean, corr, _cfg("eap-ig-inputs", steps=10))
    node = res.node_scores()
    exact_nodes = exact_patch_scores(model, clean, corr, level="node").node_scores()
    names = [n for n in node if n != "input"]
    a = torch.tensor([node[n] for n in names])
    b = torch.tensor([exact_nodes[n] for n in names])
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.8


def test_agrees_with_transformer_lens_where_tl_works(pairs):
    """TL 4.3 scores edges only without GQA, per example, with the gradient on the corrupt run."""
    tl_ap = pytest.importorskip("transformer_lens.tools.analysis.attribution_patching")
    m = tiny_model(0, n_kv_heads=4)
    clean, corr = pairs
    clean, corr = clean[:1], corr[:1]
    ans = answer_tokens(m.tokenizer)
    sign = 1 if clean[0].label else -1

    def metric(logits):
        return sign * (logits[:, -1, ans.yes] - logits[:, -1, ans.no]).sum()

    def ids(s):
        return m.tokenizer(s.prompt, return_tensors="pt")["input_ids"]

    ref = tl_ap.attribution_patch(m, ids(clean[0]), ids(corr[0]), metric, tl_ap.EdgeAttributionConfig(granularity="edge"))
    ours = attribute(m, clean, corr, _cfg("eap", gradient_point="corrupted"))
    g = ours.graph
    fwd = {"embed": lambda n: "input", "attn_head_out": lambda n: f"a{n.layer}.h{n.head}", "mlp_out": lambda n: f"m{n.layer}"}
    bwd = {"q_input": lambda n: f"a{n.layer}.h{n.head}<q>", "k_input": lambda n: f"a{n.layer}.g{n.head}<k>",
           "v_input": lambda n: f"a{n.layer}.g{n.head}<v>", "mlp_in": lambda n: f"m{n.layer}", "logits": lambda n: "logits"}
    tl = torch.zeros_like(ours.scores)
    for (w, r), v in ref.edge_scores.items():  # TL scores per position: sum them
        tl[g.forward_index[fwd[w.kind](w)], g.backward_index[bwd[r.kind](r)]] += v
    assert tl[~g.edge_mask].abs().max() == 0
    torch.testing.assert_close(ours.scores, tl, atol=1e-6, rtol=1e-4)
    assert tl.abs().max() > 1e-4
    # node level: TL's node sweep against our per-writer sums
    ref_nodes = tl_ap.attribution_patch(m, ids(clean[0]), ids(corr[0]), metric, tl_ap.EdgeAttributionConfig(granularity="node"))
    tl_node: dict[str, float] = {}
    for n, v in ref_nodes.node_scores.items():
        if n.kind in fwd:
            tl_node[fwd[n.kind](n)] = tl_node.get(fwd[n.kind](n), 0.0) + v
    ours_node = ours.node_scores()
    names = sorted(tl_node)
    assert len(names) == g.n_forward
    torch.testing.assert_close(torch.tensor([ours_node[n] for n in names]), torch.tensor([tl_node[n] for n in names]), atol=1e-6, rtol=1e-4)


def test_gqa_kv_readers_get_group_gradients(model, pairs):
    clean, corr = pairs
    res = attribute(model, clean, corr, _cfg("eap"))
    g = res.graph
    kv_cols = [j for j, n in enumerate(g.backward_names) if n.endswith("<k>") or n.endswith("<v>")]
    assert len(kv_cols) == 2 * g.n_layers * g.n_kv_heads
    assert res.scores[:, kv_cols].abs().sum() > 0


def test_length_mismatch_and_memory_errors(model, pairs):
    clean, corr = pairs
    with pytest.raises(CorruptionLengthError, match="differ in token length"):
        attribute(model, clean[:2], [clean[1], clean[0]] if clean[0].prompt != clean[1].prompt else clean[:2], _cfg("eap"))
    with pytest.raises(AttributionMemoryError, match="over the budget"):
        attribute(model, clean[:2], corr[:2], _cfg("eap", max_bytes=1000))
    # a budget that fits one pair but not eight splits the batch and gives the same scores
    g = Graph.from_model(model)
    p = max(len(model.tokenizer(s.prompt)["input_ids"]) for s in clean)
    one = g.n_forward * p * model.cfg.d_model * 4
    small = attribute(model, clean, corr, _cfg("eap", max_bytes=3 * one)).scores
    big = attribute(model, clean, corr, _cfg("eap")).scores
    torch.testing.assert_close(small, big, atol=1e-7, rtol=1e-4)


def test_stacked_patched_runs_and_last_position_unembedding_change_nothing(model, pairs):
    """k patched copies in one pass equal k separate passes; unembedding only the last position is exact."""
    clean, corr = pairs
    g = Graph.from_model(model)
    pair = make_pair_batch(model.tokenizer, clean[:4], corr[:4], "cpu")
    ka, _ = collect_writer_outputs(model, g, pair.corrupted, pair.mask)
    ans = answer_tokens(model.tokenizer)
    gen = torch.Generator().manual_seed(0)
    keeps = torch.rand(3, *g.edge_mask.shape, generator=gen) > 0.5
    stacked = patched_metric(model, g, pair, ka, keeps, logit_diff, ans)
    assert stacked.shape == (3, 4)
    for j in range(3):
        full = patched_metric(model, g, pair, ka, keeps[j], logit_diff, ans, last_only=False)
        torch.testing.assert_close(stacked[j], full, atol=1e-5, rtol=1e-5)
    assert (stacked[0] - stacked[1]).abs().max() > 1e-4  # the masks do differ in effect
    a = attribute(model, clean[:4], corr[:4], _cfg("eap")).scores
    b = attribute(model, clean[:4], corr[:4], _cfg("eap", last_position_only=False)).scores
    torch.testing.assert_close(a, b, atol=1e-7, rtol=1e-5)


def test_ig_activation_scores_into_logits_sum_to_the_metric_change(model, pairs):
    """Completeness: with every writer on the straight line clean<->corrupt, the final residual is too,
    so the edges into ``logits`` add up to metric(clean) - metric(corrupted) (up to the Riemann sum)."""
    clean, corr = pairs
    res = attribute(model, clean, corr, _cfg("eap-ig-activations", steps=5))
    total = float(res.scores[:, res.graph.backward_index["logits"]].sum())
    change = res.clean_metric - res.corrupted_metric
    assert abs(change) > 1e-5
    assert total == pytest.approx(change, rel=5e-3)


def test_cpu_budget_follows_available_memory(monkeypatch):
    import importlib

    attr = importlib.import_module("recircuit.circuits.engine")   # the memory budget lives there

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < attr.available_ram() <= total
    monkeypatch.setattr(attr, "available_ram", lambda: 10 << 30)     # another job holds the rest
    assert attr.default_budget(torch.device("cpu")) == int((10 << 30) * 0.4)


@pytest.mark.parametrize("metric", ["logit_dif", "auc"])
def test_an_unknown_metric_is_refused_when_the_config_is_built(metric):
    from recircuit.errors import InputError

    with pytest.raises(InputError) as err:
        AttributionConfig(metric=metric)
    assert err.value.field == "metric"
    assert AttributionConfig(metric="logprob").metric == "logprob"       # a known name and a callable pass
    assert AttributionConfig(metric=logit_diff).metric is logit_diff
