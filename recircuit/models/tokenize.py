"""How a model tokenizes a prompt: the one place that decides whether a BOS token comes first.

Usage::

    from recircuit.models.tokenize import encode_prompt, encode_continuation, prompt_prefix, pad_rows
    prompt_prefix(tokenizer)                   # [] on SmolLM2; [bos_id] on Gemma / Llama-3 tokenizers
    ids = encode_prompt(tokenizer, prompt)     # BOS (if the tokenizer adds one) + the prompt's tokens
    tail = encode_continuation(tokenizer, " Yes.")   # answer tokens: never any special token
    input_ids, attention_mask = pad_rows([ids, ids[:5]], pad_id=0, side="left")

**The rule.** A prompt starts with exactly the special tokens the tokenizer itself puts in front
of a text when asked to add special tokens (``tokenizer(text)`` versus
``tokenizer(text, add_special_tokens=False)``): its own settings (``add_bos_token``, the
post-processor of ``tokenizer.json``, a GGUF file's ``tokenizer.ggml.add_bos_token``) decide, so
SmolLM2 (which adds none) gets no BOS and Gemma or Llama-3 get theirs. Only a prefix is taken:
an EOS a tokenizer appends would push the answer position off the last prompt token. A prompt
whose text already starts with the BOS (a rendered chat template, say) does not get a second one.
A continuation (the answer after a prompt) never gets special tokens, so in ``prompt + answer``
the BOS appears once, at the very start.

Scoring (:func:`recircuit.models.scoring.tokenize_prompts`), the training and unlearning losses
(:mod:`recircuit.train.losses`), circuits' clean/corrupted batches and the attention views all
tokenize through here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int

#: The text the tokenizer is probed with (any short word works; the prefix does not depend on it).
_PROBE = "Yes"


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def prompt_prefix(tokenizer) -> list[int]:
    """The special token ids the tokenizer puts before a text (``[bos_id]``, or ``[]`` when it adds none).

    Read from what the tokenizer does, not from one attribute, so it holds for every tokenizer
    class (fast, slow, built from a GGUF) and for tokenizers without ``add_bos_token``: the ids of
    ``tokenizer(text)`` in front of those of ``tokenizer(text, add_special_tokens=False)``, kept
    only when they are special tokens. Anything the tokenizer appends (an EOS) is ignored.
    """
    plain = _ids(tokenizer, _PROBE, special=False)
    full = _ids(tokenizer, _PROBE, special=True)
    if not plain or len(full) <= len(plain):
        return []
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            prefix = full[:start]
            special = set(getattr(tokenizer, "all_special_ids", []) or [])
            bos = getattr(tokenizer, "bos_token_id", None)
            if bos is not None:
                special.add(bos)
            return prefix if all(i in special for i in prefix) else []
    return []


def expects_bos(tokenizer) -> bool:
    """Whether prompts for this tokenizer's model start with a BOS (a non-empty :func:`prompt_prefix`)."""
    return bool(prompt_prefix(tokenizer))


def _with_prefix(ids: list[int], prefix: list[int]) -> list[int]:
    if not prefix or ids[: len(prefix)] == prefix:
        return ids
    return prefix + ids


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of one prompt as the model expects it: the tokenizer's BOS prefix (once) + the text's tokens."""
    return _with_prefix(_ids(tokenizer, text, special=False), prompt_prefix(tokenizer))


def encode_prompts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """:func:`encode_prompt` of each text (one tokenizer call for the batch)."""
    if len(texts) == 0:
        return []
    prefix = prompt_prefix(tokenizer)
    rows = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [_with_prefix(list(r), prefix) for r in rows]


def encode_continuation(tokenizer, text: str) -> list[int]:
    """Token ids of text that continues a prompt (an answer): never any special token."""
    return _ids(tokenizer, text, special=False)


def pad_id(tokenizer) -> int:
    """The id padding positions carry: the pad token, else EOS, else 0 (padding is masked anyway)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, side: str = "left"
             ) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    """Pad token id rows to one width: ``(input_ids, attention_mask)``, both int64.

    Args:
        rows: token ids per row (at least one row).
        pad_id: the id padding positions carry.
        side: ``"left"`` (the last column is each row's last token, as scoring needs) or ``"right"``.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if len(rows) == 0:
        raise ValueError("pad_rows needs at least one row")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r) == 0:
            continue
        sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, sl] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask
