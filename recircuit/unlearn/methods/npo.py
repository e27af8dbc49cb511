"""NPO (negative preference optimization) on forget, plus retain cross-entropy (open-unlearning's default)."""

import torch

from recircuit.unlearn.base import UnlearnMethod, register
from recircuit.unlearn.objectives import answer_forward, npo_loss


@register("npo")
class NPO(UnlearnMethod):
    """``npo(forget; reference = original) + retain_weight * CE(retain)``."""

    def gradients(self, model, original, f_batch, r_batch, config):
        ce_f, _ = answer_forward(model, f_batch)
        with torch.no_grad():
            ref, _ = answer_forward(original, f_batch)
        ce_r, _ = answer_forward(model, r_batch)
        lf, lr_ = npo_loss(ce_f, ref, config.npo_beta), ce_r.mean()
        (lf + config.retain_weight * lr_).backward()
        return {"forget": float(lf.detach()), "retain": float(lr_.detach())}
