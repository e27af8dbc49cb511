"""Metrics the attribution engine differentiates: per-sample, label-signed, at the last position.

Usage::

    from recircuit.circuits.metrics import get_metric
    metric = get_metric("logit_diff")       # or "logprob", or your own callable
    values = metric(logits, labels, answers)   # [batch]

A metric takes ``logits [batch, pos, vocab]`` (left-padded, so the last position is the last
prompt token), ``labels [batch]`` (1 = "Yes.") and the :class:`AnswerTokens`, and returns one
value per sample, larger when the model is more right.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int

from recircuit.models.scoring import AnswerTokens, read_yes_no

Metric = Callable[[Float[torch.Tensor, "batch pos vocab"], Int[torch.Tensor, "batch"], AnswerTokens], Float[torch.Tensor, "batch"]]


def logit_diff(
    logits: Float[torch.Tensor, "batch pos vocab"], labels: Int[torch.Tensor, "batch"], answers: AnswerTokens
) -> Float[torch.Tensor, "batch"]:
    """Label-signed ``logit(Yes) - logit(No)`` at the last position (``No - Yes`` for "No." labels), float32."""
    diff = yes_logit_diff(logits, labels, answers)
    sign = labels.to(diff.dtype) * 2 - 1
    return diff * sign


def logprob(
    logits: Float[torch.Tensor, "batch pos vocab"], labels: Int[torch.Tensor, "batch"], answers: AnswerTokens
) -> Float[torch.Tensor, "batch"]:
    """Log-probability of the correct answer token at the last position (full vocabulary)."""
    lp = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
    idx = torch.where(labels.bool(), answers.yes, answers.no).to(lp.device)
    return lp.gather(1, idx[:, None])[:, 0]


def yes_logit_diff(
    logits: Float[torch.Tensor, "batch pos vocab"], labels: Int[torch.Tensor, "batch"], answers: AnswerTokens
) -> Float[torch.Tensor, "batch"]:
    """Unsigned ``logit(Yes) - logit(No)`` at the last position (ignores the label), float32.

    The two logits are read by :func:`recircuit.models.scoring.read_yes_no`, as scoring reads them.
    """
    two = read_yes_no(logits, None, answers)
    return two[:, 0] - two[:, 1]


METRICS: dict[str, Metric] = {"logit_diff": logit_diff, "logprob": logprob, "yes_logit_diff": yes_logit_diff}


def get_metric(metric: str | Metric) -> Metric:
    """A metric by name (``logit_diff``, ``logprob``, ``yes_logit_diff``) or the callable itself."""
    if callable(metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; use one of {sorted(METRICS)} or pass a callable.")
    return METRICS[metric]
