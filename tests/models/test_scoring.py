import copy

import numpy as np
import pytest
import torch

from recircuit.models import answer_tokens, score, tiny_hf_model, tokenize_prompts, yes_no_logits
from recircuit.models.loading import _boot
from recircuit.models.scoring import AnswerTokenError, p_yes_from_logits, read_yes_no


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


def test_read_yes_no_gathers_each_rows_position(tiny, toy_samples):
    ans = answer_tokens(tiny.tokenizer)
    logits = torch.randn(3, 5, tiny.cfg.d_vocab, dtype=torch.float64)
    pos = torch.tensor([4, 0, 2])
    two = read_yes_no(logits, pos, ans)
    assert two.dtype == torch.float32 and two.shape == (3, 2)
    for r in range(3):
        assert two[r, 0] == logits[r, pos[r], ans.yes].float() and two[r, 1] == logits[r, pos[r], ans.no].float()
    torch.testing.assert_close(read_yes_no(logits, None, ans), read_yes_no(logits, torch.tensor([4, 4, 4]), ans))
    torch.testing.assert_close(p_yes_from_logits(two), torch.sigmoid(two[:, 0] - two[:, 1]))


def test_every_yes_no_reader_gives_the_score(tiny, toy_samples):
    from recircuit.evaluate.metrics import score_and_loss
    from recircuit.train.losses import yes_no_loss
    from recircuit.unlearn.objectives import answer_forward

    p = score(tiny, toy_samples, batch_size=4, progress=False)
    with torch.no_grad():
        _, two = answer_forward(tiny, toy_samples)
        ce = yes_no_loss(tiny, toy_samples).double().numpy()
    np.testing.assert_allclose(p_yes_from_logits(two).double().numpy(), p, atol=1e-5)
    np.testing.assert_allclose(score_and_loss(tiny, toy_samples, batch_size=4)[0], p, atol=1e-5)
    y = np.array([s.label for s in toy_samples])
    np.testing.assert_allclose(ce, -np.log(np.where(y == 1, p, 1 - p)), atol=1e-4)
    assert not np.allclose(p, p[0])


def test_yes_no_logits_are_read_in_one_place():
    """No module but scoring.py indexes the vocabulary with the two answer ids."""
    import re
    from pathlib import Path

    import recircuit

    pattern = re.compile(r"\[\s*\w+\.yes\s*,\s*\w+\.no\s*\]")
    hits = [str(p) for p in Path(recircuit.__file__).parent.rglob("*.py")
            if p.name != "scoring.py" and pattern.search(p.read_text())]
    assert hits == []
