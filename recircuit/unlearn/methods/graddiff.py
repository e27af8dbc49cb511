"""GradDiff: gradient ascent on forget plus answer cross-entropy on retain.

Usage::

    from recircuit.unlearn import LoopConfig, get_method, method_config
    get_method("graddiff", method_config("graddiff", retain_weight=1.0)).run(model, forget, retain, LoopConfig())

The GA term is bounded as in ``ga`` (idle steps are counted and warned about).
"""

from __future__ import annotations

from dataclasses import dataclass

from recircuit.unlearn.base import UnlearnMethod
from recircuit.unlearn.config import MethodConfig
from recircuit.unlearn.objectives import answer_forward, ga_active_share, ga_loss
from recircuit.unlearn.registry import register


@dataclass
class GradDiffConfig(MethodConfig):
    """GradDiff's knobs.

    Attributes:
        ga_bound: stop pushing a forget sample once its answer CE exceeds this (nats); none for unbounded.
        retain_weight: weight of the retain answer CE.
    """

    ga_bound: float | None = 2.0
    retain_weight: float = 1.0


@register("graddiff", GradDiffConfig)
class GradDiff(UnlearnMethod):
    """``ga(forget) + retain_weight * CE(retain)``."""

    def gradients(self, model, original, f_batch, r_batch):
        ce_f, _ = answer_forward(model, f_batch)
        ce_r, _ = answer_forward(model, r_batch)
        lf, lr_ = ga_loss(ce_f, self.config.ga_bound), ce_r.mean()
        (lf + self.config.retain_weight * lr_).backward()
        return {"forget": float(lf.detach()), "retain": float(lr_.detach()),
                "ga_active": ga_active_share(ce_f, self.config.ga_bound)}
