"""GA: bounded gradient ascent on the forget set."""

from recircuit.unlearn.base import UnlearnMethod, register
from recircuit.unlearn.objectives import answer_forward, ga_loss


@register("ga")
class GradientAscent(UnlearnMethod):
    """Raise the forget-set answer loss (no push past ``ga_bound`` nats)."""

    def gradients(self, model, original, f_batch, r_batch, config):
        ce, _ = answer_forward(model, f_batch)
        loss = ga_loss(ce, config.ga_bound)
        loss.backward()
        return {"forget": float(loss.detach())}
