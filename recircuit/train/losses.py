"""Answer losses: cross-entropy on the answer tokens after the prompt (TALLRec style).

Usage::

    from recircuit.train.losses import answer_loss, tokenize_with_answers
    per_sample = answer_loss(model, samples)                  # [n] mean CE over " Yes." / " No."
    ce, yes_no = answer_forward(model, samples)               # the same CE and the Yes/No logits [n, 2]
    loss = answer_loss(model, samples, reduction="mean")      # scalar, differentiable
    p_yes, ce = score_and_loss(model, samples)                # numpy, one no-grad pass (evaluation)

Prompt and answer are tokenized separately and concatenated, so the prompt tokens are exactly
those that scoring sees (the model's BOS, if its tokenizer adds one, only at the very start; the
answer never gets special tokens: :mod:`recircuit.models.tokenize`), and the first answer token
is the ``" Yes"``/``" No"`` token scored by :func:`recircuit.models.score`. The loss is the
TALLRec one: cross-entropy over the whole answer continuation (``" Yes"`` + ``"."``, or ``" No"``
+ ``"."``), averaged per sample, not only the first-token Yes/No logits. Batches are right-padded for the loss (RoPE makes the padding side
irrelevant to the maths, and right padding stays NaN-free under bf16 autocast).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int

from recircuit.data.prompts import Sample
from recircuit.models.scoring import answer_tokens, kept_logits, read_yes_no
from recircuit.models.tokenize import encode_continuation, encode_prompts, pad_id, pad_rows


@dataclass
class AnswerBatch:
    """Left-padded prompt+answer ids with a mask of answer positions to predict."""

    input_ids: Int[torch.Tensor, "batch pos"]
    attention_mask: Int[torch.Tensor, "batch pos"]
    target_mask: Float[torch.Tensor, "batch pos"]  # 1 where the NEXT token is an answer token


def tokenize_with_answers(tokenizer, samples: Sequence[Sample], device: torch.device | str = "cpu",
                          answers: Sequence[str] | None = None, padding_side: str = "left") -> AnswerBatch:
    """Tokenize ``prompt + answer`` per sample; ``answers`` overrides ``s.answer``.

    Args:
        padding_side: ``"left"`` (as scoring pads) or ``"right"``. Right padding leaves no query
            position with every key masked, which under bf16 autocast turns into NaN in eager
            attention and spreads to the whole row; :func:`answer_loss` therefore pads right.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    rows, tmask = [], []
    prompts = encode_prompts(tokenizer, [s.prompt for s in samples])  # BOS (if the model expects one) only here
    for i, (s, p) in enumerate(zip(samples, prompts)):
        a = encode_continuation(tokenizer, answers[i] if answers is not None else s.answer)
        if not a:
            raise ValueError(f"sample {i}: its answer {(answers[i] if answers is not None else s.answer)!r} "
                             "encodes to no token; every sample needs a non-empty answer (' Yes.' or ' No.')")
        rows.append(p + a)
        # position t predicts token t+1: targets are positions len(p)-1 .. len(p)+len(a)-2
        tmask.append([0] * (len(p) - 1) + [1] * len(a) + [0])
    ids, att = pad_rows(rows, pad_id(tokenizer), side=padding_side)
    tm = torch.zeros(ids.shape)
    for i, t in enumerate(tmask):
        sl = slice(ids.shape[1] - len(t), ids.shape[1]) if padding_side == "left" else slice(0, len(t))
        tm[i, sl] = torch.tensor(t, dtype=torch.float)
    return AnswerBatch(ids.to(device), att.to(device), tm.to(device))


def answer_positions(batch: AnswerBatch) -> Int[torch.Tensor, "k"]:
    """The sorted positions whose next token is an answer token in some row (where logits are needed)."""
    return batch.target_mask[:, :-1].bool().any(0).nonzero()[:, 0]


def answer_logits(model, batch: AnswerBatch) -> tuple[Float[torch.Tensor, "batch k vocab"], Int[torch.Tensor, "k"]]:
    """The logits at :func:`answer_positions` only (the unembedding skips the rest) and those positions."""
    keep = answer_positions(batch)
    return kept_logits(model, batch.input_ids, batch.attention_mask, keep), keep


def answer_nll(logits: Float[torch.Tensor, "batch pos vocab"], batch: AnswerBatch,
               keep: Int[torch.Tensor, "k"] | None = None) -> Float[torch.Tensor, "batch"]:
    """Mean cross-entropy over each row's answer tokens, from the logits of a prompt+answer batch.

    ``logits`` are every position's, or with ``keep`` those at the positions ``keep`` only
    (:func:`answer_logits`); the result is the same.
    """
    # only the few answer positions need a softmax over the vocabulary: select them first
    m = batch.target_mask[:, :-1].bool()
    if keep is None:
        at, targets = logits[:, :-1], batch.input_ids[:, 1:]
    else:
        at, targets, m = logits, batch.input_ids[:, keep + 1], m[:, keep]
    nll = torch.nn.functional.cross_entropy(at[m].float(), targets[m], reduction="none")
    per = torch.zeros(len(m), device=nll.device, dtype=nll.dtype).index_add(0, m.nonzero()[:, 0], nll)
    return per / m.sum(1).clamp(min=1)


