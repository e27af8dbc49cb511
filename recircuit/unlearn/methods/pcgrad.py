"""PCGrad baseline: every module updated, with forget/retain conflict projection (the ablation of CURE's grouping).

Usage::

    from recircuit.unlearn import get_method
    get_method("pcgrad").run(model, forget, retain, config)

Same objectives as CURE (``config.forget_rule``, NPO by default; retain CE + KL to the original),
one projection over the concatenated gradient of every attention/MLP projection weight.
"""

import torch

from recircuit.unlearn.base import UnlearnMethod, register
from recircuit.unlearn.methods._common import (
    augmented_model,
    forget_objective,
    grads_of,
    retain_objective,
    set_grads,
)
from recircuit.unlearn.pcgrad import project_conflict


@register("pcgrad")
class PCGradUniform(UnlearnMethod):
    """Forget gradient projected against the retain gradient, over all parameters at once."""

    def setup(self, model, original, forget, retain, config):
        self.params = super().setup(model, original, forget, retain, config)
        self.aug = augmented_model(original, forget, config) if config.forget_rule == "e2urec" else None
        self.conflicts = 0
        return self.params

    def gradients(self, model, original, f_batch, r_batch, config):
        lf = forget_objective(model, original, f_batch, config, config.forget_rule, self.aug)
        gf = grads_of(lf, self.params)
        lr_ = retain_objective(model, original, r_batch, config)
        gr = grads_of(lr_, self.params)
        flat, conflicted = project_conflict(torch.cat([g.flatten() for g in gf]), torch.cat([g.flatten() for g in gr]))
        self.conflicts += int(conflicted)
        out, i = [], 0
        for p in self.params:
            out.append(flat[i : i + p.numel()].view_as(p))
            i += p.numel()
        set_grads(self.params, out)
        return {"forget": float(lf.detach()), "retain": float(lr_.detach())}

    def teardown(self) -> None:
        self.aug = None

    def extra(self):
        return {"conflicting_steps": self.conflicts}
