"""Answer losses: cross-entropy on the answer tokens after the prompt (TALLRec style).

Usage::

    from recircuit.train.losses import answer_loss, tokenize_with_answers
    per_sample = answer_loss(model, samples)                  # [n] mean CE over " Yes." / " No."
    loss = answer_loss(model, samples, reduction="mean")      # scalar, differentiable

Prompt and answer are tokenized separately and concatenated, so the prompt tokens are exactly
those that scoring sees, and the first answer token is the ``" Yes"``/``" No"`` token scored by
:func:`recircuit.models.score`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int

from recircuit.data.prompts import Sample


@dataclass
class AnswerBatch:
    """Left-padded prompt+answer ids with a mask of answer positions to predict."""

    input_ids: Int[torch.Tensor, "batch pos"]
    attention_mask: Int[torch.Tensor, "batch pos"]
    target_mask: Float[torch.Tensor, "batch pos"]  # 1 where the NEXT token is an answer token


def tokenize_with_answers(tokenizer, samples: Sequence[Sample], device: torch.device | str = "cpu",
                          answers: Sequence[str] | None = None) -> AnswerBatch:
    """Tokenize ``prompt + answer`` per sample (left padding); ``answers`` overrides ``s.answer``."""
    rows, tmask = [], []
    for i, s in enumerate(samples):
        p = tokenizer.encode(s.prompt, add_special_tokens=False)
        a = tokenizer.encode(answers[i] if answers is not None else s.answer, add_special_tokens=False)
        rows.append(p + a)
        # position t predicts token t+1: targets are positions len(p)-1 .. len(p)+len(a)-2
        tmask.append([0] * (len(p) - 1) + [1] * len(a) + [0])
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    tm = torch.zeros((len(rows), width))
    for i, (r, t) in enumerate(zip(rows, tmask)):
        ids[i, width - len(r):] = torch.tensor(r)
        att[i, width - len(r):] = 1
        tm[i, width - len(r):] = torch.tensor(t, dtype=torch.float)
    return AnswerBatch(ids.to(device), att.to(device), tm.to(device))


def answer_loss(model, samples: Sequence[Sample], reduction: str = "none",
                answers: Sequence[str] | None = None) -> Float[torch.Tensor, "..."]:
    """Cross-entropy of the answer tokens given the prompt.

    Args:
        model: a bridge (or HF-like module returning logits with ``return_type="logits"``).
        samples: the samples; their ``answer`` (" Yes." / " No.") is the target unless ``answers``.
        reduction: ``"none"`` (mean over each sample's answer tokens, shape [n]), ``"mean"`` or ``"sum"``.
        answers: optional replacement answers (e.g. the flipped label, for unlearning objectives).
    """
    device = next(model.parameters()).device
    b = tokenize_with_answers(model.tokenizer, samples, device, answers)
    logits = model(b.input_ids, attention_mask=b.attention_mask, return_type="logits")
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(2, b.input_ids[:, 1:, None])[:, :, 0]
    m = b.target_mask[:, :-1]
    per = (nll * m).sum(1) / m.sum(1).clamp(min=1)
    if reduction == "none":
        return per
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
