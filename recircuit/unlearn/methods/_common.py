"""Gradient helpers and objectives shared by the built-in methods.

Usage::

    from recircuit.unlearn.methods._common import forget_objective, retain_objective, grads_of
    lf = forget_objective(model, original, f_batch, cfg, rule="npo")
    g_f = grads_of(lf, params)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from recircuit.data.prompts import Sample
from recircuit.models.loading import plain_forward
from recircuit.unlearn.objectives import (
    answer_forward,
    e2urec_forget_teacher,
    ga_loss,
    kl_yes_no,
    npo_loss,
    retain_loss,
)


def grads_of(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """Gradients of ``loss`` w.r.t. ``params`` (zeros where unused)."""
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)]


def augmented_model(original, forget: Sequence[Sample], config) -> torch.nn.Module:
    """E2URec's "aug" model: a copy of ``original`` tuned further on the forget set.

    ``config.e2urec_aug_steps`` Adam steps (lr ``config.e2urec_aug_lr``) of answer CE on seeded
    forget batches; the copy is returned frozen, in eval mode.
    """
    aug = copy.deepcopy(original)
    params = [p for n, p in aug.named_parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=config.e2urec_aug_lr)
    g = torch.Generator().manual_seed(config.seed)
    aug.train()
    with plain_forward(aug):
        for _ in range(config.e2urec_aug_steps):
            idx = torch.randperm(len(forget), generator=g)[: config.batch_size].tolist()
            ce, _ = answer_forward(aug, [forget[i] for i in idx])
            opt.zero_grad()
            ce.mean().backward()
            opt.step()
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    return aug.eval()


def e2urec_forget_loss(model, original, aug, batch, cfg) -> torch.Tensor:
    """KL(forgetting teacher || model) on the Yes/No answers of ``batch``."""
    with torch.no_grad(), plain_forward(aug):
        _, z_orig = answer_forward(original, batch)
        _, z_aug = answer_forward(aug, batch)
    teacher = e2urec_forget_teacher(z_orig, z_aug, cfg.e2urec_alpha)
    _, z = answer_forward(model, batch)
    return kl_yes_no(z, teacher)


def forget_objective(model, original, batch, cfg, rule: str = "npo", aug=None) -> torch.Tensor:
    """The forget loss under ``rule``: ``npo`` (reference = original), ``ga`` (bounded) or ``e2urec``."""
    if rule == "e2urec":
        if aug is None:
            raise ValueError("The e2urec forget rule needs the augmented model (augmented_model(original, forget, cfg)).")
        return e2urec_forget_loss(model, original, aug, batch, cfg)
    ce, _ = answer_forward(model, batch)
    if rule == "ga":
        return ga_loss(ce, cfg.ga_bound)
    if rule != "npo":
        raise ValueError(f"Unknown forget rule {rule!r}; use npo, ga or e2urec.")
    with torch.no_grad():
        ref_ce, _ = answer_forward(original, batch)
    return npo_loss(ce, ref_ce, cfg.npo_beta)


def retain_objective(model, original, batch, cfg) -> torch.Tensor:
    """Retain CE plus ``cfg.retain_kl`` * KL(original || model) on the Yes/No answers."""
    ce, yn = answer_forward(model, batch)
    with torch.no_grad():
        _, ref_yn = answer_forward(original, batch)
    return retain_loss(ce, yn, ref_yn, cfg.retain_kl)


def set_grads(params: list[torch.nn.Parameter], grads: list[torch.Tensor]) -> None:
    """Write ``grads`` into ``.grad``."""
    for p, g in zip(params, grads):
        p.grad = g.detach().clone()
