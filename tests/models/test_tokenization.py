"""How prompts are tokenized per model: BOS exactly where the tokenizer adds one, padding never moves a score."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recircuit.models import load_model, score, tiny_tokenizer, tokenize_prompts
from recircuit.models.loading import TINY_MODELS
from recircuit.models.scoring import answer_tokens
from recircuit.models.tokenize import (
    encode_continuation,
    encode_prompt,
    encode_prompts,
    expects_bos,
    pad_rows,
    prompt_prefix,
)
from recircuit.train.losses import tokenize_with_answers

SHORT = "User Preference: \"Alpha (1990)\". Will the user like \"Beta (1991)\"?"
LONG = SHORT + " User Unpreference: \"Gamma Delta (1992)\", \"Epsilon (1993)\", \"Zeta Eta Theta (1994)\"."


def with_bos(tok):
    """Make ``tok`` a BOS-expecting tokenizer (as Gemma's and Llama-3's are): ``<eos>`` doubles as BOS, as in GPT-2."""
    tok.bos_token = "<eos>"
    tok.add_bos_token = True
    return tok


@pytest.fixture()
def bos_tok():
    return with_bos(tiny_tokenizer())


def test_tiny_tokenizer_adds_no_bos():
    tok = tiny_tokenizer()
    assert prompt_prefix(tok) == [] and not expects_bos(tok)
    assert encode_prompt(tok, SHORT) == tok(SHORT, add_special_tokens=False)["input_ids"]


def test_no_bos_tokenizer_gives_the_old_ids(toy_samples):
    """add_bos_token=False (SmolLM2's case): exactly the ids and masks of the old add_special_tokens=False path."""
    tok = tiny_tokenizer()
    tok.add_bos_token = False
    prompts = [s.prompt for s in toy_samples]
    tok.padding_side = "left"
    old = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    new = tokenize_prompts(tok, prompts)
    assert torch.equal(new.input_ids, old["input_ids"]) and torch.equal(new.attention_mask, old["attention_mask"])
    b = tokenize_with_answers(tok, toy_samples, padding_side="right")
    for i, s in enumerate(toy_samples):
        row = tok.encode(s.prompt, add_special_tokens=False) + tok.encode(s.answer, add_special_tokens=False)
        assert b.input_ids[i, : len(row)].tolist() == row and int(b.attention_mask[i].sum()) == len(row)


def test_bos_tokenizer_gets_exactly_one_bos(bos_tok, toy_samples):
    bos = bos_tok.bos_token_id
    assert prompt_prefix(bos_tok) == [bos] and expects_bos(bos_tok)
    plain = bos_tok(SHORT, add_special_tokens=False)["input_ids"]
    assert encode_prompt(bos_tok, SHORT) == [bos] + plain
    # a prompt that already starts with the BOS (a rendered chat template) gets no second one
    assert encode_prompt(bos_tok, "<eos>" + SHORT) == [bos] + plain
    assert encode_prompts(bos_tok, [SHORT, "<eos>" + SHORT]) == [[bos] + plain] * 2
    # answers never get special tokens
    assert encode_continuation(bos_tok, " Yes.") == bos_tok(" Yes.", add_special_tokens=False)["input_ids"]
    assert answer_tokens(bos_tok) == answer_tokens(tiny_tokenizer())

    batch = tokenize_prompts(bos_tok, [s.prompt for s in toy_samples])
    for ids, mask in zip(batch.input_ids, batch.attention_mask):
        real = ids[mask.bool()].tolist()
        assert real[0] == bos and real.count(bos) == 1
        assert mask.tolist() == sorted(mask.tolist()), "left padding: padding before the prompt"

    ab = tokenize_with_answers(bos_tok, toy_samples, padding_side="right")
    for i, s in enumerate(toy_samples):
        real = ab.input_ids[i][ab.attention_mask[i].bool()].tolist()
        answer = encode_continuation(bos_tok, s.answer)
        assert real[0] == bos and real.count(bos) == 1, "BOS only at the very start of prompt + answer"
        assert real == encode_prompt(bos_tok, s.prompt) + answer
        # the target mask marks the positions predicting exactly the answer tokens
        targets = ab.input_ids[i, 1:][ab.target_mask[i, :-1].bool()].tolist()
        assert targets == answer


def test_appended_eos_is_not_a_prefix():
    """A tokenizer that appends EOS (OLMo-style) must not end prompts with it: the answer position is the last token."""
    tok = tiny_tokenizer()
    tok.add_eos_token = True
    assert tok(SHORT)["input_ids"][-1] == tok.eos_token_id, "the probe tokenizer must append EOS"
    assert prompt_prefix(tok) == [] and encode_prompt(tok, SHORT) == tok(SHORT, add_special_tokens=False)["input_ids"]


class _BareTokenizer:
    """A tokenizer without ``add_bos_token`` (nor ``all_special_ids``) that adds BOS id 7 when asked."""

    bos_token_id = 7
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        one = lambda t: ([7] if add_special_tokens else []) + [10 + ord(c) % 50 for c in t]  # noqa: E731
        return {"input_ids": [one(t) for t in text] if isinstance(text, list) else one(text)}


def test_tokenizer_without_the_attribute():
    tok = _BareTokenizer()
    assert not hasattr(tok, "add_bos_token")
    assert prompt_prefix(tok) == [7] and encode_prompt(tok, "ab")[:1] == [7]
    tok.bos_token_id = None  # nothing declared as BOS: a prefix that is no special token is not taken
    assert prompt_prefix(tok) == []


def test_pad_rows_sides():
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="side"):
        pad_rows([[1]], 0, side="middle")


