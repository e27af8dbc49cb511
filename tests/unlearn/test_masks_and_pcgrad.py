import torch

from recircuit.models import tiny_model
from recircuit.unlearn import Grouping, group_masks, module_params, project_conflict
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
    for name, p in module_params(m).items():
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
