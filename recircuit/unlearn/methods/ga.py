"""GA: bounded gradient ascent on the forget set.

Usage::

    from recircuit.unlearn import LoopConfig, get_method, method_config
    get_method("ga", method_config("ga", ga_bound=2.0)).run(model, forget, retain, LoopConfig(steps=30))

Bounded GA does nothing on a sample whose answer CE is already above ``ga_bound``: when every
sample of a step is, the step has no gradient. The loop counts such steps
(``result.extra["ga_idle_steps"]``), warns the first time, and records a warning in
``result.extra["warnings"]`` when the whole run was idle.
"""

from __future__ import annotations

from dataclasses import dataclass

from recircuit.unlearn.base import UnlearnMethod
from recircuit.unlearn.config import MethodConfig
from recircuit.unlearn.objectives import answer_forward, ga_active_share, ga_loss
from recircuit.unlearn.registry import register


@dataclass
class GAConfig(MethodConfig):
    """Gradient ascent's knobs.

    Attributes:
        ga_bound: stop pushing a sample once its answer CE exceeds this (nats); none for unbounded GA.
    """

    ga_bound: float | None = 2.0


@register("ga", GAConfig)
class GradientAscent(UnlearnMethod):
    """Raise the forget-set answer loss (no push past ``ga_bound`` nats)."""

    def gradients(self, model, original, f_batch, r_batch):
        ce, _ = answer_forward(model, f_batch)
        loss = ga_loss(ce, self.config.ga_bound)
        loss.backward()
        return {"forget": float(loss.detach()), "ga_active": ga_active_share(ce, self.config.ga_bound)}
