"""The family table against the bridges it describes (tiny random models of every family)."""

import copy
import dataclasses

import pytest
import torch

from recircuit.errors import InputError
from recircuit.models import tiny_model
from recircuit.models.families import (
    FAMILIES,
    family_of,
    fused_qkv_rows,
    head_slice,
    module_update_norms,
    post_attn_norm,
    post_norm_head_writes,
    projection_params,
    projections,
)

PROMPT = "User Preference: \"Alpha (1990)\" Yes. No. Beta Gamma (1991)"


def _ids(m):
    return m.tokenizer([PROMPT], return_tensors="pt")["input_ids"]


def _name(m):
    return m.recircuit_name.split("tiny-")[-1].removesuffix("-gqa")


def test_family_of_reads_each_bridge(family_model):
    fam = family_of(family_model)
    assert fam is FAMILIES[_name(family_model)]
    params = projection_params(family_model)
    want = {"q", "k", "v", "o", "up", "down"} | ({"gate"} if fam.gated else set())
    assert set(params) == {f"blocks.{layer}.{s}" for layer in range(2) for s in want}
    assert all(isinstance(p, torch.nn.Parameter) for p in params.values())
    # exactly the weights the bridge runs: each is a parameter of the model
    ids = {id(p) for p in family_model.parameters()}
    assert all(id(p) in ids for p in params.values())


def test_per_head_hooks_on_every_family(family_model):
    m = family_model
    ids = _ids(m)
    _, cache = m.run_with_cache(ids)
    p, H, K = ids.shape[1], m.cfg.n_heads, getattr(m.cfg, "n_key_value_heads", None) or m.cfg.n_heads
    assert cache["blocks.0.attn.hook_result"].shape == (1, p, H, 64)
    assert cache["blocks.1.hook_q_input"].shape == (1, p, H, 64)
    assert cache["blocks.1.hook_k_input"].shape == (1, p, K, 64)
    assert cache["blocks.1.hook_v_input"].shape == (1, p, K, 64)
    assert cache["blocks.1.hook_mlp_in"].shape == (1, p, 64)


