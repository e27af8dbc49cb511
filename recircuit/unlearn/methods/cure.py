"""CURE: circuit-aware unlearning with group-wise update rules, and its random-groups control."""

from __future__ import annotations

import torch

from recircuit.unlearn.base import UnlearnMethod, register
from recircuit.unlearn.grouping import Grouping, group_modules, random_grouping
from recircuit.unlearn.importance import module_importance
from recircuit.unlearn.masks import group_masks, module_params
from recircuit.unlearn.methods._common import (
    forget_objective,
    grads_of,
    retain_objective,
    set_grads,
)
from recircuit.unlearn.pcgrad import project_conflict


@register("cure")
class CURE(UnlearnMethod):
    """Forget-specific modules follow the forget objective (NPO by default), retain-specific ones
    the retain objective (CE + KL to the original), task-shared ones both with conflict
    projection (retain priority); all others stay frozen (bit-identical).

    A precomputed grouping can be passed as ``CURE(grouping=...)``; otherwise module importance
    is computed with the EAP engine on ``importance_samples`` forget and retain samples.
    """

    def __init__(self, grouping: Grouping | None = None) -> None:
        self.grouping = grouping

    def make_grouping(self, model, forget, retain, config) -> Grouping:
        """Importance on forget and retain samples, then the configured split."""
        n = config.importance_samples
        kw = dict(method=config.importance_method, steps=config.importance_steps, corruption=config.corruption,
                  batch_size=config.batch_size)
        i_f = module_importance(model, list(forget)[:n], **kw)
        i_r = module_importance(model, list(retain)[:n], **kw)
        return group_modules(i_f, i_r, config.grouping)

    def setup(self, model, original, forget, retain, config):
        if self.grouping is None:
            self.grouping = self.make_grouping(original, forget, retain, config)
        masks = group_masks(model, self.grouping)
        named = module_params(model)
        self.names = [n for n in named if any(masks[g][n].any() for g in ("forget_specific", "retain_specific", "task_shared"))]
        self.params = [named[n] for n in self.names]
        self.m = {g: [masks[g][n].to(named[n].device) for n in self.names] for g in masks}
        self.conflicts = 0
        return self.params

    def gradients(self, model, original, f_batch, r_batch, config):
        rule = config.forget_rule if config.forget_rule in ("npo", "ga") else "npo"
        lf = forget_objective(model, original, f_batch, config, rule)
        gf = grads_of(lf, self.params)
        lr_ = retain_objective(model, original, r_batch, config)
        gr = grads_of(lr_, self.params)
        ms = self.m["task_shared"]
        flat_f = torch.cat([g[m] for g, m in zip(gf, ms)]) if ms else torch.zeros(0)
        flat_r = torch.cat([g[m] for g, m in zip(gr, ms)]) if ms else torch.zeros(0)
        shared, conflicted = project_conflict(flat_f, flat_r) if flat_f.numel() else (flat_f, False)
        self.conflicts += int(conflicted)
        out, i = [], 0
        for k, (g_f, g_r) in enumerate(zip(gf, gr)):
            g = g_f * self.m["forget_specific"][k] + g_r * self.m["retain_specific"][k]
            n = int(ms[k].sum())
            if n:
                g = g.clone()
                g[ms[k]] = shared[i : i + n]
                i += n
            out.append(g)
        set_grads(self.params, out)
        return {"forget": float(lf.detach()), "retain": float(lr_.detach())}

    def extra(self):
        return {"grouping": self.grouping.to_dict() if self.grouping else None, "group_sizes": self.grouping.sizes(),
                "conflicting_steps": self.conflicts}


@register("cure-random")
class RandomGroupsCURE(CURE):
    """CURE with the same group sizes but modules assigned at random (shows the circuits matter)."""

    def setup(self, model, original, forget, retain, config):
        ref = self.grouping or self.make_grouping(original, forget, retain, config)
        self.grouping = random_grouping(ref, seed=config.seed)
        return super().setup(model, original, forget, retain, config)
