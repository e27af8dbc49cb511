import copy

import numpy as np
import pytest
import torch

from recircuit.models import answer_tokens, score, tiny_hf_model, tokenize_prompts, yes_no_logits
from recircuit.models.loading import _boot
from recircuit.models.scoring import AnswerTokenError


def test_bridge_logits_equal_hf(toy_samples):
    hf, tok = tiny_hf_model(seed=3)
    ref = copy.deepcopy(hf)
    bridge = _boot("meta-llama/Llama-2-7b-hf", hf, tok, torch.device("cpu"), torch.float32)
    ids = tok(toy_samples[5].prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = ref(ids).logits
        torch.testing.assert_close(bridge(ids, return_type="logits"), expected, atol=1e-5, rtol=1e-5)
        bridge.set_use_attn_result(False)  # per-head o-projection sums change float order only
        assert torch.equal(bridge(ids, return_type="logits"), expected)


def test_padding_does_not_change_scores(tiny, toy_samples):
    batched = score(tiny, toy_samples, batch_size=5, progress=False)
    single = np.array([score(tiny, [s], batch_size=1, progress=False)[0] for s in toy_samples])
    lengths = {len(tiny.tokenizer(s.prompt)["input_ids"]) for s in toy_samples}
    assert len(lengths) > 1, "the samples must differ in length for this test to mean anything"
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_score_is_softmax_of_yes_no_logits(tiny, toy_samples):
    ans = answer_tokens(tiny.tokenizer)
    batch = tokenize_prompts(tiny.tokenizer, [s.prompt for s in toy_samples[:4]])
    with torch.no_grad():
        two = yes_no_logits(tiny, batch, ans)
        full = tiny(batch.input_ids, attention_mask=batch.attention_mask, return_type="logits")[:, -1]
    assert torch.equal(two[:, 0], full[:, ans.yes]) and torch.equal(two[:, 1], full[:, ans.no])
    p = score(tiny, toy_samples[:4], progress=False)
    np.testing.assert_allclose(p, torch.sigmoid(two[:, 0] - two[:, 1]).numpy(), atol=1e-6)


def test_answer_tokens_must_be_single_tokens(tiny):
    ans = answer_tokens(tiny.tokenizer)
    assert ans.yes != ans.no
    with pytest.raises(AnswerTokenError, match="single token"):
        answer_tokens(tiny.tokenizer, yes=" Absolutely not a token")


def test_empty_input_scores_nothing(tiny):
    assert score(tiny, [], progress=False).shape == (0,)


def test_score_equals_plain_hf_forward_bit_for_bit(toy_samples):
    hf, tok = tiny_hf_model(seed=4)
    ref = copy.deepcopy(hf)
    bridge = _boot("meta-llama/Llama-2-7b-hf", hf, tok, torch.device("cpu"), torch.float32)
    ans = answer_tokens(tok)
    batch = tokenize_prompts(tok, [s.prompt for s in toy_samples])
    with torch.no_grad():
        logits = ref(batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    expected = torch.softmax(logits[:, -1, [ans.yes, ans.no]].float(), -1)[:, 0].double().numpy()
    got = score(bridge, toy_samples, batch_size=len(toy_samples), progress=False)
    np.testing.assert_array_equal(got, expected)
    assert bridge.cfg.use_attn_result, "score() must restore the per-head hooks"
