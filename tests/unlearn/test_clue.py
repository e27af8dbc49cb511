"""CLUE on the tiny model: neuron masks per family, the two update rules, frozen means bit-identical,
and a full run with its own localization."""

import pytest
import torch

from recircuit.circuits.logic import Localization
from recircuit.errors import InputError
from recircuit.models import tiny_model
from recircuit.models.families import neuron_slice, projection_params
from recircuit.train import answer_loss
from recircuit.unlearn import LoopConfig, get_method, method_config
from recircuit.unlearn.masks import node_masks
from recircuit.unlearn.methods._common import forget_objective, grads_of, retain_objective
from recircuit.unlearn.methods.clue import CLUE

FAMILIES = ["llama", "gpt2", "neox", "phi3", "gemma2", "gemma3"]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_neuron_slice_is_that_neuron_in_the_forward(family):
    """Zeroing neuron 5's down slice equals zeroing its activation; perturbing its up slice moves it alone."""
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    m = tiny_model(0, family=family)
    name, act = "blocks.1.mlp.out.hook_in", {}

    def zero(t, *, hook):
        t = t.clone()
        t[..., 5] = 0
        return t

    def keep(t, *, hook):
        act["h"] = t.detach().clone()
        return t

    with torch.no_grad(), m.hooks(fwd_hooks=[(name, zero)]):
        ref = m(ids)
    params = projection_params(m)
    with torch.no_grad():
        with m.hooks(fwd_hooks=[(name, keep)]):
            m(ids)
        base_act = act["h"]
        down = params["blocks.1.down"]
        saved = down.clone()
        down[neuron_slice(m, "down", 5, 1)] = 0
        got = m(ids)
        down.copy_(saved)
        up = params["blocks.1.up"]
        up[neuron_slice(m, "up", 5, 1)] += 0.5
        with m.hooks(fwd_hooks=[(name, keep)]):
            m(ids)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    moved = (act["h"] - base_act).abs().amax(dim=(0, 1))
    assert moved[5] > 0 and moved[torch.arange(moved.numel()) != 5].max() == 0


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_neuron_owns_one_feature_of_each_mlp_weight(family):
    m = tiny_model(0, family=family)
    params = projection_params(m)
    masks = node_masks(m, [("neuron", 1, 5)])
    d, dm = m.cfg.d_model, m.cfg.d_mlp
    shorts = [n.split(".")[-1] for n, v in masks.items() if v.any()]
    assert sorted(shorts) == sorted(["gate", "up", "down"] if family == "llama" else ["up", "down"])
    for name, mask in masks.items():
        if mask.any():
            assert int(mask.sum()) == d and name.startswith("blocks.1.")
            assert dm in params[name].shape
    heads = node_masks(m, [("head", 0, 1)])
    assert {n.split(".")[-1] for n, v in heads.items() if v.any()} == {"q", "k", "v", "o"}
    with pytest.raises(ValueError, match="out of range"):
        neuron_slice(m, "up", dm, 0)


def _loc() -> Localization:
    return Localization([("neuron", 1, 3), ("head", 1, 0)], [("neuron", 0, 7)], True, [], 0, 0)


def test_forget_nodes_get_the_forget_gradient_conflict_nodes_the_combined_one(model, request_data):
    forget, retain, _ = request_data
    clue = CLUE(method_config("clue", retain_weight=0.5), localization=_loc())
    original = tiny_model(0)
    original.load_state_dict(model.state_dict())
    params = clue.setup(model, original, forget, retain)
    for p in params:
        p.requires_grad_(True)
    torch.manual_seed(0)
    clue.gradients(model, original, forget[:4], retain[:4])
    got = [p.grad.clone() for p in params]
    lf, _ = forget_objective(model, original, forget[:4], clue.config, None)
    gf = grads_of(lf, params)
    gr = grads_of(retain_objective(model, original, retain[:4], clue.config), params)
    for g, g_f, g_r, mf, mc in zip(got, gf, gr, clue.m_forget, clue.m_conf):
        torch.testing.assert_close(g[mf], g_f[mf])
        torch.testing.assert_close(g[mc], g_f[mc] + 0.5 * g_r[mc])
        assert not g[~(mf | mc)].any()


