"""EAP on tiny random models of every family ``load_model`` builds: the writer-sum invariant, the
graph's decomposition and the invariants against exact activation patching, per family (Llama
GQA, GPT-2, GPT-NeoX, Phi-3, and the post-block-norm families Gemma-2 and Gemma-3)."""

from types import SimpleNamespace

import pytest
import torch

from recircuit.circuits import AttributionConfig, Graph, attribute
from recircuit.circuits.engine import (
    WRITER_SUM_TOLERANCE,
    WriterSumError,
    _patched_metric_dense,
    check_writer_sum,
    collect_writer_outputs,
    decomposition_error,
    make_pair_batch,
    patched_metric,
)
from recircuit.circuits.faithfulness import circuit_metric
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


def test_four_families_at_least_gpt2_style_and_a_post_norm_one_included():
    assert {"llama", "gpt2", "neox", "gemma2"} <= set(FAMILY_NAMES)
    assert FAMILIES["gemma2"].post_norm and not FAMILIES["llama"].post_norm


def test_writer_sum_invariant_holds_on_every_family_and_is_cached(family_model):
    """The load-time check: every reader's input (q/k/v, MLP in, final residual) is the sum of its
    upstream writers' writes on the probe prompt, far inside the stated tolerance."""
    fam, model = family_model
    g = Graph.from_model(model)
    assert g.post_norm == FAMILIES[fam].post_norm
    err = check_writer_sum(model)
    assert err < 1e-5 < WRITER_SUM_TOLERANCE, (fam, err)
    calls = []
    handle = model.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        assert check_writer_sum(model) == err   # cached on the model: no second forward pass
    finally:
        handle.remove()
    assert calls == []


def test_a_model_whose_block_adds_something_unhooked_is_refused(family_model, pairs):
    """A forward hook adds a constant to one block's output after every writer hook: the residual is
    no longer the writers' sum, and attribution, exact patching and faithfulness all refuse it."""
    fam, _ = family_model
    model = tiny_model(0, family=fam)   # fresh: the check's result is cached per model
    clean, corr = pairs

    def shift(module, args, out):
        if isinstance(out, tuple):
            return (out[0] + 0.5, *out[1:])
        return out + 0.5

    handle = model.blocks[0].register_forward_hook(shift)
    try:
        with pytest.raises(WriterSumError, match=rf"\(family {fam}\).*relative \d.*refusing circuit work"):
            check_writer_sum(model)
        for method in ("eap", "exact"):
            with pytest.raises(WriterSumError):
                attribute(model, clean[:2], corr[:2], _cfg(method))
        g = Graph.from_model(model)
        with pytest.raises(WriterSumError):
            circuit_metric(model, clean[:2], corr[:2], g.edge_mask)
    finally:
        handle.remove()


def test_pre_norm_results_as_writers_are_refused_on_post_norm_families():
    """The old wiring (per-head ``hook_result`` taken as the write, under Gemma's post-norm) misses the
    residual by order 1; the check names the family and the miss instead of scoring silently."""
    for fam in [f for f in FAMILY_NAMES if FAMILIES[f].post_norm]:
        model = tiny_model(0, family=fam)
        g = Graph.from_model(model)
        wrong = Graph(g.n_layers, g.n_heads, g.n_kv_heads, g.parallel_attn_mlp, post_norm=False)
        with pytest.raises(WriterSumError, match=rf"family {fam}\).*by a relative (0\.[1-9]|[1-9])"):
            check_writer_sum(model, wrong)
        assert check_writer_sum(model, g) < 1e-5


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
    # 20 steps: the Riemann sum's error falls as 1/steps (tiny Gemma-3, curved by its norms: 3.0% at
    # 5 steps, 1.5% at 10, 0.74% at 20); flatter families are within 1e-2 at 5 already
    res = attribute(model, clean, corr, _cfg("eap-ig-activations", steps=20))
    change = res.clean_metric - res.corrupted_metric
    assert abs(change) > 1e-5, fam
    assert float(res.scores[:, g.backward_index["logits"]].sum()) == pytest.approx(change, rel=1e-2), fam


def _patching_setup(model, pairs, n=4):
    """The graph, a pair batch of the first ``n`` pairs, its corrupted writer outputs and the answers."""
    clean, corr = pairs
    g = Graph.from_model(model)
    pair = make_pair_batch(model.tokenizer, clean[:n], corr[:n], "cpu")
    ka, _ = collect_writer_outputs(model, g, pair.corrupted, pair.mask)
    return g, pair, ka, answer_tokens(model.tokenizer)