@pytest.mark.parametrize("bos", [False, True], ids=["no-bos", "bos"])
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_padding_does_not_change_a_score(name, bos, monkeypatch):
    """Per family: a prompt scored alone equals it scored beside a longer one (left padding), with and without BOS."""
    import recircuit.models.scoring as scoring

    model = load_model(name, device="cpu")
    if bos:
        with_bos(model.tokenizer)
    seen: list[torch.Tensor] = []
    real_yes_no = scoring.yes_no_logits
    monkeypatch.setattr(scoring, "yes_no_logits", lambda m, b, a=None: seen.append(b.input_ids) or real_yes_no(m, b, a))

    alone = score(model, [SHORT], batch_size=1, progress=False)[0]
    batched = score(model, [SHORT, LONG], batch_size=2, progress=False)
    assert len(tokenize_prompts(model.tokenizer, [LONG]).input_ids[0]) > len(tokenize_prompts(model.tokenizer, [SHORT]).input_ids[0])
    np.testing.assert_allclose(batched[0], alone, atol=1e-5, rtol=0)
    assert seen[0].shape[0] == 1 and seen[1].shape[0] == 2
    bos_id = model.tokenizer.bos_token_id
    first_real = seen[0][0, 0].item()
    if bos:
        assert first_real == bos_id and int((seen[1][0] == bos_id).sum()) == 1 and int((seen[1][1] == bos_id).sum()) == 1
        model.tokenizer.add_bos_token = False
        without = score(model, [SHORT], batch_size=1, progress=False)[0]
        assert abs(without - alone) > 1e-6, "the BOS must reach the model"
    else:
        assert bos_id is None or int((seen[1] == bos_id).sum()) == 0


def test_pair_batches_carry_one_bos(bos_tok, toy_samples):
    from recircuit.circuits.engine import make_pair_batch

    pair = make_pair_batch(bos_tok, toy_samples[:3], toy_samples[3:6], "cpu", align="left")
    for b in (pair.clean, pair.corrupted):
        for ids, mask in zip(b.input_ids, b.attention_mask):
            real = ids[mask.bool()].tolist()
            assert real[0] == bos_tok.bos_token_id and real.count(bos_tok.bos_token_id) == 1
