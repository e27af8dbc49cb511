import pytest
import torch

from recircuit.circuits.metrics import METRICS, get_metric, logit_diff, yes_logit_diff
from recircuit.models.scoring import AnswerTokens, read_yes_no


@pytest.fixture()
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, 11, generator=g)
    return logits, torch.tensor([1, 0, 1, 0]), AnswerTokens(yes=3, no=7)


def test_logit_diffs_read_the_yes_no_logits_as_scoring_does(batch):
    logits, labels, ans = batch
    two = read_yes_no(logits, None, ans)
    torch.testing.assert_close(yes_logit_diff(logits, labels, ans), two[:, 0] - two[:, 1])
    torch.testing.assert_close(logit_diff(logits, labels, ans), (two[:, 0] - two[:, 1]) * (labels * 2 - 1))
    # bf16 logits (autocast) give float32 metrics, as read_yes_no does for scoring
    half = logits.to(torch.bfloat16)
    for name in ("logit_diff", "yes_logit_diff"):
        assert METRICS[name](half, labels, ans).dtype == torch.float32


def test_logit_diff_is_differentiable_and_unknown_metrics_are_refused(batch):
    logits, labels, ans = batch
    logits = logits.clone().requires_grad_(True)
    logit_diff(logits, labels, ans).sum().backward()
    assert logits.grad[0, -1, 3] == 1 and logits.grad[1, -1, 7] == 1 and logits.grad[:, :-1].abs().sum() == 0
    with pytest.raises(ValueError, match="Unknown metric"):
        get_metric("nope")
