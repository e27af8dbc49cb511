"""Yes/No scoring of recommendation prompts on a hooked model.

Usage::

    from recircuit.models import score, answer_tokens, tokenize_prompts, yes_no_logits
    p_yes = score(model, samples, batch_size=8)        # np.ndarray [n], P("Yes")
    toks = answer_tokens(model.tokenizer)             # AnswerTokens(yes=9230, no=2838) on SmolLM2
    two = read_yes_no(logits, pos, toks)              # [batch, 2] Yes/No logits at each row's `pos`
    p = p_yes_from_logits(two)                        # [batch] P(Yes)

``score`` is the softmax over the two answer logits at the last prompt position. Batches are
left-padded with an attention mask and matching position ids, so padding does not change a score.
Prompts are tokenized by :mod:`recircuit.models.tokenize`: a BOS first exactly when the model's
tokenizer adds one (none on SmolLM2; Gemma and Llama-3 get theirs).

**The one Yes/No readout.** :func:`read_yes_no` (the ``[yes, no]`` logits of each row at its
answer position, in float32) and :func:`p_yes_from_logits` (their softmax's Yes entry) are the
only place P(Yes) is read from logits: scoring, the training loss ``yes_no_loss``, the
unlearning objectives and the evaluation's one-pass ``score_and_loss`` all call them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from recircuit.data.prompts import Sample
from recircuit.models.loading import plain_forward
from recircuit.models.tokenize import encode_continuation, encode_prompts, pad_id, pad_rows


class AnswerTokenError(ValueError):
    """The tokenizer does not encode the answers as single tokens."""


@dataclass(frozen=True)
class AnswerTokens:
    """Token ids of the two answers, ``" Yes"`` and ``" No"``."""

    yes: int
    no: int


def answer_tokens(tokenizer, yes: str = " Yes", no: str = " No") -> AnswerTokens:
    """Resolve the answer token ids for ``tokenizer``; fail clearly if either is not one token."""
    ids = {}
    for word in (yes, no):
        enc = encode_continuation(tokenizer, word)
        if len(enc) != 1:
            raise AnswerTokenError(
                f"The tokenizer splits {word!r} into {len(enc)} tokens {enc}; recircuit scores "
                "the first answer token and needs each answer to be a single token. Use a model "
                "whose tokenizer has single-token ' Yes'/' No', or pass other answer words."
            )
        ids[word] = enc[0]
    return AnswerTokens(yes=ids[yes], no=ids[no])


@dataclass
class TokenizedBatch:
    """A left-padded batch of prompts."""

    input_ids: Int[torch.Tensor, "batch pos"]
    attention_mask: Int[torch.Tensor, "batch pos"]

    @property
    def position_ids(self) -> Int[torch.Tensor, "batch pos"]:
        """Positions counted over real tokens only (padding gets 0)."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def to(self, device: torch.device | str) -> TokenizedBatch:
        """Move to ``device``."""
        return TokenizedBatch(self.input_ids.to(device), self.attention_mask.to(device))


def tokenize_prompts(
    tokenizer, prompts: Sequence[str], device: torch.device | str = "cpu"
) -> TokenizedBatch:
    """Tokenize ``prompts`` with left padding (the last position is always the last prompt token).

    Each prompt is tokenized as the model expects it (:func:`recircuit.models.tokenize.encode_prompt`:
    a BOS first exactly when the tokenizer itself adds one), then padded on the left with the pad id.
    """
    ids, mask = pad_rows(encode_prompts(tokenizer, list(prompts)), pad_id(tokenizer), side="left")
    return TokenizedBatch(ids.to(device), mask.to(device))


def forward_logits(model, batch: TokenizedBatch) -> Float[torch.Tensor, "batch pos vocab"]:
    """Full logits of a left-padded batch."""
    return model(batch.input_ids, attention_mask=batch.attention_mask, return_type="logits")


def _takes_logits_to_keep(model) -> bool:
    hf = getattr(model, "original_model", None)
    if hf is None:
        return False
    kind = type(hf)
    if kind not in _KEEP_SUPPORT:
        try:
            _KEEP_SUPPORT[kind] = "logits_to_keep" in inspect.signature(hf.forward).parameters
        except (TypeError, ValueError):
            _KEEP_SUPPORT[kind] = False
    return _KEEP_SUPPORT[kind]


_KEEP_SUPPORT: dict[type, bool] = {}


