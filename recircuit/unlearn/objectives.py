"""Unlearning objectives on answer tokens: GA, NPO, retain CE + KL, E2URec distillation.

Usage::

    from recircuit.unlearn.objectives import answer_forward, npo_loss, retain_loss
    ce, yes_no = answer_forward(model, samples)     # per-sample answer CE [b], Yes/No logits [b, 2]

All objectives are minimised. ``yes_no`` are the logits of the first answer token (" Yes"/" No")
at the last prompt position: the distribution :func:`recircuit.models.score` reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float

from recircuit.data.prompts import Sample
from recircuit.models.scoring import answer_tokens, read_yes_no
from recircuit.train.losses import answer_nll, tokenize_with_answers


def answer_forward(model, samples: Sequence[Sample]) -> tuple[Float[torch.Tensor, "batch"], Float[torch.Tensor, "batch 2"]]:
    """Per-sample answer cross-entropy and the Yes/No logits at the answer position, in one pass.

    The CE is the TALLRec training loss (mean over the answer continuation ``" Yes" "."``), the
    same number :func:`recircuit.train.answer_loss` gives; the softmax over the vocabulary is taken
    only at the answer positions (a full ``[batch, pos, vocab]`` log-softmax would cost
    ~0.5 GB per batch of 8 on SmolLM2). Batches are right-padded like the training loss (no query
    row fully masked, so bf16 autocast stays NaN-free).
    """
    if len(samples) == 0:
        raise ValueError("answer_forward needs at least one sample.")
    device = next(model.parameters()).device
    b = tokenize_with_answers(model.tokenizer, samples, device, padding_side="right")
    logits = model(b.input_ids, attention_mask=b.attention_mask, return_type="logits")
    ce = answer_nll(logits, b)
    first = b.target_mask[:, :-1].bool().int().argmax(dim=1)  # position predicting the first answer token
    return ce, read_yes_no(logits, first, answer_tokens(model.tokenizer))


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
