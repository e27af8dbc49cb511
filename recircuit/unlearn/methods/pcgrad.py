"""PCGrad baseline: every module updated, with forget/retain conflict projection (the ablation of CURE's grouping).

Usage::

    from recircuit.unlearn import LoopConfig, get_method, method_config
    get_method("pcgrad", method_config("pcgrad", forget_rule="npo")).run(model, forget, retain, LoopConfig())

Same objectives as CURE (``forget_rule``, NPO by default; retain CE + KL to the original), one
projection over the concatenated gradient of every attention/MLP projection weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recircuit.unlearn.base import UnlearnMethod
from recircuit.unlearn.forget_rules import ForgetRuleConfig, teacher_for
from recircuit.unlearn.methods._common import (
    forget_objective,
    grads_of,
    retain_objective,
    set_grads,
)
from recircuit.unlearn.pcgrad import project_conflict
from recircuit.unlearn.registry import register


@dataclass
class PCGradConfig(ForgetRuleConfig):
    """PCGrad's knobs: the forget rule's (see :class:`ForgetRuleConfig`)."""


@register("pcgrad", PCGradConfig)
class PCGradUniform(UnlearnMethod):
    """Forget gradient projected against the retain gradient, over all parameters at once."""

    def setup(self, model, original, forget, retain):
        self.params = super().setup(model, original, forget, retain)
        self.aug = teacher_for(self.config, original, forget, self.loop)
        self.conflicts = 0
        return self.params

    def gradients(self, model, original, f_batch, r_batch):
        lf, logs = forget_objective(model, original, f_batch, self.config, self.aug)
        gf = grads_of(lf, self.params)
        lr_ = retain_objective(model, original, r_batch, self.config)
        gr = grads_of(lr_, self.params)
        flat, conflicted = project_conflict(torch.cat([g.flatten() for g in gf]), torch.cat([g.flatten() for g in gr]))
        self.conflicts += int(conflicted)
        out, i = [], 0
        for p in self.params:
            out.append(flat[i : i + p.numel()].view_as(p))
            i += p.numel()
        set_grads(self.params, out)
        return {"forget": float(lf.detach()), "retain": float(lr_.detach()), **logs}

    def teardown(self) -> None:
        self.aug = None

    def extra(self):
        return {"conflicting_steps": self.conflicts}
