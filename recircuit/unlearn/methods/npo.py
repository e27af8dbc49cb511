"""NPO (negative preference optimization) on forget, plus retain cross-entropy (open-unlearning's default).

Usage::

    from recircuit.unlearn import LoopConfig, get_method, method_config
    get_method("npo", method_config("npo", npo_beta=0.1)).run(model, forget, retain, LoopConfig())
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recircuit.unlearn.base import UnlearnMethod
from recircuit.unlearn.forget_rules import NPOBetaConfig
from recircuit.unlearn.objectives import answer_forward, npo_loss
from recircuit.unlearn.registry import register


@dataclass
class NPOConfig(NPOBetaConfig):
    """NPO's knobs: ``npo_beta`` (see :class:`~recircuit.unlearn.forget_rules.NPOBetaConfig`) and the retain weight.

    Attributes:
        retain_weight: weight of the retain answer CE.
    """

    retain_weight: float = 1.0


@register("npo", NPOConfig)
class NPO(UnlearnMethod):
    """``npo(forget; reference = original) + retain_weight * CE(retain)``."""

    def gradients(self, model, original, f_batch, r_batch):
        ce_f, _ = answer_forward(model, f_batch)
        with torch.no_grad():
            ref, _ = answer_forward(original, f_batch)
        ce_r, _ = answer_forward(model, r_batch)
        lf, lr_ = npo_loss(ce_f, ref, self.config.npo_beta), ce_r.mean()
        (lf + self.config.retain_weight * lr_).backward()
        return {"forget": float(lf.detach()), "retain": float(lr_.detach())}
