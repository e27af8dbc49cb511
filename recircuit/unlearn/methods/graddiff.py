"""GradDiff: gradient ascent on forget plus answer cross-entropy on retain."""

from recircuit.unlearn.base import UnlearnMethod, register
from recircuit.unlearn.objectives import answer_forward, ga_loss


@register("graddiff")
class GradDiff(UnlearnMethod):
    """``ga(forget) + retain_weight * CE(retain)``."""

    def gradients(self, model, original, f_batch, r_batch, config):
        ce_f, _ = answer_forward(model, f_batch)
        ce_r, _ = answer_forward(model, r_batch)
        lf, lr_ = ga_loss(ce_f, config.ga_bound), ce_r.mean()
        (lf + config.retain_weight * lr_).backward()
        return {"forget": float(lf.detach()), "retain": float(lr_.detach())}
