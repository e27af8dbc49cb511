import torch

from recircuit.models import tiny_model
from recircuit.models.families import projection_params
from recircuit.unlearn import Grouping, group_masks, project_conflict
from recircuit.unlearn.grouping import GroupingConfig


def _grouping(groups):
    names = [f"a{layer}.h{h}" for layer in range(2) for h in range(4)] + ["m0", "m1"]
    full = {n: groups.get(n, "frozen") for n in names}
    z = {n: 0.0 for n in names}
    return Grouping(full, z, z, z, z, {}, {n: "" for n in names}, GroupingConfig())


def test_masks_touch_only_the_intended_slices():
    m = tiny_model(0)  # 4 query heads, 2 KV heads, d_head 16
    g = _grouping({"a0.h1": "forget_specific", "a1.h2": "retain_specific", "a1.h3": "forget_specific", "m0": "task_shared"})
    masks = group_masks(m, g)
    fs, rs, ts, fr = (masks[k] for k in ("forget_specific", "retain_specific", "task_shared", "frozen"))
    # head a0.h1: q rows 16:32, o columns 16:32, its KV group 0 (heads 0-1) k/v rows 0:16
    assert fs["blocks.0.q"][16:32].all() and not fs["blocks.0.q"][:16].any() and not fs["blocks.0.q"][32:].any()
    assert fs["blocks.0.o"][:, 16:32].all() and fs["blocks.0.o"].sum() == 16 * 64
    assert fs["blocks.0.k"][0:16].all() and fs["blocks.0.k"].sum() == 16 * 64 and fs["blocks.0.v"][0:16].all()
    # layer 1 KV group 1 holds a retain-specific (h2) and a forget-specific (h3) head: shared K/V -> task-shared
    assert ts["blocks.1.k"][16:32].all() and not fs["blocks.1.k"].any() and not rs["blocks.1.k"].any()
    assert rs["blocks.1.q"][32:48].all() and fs["blocks.1.q"][48:64].all()
    # MLP 0 task-shared whole; MLP 1 frozen whole
    for w in ("gate", "up", "down"):
        assert ts[f"blocks.0.{w}"].all() and fr[f"blocks.1.{w}"].all()
    # the four groups partition every parameter
    for name, p in projection_params(m).items():
        total = sum(masks[k][name].int() for k in masks)
        assert torch.equal(total, torch.ones_like(p, dtype=torch.int))


def test_pcgrad_removes_the_conflicting_component():
    g_r = torch.tensor([1.0, 0.0, 1.0])
    g_f = torch.tensor([-2.0, 1.0, 0.0])  # <g_f, g_r> = -2 < 0
    combined, conflicted = project_conflict(g_f, g_r)
    assert conflicted
    projected = combined - g_r
    assert torch.dot(projected, g_r).abs() < 1e-6
    torch.testing.assert_close(projected, torch.tensor([-1.0, 1.0, 1.0]))
    ok = torch.tensor([1.0, 1.0, 0.0])
    same, conflicted = project_conflict(ok, g_r)
    assert not conflicted and torch.equal(same, ok + g_r)


def test_masks_partition_every_family_and_follow_its_layout(family_model):
    """On every family the groups partition each weight, and a head owns exactly its head_slice blocks."""
    from recircuit.models import family_of, head_slice

    m = family_model
    fam = family_of(m)
    K = getattr(m.cfg, "n_key_value_heads", None) or m.cfg.n_heads
    g = _grouping({"a0.h1": "forget_specific", "a1.h3": "retain_specific", "m0": "task_shared"})
    masks = group_masks(m, g)
    params = projection_params(m)
    assert set(params) == {f"blocks.{layer}.{s}" for layer in range(2) for s in fam.projections}
    for name, p in params.items():
        total = sum(masks[k][name].int() for k in masks)
        assert torch.equal(total, torch.ones_like(p, dtype=torch.int)), name
    fs, rs, ts = masks["forget_specific"], masks["retain_specific"], masks["task_shared"]
    for short in ("q", "o"):
        expect = torch.zeros_like(params[f"blocks.0.{short}"], dtype=torch.bool)
        expect[head_slice(m, short, 1)] = True
        assert torch.equal(fs[f"blocks.0.{short}"], expect), short
    kv = 1 * K // m.cfg.n_heads   # the KV head of query head 1
    expect = torch.zeros_like(params["blocks.0.k"], dtype=torch.bool)
    expect[head_slice(m, "k", kv)] = True
    assert torch.equal(fs["blocks.0.k"], expect) and torch.equal(fs["blocks.0.v"], expect)
    assert rs["blocks.1.o"].sum() == 16 * 64 and not rs["blocks.1.q"][head_slice(m, "q", 2, 1)].any()
    for short in fam.mlp_projections:
        assert ts[f"blocks.0.{short}"].all() and masks["frozen"][f"blocks.1.{short}"].all()


def test_grad_masks_keep_frozen_entries_bit_identical_on_a_conv1d_model():
    """A masked Adam step on GPT-2-style weights moves a head's o rows (Conv1D layout) and nothing else."""
    from recircuit.models import head_slice
    from recircuit.unlearn.masks import active_mask, attach_grad_masks

    m = tiny_model(0, family="gpt2")
    g = _grouping({"a1.h2": "forget_specific"})
    masks = group_masks(m, g)
    params = projection_params(m)
    before = {n: p.detach().clone() for n, p in params.items()}
    for p in m.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    handles = attach_grad_masks(m, active_mask(masks))
    opt = torch.optim.Adam(list(params.values()), lr=1e-2)
    ids = m.tokenizer(["User Preference: \"Alpha (1990)\" Yes No"], return_tensors="pt")["input_ids"]
    m(ids, return_type="logits").pow(2).mean().backward()
    opt.step()
    for h in handles:
        h.remove()
    for name, p in params.items():
        moved = p.detach() != before[name]
        assert not moved[masks["frozen"][name]].any(), name
    assert (params["blocks.1.o"].detach() != before["blocks.1.o"])[head_slice(m, "o", 2, 1)].all()
