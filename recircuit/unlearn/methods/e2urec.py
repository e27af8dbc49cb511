"""E2URec: dual-teacher distillation (remembering teacher = original; forgetting teacher from an augmented model).

Usage::

    from recircuit.unlearn import LoopConfig, get_method, method_config
    cfg = method_config("e2urec", e2urec_alpha=2.0, e2urec_beta=0.6)
    get_method("e2urec", cfg).run(model, forget, retain, LoopConfig())
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recircuit.unlearn.base import UnlearnMethod
from recircuit.unlearn.forget_rules import E2URecTeacherConfig, augmented_model, e2urec_forget_loss
from recircuit.unlearn.objectives import answer_forward, kl_yes_no
from recircuit.unlearn.registry import register


@dataclass
class E2URecConfig(E2URecTeacherConfig):
    """E2URec's knobs (E2URec's own values by default): the teacher's (see
    :class:`~recircuit.unlearn.forget_rules.E2URecTeacherConfig`) and the remembering weight.

    Attributes:
        e2urec_beta: weight of the remembering KL (1 - beta weighs the forgetting KL).
    """

    e2urec_beta: float = 0.6


@register("e2urec", E2URecConfig)
class E2URec(UnlearnMethod):
    """``beta * KL(original || model) on retain + (1 - beta) * KL(forget teacher || model) on forget``.

    The augmented model is the original further tuned on the forget set (``e2urec_aug_steps``
    steps of answer CE); the forgetting teacher's logits are ``z_orig - alpha * relu(z_aug - z_orig)``
    with ``alpha = 2``, and ``beta = 0.6`` (E2URec's values). Both KLs are on the Yes/No logits at
    the answer position, the distribution the recommender's score reads. E2URec trains LoRA
    adapters; here the same objective moves the attention/MLP projections, like every baseline,
    so the comparison is about the objective, not the parameterisation. Tuning the augmented model
    counts toward the method's wall time.
    """

    def setup(self, model, original, forget, retain):
        params = super().setup(model, original, forget, retain)
        self.aug = augmented_model(original, forget, self.config, self.loop)
        return params

    def gradients(self, model, original, f_batch, r_batch):
        cfg = self.config
        l_fgt = e2urec_forget_loss(model, original, self.aug, f_batch, cfg.e2urec_alpha)
        _, zr = answer_forward(model, r_batch)
        with torch.no_grad():
            _, z_orig_r = answer_forward(original, r_batch)
        l_rem = kl_yes_no(zr, z_orig_r)
        (cfg.e2urec_beta * l_rem + (1 - cfg.e2urec_beta) * l_fgt).backward()
        return {"forget": float(l_fgt.detach()), "retain": float(l_rem.detach())}

    def teardown(self) -> None:
        self.aug = None