def test_clue_forgets_and_leaves_every_other_entry_bit_identical(model, request_data):
    forget, retain, _ = request_data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss0 = answer_loss(model, forget).mean().item()
    res = CLUE(method_config("clue"), localization=_loc()).run(
        model, forget, retain, LoopConfig(steps=12, lr=3e-3, early_stop=False), progress=False)
    assert answer_loss(model, forget).mean().item() > loss0 + 0.02
    active = node_masks(model, _loc().forget_nodes + _loc().conflict_nodes)
    params = projection_params(model)
    ptr = {v.data_ptr(): k for k, v in model.state_dict().items()}
    moved = False
    for name, p in params.items():
        old = before[ptr[p.data_ptr()]]
        assert torch.equal(p[~active[name]], old[~active[name]]), name
        moved |= not torch.equal(p[active[name]], old[active[name]])
    assert moved and res.extra["localization"]["conflict_nodes"] == [["neuron", 0, 7]]
    touched = {p.data_ptr() for p in params.values()}
    for k, v in model.state_dict().items():
        if v.data_ptr() not in touched:
            assert torch.equal(v, before[k]), k


def test_clue_localizes_on_its_own_and_reports_it(model, request_data):
    forget, retain, heldout = request_data
    cfg = method_config("clue", node_samples=4, threshold=0.05, max_nodes=32)
    res = get_method("clue", cfg).run(model, forget, retain, LoopConfig(steps=2, lr=1e-3, early_stop=False),
                                      progress=False)
    loc = res.extra["localization"]
    nodes = [tuple(v) for v in loc["forget_nodes"] + loc["conflict_nodes"]]
    assert loc["satisfiable"] == (loc["core"] == []) and len(set(nodes)) == len(nodes)   # disjoint groups
    sizes = res.extra["circuit_sizes"]
    assert len(nodes) == sizes["forget"]["and"] + sizes["forget"]["or"]        # every forget-circuit node
    assert res.extra["trainable_parameters"] == sum(int(m.sum()) for m in node_masks(model, nodes).values())


def test_clue_config_refuses_bad_settings():
    with pytest.raises(InputError, match="node_method"):
        method_config("clue", node_method="acdc")
    with pytest.raises(InputError, match="threshold"):
        method_config("clue", threshold=2.0)
    with pytest.raises(InputError, match="retain_weight"):
        method_config("clue", retain_weight=-1.0)
    with pytest.raises(InputError, match="retain_weight"):
        method_config("clue", retain_weight=float("nan"))
    with pytest.raises(InputError, match="node_samples"):
        method_config("clue", node_samples=2.5)
    with pytest.raises(InputError, match="data source"):
        get_method("clue", method_config("clue", corruption="target_swap"))


def test_a_kv_slice_shared_by_a_forget_head_and_a_conflict_head_gets_the_conflict_rule(model, request_data):
    forget, retain, _ = request_data            # the tiny Llama: 4 query heads over 2 KV heads (0, 1 share KV 0)
    loc = Localization([("head", 1, 0)], [("head", 1, 1)], True, [], 0, 0)
    clue = CLUE(method_config("clue"), localization=loc)
    clue.setup(model, tiny_model(0), forget, retain)
    mf, mc = dict(zip(clue.names, clue.m_forget)), dict(zip(clue.names, clue.m_conf))
    for short in ("k", "v"):
        name = f"blocks.1.{short}"
        assert mc[name].any() and not mf[name].any()                    # the shared K/V: conflict only
    q0, q1 = node_masks(model, [("head", 1, 0)]), node_masks(model, [("head", 1, 1)])
    assert torch.equal(mf["blocks.1.q"], q0["blocks.1.q"]) and torch.equal(mc["blocks.1.q"], q1["blocks.1.q"])
    assert not (mf["blocks.1.o"] & mc["blocks.1.o"]).any()


def test_the_random_neuron_control_keeps_kinds_and_counts():
    from recircuit.unlearn.methods.clue_random import random_localization

    loc = Localization([("neuron", 0, 1), ("neuron", 1, 2), ("head", 0, 3)], [("neuron", 1, 9)], True, [], 0, 0)
    r = random_localization(loc, n_layers=2, d_mlp=128, n_heads=4, seed=3)
    kinds = lambda vs: sorted(v[0] for v in vs)  # noqa: E731
    assert kinds(r.forget_nodes) == kinds(loc.forget_nodes) and kinds(r.conflict_nodes) == kinds(loc.conflict_nodes)
    assert not set(r.forget_nodes) & set(r.conflict_nodes)
    assert r == random_localization(loc, 2, 128, 4, seed=3) and r != random_localization(loc, 2, 128, 4, seed=4)


def test_clue_random_trains_random_nodes_with_clues_counts(model, request_data):
    forget, retain, _ = request_data
    res = get_method("clue-random", method_config("clue"), localization=_loc()).run(
        model, forget, retain, LoopConfig(steps=1, lr=1e-3, early_stop=False), progress=False)
    loc = res.extra["localization"]
    assert len(loc["forget_nodes"]) == 2 and len(loc["conflict_nodes"]) == 1
    assert [tuple(v) for v in loc["forget_nodes"]] != _loc().forget_nodes