def kept_logits(
    model,
    input_ids: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"] | None,
    keep: int | Int[torch.Tensor, "k"],
) -> Float[torch.Tensor, "batch k vocab"]:
    """Logits at some positions only: the last ``keep`` (an int) or the sorted positions ``keep`` (a tensor).

    Scoring and the losses read the logits at one to a few positions per row, yet a full forward
    unembeds every position (49,152 logits per token on SmolLM2: about a fifth of the pass, and
    a ``[batch, pos, vocab]`` tensor of ~0.4 GB per batch of 8 kept for the backward). Hugging
    Face causal LMs take ``logits_to_keep`` and run the unembedding on those positions alone; the
    bridge passes it through, so hooks upstream of the unembedding see the whole sequence as
    before. The values are those of the full logits at the kept positions (tested per model
    family). A model whose forward has no ``logits_to_keep`` gets the full logits, sliced.
    """
    if isinstance(keep, torch.Tensor):
        keep = keep.reshape(-1).to(device=input_ids.device, dtype=torch.long)
        n = len(keep)
    else:
        keep = n = int(keep)
    if n < 1:
        raise ValueError(f"kept_logits needs at least one position to keep, got {n}")
    if _takes_logits_to_keep(model):
        logits = model(input_ids, attention_mask=attention_mask, return_type="logits", logits_to_keep=keep)
        if logits.shape[1] == n:
            return logits
    else:                   # no logits_to_keep, or a forward that took it and ignored it: slice the full logits
        logits = model(input_ids, attention_mask=attention_mask, return_type="logits")
    return logits[:, -keep:] if isinstance(keep, int) else logits[:, keep.to(logits.device)]


def read_yes_no(
    logits: Float[torch.Tensor, "batch pos vocab"],
    pos: Int[torch.Tensor, "batch"] | None,
    answers: AnswerTokens,
) -> Float[torch.Tensor, "batch 2"]:
    """The ``[yes, no]`` logits of each row at position ``pos[row]`` (the last position if ``None``), float32.

    ``pos`` is the position whose next-token distribution is the answer: the last prompt token
    (the last column of a left-padded prompt batch; ``len(prompt) - 1`` of a right-padded one).
    Differentiable; the cast to float32 comes after the gather, so it costs two columns only.
    """
    if pos is None:
        two = logits[:, -1, :][:, [answers.yes, answers.no]]
    else:
        rows = torch.arange(logits.shape[0], device=logits.device)
        two = logits[rows, pos.to(logits.device)][:, [answers.yes, answers.no]]
    return two.float()


def p_yes_from_logits(two: Float[torch.Tensor, "batch 2"]) -> Float[torch.Tensor, "batch"]:
    """P("Yes") from :func:`read_yes_no`'s ``[yes, no]`` logits: the softmax over the two answers."""
    return torch.softmax(two.float(), dim=-1)[:, 0]


def yes_no_logits(
    model, batch: TokenizedBatch, answers: AnswerTokens | None = None
) -> Float[torch.Tensor, "batch 2"]:
    """The ``[yes, no]`` logits (float32) at the last prompt position of each row of a left-padded batch."""
    answers = answers or answer_tokens(model.tokenizer)
    return read_yes_no(kept_logits(model, batch.input_ids, batch.attention_mask, 1), None, answers)


def iter_batches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    """Consecutive slices of ``items`` of at most ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, len(items), batch_size):
        yield items[i : i + batch_size]


@torch.no_grad()
def score(
    model,
    samples: Sequence[Sample] | Sequence[str],
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "scoring",
    plain: bool = True,
) -> Float[np.ndarray, "n"]:
    """P("Yes") for each sample: softmax over the Yes/No logits at the last prompt position.

    Args:
        model: a bridge (or any module with ``.tokenizer`` taking ``attention_mask``).
        samples: :class:`Sample` objects or raw prompt strings.
        batch_size: prompts per forward pass.
        progress: show a tqdm bar.
        desc: the bar's label.
        plain: switch the per-head hooks off while scoring (bit-identical to HF and faster).
            Pass ``False`` to score under hooks you added on per-head points (interventions).

    Returns:
        float64 array of P(Yes), one per sample.
    """
    if len(samples) == 0:
        return np.zeros(0, dtype=np.float64)
    prompts = [s.prompt if isinstance(s, Sample) else str(s) for s in samples]
    answers = answer_tokens(model.tokenizer)
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    switch = plain_forward(model) if plain and hasattr(model, "set_use_attn_result") else nullcontext()
    try:
        with switch:
            bar = tqdm(total=len(prompts), desc=desc, unit="sample", disable=not progress, leave=False)
            for chunk in iter_batches(prompts, batch_size):
                batch = tokenize_prompts(model.tokenizer, chunk, device)
                two = yes_no_logits(model, batch, answers)
                out.append(p_yes_from_logits(two).double().cpu().numpy())
                bar.update(len(chunk))
            bar.close()
    finally:
        model.train(was_training)
    return np.concatenate(out)
