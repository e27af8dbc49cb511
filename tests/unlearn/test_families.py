"""Every registered unlearning method on tiny random models of every family (Llama, GPT-2, GPT-NeoX, Phi-3)."""

import pytest
import torch

from recircuit.models import family_of, projection_params, tiny_model
from recircuit.train import TrainConfig
from recircuit.unlearn import (
    OK_STATUSES,
    Grouping,
    GroupingConfig,
    LoopConfig,
    available_methods,
    get_method,
    group_masks,
    method_config,
)
from recircuit.unlearn.methods.cure import CURE

#: Knobs that keep each method's own inner work to a step or two (the loop budget is LoopConfig's).
FAST = {
    "cure": {"importance_samples": 2, "importance_steps": 1},
    "cure-random": {"importance_samples": 2, "importance_steps": 1},
    "clue": {"node_samples": 2, "max_nodes": 16},
    "clue-random": {"node_samples": 2, "max_nodes": 16},
    "e2urec": {"e2urec_aug_steps": 1, "e2urec_aug_lr": 1e-3},
    "ga": {"ga_bound": None},   # a random model's answer loss is already above the default bound
    "sisa": {"k": 1, "shard_epochs": 1, "shard_batch_size": 4},     # toy prompts repeat: one shard keeps them varied
    "apa": {"k": 1, "partition": "random", "shard_epochs": 1, "shard_batch_size": 4, "n_neighbors": 2},
}
LOOP = LoopConfig(steps=2, lr=1e-3, batch_size=4, early_stop=False, guard_samples=4)


def _family(m) -> str:
    return family_of(m).name


def _small(request_data):
    forget, retain, heldout = request_data
    return forget[:4], retain[:8], heldout[:4]


def _state(m) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("name", available_methods())
def test_every_method_runs_on_every_family(family_model, request_data, name):
    m = family_model
    forget, retain, heldout = _small(request_data)
    before = _state(m)
    if name == "retrain":
        fam = _family(m)
        method = get_method("retrain", model_spec=lambda: tiny_model(0, family=fam),
                            train_config=TrainConfig(mode="full", lr=1e-3, batch_size=4, max_steps=2))
    elif getattr(get_method(name), "exact", False):
        method = get_method(name, method_config(name, **FAST.get(name, {})), valid=heldout)
    else:
        method = get_method(name, method_config(name, **FAST.get(name, {})))
    res = method.run(m, forget, retain, LOOP, heldout=heldout, progress=False)
    assert res.status in OK_STATUSES, (name, res.status, res.stopped)
    after = _state(m)
    assert after.keys() == before.keys()
    if getattr(method, "exact", False):
        # exact methods leave the base bit-identical; the unlearned model is the ensemble's predictor
        assert all(torch.equal(before[k], after[k]) for k in before), name
        p, loss = res.model.answer_outputs(heldout)
        assert p.shape == loss.shape == (len(heldout),) and torch.isfinite(torch.as_tensor(loss)).all()
        assert res.extra["affected"] == [0]
        return
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved, name
    if name != "retrain":
        # approximate methods move projection weights only: embeddings, norms, biases, unembedding stay
        ptrs = {p.data_ptr() for p in projection_params(m).values()}
        assert all(m.state_dict()[k].data_ptr() in ptrs for k in moved), sorted(moved)[:3]
        assert res.steps == LOOP.steps


def _grouping(m) -> Grouping:
    names = [f"a{layer}.h{h}" for layer in range(2) for h in range(4)] + ["m0", "m1"]
    groups = {n: "frozen" for n in names}
    groups.update({"a1.h0": "forget_specific", "a1.h1": "forget_specific", "m1": "forget_specific",
                   "m0": "retain_specific", "a0.h2": "task_shared"})
    z = {n: 0.0 for n in names}
    return Grouping(groups, z, z, z, z, {}, {n: "test" for n in names}, GroupingConfig())


def test_cure_leaves_its_frozen_group_bit_identical_on_every_family(family_model, request_data):
    m = family_model
    forget, retain, heldout = _small(request_data)
    grouping = _grouping(m)
    params = projection_params(m)
    before = {n: p.detach().clone() for n, p in params.items()}
    state = _state(m)
    res = CURE(grouping=grouping).run(m, forget, retain, LOOP, progress=False)
    assert res.status in OK_STATUSES
    masks = group_masks(m, grouping)
    for n, p in params.items():
        frozen = masks["frozen"][n]
        assert torch.equal(p.detach()[frozen], before[n][frozen]), n
    for group in ("forget_specific", "retain_specific", "task_shared"):
        assert any(not torch.equal(p.detach()[masks[group][n]], before[n][masks[group][n]])
                   for n, p in params.items() if masks[group][n].any()), group
    ptrs = {p.data_ptr() for p in params.values()}
    for k, v in m.state_dict().items():
        if v.data_ptr() not in ptrs:
            assert torch.equal(v, state[k]), k


def test_cure_computes_its_contrast_grouping_and_freezes_the_rest_on_every_family(family_model, request_data):
    """The contrast path end to end on every family: per-sample importance of the answer log-prob
    under user_swap, the permutation grouping, one run; its frozen slices stay bit-identical."""
    m = family_model
    forget, retain, _ = _small(request_data)
    cfg = method_config("cure", importance_samples=3, importance_steps=1, importance_metric="logprob",
                        corruption="user_swap", grouping={"mode": "contrast", "n_boot": 200})
    params = projection_params(m)
    before = {n: p.detach().clone() for n, p in params.items()}
    res = CURE(cfg).run(m, forget, retain, LOOP, progress=False)
    assert res.status in OK_STATUSES
    g = res.extra["grouping"]
    assert set(g["p_forget"]) == set(g["groups"]) and g["thresholds"]["n_tests"] == 2 * len(g["groups"])
    grouping = Grouping(**{**g, "config": GroupingConfig(**g["config"])})
    masks = group_masks(m, grouping)
    for n, p in params.items():
        assert torch.equal(p.detach()[masks["frozen"][n]], before[n][masks["frozen"][n]]), n
