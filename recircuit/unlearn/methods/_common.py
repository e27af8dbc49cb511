"""Gradient helpers shared by the built-in methods."""

from __future__ import annotations

import torch

from recircuit.unlearn.objectives import answer_forward, npo_loss, retain_loss


def grads_of(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """Gradients of ``loss`` w.r.t. ``params`` (zeros where unused)."""
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)]


def forget_objective(model, original, batch, cfg, rule: str = "npo") -> torch.Tensor:
    """The forget loss under ``rule`` (npo, ga)."""
    ce, _ = answer_forward(model, batch)
    if rule == "ga":
        from recircuit.unlearn.objectives import ga_loss

        return ga_loss(ce, cfg.ga_bound)
    with torch.no_grad():
        ref_ce, _ = answer_forward(original, batch)
    return npo_loss(ce, ref_ce, cfg.npo_beta)


def retain_objective(model, original, batch, cfg) -> torch.Tensor:
    """Retain CE plus KL to the original model's Yes/No answers."""
    ce, yn = answer_forward(model, batch)
    with torch.no_grad():
        _, ref_yn = answer_forward(original, batch)
    return retain_loss(ce, yn, ref_yn, cfg.retain_kl)


def set_grads(params: list[torch.nn.Parameter], grads: list[torch.Tensor]) -> None:
    """Write ``grads`` into ``.grad``."""
    for p, g in zip(params, grads):
        p.grad = g.detach().clone()