def test_writers_sum_to_the_final_residual(family_model):
    """Embeddings (+ learned positions) + every head's write + o bias + every MLP out = final residual.

    A head's write is its result, or under a post-attention norm (Gemma-2/3) its frozen-scale
    post-norm write, :func:`post_norm_head_writes`; the MLP's ``hook_mlp_out`` is after its post-norm.
    """
    m = family_model
    fam = family_of(m)
    with torch.no_grad():
        _, cache = m.run_with_cache(_ids(m))
        total = cache["hook_embed"].clone()
        if fam.positions == "learned":
            total += cache["hook_pos_embed"]
        raw = total.clone()
        for layer in range(m.cfg.n_layers):
            results = cache[f"blocks.{layer}.attn.hook_result"]
            raw += results.sum(2) + cache[f"blocks.{layer}.hook_mlp_out"]
            if fam.post_norm:
                results = post_norm_head_writes(m, layer, results, cache[f"blocks.{layer}.ln1_post.hook_in"])
            total += results.sum(2)
            bias = m.blocks[layer].attn.o.original_component.bias
            if bias is not None:
                total += bias
            total += cache[f"blocks.{layer}.hook_mlp_out"]
        final = cache[f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"]
    assert final.abs().max() > 1e-2
    torch.testing.assert_close(total, final, atol=1e-5, rtol=1e-5)
    miss = float((raw - final).abs().max() / final.abs().max())
    # pre-norm results are what the bridge's hook_result shows; under a post-norm they are not the write
    assert (miss > 0.1) if fam.post_norm else (miss < 1e-5), (fam.name, miss)


def test_post_norm_head_writes_sum_to_the_norm_output():
    """On Gemma-2 the heads' frozen-scale writes add up to what the post-attention norm outputs."""
    m = tiny_model(0, family="gemma2")
    assert family_of(m).post_norm
    with torch.no_grad():
        _, cache = m.run_with_cache(_ids(m))
        for layer in range(m.cfg.n_layers):
            writes = post_norm_head_writes(m, layer, cache[f"blocks.{layer}.attn.hook_result"],
                                           cache[f"blocks.{layer}.ln1_post.hook_in"])
            torch.testing.assert_close(writes.sum(2), cache[f"blocks.{layer}.ln1_post.hook_out"], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(post_attn_norm(m, layer)(cache[f"blocks.{layer}.ln1_post.hook_in"]),
                                       cache[f"blocks.{layer}.ln1_post.hook_out"])
    with pytest.raises(ValueError, match="no post-attention norm"):
        post_attn_norm(tiny_model(0), 0)


@pytest.mark.parametrize("short", ["q", "o", "k"])
def test_head_slice_is_exactly_what_one_head_uses(family_model, short):
    """Perturbing a head's slice changes that head's result (or its KV group's) and no other head's."""
    m = family_model
    ids = _ids(m)
    H = m.cfg.n_heads
    K = getattr(m.cfg, "n_key_value_heads", None) or H
    index = 1
    with torch.no_grad():
        _, before = m.run_with_cache(ids, names_filter="blocks.1.attn.hook_result")
        w = projection_params(m)[f"blocks.1.{short}"]
        sl = head_slice(m, short, index, layer=1)
        w[sl] += torch.randn_like(w[sl])   # random: a constant shift vanishes after LayerNorm's centering
        _, after = m.run_with_cache(ids, names_filter="blocks.1.attn.hook_result")
    diff = (after["blocks.1.attn.hook_result"] - before["blocks.1.attn.hook_result"]).abs().amax((0, 1, 3))
    owners = set(range(index * H // K, (index + 1) * H // K)) if short == "k" else {index}
    # position 0 attends only to itself, so a key change alone can leave it; later positions move
    assert all(diff[h] > 1e-6 for h in owners), diff
    assert all(diff[h] == 0 for h in range(H) if h not in owners), diff


def test_head_slices_tile_each_weight(family_model):
    m = family_model
    H = m.cfg.n_heads
    K = getattr(m.cfg, "n_key_value_heads", None) or H
    for short, n in (("q", H), ("o", H), ("k", K), ("v", K)):
        w = projection_params(m)[f"blocks.0.{short}"]
        hits = torch.zeros_like(w, dtype=torch.int)
        for h in range(n):
            hits[head_slice(m, short, h)] += 1
        assert torch.equal(hits, torch.ones_like(hits)), short
    with pytest.raises(ValueError, match="no per-head"):
        head_slice(m, "down", 0)
    with pytest.raises(ValueError, match="out of range"):
        head_slice(m, "q", H)


@pytest.mark.parametrize("family", [f for f in FAMILIES if FAMILIES[f].qkv == "fused"])
def test_fused_qkv_layout_matches_the_bridge_split(family):
    """The table's fused layout reproduces the bridge's split q/k/v (from the HF matrix, untouched at boot)."""
    m = tiny_model(seed=0, family=family)
    fam = family_of(m)
    H = m.cfg.n_heads
    K = getattr(m.cfg, "n_key_value_heads", None) or H
    fused_mod = m.blocks[0].attn.qkv.original_component
    fused = fused_mod.weight if fam.layout == "linear" else fused_mod.weight.T  # -> [out, in]
    params = projection_params(m)
    for part, n in (("q", H), ("k", K), ("v", K)):
        for h in range(n):
            rows = fused_qkv_rows(fam, part, h, H, K, m.cfg.d_head)
            split = params[f"blocks.0.{part}"][head_slice(m, part, h)]
            assert torch.equal(fused[rows], split), (part, h)
    with pytest.raises(ValueError, match="no fused"):
        fused_qkv_rows(FAMILIES["llama"], "q", 0, H, K, 16)


def test_conv1d_layout_is_read_from_the_module():
    m = tiny_model(seed=0, family="gpt2")
    layouts = {p.role.short: p.layout for p in projections(m).values() if p.layer == 0}
    assert layouts == {"q": "linear", "k": "linear", "v": "linear", "o": "conv1d", "up": "conv1d", "down": "conv1d"}
    assert head_slice(m, "o", 2) == (slice(32, 48), slice(None))        # Conv1D o: [in, out], rows per head
    assert head_slice(tiny_model(0), "o", 2) == (slice(None), slice(32, 48))   # nn.Linear o: [out, in]


def test_module_update_norms_localise_a_change(family_model):
    m = family_model
    after = copy.deepcopy(m)
    params = projection_params(after)
    with torch.no_grad():
        params["blocks.1.o"][head_slice(after, "o", 2, layer=1)] += 0.5   # head 2 of layer 1 only
        params["blocks.0.down"].view(-1)[0] += 3.0                        # one MLP weight
    norms = module_update_norms(m, after)
    assert set(norms) == {f"a{layer}.h{h}" for layer in range(2) for h in range(4)} | {"m0", "m1"}
    assert norms["a1.h2"] == pytest.approx(0.5 * (16 * 64) ** 0.5, rel=1e-5)
    assert norms["m0"] == pytest.approx(3.0, rel=1e-5)
    assert sum(v > 0 for v in norms.values()) == 2


def test_kv_slices_count_for_a_head_only_without_gqa():
    for family, counted in (("gpt2", True), ("llama", False)):
        m = tiny_model(0, family=family)
        after = copy.deepcopy(m)
        with torch.no_grad():
            projection_params(after)["blocks.0.v"][head_slice(after, "v", 0)] += 1.0
        assert (module_update_norms(m, after)["a0.h0"] > 0) == counted, family


def test_a_model_the_table_cannot_describe_is_refused_by_name(monkeypatch):
    m = tiny_model(0)
    m.blocks[0].ln1_post = torch.nn.Identity()   # a post-attention "norm" that is no RMSNorm
    with pytest.raises(InputError, match=r"LlamaForCausalLM.*RMSNorm as the post-attention norm.*add a row"):
        family_of(m)
    m = tiny_model(0)
    m.blocks[0].ln1_post = tiny_model(0, family="gemma2").blocks[0].ln1_post   # a real RMS post-norm
    with pytest.raises(InputError, match=r"LlamaForCausalLM.*no longer matches.*post_norm: table False, bridge True"):
        family_of(m)
    m = tiny_model(0, family="gpt2")
    monkeypatch.setitem(FAMILIES, "gpt2", dataclasses.replace(FAMILIES["gpt2"], qkv="split"))
    with pytest.raises(InputError, match="no longer matches.*qkv"):
        family_of(m)


def test_an_unlisted_architecture_is_described_from_its_bridge():
    m = tiny_model(0)
    m.cfg.architecture = "MadeUpForCausalLM"
    fam = family_of(m)
    assert (fam.name, fam.qkv, fam.gated, fam.gqa, fam.parallel_attn_mlp) == ("MadeUpForCausalLM", "split", True,
                                                                              True, False)
    assert set(projection_params(m)) == set(projection_params(tiny_model(0)))
    g = tiny_model(0, family="gemma2")
    g.cfg.architecture = "MadeUpPostNormForCausalLM"
    assert family_of(g).post_norm


def test_a_target_the_family_lacks_is_refused():
    with pytest.raises(InputError, match=r"'gpt2' has no \['gate'\].*choose from"):
        projections(tiny_model(0, family="gpt2"), ("q", "gate"))


def test_every_family_bridge_matches_its_hf_model(family_model):
    """The tiny bridges compute what their HF models compute (per-head hooks on)."""
    from recircuit.models import tiny_hf_model

    m = family_model
    hf, _ = tiny_hf_model(seed=0, family=family_of(m).name)
    ids = _ids(m)
    with torch.no_grad():
        torch.testing.assert_close(m(ids, return_type="logits"), hf(ids).logits, atol=1e-5, rtol=1e-5)