def answer_loss(model, samples: Sequence[Sample], reduction: str = "none",
                answers: Sequence[str] | None = None) -> Float[torch.Tensor, "..."]:
    """Cross-entropy of the answer tokens given the prompt.

    Args:
        model: a bridge (or HF-like module returning logits with ``return_type="logits"``).
        samples: the samples; their ``answer`` (" Yes." / " No.") is the target unless ``answers``.
        reduction: ``"none"`` (mean over each sample's answer tokens, shape [n]), ``"mean"`` or ``"sum"``.
        answers: optional replacement answers (e.g. the flipped label, for unlearning objectives).
    """
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    device = next(model.parameters()).device
    b = tokenize_with_answers(model.tokenizer, samples, device, answers, padding_side="right")
    logits, keep = answer_logits(model, b)
    per = answer_nll(logits, b, keep)
    if reduction == "none":
        return per
    if reduction == "mean":
        return per.mean()
    return per.sum()


def yes_no_loss(model, samples: Sequence[Sample], reduction: str = "none") -> Float[torch.Tensor, "..."]:
    """2-way cross-entropy of the ``[" Yes", " No"]`` logits at the last prompt position.

    The alternative to :func:`answer_loss` that trains exactly what :func:`recircuit.models.score`
    reads (``TrainConfig(loss="yes_no")``); the target is ``" Yes"`` for ``label == 1``. Batches
    are right-padded, as in :func:`answer_loss`.

    Args:
        reduction: ``"none"`` (shape [n]), ``"mean"`` or ``"sum"``.
    """
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    tok = model.tokenizer
    device = next(model.parameters()).device
    rows = encode_prompts(tok, [s.prompt for s in samples])
    ids, att = pad_rows(rows, pad_id(tok), side="right")
    last = torch.tensor([len(r) - 1 for r in rows], device=device)
    keep = torch.unique(last)                      # sorted; the unembedding runs on these positions only
    logits = kept_logits(model, ids.to(device), att.to(device), keep)
    two = read_yes_no(logits, torch.searchsorted(keep, last), answer_tokens(tok))
    target = torch.tensor([0 if s.label == 1 else 1 for s in samples], device=logits.device)
    per = torch.nn.functional.cross_entropy(two, target, reduction="none")
    if reduction == "none":
        return per
    return per.mean() if reduction == "mean" else per.sum()


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
    logits, keep = answer_logits(model, b)
    ce = answer_nll(logits, b, keep)
    first = b.target_mask[:, :-1].bool().int().argmax(dim=1)  # position predicting the first answer token
    return ce, read_yes_no(logits, torch.searchsorted(keep, first), answer_tokens(model.tokenizer))


@torch.no_grad()
def score_and_loss(model, samples: Sequence[Sample], batch_size: int = 8
                   ) -> tuple[Float[np.ndarray, "n"], Float[np.ndarray, "n"]]:
    """P("Yes") and the answer cross-entropy of each sample from **one** forward pass.

    The pass reads ``prompt + answer`` (as :func:`~recircuit.train.losses.answer_loss` does):
    causal attention makes the logits at the last prompt position exactly those that
    :func:`~recircuit.models.score` reads from the prompt alone, and the answer positions give
    the loss. Evaluation needs both for every model, so this halves its forward passes. The
    pass is :func:`~recircuit.train.losses.answer_forward`, the one the unlearning objectives use.

    ``model`` may also be an object with ``answer_outputs(samples, batch_size)`` (an exact
    unlearning method's ensemble predictor), which is asked instead.

    Returns:
        ``(p_yes, loss)``, float64 arrays of length ``len(samples)``.
    """
    from recircuit.models.loading import plain_forward
    from recircuit.models.scoring import iter_batches, p_yes_from_logits

    if hasattr(model, "answer_outputs"):     # an exact method's predictor (recircuit.unlearn.methods._exact)
        return model.answer_outputs(samples, batch_size)
    samples = list(samples)
    if not samples:
        return np.zeros(0), np.zeros(0)
    p_out, l_out = [], []
    was_training = model.training
    model.eval()
    try:
        with plain_forward(model):
            for chunk in iter_batches(samples, batch_size):
                ce, yes_no = answer_forward(model, chunk)
                p_out.append(p_yes_from_logits(yes_no).double().cpu().numpy())
                l_out.append(ce.double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(p_out), np.concatenate(l_out)
