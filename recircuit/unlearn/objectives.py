"""Unlearning objectives on answer tokens: GA, NPO, retain CE + KL, E2URec distillation.

Usage::

    from recircuit.unlearn.objectives import answer_forward, npo_loss, retain_loss
    ce, yes_no = answer_forward(model, samples)     # per-sample answer CE [b], Yes/No logits [b, 2]

All objectives are minimised. ``yes_no`` are the logits of the first answer token (" Yes"/" No")
at the last prompt position: the distribution :func:`recircuit.models.score` reads.
:func:`answer_forward` lives in :mod:`recircuit.train.losses` (evaluation uses it too) and is
re-exported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float

from recircuit.train.losses import answer_forward

__all__ = ["answer_forward", "e2urec_forget_teacher", "ga_active_share", "ga_loss", "kl_yes_no", "npo_loss",
           "retain_loss"]


def ga_loss(ce: Float[torch.Tensor, "batch"], bound: float | None = 2.0) -> Float[torch.Tensor, ""]:
    """Gradient ascent on forget CE, bounded: no push once a sample's CE exceeds ``bound`` nats.

    A sample whose CE is already at or above ``bound`` contributes nothing (zero loss, zero
    gradient); when every sample of a batch is, the step does nothing. The methods count such
    steps (:func:`ga_active_share`) and warn.
    """
    if bound is None:
        return -ce.mean()
    return torch.relu(bound - ce).mean()


def ga_active_share(ce: Float[torch.Tensor, "batch"], bound: float | None) -> float:
    """Share of samples bounded GA still pushes (CE below ``bound``); 1.0 for unbounded GA."""
    if bound is None:
        return 1.0
    return float((ce.detach() < bound).float().mean())


def npo_loss(ce: Float[torch.Tensor, "batch"], ref_ce: Float[torch.Tensor, "batch"], beta: float = 0.1) -> Float[torch.Tensor, ""]:
    """NPO: ``-(2/beta) * mean log sigmoid(-beta * (log pi - log pi_ref))`` with log pi = -CE."""
    log_ratio = (-ce) - (-ref_ce)
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def kl_yes_no(student: Float[torch.Tensor, "batch 2"], teacher: Float[torch.Tensor, "batch 2"]) -> Float[torch.Tensor, ""]:
    """KL(teacher || student) over the two answers, mean over the batch."""
    return F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")


def retain_loss(ce: Float[torch.Tensor, "batch"], yes_no: Float[torch.Tensor, "batch 2"],
                ref_yes_no: Float[torch.Tensor, "batch 2"] | None, kl_weight: float = 1.0) -> Float[torch.Tensor, ""]:
    """Answer CE on retain samples plus ``kl_weight`` * KL to the original model's answers."""
    loss = ce.mean()
    if ref_yes_no is not None and kl_weight:
        loss = loss + kl_weight * kl_yes_no(yes_no, ref_yes_no)
    return loss


def e2urec_forget_teacher(z_orig: Float[torch.Tensor, "batch 2"], z_aug: Float[torch.Tensor, "batch 2"], alpha: float = 2.0) -> Float[torch.Tensor, "batch 2"]:
    """E2URec's forgetting teacher: ``z_orig - alpha * relu(z_aug - z_orig)``."""
    return z_orig - alpha * torch.relu(z_aug - z_orig)
