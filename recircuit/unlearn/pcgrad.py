"""Gradient-conflict surgery with retain priority (PCGrad-style).

Usage::

    from recircuit.unlearn.pcgrad import project_conflict
    combined, conflicted = project_conflict(g_forget, g_retain)

If the forget and retain gradients conflict (negative inner product), the forget gradient is
projected onto the normal plane of the retain gradient, ``g_f - (<g_f, g_r> / ||g_r||^2) g_r``,
so following it does not increase the retain loss to first order; the retain gradient is kept
whole (retain priority). The combined update direction is the sum.
"""

from __future__ import annotations

import torch
from jaxtyping import Float


def project_conflict(
    g_forget: Float[torch.Tensor, "n"], g_retain: Float[torch.Tensor, "n"]
) -> tuple[Float[torch.Tensor, "n"], bool]:
    """Return ``(g_f' + g_r, conflicted)`` where ``g_f'`` is projected if ``<g_f, g_r> < 0``."""
    dot = torch.dot(g_forget.flatten().double(), g_retain.flatten().double())
    if dot < 0:
        norm2 = torch.dot(g_retain.flatten().double(), g_retain.flatten().double()).clamp(min=1e-30)
        g_f = g_forget - (dot / norm2).to(g_forget.dtype) * g_retain
        return g_f + g_retain, True
    return g_forget + g_retain, False