def test_exact_patching_patches_what_the_model_really_adds(family_model, pairs):
    """Dropping every edge out of one head equals running the real model with that head's result
    (pre-norm, where a post-norm follows) set to its corrupted value and the norm recomputed."""
    fam, model = family_model
    g, pair, ka, ans = _patching_setup(model, pairs)
    layer, head = 0, 1
    f = g.forward_index[f"a{layer}.h{head}"]
    keep = g.edge_mask.clone()
    keep[f] = False
    patched = patched_metric(model, g, pair, ka, keep, logit_diff, ans)
    with torch.no_grad():
        _, cache = model.run_with_cache(pair.corrupted.input_ids, attention_mask=pair.corrupted.attention_mask,
                                        names_filter=f"blocks.{layer}.attn.hook_result")
        corrupt_result = cache[f"blocks.{layer}.attn.hook_result"][:, :, head]
        real = pair.mask[:, :, None] > 0

        def set_head(t, *, hook):
            t = t.clone()
            t[:, :, head] = torch.where(real, corrupt_result, t[:, :, head])
            return t

        with model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_result", set_head)]):
            logits = model(pair.clean.input_ids, attention_mask=pair.clean.attention_mask, return_type="logits")
    clean_m = logit_diff(model(pair.clean.input_ids, attention_mask=pair.clean.attention_mask, return_type="logits"),
                         pair.labels, ans)
    real_m = logit_diff(logits, pair.labels, ans)
    assert (real_m - clean_m).abs().max() > 1e-4, fam   # the patch moves the metric
    torch.testing.assert_close(patched, real_m, atol=1e-5, rtol=1e-4)


def test_left_padded_batches_equal_one_by_one_on_every_family(family_model, pairs):
    """Padding invariance: a left-padded batch gives the scores of its prompts one at a time."""
    fam, model = family_model
    clean, corr = pairs
    clean, corr = clean[:4], corr[:4]
    lengths = {len(model.tokenizer(s.prompt)["input_ids"]) for s in clean}
    assert len(lengths) > 1
    batched = attribute(model, clean, corr, _cfg("eap-ig-inputs", steps=2, batch_size=4)).scores
    single = sum(attribute(model, [a], [b], _cfg("eap-ig-inputs", steps=2)).scores for a, b in zip(clean, corr)) / 4
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-4, msg=fam)


def test_post_norm_graphs_round_trip_and_unmappable_post_norms_are_refused():
    """A post-norm graph keeps its flag through ``to_dict``; a config announcing post-norms on a bridge
    without ``ln1_post`` blocks cannot be mapped and is refused by name."""
    g = Graph.from_model(tiny_model(0, family="gemma2"))
    assert g.post_norm and g.to_dict()["post_norm"] is True
    assert Graph(**g.to_dict()).post_norm_hooks() == g.post_norm_hooks()
    assert [h for _, h, _ in g.post_norm_hooks()] == ["blocks.0.ln1_post.hook_in", "blocks.1.ln1_post.hook_in"]
    cfg = SimpleNamespace(n_layers=2, n_heads=4, n_key_value_heads=1, use_normalization_before_and_after=True,
                          architecture="Gemma3ForCausalLM", parallel_attn_mlp=False)
    with pytest.raises(InputError, match="Gemma3ForCausalLM.*post-block norms.*no ln1_post"):
        Graph.from_model(SimpleNamespace(cfg=cfg))


def test_patching_only_the_smaller_writer_set_changes_nothing(family_model, pairs):
    """patched_metric sums each reader's patch over the smaller of the dropped and the kept writer
    sets (the kept ones through the writer-sum identity). At every density, from a handful of kept
    edges to a handful of dropped ones, stacked or alone, it equals the textbook dense rule
    (the engine's dense path, on plain families) and the one-circuit-at-a-time run (every family)."""
    fam, model = family_model
    g, pair, ka, ans = _patching_setup(model, pairs)
    gen = torch.Generator().manual_seed(0)
    keeps = torch.stack([(torch.rand(g.edge_mask.shape, generator=gen) < dens) & g.edge_mask
                         for dens in (0.02, 0.3, 0.7, 0.98)])
    stacked = patched_metric(model, g, pair, ka, keeps, logit_diff, ans)
    for i, keep in enumerate(keeps):
        alone = patched_metric(model, g, pair, ka, keep, logit_diff, ans)
        torch.testing.assert_close(stacked[i], alone, atol=2e-5, rtol=1e-4, msg=fam)
        if not g.post_norm:
            dense = _patched_metric_dense(model, g, pair, ka, keep[None], logit_diff, ans, True)[0]
            torch.testing.assert_close(alone, dense, atol=2e-5, rtol=1e-4, msg=fam)
    assert (stacked[0] - stacked[-1]).abs().max() > 1e-4, fam   # the densities really differ
