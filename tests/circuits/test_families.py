"""EAP on tiny random models of every family ``load_model`` builds: the graph's decomposition and
the invariants against exact activation patching, per family."""

from types import SimpleNamespace

import pytest
import torch

from recircuit.circuits import AttributionConfig, Graph, attribute
from recircuit.circuits.engine import (
    collect_writer_outputs,
    decomposition_error,
    make_pair_batch,
    patched_metric,
)
from recircuit.circuits.metrics import logit_diff
from recircuit.errors import InputError
from recircuit.models import answer_tokens, tiny_model
from recircuit.models.families import FAMILIES

FAMILY_NAMES = sorted(FAMILIES)


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family_model(request):
    return request.param, tiny_model(0, family=request.param)


def _cfg(method, **kw):
    return AttributionConfig(method=method, progress=False, **kw)


def test_three_families_at_least_gpt2_style_included():
    assert {"llama", "gpt2"} <= set(FAMILY_NAMES) and len(FAMILY_NAMES) >= 3


def test_writers_sum_to_every_reader_input(family_model, pairs):
    """The graph's decomposition: each reader's input is the sum of its upstream writers' outputs
    (embeddings with learned positions, per-head results with biases, MLP outputs)."""
    fam, model = family_model
    clean, _ = pairs
    g = Graph.from_model(model)
    assert g.parallel_attn_mlp == bool(model.cfg.parallel_attn_mlp)
    pair = make_pair_batch(model.tokenizer, clean[:4], clean[:4], "cpu")
    errs = decomposition_error(model, g, pair.clean)
    assert set(errs) == {s.hook for s in g.reader_slots()}
    assert max(errs.values()) < 1e-5, (fam, errs)


def test_wrong_graph_is_detected_and_refused(family_model, pairs):
    """Flip the parallel/sequential MLP wiring: the decomposition check sees it and attribute() refuses."""
    fam, model = family_model
    clean, corr = pairs
    g = Graph.from_model(model)
    wrong = Graph(g.n_layers, g.n_heads, g.n_kv_heads, not g.parallel_attn_mlp)
    pair = make_pair_batch(model.tokenizer, clean[:2], clean[:2], "cpu")
    errs = decomposition_error(model, wrong, pair.clean)
    assert max(errs[f"blocks.{layer}.hook_mlp_in"] for layer in range(g.n_layers)) > 1e-2
    with pytest.raises(InputError, match="not the sum"):
        attribute(model, clean[:2], corr[:2], _cfg("eap"), graph=wrong)


def test_eap_is_the_derivative_of_exact_edge_patching(family_model, pairs):
    """Patch each edge to clean - eps*(clean - corrupt): (m_clean - m_patched)/eps -> EAP as eps -> 0."""
    fam, model = family_model
    clean, corr = pairs
    clean, corr = clean[:4], corr[:4]
    eap = attribute(model, clean, corr, _cfg("eap"))
    g = eap.graph
    pair = make_pair_batch(model.tokenizer, clean, corr, "cpu")
    ca, _ = collect_writer_outputs(model, g, pair.clean, pair.mask)
    ka, _ = collect_writer_outputs(model, g, pair.corrupted, pair.mask)
    ans = answer_tokens(model.tokenizer)
    eps = 1e-2
    full = torch.ones_like(g.edge_mask)
    k_eps = ca - eps * (ca - ka)
    base = patched_metric(model, g, pair, k_eps, full, logit_diff, ans)
    edges = g.edge_mask.nonzero().tolist()
    keeps = full.repeat(len(edges), 1, 1)
    for j, (f, b) in enumerate(edges):
        keeps[j, f, b] = False
    patched = patched_metric(model, g, pair, k_eps, keeps, logit_diff, ans)
    fd = torch.zeros_like(eap.scores)
    for j, (f, b) in enumerate(edges):
        fd[f, b] = (base - patched[j]).mean() / eps
    a, x = eap.scores[g.edge_mask], fd[g.edge_mask]
    assert a.abs().max() > 1e-6, fam
    assert torch.corrcoef(torch.stack([a, x]))[0, 1] > 0.999, fam
    assert (a - x).abs().max() < 0.03 * a.abs().max(), fam
    # every kind of reader (q, k, v, MLP, logits) gets gradient: the hooks reach the computation
    for suffix in ("<q>", "<k>", "<v>"):
        cols = [j for j, n in enumerate(g.backward_names) if n.endswith(suffix)]
        assert eap.scores[:, cols].abs().sum() > 0, (fam, suffix)
    mlp_cols = [g.backward_index[f"m{layer}"] for layer in range(g.n_layers)]
    assert eap.scores[:, mlp_cols].abs().sum() > 0, fam


def test_exact_patching_and_ig_completeness(family_model, pairs):
    """Exact edge patching is real (patching every edge gives the corrupted run), and EAP-IG on
    activations adds up to metric(clean) - metric(corrupted) on the edges into logits."""
    fam, model = family_model
    clean, corr = pairs
    clean, corr = clean[:4], corr[:4]
    g = Graph.from_model(model)
    pair = make_pair_batch(model.tokenizer, clean, corr, "cpu")
    ka, k_logits = collect_writer_outputs(model, g, pair.corrupted, pair.mask)
    ans = answer_tokens(model.tokenizer)
    none_kept = patched_metric(model, g, pair, ka, torch.zeros_like(g.edge_mask), logit_diff, ans)
    torch.testing.assert_close(none_kept, logit_diff(k_logits, pair.labels, ans), atol=1e-5, rtol=1e-4)
    res = attribute(model, clean, corr, _cfg("eap-ig-activations", steps=5))
    change = res.clean_metric - res.corrupted_metric
    assert abs(change) > 1e-5, fam
    assert float(res.scores[:, g.backward_index["logits"]].sum()) == pytest.approx(change, rel=1e-2), fam


def test_post_block_norms_are_refused():
    """Gemma-2/3 style post-attention/post-MLP norms: per-head results are not what the block writes."""
    cfg = SimpleNamespace(n_layers=2, n_heads=4, n_key_value_heads=1, use_normalization_before_and_after=True,
                          architecture="Gemma3ForCausalLM", parallel_attn_mlp=False)
    with pytest.raises(InputError, match="Gemma3ForCausalLM.*post-block norms"):
        Graph.from_model(SimpleNamespace(cfg=cfg))
