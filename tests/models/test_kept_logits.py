"""The unembedding on the read positions only (``kept_logits``): same numbers as the full logits, per family.

Scoring, the answer and Yes/No losses and the evaluation's one-pass ``score_and_loss`` read the
logits at one to a few positions per row; these tests pin them to the full-logits computation
(values and gradients) on every tiny model family.
"""

import torch

from recircuit.models import answer_tokens, kept_logits, tokenize_prompts
from recircuit.models.scoring import read_yes_no
from recircuit.models.tokenize import encode_prompts, pad_id, pad_rows
from recircuit.train.losses import answer_forward, answer_loss, tokenize_with_answers, yes_no_loss


def _full(model, ids, mask):
    return model(ids, attention_mask=mask, return_type="logits")


def test_kept_logits_equal_full_logits_at_those_positions(family_model, toy_samples):
    b = tokenize_prompts(family_model.tokenizer, [s.prompt for s in toy_samples[:5]])
    keep = torch.tensor([0, 3, b.input_ids.shape[1] - 1])
    with torch.no_grad():
        full = _full(family_model, b.input_ids, b.attention_mask)
        torch.testing.assert_close(kept_logits(family_model, b.input_ids, b.attention_mask, keep), full[:, keep],
                                   atol=1e-6, rtol=1e-6)
        last = kept_logits(family_model, b.input_ids, b.attention_mask, 1)
    assert last.shape[1] == 1
    torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-6, rtol=1e-6)


def _answer_loss_full(model, samples):
    b = tokenize_with_answers(model.tokenizer, samples, padding_side="right")
    logits = _full(model, b.input_ids, b.attention_mask)
    m = b.target_mask[:, :-1].bool()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1][m].float(), b.input_ids[:, 1:][m], reduction="none")
    per = torch.zeros(len(m)).index_add(0, m.nonzero()[:, 0], nll) / m.sum(1)
    first = m.int().argmax(1)
    return per, read_yes_no(logits, first, answer_tokens(model.tokenizer))


def _yes_no_loss_full(model, samples):
    rows = encode_prompts(model.tokenizer, [s.prompt for s in samples])
    ids, att = pad_rows(rows, pad_id(model.tokenizer), side="right")
    logits = _full(model, ids, att)
    two = read_yes_no(logits, torch.tensor([len(r) - 1 for r in rows]), answer_tokens(model.tokenizer))
    target = torch.tensor([0 if s.label == 1 else 1 for s in samples])
    return torch.nn.functional.cross_entropy(two, target, reduction="none")


def test_losses_and_their_gradients_equal_the_full_logits_computation(family_model, toy_samples):
    samples = toy_samples[:6]              # prompts of several lengths: answer positions differ per row
    params = [p for p in family_model.parameters() if p.requires_grad]

    def grads(loss):
        family_model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in params if p.grad is not None]

    for ours, ref in ((lambda: answer_loss(family_model, samples), lambda: _answer_loss_full(family_model, samples)[0]),
                      (lambda: yes_no_loss(family_model, samples), lambda: _yes_no_loss_full(family_model, samples))):
        a, b = ours(), ref()
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        ga, gb = grads(a.sum()), grads(ref().sum())
        assert len(ga) == len(gb) > 0
        for x, y in zip(ga, gb):
            torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-4)
    with torch.no_grad():
        ce, two = answer_forward(family_model, samples)
        ce_ref, two_ref = _answer_loss_full(family_model, samples)
    torch.testing.assert_close(ce, ce_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(two, two_ref, atol=1e-6, rtol=1e-5)


def test_kept_logits_refuses_nothing_to_keep_and_slices_when_the_forward_ignores_it(tiny, toy_samples, monkeypatch):
    import pytest

    from recircuit.models import scoring

    b = tokenize_prompts(tiny.tokenizer, [s.prompt for s in toy_samples[:3]])
    with pytest.raises(ValueError, match="at least one position"):
        kept_logits(tiny, b.input_ids, b.attention_mask, 0)      # HF reads 0 as "every position"
    with torch.no_grad():
        full = _full(tiny, b.input_ids, b.attention_mask)
        real = tiny.forward
        # a forward that accepts logits_to_keep but returns every position: the result is still the kept ones
        monkeypatch.setattr(tiny, "forward", lambda *a, logits_to_keep=None, **k: real(*a, **k))
        keep = torch.tensor([1, 4])
        torch.testing.assert_close(kept_logits(tiny, b.input_ids, b.attention_mask, keep), full[:, keep])
    assert scoring._takes_logits_to_keep(tiny)
