"""Gradient helpers and objectives shared by the built-in methods.

Usage::

    from recircuit.unlearn.methods._common import forget_objective, retain_objective, grads_of
    lf, logs = forget_objective(model, original, f_batch, cfg)     # cfg.forget_rule picks the rule
    g_f = grads_of(lf, params)
"""

from __future__ import annotations

import torch

from recircuit.unlearn.forget_rules import forget_rule
from recircuit.unlearn.objectives import answer_forward, retain_loss


def grads_of(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """Gradients of ``loss`` w.r.t. ``params`` (zeros where unused)."""
    gs = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params)]


def forget_objective(model, original, batch, cfg, teacher=None) -> tuple[torch.Tensor, dict[str, float]]:
    """The forget loss of the registered rule ``cfg.forget_rule`` and what it logs."""
    return forget_rule(cfg.forget_rule).loss(model, original, batch, cfg, teacher)


def retain_objective(model, original, batch, cfg) -> torch.Tensor:
    """Retain CE plus ``cfg.retain_kl`` * KL(original || model) on the Yes/No answers."""
    ce, yn = answer_forward(model, batch)
    with torch.no_grad():
        _, ref_yn = answer_forward(original, batch)
    return retain_loss(ce, yn, ref_yn, cfg.retain_kl)


def forget_retain_grads(model, original, f_batch, r_batch, cfg, params: list[torch.nn.Parameter], teacher=None
                        ) -> tuple[torch.Tensor, dict[str, float], list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """The forget and retain objectives of one step and their gradients w.r.t. ``params``, apart:
    ``(forget loss, its logs, forget grads, retain loss, retain grads)`` (CURE and CLUE combine them
    per parameter group)."""
    lf, logs = forget_objective(model, original, f_batch, cfg, teacher)
    gf = grads_of(lf, params)
    lr_ = retain_objective(model, original, r_batch, cfg)
    return lf, logs, gf, lr_, grads_of(lr_, params)


def set_grads(params: list[torch.nn.Parameter], grads: list[torch.Tensor]) -> None:
    """Write ``grads`` into ``.grad``."""
    for p, g in zip(params, grads):
        p.grad = g.detach().clone()
