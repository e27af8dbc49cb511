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
            w = params[name]
            # the owned slice really is neuron 5: zeroing it changes only that hidden feature
            rows, cols = neuron_slice(m, name.split(".")[-1], 5, 1)
            assert w[rows, cols].numel() == d and dm in w.shape
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
    assert set(loc) >= {"forget_nodes", "conflict_nodes", "satisfiable", "core"}
    assert loc["forget_nodes"] or loc["conflict_nodes"]
    assert set(res.extra["circuit_sizes"]) == {"forget", "retain"}
    assert res.extra["trainable_parameters"] > 0


def test_clue_config_refuses_bad_settings():
    with pytest.raises(InputError, match="node_method"):
        method_config("clue", node_method="acdc")
    with pytest.raises(InputError, match="threshold"):
        method_config("clue", threshold=2.0)
    with pytest.raises(InputError, match="retain_weight"):
        method_config("clue", retain_weight=-1.0)
